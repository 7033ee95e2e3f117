"""Running the custodian's HTTP server inside the command's event loop."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import uvicorn

from txgate.custody.api import create_app
from txgate.custody.service import Custodian


def bind(host: str, port: int) -> socket.socket:
    """Bind now (port 0 picks a free one) so the URL is known before the server starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


async def serve_custodian(
    custodian: Custodian,
    sock: socket.socket,
    *,
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until Ctrl-C / SIGTERM; the pipeline runs alongside and stops with the server."""
    app = create_app(custodian)
    config = uvicorn.Config(
        app,
        http="httptools",
        log_level="warning",
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    custodian.start()
    try:
        if on_ready is not None:
            await on_ready()
        await server.serve(sockets=[sock])
    finally:
        await custodian.close()
        sock.close()
