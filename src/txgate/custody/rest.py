"""The custodian's REST API beside ECA-3: approvals (what the dashboard and the CLI use) and
policy versions. Every route authenticates the caller by bearer access token; errors come back
as JSON with the HTTP status from the one error table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from txgate.core.errors import InvalidParams, TxgateError, Unauthenticated, error_code
from txgate.custody import approvals, tokens
from txgate.custody.tokens import Caller

if TYPE_CHECKING:
    from txgate.custody.service import Custodian


def rest_error(error: TxgateError) -> JSONResponse:
    code = error_code(error)
    body: dict[str, Any] = {"error": {"code": code.jsonrpc, "message": error.message}}
    if error.data is not None:
        body["error"]["data"] = error.data
    return JSONResponse(body, status_code=code.http)


async def authenticate(custodian: Custodian, request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("missing bearer access token (Authorization: Bearer <token>)")
    async with custodian.db.read() as session:
        return await tokens.authenticate(session, access_token=value.strip())


async def current_caller(request: Request) -> Caller:
    return await authenticate(request.app.state.custodian, request)


# Module level, so FastAPI can resolve the annotation (this module postpones annotations).
CurrentCaller = Annotated[Caller, Depends(current_caller)]
Payload = Annotated[dict[str, Any], Body()]


def rest_router(custodian: Custodian) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/approvals")
    async def list_approvals(who: CurrentCaller) -> dict[str, Any]:
        async with custodian.db.read() as session:
            waiting = await approvals.pending(session, caller=who)
        return {
            "approvals": [
                {
                    "kind": item.kind,
                    "id": item.id,
                    "initiator": item.initiator,
                    "summary": item.summary,
                    "progress": item.progress,
                    "createdAt": item.created_at.isoformat(),
                    "mayVote": item.may_vote,
                    "whyNot": item.why_not,
                }
                for item in waiting
            ]
        }

    @router.post("/approvals/{subject_id}/approve")
    async def approve(subject_id: str, who: CurrentCaller) -> dict[str, Any]:
        return await custodian.vote(
            who, subject_id=subject_id, decision=approvals.APPROVE, reason=None
        )

    @router.post("/approvals/{subject_id}/reject")
    async def reject(subject_id: str, who: CurrentCaller, body: Payload) -> dict[str, Any]:
        reason = body.get("reason")
        if not isinstance(reason, str):
            raise InvalidParams("reason (a string) is required to reject", param="reason")
        return await custodian.vote(
            who, subject_id=subject_id, decision=approvals.REJECT, reason=reason
        )

    @router.get("/policy")
    async def show_policy(who: CurrentCaller) -> dict[str, Any]:
        return await custodian.policy_versions(who)

    @router.post("/policy")
    async def apply_policy(who: CurrentCaller, body: Payload) -> dict[str, Any]:
        source, fmt = body.get("source"), body.get("format", "yaml")
        if not isinstance(source, str) or (fmt != "yaml" and fmt != "toml"):
            raise InvalidParams(
                'body must be {"source": "<policy file text>", "format": "yaml"|"toml"}',
                param="source",
            )
        return await custodian.propose_policy(who, source=source, format=fmt)

    return router
