"""`txgate custodian policy`: check, apply, show and dry-run an organisation's policy."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from txgate.cli.client import Token, Url, call_custodian
from txgate.cli.common import DataDir, console, err_console
from txgate.core.errors import TxgateError
from txgate.core.types import parse_address, parse_bytes, parse_uint
from txgate.custody.policy.calldata import describe_typed_data
from txgate.custody.policy.document import PolicyDocument, PolicyError, load_policy_file
from txgate.custody.policy.engine import CompiledPolicy
from txgate.custody.policy.facts import RequestFacts, message_facts, transaction_facts

app = typer.Typer(help="The policy: ordered rules, default deny, approvals.", no_args_is_help=True)

PolicyPath = Annotated[
    Path, typer.Argument(help="Policy file (.yaml, .yml or .toml)", exists=True, dir_okay=False)
]


def _load(path: Path) -> PolicyDocument:
    try:
        return load_policy_file(path)
    except PolicyError as error:
        err_console.print(f"[red]{path}: {len(error.errors)} error(s)[/red]", highlight=False)
        for line in error.errors:
            err_console.print(f"  - {line}", highlight=False, markup=False)
        raise typer.Exit(1) from None


@app.command("check")
def check(path: PolicyPath) -> None:
    """Validate a policy file; every error names its rule and field. Changes nothing."""
    document = _load(path)
    console.print(f"{path}: valid, {len(document.rules)} rule(s)", highlight=False)


@app.command("apply")
def apply(path: PolicyPath, token: Token = None, url: Url = None, data_dir: DataDir = None) -> None:
    """Propose the file as your organisation's next policy version (as an administrator).

    It takes effect at once, or after the approvals the current policy's `governance` asks for."""
    _load(path)  # fail here, with every error, before anything is sent
    body = {"source": path.read_text(), "format": "toml" if path.suffix == ".toml" else "yaml"}
    result = call_custodian(url, token, data_dir, "POST", "/v1/policy", body)
    state = (
        "active now"
        if result["status"] == "active"
        else f"proposed, waiting for approval (id {result['id']})"
    )
    console.print(f"policy version {result['version']}: {state}", highlight=False)


@app.command("show")
def show(
    token: Token = None, url: Url = None, data_dir: DataDir = None, source: bool = False
) -> None:
    """Your organisation's policy versions; `--source` prints the active file."""
    versions = call_custodian(url, token, data_dir, "GET", "/v1/policy")["versions"]
    if source:
        active = next((v for v in versions if v["status"] == "active"), None)
        typer.echo(active["source"] if active else "no active policy")
        return
    table = Table("version", "status", "proposed by", "rules", "progress")
    for version in versions:
        table.add_row(
            str(version["version"]),
            version["status"],
            version["proposedBy"],
            ", ".join(version["rules"]),
            version["progress"] or "",
        )
    console.print(table)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        err_console.print(f"[red]error:[/red] {path}: {error}", highlight=False)
        raise typer.Exit(1) from None


@app.command("test")
def test(
    path: PolicyPath,
    tx: Annotated[
        Path,
        typer.Option(
            "--tx",
            help="JSON: a transaction {from, to, value, data, chainId} or a "
            "message {address, message} / {address, typedData}",
            exists=True,
            dir_okay=False,
        ),
    ],
    initiator: Annotated[str, typer.Option("--initiator", help="User name of who asks")] = "alice",
) -> None:
    """Dry run: print the decision the policy would give and the rule that gives it.

    Nothing is stored and no ledger is read: velocity limits see an empty history."""
    document = _load(path)
    request = read_json(tx)
    if not isinstance(request, dict):
        err_console.print(f"[red]error:[/red] {tx}: must hold a JSON object", highlight=False)
        raise typer.Exit(1)
    try:
        facts = dry_run_facts(request, initiator=initiator)
    except TxgateError as error:
        err_console.print(f"[red]error:[/red] {tx}: {error.message}", highlight=False)
        raise typer.Exit(1) from None
    decision = asyncio.run(
        CompiledPolicy.compile(document).evaluate(facts, velocity=_EmptyLedger())
    )
    console.print(f"decision: {decision.verdict.value}", highlight=False)
    console.print(f"rule:     {decision.rule}", highlight=False)
    console.print(f"reason:   {decision.reason}", highlight=False, markup=False)
    if decision.approval is not None:
        for group in decision.approval.groups:
            console.print(
                f"approvals: {group.threshold} of {', '.join(sorted(group.members))} ({group.name})",
                highlight=False,
            )
        console.print(f"mode:     {decision.approval.mode}", highlight=False)
    if any(rule.match.velocity for rule in document.rules):
        console.print("note: velocity limits were checked against an empty history", style="yellow")


def dry_run_facts(request: dict[str, Any], *, initiator: str) -> RequestFacts:
    now = datetime.now(UTC)
    if "from" in request:
        to = parse_address(request["to"], param="to") if request.get("to") else None
        return transaction_facts(
            customer_id="dry-run",
            initiator=initiator,
            initiator_id=initiator,
            chain_id=_int(request.get("chainId", 1), "chainId"),
            source=parse_address(request["from"], param="from"),
            to=to,
            value=_int(request.get("value", 0), "value"),
            data=parse_bytes(request.get("data", "0x"), param="data"),
            now=now,
        )
    address = parse_address(request.get("address"), param="address")
    typed = request.get("typedData")
    return message_facts(
        customer_id="dry-run",
        initiator=initiator,
        initiator_id=initiator,
        source=address,
        message_kind="typed_data" if typed is not None else "personal_sign",
        typed=describe_typed_data(typed) if isinstance(typed, dict) else None,
        chain_id=_int(request["chainId"], "chainId") if "chainId" in request else None,
        now=now,
    )


def _int(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return parse_uint(value, param=name)


class _EmptyLedger:
    async def total(self, *, scope: str, key: str, asset: str, since: datetime) -> int:
        return 0
