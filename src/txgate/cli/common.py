"""What every command shares: settings from options, logging, running async work, clean errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import structlog
import typer
import uvloop
from rich.console import Console

from txgate.config import Settings, load_settings
from txgate.core.errors import TxgateError

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="TXGATE_DATA_DIR",
        help="Data folder (default ./.txgate)",
        show_default=False,
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="TXGATE_DATABASE_URL",
        help="SQLAlchemy async URL (default: SQLite in the data folder)",
    ),
]


def settings_from(data_dir: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(data_dir=data_dir, **overrides)
    except TxgateError as error:
        err_console.print(f"[red]error:[/red] {error.message}", highlight=False)
        raise typer.Exit(2) from None


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(message)s")
    # httpx logs full request URLs at INFO; node URLs may carry API keys.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run async work for a command; a `TxgateError` becomes a one-line message and exit 1."""
    try:
        # uvloop: the same asyncio API on libuv, markedly faster for a busy HTTP service.
        return uvloop.run(work)
    except TxgateError as error:
        err_console.print(f"[red]error:[/red] {error.message}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
