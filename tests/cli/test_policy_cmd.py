"""`txgate custodian policy check` and `policy test`: local, no server."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from txgate.cli.main import app

DEMO = Path(__file__).resolve().parents[2] / "src/txgate/cli/data/demo-policy.yaml"
ALICE_ACCOUNT = "0x9aD77252eDa4057F1b359B910dc9C1543d92ed2a"
runner = CliRunner()


def test_check_accepts_the_demo_policy() -> None:
    result = runner.invoke(app, ["custodian", "policy", "check", str(DEMO)])
    assert result.exit_code == 0 and "6 rule(s)" in result.output


def test_check_names_every_broken_rule_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nrules:\n"
        "  - name: one\n    action: allow\n    match: {amont: {max: 1}}\n"
        "  - name: two\n    action: require_approval\n"
    )
    result = runner.invoke(app, ["custodian", "policy", "check", str(bad)])
    assert result.exit_code == 1
    assert 'rules[0] "one"' in result.output and "amont" in result.output
    assert 'rules[1] "two"' in result.output and "approvals" in result.output
    assert "Traceback" not in result.output


def test_dry_run_prints_the_decision_and_the_rule(tmp_path: Path) -> None:
    tx = tmp_path / "tx.json"
    tx.write_text(
        json.dumps(
            {
                "from": ALICE_ACCOUNT,
                "to": "0x" + "ab" * 20,
                "value": hex(2 * 10**18),
                "chainId": 31337,
            }
        )
    )
    result = runner.invoke(app, ["custodian", "policy", "test", str(DEMO), "--tx", str(tx)])
    assert result.exit_code == 0, result.output
    assert "require_approval" in result.output and "large-transfers" in result.output
    small = runner.invoke(
        app, ["custodian", "policy", "test", str(DEMO), "--tx", str(tx), "--initiator", "bob"]
    )
    assert "default-deny" in small.output
    tx.write_text(json.dumps({"from": ALICE_ACCOUNT, "to": "0x" + "ab" * 20, "value": "12"}))
    broken = runner.invoke(app, ["custodian", "policy", "test", str(DEMO), "--tx", str(tx)])
    assert broken.exit_code == 1 and "value" in broken.output and "Traceback" not in broken.output
