"""`txgate db`: schema migrations."""

from __future__ import annotations

import typer

from txgate.cli.common import DatabaseUrl, DataDir, console, run, settings_from
from txgate.storage.engine import Database

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Apply every pending migration."""
    settings = settings_from(data_dir, database_url=database_url)

    async def work() -> None:
        db = Database(settings.resolved_database_url)
        try:
            await db.upgrade()
        finally:
            await db.dispose()

    run(work())
    console.print("schema is up to date")
