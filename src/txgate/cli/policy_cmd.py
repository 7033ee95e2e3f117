"""`txgate custodian policy`: check, apply, show and dry-run an organisation's policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from txgate.cli.client import Token, Url, call_custodian
from txgate.cli.common import DataDir, console, err_console
from txgate.custody.policy.document import PolicyDocument, PolicyError, load_policy_file

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
