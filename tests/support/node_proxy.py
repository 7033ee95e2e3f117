"""A JSON-RPC proxy in front of anvil that can hold back broadcasts: a way to stop a custodian
between signing and broadcasting, without any hook in the product code."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class NodeProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.hold_broadcasts = True
        self.forwarded_raw: list[str] = []
        self.held_raw: list[str] = []
        self._release = asyncio.Event()
        self._client = httpx.AsyncClient(timeout=30)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        document: Any = json.loads(body)
        calls = document if isinstance(document, list) else [document]
        raws = [
            c["params"][0]
            for c in calls
            if isinstance(c, dict) and c.get("method") == "eth_sendRawTransaction"
        ]
        if raws and self.hold_broadcasts:
            self.held_raw.extend(raws)
            await (
                self._release.wait()
            )  # never answers while held: the caller is stuck mid-broadcast
        self.forwarded_raw.extend(raws)
        answer = await self._client.post(
            self.upstream, content=body, headers={"content-type": "application/json"}
        )
        return Response(
            answer.content, status_code=answer.status_code, media_type="application/json"
        )

    async def start(self) -> NodeProxy:
        app = Starlette(routes=[Route("/", self._handle, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._sock.listen(64)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            await asyncio.sleep(0.01)
        return self

    def pass_through(self) -> None:
        """New broadcasts go through; ones already held stay held (their sender is gone)."""
        self.hold_broadcasts = False

    def hold(self) -> None:
        """Hold every broadcast from now on, until `release()`."""
        self.hold_broadcasts = True
        self._release = asyncio.Event()

    def release(self) -> None:
        """Let held broadcasts go on to the node, and pass new ones through."""
        self.hold_broadcasts = False
        self._release.set()

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task
        await self._client.aclose()
        self._sock.close()
