"""A small HTTP client for the commands that act as an authenticated person (approvers, admins):
they talk to a running custodian over its API, never to its database."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from txgate.cli.common import err_console
from txgate.core.errors import TxgateError, Unauthenticated

Token = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="TXGATE_TOKEN", help="Your refresh token (as printed by `token create`)"
    ),
]
Url = Annotated[
    str | None,
    typer.Option(
        "--url", envvar="TXGATE_CUSTODIAN_URL", help="Custodian base URL (default: from demo.json)"
    ),
]


class CustodianClient:
    def __init__(self, base_url: str, refresh_token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._refresh = refresh_token
        self._http = httpx.Client(base_url=self.base_url, timeout=30)
        self._access: str | None = None

    def __enter__(self) -> CustodianClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def _login(self) -> str:
        answer = self._send(
            "POST",
            "/oauth/token",
            json={"grant_type": "refresh_token", "refresh_token": self._refresh},
        )
        if answer.status_code != 200:
            raise Unauthenticated(f"the custodian refused the token: {_describe(answer)}")
        access: str = answer.json()["access_token"]
        return access

    def request(self, method: str, path: str, *, body: dict[str, Any] | None = None) -> Any:
        if self._access is None:
            self._access = self._login()
        answer = self._send(
            method, path, json=body, headers={"Authorization": f"Bearer {self._access}"}
        )
        if answer.status_code >= 400:
            raise TxgateError(_describe(answer))
        return answer.json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError:
            raise TxgateError(
                f"cannot reach the custodian at {self.base_url}; is it running?"
            ) from None


def _describe(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return f"HTTP {answer.status_code}"
    if isinstance(body.get("error"), dict):
        return str(body["error"].get("message", body["error"]))
    return str(body.get("error_description") or body.get("error") or f"HTTP {answer.status_code}")


def connect(url: str | None, token: str | None, data_dir: Path | None) -> CustodianClient:
    if not token:
        raise typer.BadParameter(
            "give --token (or set TXGATE_TOKEN) with your refresh token", param_hint="--token"
        )
    return CustodianClient(url or _demo_url(data_dir), token)


def _demo_url(data_dir: Path | None) -> str:
    folder = data_dir or Path(os.environ.get("TXGATE_DATA_DIR", ".txgate"))
    demo = folder / "demo.json"
    if demo.exists():
        api_url: str = json.loads(demo.read_text())["custodian"]["api_url"]
        return api_url.removesuffix("/v3/json-rpc")
    raise typer.BadParameter(
        "give --url (or set TXGATE_CUSTODIAN_URL): no demo.json to read it from", param_hint="--url"
    )


def call_custodian(
    url: str | None,
    token: str | None,
    data_dir: Path | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> Any:
    """One authenticated API call for a command; an error is printed and exits 1."""
    try:
        with connect(url, token, data_dir) as client:
            return client.request(method, path, body=body)
    except TxgateError as error:
        err_console.print(f"[red]error:[/red] {error.message}", highlight=False)
        raise typer.Exit(1) from None
