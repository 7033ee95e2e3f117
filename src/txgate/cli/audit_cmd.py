"""`txgate audit`: check the hash chain of the audit log."""

from __future__ import annotations

import typer

from txgate.audit.log import verify
from txgate.cli.common import DatabaseUrl, DataDir, console, err_console, run, settings_from
from txgate.storage.engine import Database

app = typer.Typer(help="Tamper-evident audit log.", no_args_is_help=True)


@app.command("verify")
def verify_command(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Recompute the hash chain; report the first tampered, missing or reordered row."""
    settings = settings_from(data_dir, database_url=database_url)

    async def work() -> tuple[bool, str]:
        db = Database(settings.resolved_database_url)
        try:
            await db.upgrade()
            async with db.read() as session:
                report = await verify(session)
        finally:
            await db.dispose()
        if report.ok:
            return True, f"audit log intact: {report.count} entries"
        return False, f"audit log TAMPERED at row {report.first_bad_id}: {report.problem}"

    ok, text = run(work())
    if not ok:
        err_console.print(f"[red]{text}[/red]", highlight=False)
        raise typer.Exit(2)
    console.print(text)
