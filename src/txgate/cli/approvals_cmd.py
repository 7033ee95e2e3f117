"""`txgate custodian approvals`: approvers list and vote on waiting requests, as themselves."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from txgate.cli.client import Token, Url, call_custodian
from txgate.cli.common import DataDir, console

app = typer.Typer(
    help="Vote on requests that wait for approval (authenticated by your own token).",
    no_args_is_help=True,
)


@app.command("list")
def list_(token: Token = None, url: Url = None, data_dir: DataDir = None) -> None:
    """Requests of your organisation that wait for approval, and whether you may vote."""
    waiting = call_custodian(url, token, data_dir, "GET", "/v1/approvals")["approvals"]
    if not waiting:
        console.print("nothing waits for approval")
        return
    table = Table("id", "kind", "initiator", "what", "progress", "you")
    for item in waiting:
        summary = item["summary"]
        what = ", ".join(f"{k}={v}" for k, v in summary.items() if v is not None)
        table.add_row(
            item["id"],
            item["kind"],
            item["initiator"],
            what,
            item["progress"],
            "may vote" if item["mayVote"] else item["whyNot"],
        )
    console.print(table)


@app.command("approve")
def approve(
    request_id: Annotated[str, typer.Argument(help="The request id")],
    token: Token = None,
    url: Url = None,
    data_dir: DataDir = None,
) -> None:
    """Approve a request."""
    outcome = call_custodian(url, token, data_dir, "POST", f"/v1/approvals/{request_id}/approve")
    console.print(
        f"{outcome['kind']} {outcome['id']}: {outcome['status']} ({outcome['text']})",
        highlight=False,
    )


@app.command("reject")
def reject(
    request_id: Annotated[str, typer.Argument(help="The request id")],
    reason: Annotated[str, typer.Option("--reason", help="Why (shown to the initiator)")],
    token: Token = None,
    url: Url = None,
    data_dir: DataDir = None,
) -> None:
    """Reject a request: it ends `rejected` and never reaches the chain."""
    outcome = call_custodian(
        url, token, data_dir, "POST", f"/v1/approvals/{request_id}/reject", {"reason": reason}
    )
    console.print(
        f"{outcome['kind']} {outcome['id']}: {outcome['status']} ({outcome['text']})",
        highlight=False,
    )
