"""The `txgate` command: the only place that wires the parts together."""

from __future__ import annotations

import typer

from txgate.cli import audit_cmd, custodian_cmd, db_cmd, up_cmd

app = typer.Typer(
    name="txgate",
    help="Transaction security stack: custody with policy, signing, broadcast and tracking.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(custodian_cmd.app, name="custodian")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(db_cmd.app, name="db")
app.command("up")(up_cmd.up)


def main() -> None:
    app()
