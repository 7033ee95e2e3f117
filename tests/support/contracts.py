"""Test contracts: compiling them once (cached by source hash) and deploying them with web3.py.

`compile_test_contracts()` runs `tools/compile.mjs` with node the first time a given set of
sources is seen and caches the artifacts under `.tools/artifacts/<hash>.json`, so later calls
(and later test runs) do not start the compiler.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import requests
from eth_account import Account
from web3 import Web3

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = ROOT / "tests" / "contracts"
COMPILER = ROOT / "tools" / "compile.mjs"
ARTIFACTS_DIR = ROOT / ".tools" / "artifacts"

Artifact = dict[str, Any]  # {"abi": [...], "bytecode": "0x..."}


def _sources_key(sources: Sequence[Path]) -> str:
    """A hash over the sources and the compiler script: a change to either recompiles."""
    digest = hashlib.sha256()
    for path in (*sorted(sources), COMPILER):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def _compile(sources: tuple[Path, ...]) -> dict[str, Artifact]:
    cached = ARTIFACTS_DIR / f"{_sources_key(sources)}.json"
    if cached.is_file():
        artifacts: dict[str, Artifact] = json.loads(cached.read_text())
        return artifacts
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH; it is needed to compile the test contracts")
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    # Write to a temporary name and rename, so a concurrent run never reads a half-written file.
    fd, tmp = tempfile.mkstemp(dir=ARTIFACTS_DIR, suffix=".tmp")
    os.close(fd)
    try:
        result = subprocess.run(
            [node, str(COMPILER), *map(str, sources), "--out", tmp],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"compiling test contracts failed:\n{result.stderr}")
        os.replace(tmp, cached)
    finally:
        Path(tmp).unlink(missing_ok=True)
    artifacts = json.loads(cached.read_text())
    return artifacts


def compile_test_contracts(sources: Sequence[Path] | None = None) -> dict[str, Artifact]:
    """`{ContractName: {"abi", "bytecode"}}` for `sources` (default: tests/contracts/*.sol)."""
    chosen = sources if sources is not None else sorted(CONTRACTS_DIR.glob("*.sol"))
    return _compile(tuple(Path(p).resolve() for p in chosen))


def deploy(w3: Web3, artifact: Artifact, key: str, *args: Any) -> str:
    """Deploy `artifact` with constructor `args` from the account of `key`; its checksum address.

    Raises `RuntimeError` when the deployment transaction reverts.
    """
    sender = Account.from_key(key)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = factory.constructor(*args).build_transaction(
        {
            "from": sender.address,
            "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
            "chainId": w3.eth.chain_id,
        }
    )
    signed = sender.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)
    if receipt["status"] != 1 or receipt["contractAddress"] is None:
        raise RuntimeError(f"deployment reverted (tx {tx_hash.hex()})")
    return Web3.to_checksum_address(receipt["contractAddress"])


def contract(w3: Web3, artifact: Artifact, address: str) -> Any:
    """A web3.py contract object for a deployed `artifact`."""
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=artifact["abi"])


@contextlib.contextmanager
def connect(url: str) -> Iterator[Web3]:
    """A sync web3.py client for `url` whose HTTP session is closed on exit (no leaked sockets)."""
    session = requests.Session()
    try:
        yield Web3(Web3.HTTPProvider(url, session=session))
    finally:
        session.close()
