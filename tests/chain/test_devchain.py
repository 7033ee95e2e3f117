"""The anvil launcher: finding the binary, start/stop leaving no process, failures that explain
themselves, and the dev accounts matching anvil's mnemonic."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psutil
import pytest
from eth_account import Account

from txgate.chain import DEV_ACCOUNTS, DEV_MNEMONIC, Anvil, NodeClient, find_anvil_binary
from txgate.chain.devchain import ANVIL_BIN_ENV
from txgate.core.errors import ChainError


def gone(pid: int) -> bool:
    """True when `pid` no longer names a live (or unreaped) process."""
    return not psutil.pid_exists(pid)


def test_dev_accounts_match_the_mnemonic() -> None:
    Account.enable_unaudited_hdwallet_features()
    assert len(DEV_ACCOUNTS) == 10
    for index, (address, key) in enumerate(DEV_ACCOUNTS):
        derived = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
        assert derived.address == address
        assert Account.from_key(key).address == address


def test_binary_is_found_in_tools() -> None:
    binary = find_anvil_binary()
    assert os.access(binary, os.X_OK)


def test_binary_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_anvil_binary()
    monkeypatch.setenv(ANVIL_BIN_ENV, real)
    assert find_anvil_binary() == real


def test_wrong_env_binary_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ANVIL_BIN_ENV, str(tmp_path / "no-anvil"))
    with pytest.raises(ChainError, match=ANVIL_BIN_ENV):
        find_anvil_binary()


def test_missing_binary_says_make_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import txgate.chain.devchain as devchain

    monkeypatch.delenv(ANVIL_BIN_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(devchain, "__file__", str(tmp_path / "devchain.py"))
    with pytest.raises(ChainError, match="make setup"):
        find_anvil_binary()


async def test_start_and_stop_leave_no_process() -> None:
    anvil = Anvil(chain_id=1337)
    await anvil.start()
    pid, log_path = anvil.pid, anvil.log_path
    assert anvil.running and not gone(pid)
    async with NodeClient(anvil.url) as client:
        assert await client.chain_id() == 1337

    await anvil.stop()

    assert gone(pid)
    assert not anvil.running
    assert log_path is not None and not log_path.exists()  # the temporary log is ours
    await anvil.stop()  # a second stop is harmless


async def test_context_manager_and_interval_mining() -> None:
    async with Anvil(block_time=0.2) as anvil, NodeClient(anvil.url) as client:
        pid = anvil.pid
        first = await client.block_number()
        await asyncio.sleep(0.5)
        assert await client.block_number() > first
    assert gone(pid)


async def test_stop_sync_for_atexit_and_signals() -> None:
    anvil = await Anvil().start()
    pid = anvil.pid
    anvil.stop_sync()
    assert gone(pid)
    anvil.stop_sync()


async def test_early_exit_reports_anvil_output() -> None:
    anvil = Anvil(extra_args=["--no-such-flag"])
    with pytest.raises(ChainError) as caught:
        await anvil.start()
    assert "exited with code" in caught.value.message
    assert "--no-such-flag" in caught.value.message
    assert not anvil.running


async def test_cancelled_start_leaves_no_process() -> None:
    task = asyncio.create_task(Anvil().start())
    await asyncio.sleep(0.01)  # the process is spawned before start's first await
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    children = psutil.Process().children(recursive=True)
    assert not [child for child in children if "anvil" in child.name()]


async def test_busy_explicit_port_is_an_error() -> None:
    async with Anvil() as first:
        with pytest.raises(ChainError):
            await Anvil(port=first.port, chain_id=1).start()


async def test_unstartable_binary(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="cannot start anvil"):
        await Anvil(binary=str(tmp_path / "missing")).start()
