"""The custodian's HTTP surface: ECA-3 JSON-RPC, the OAuth-style token endpoints, JWKS."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from txgate.core.errors import (
    InvalidParams,
    PayloadTooLarge,
    TxgateError,
    Unauthenticated,
    error_code,
)
from txgate.custody import tokens
from txgate.custody.eca3 import Eca3Methods
from txgate.custody.rest import authenticate, rest_error, rest_router
from txgate.custody.service import Custodian
from txgate.jsonrpc.dispatch import error_response

log = structlog.get_logger(__name__)


def create_app(custodian: Custodian, *, manage_lifecycle: bool = False) -> FastAPI:
    """The ASGI app. With `manage_lifecycle`, the app starts and closes the custodian itself."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        if manage_lifecycle:
            custodian.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await custodian.close()

    app = FastAPI(
        title="txgate custodian", version="3.0.0", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.add_middleware(BodyLimit, limit=custodian.settings.max_body_bytes)
    dispatcher = Eca3Methods(custodian).dispatcher()

    app.state.custodian = custodian
    app.include_router(rest_router(custodian))

    @app.exception_handler(TxgateError)
    async def txgate_error(_request: Request, error: TxgateError) -> JSONResponse:
        return rest_error(error)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, _error: Exception) -> JSONResponse:
        # The traceback goes to the log (Starlette logs it); the caller gets JSON and no internals.
        return JSONResponse(
            {"error": "server_error", "error_description": "internal error"}, status_code=500
        )

    @app.post("/v3/json-rpc")
    async def json_rpc(request: Request) -> Response:
        body = await request.body()
        try:
            caller = await authenticate(custodian, request)
        except TxgateError as error:
            return JSONResponse(error_response(_request_id(body), error))
        result = await dispatcher.handle(body, caller)
        if result is None:
            return Response(status_code=204)
        return JSONResponse(result)

    @app.post("/oauth/token")
    async def token(request: Request) -> Response:
        try:
            form = await _token_form(request)
            if form.get("grant_type") != "refresh_token":
                return _oauth_error(
                    400, "unsupported_grant_type", 'grant_type must be "refresh_token"'
                )
            refresh = form.get("refresh_token")
            if not isinstance(refresh, str) or not refresh:
                return _oauth_error(400, "invalid_request", "refresh_token is required")
            settings = custodian.settings
            async with custodian.db.transaction() as session:
                grant = await tokens.exchange_refresh_token(
                    session,
                    refresh_token=refresh,
                    access_ttl=settings.access_token_ttl,
                    rotate=settings.rotate_refresh_tokens,
                    refresh_ttl=settings.refresh_token_ttl,
                )
        except Unauthenticated as error:
            return _oauth_error(400, "invalid_grant", error.message)
        except InvalidParams as error:
            return _oauth_error(400, "invalid_request", error.message)
        return JSONResponse(grant.as_oauth(), headers={"Cache-Control": "no-store"})

    @app.post("/oauth/revoke")
    async def revoke(request: Request) -> Response:
        try:
            form = await _token_form(request)
        except InvalidParams as error:
            return _oauth_error(400, "invalid_request", error.message)
        token_value = form.get("token")
        if not isinstance(token_value, str) or not token_value:
            return _oauth_error(400, "invalid_request", "token is required")
        async with custodian.db.transaction() as session:
            await tokens.revoke(session, token=token_value, actor="oauth.revoke")
        return Response(status_code=200)  # RFC 7009: unknown tokens answer 200 too

    @app.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        return custodian.proofs.jwks()

    @app.get("/healthz")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "chains": sorted(custodian.supported_chains)}

    return app


def _request_id(body: bytes) -> Any:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document.get("id") if isinstance(document, dict) else None


async def _token_form(request: Request) -> dict[str, Any]:
    """The token endpoints take JSON (what MMI sends) or a form body (what RFC 6749 says)."""
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        # Parsed here: Starlette's `request.form()` needs python-multipart, not a dependency.
        try:
            return dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise InvalidParams("form body is not UTF-8") from None
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise InvalidParams("body must be JSON or a form") from None
    if not isinstance(body, dict):
        raise InvalidParams("body must be a JSON object")
    return body


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413 before they are read into memory."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            if refused:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        error = PayloadTooLarge(f"request body is larger than {self.limit} bytes")
        body = json.dumps(error_response(None, error)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error_code(error).http,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
