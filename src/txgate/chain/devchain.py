"""The local dev chain: finding the anvil binary, running it, and its well-known dev accounts.

`Anvil` owns one anvil process from start to reaping: it picks a free port, sends anvil's
output to a log file (a pipe nobody reads would fill and stall anvil), waits until the node
answers `eth_chainId`, and stops it with terminate → 5 s grace → kill. `stop_sync` does the
same without an event loop, for `atexit` and signal handlers.

Used by the demo (`txgate up`), the integration tests and the benchmarks; never in production.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

from txgate.chain.client import NodeClient
from txgate.core.errors import ChainError

ANVIL_BIN_ENV = "TXGATE_ANVIL_BIN"
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_CHAIN_ID = 31337

START_TIMEOUT = 30.0
STOP_GRACE = 5.0
_POLL_INTERVAL = 0.05
_PORT_ATTEMPTS = 3  # a free port we picked can be taken by someone else before anvil binds it


class DevAccount(NamedTuple):
    """One of anvil's funded dev accounts. The keys are public test keys: never use on mainnet."""

    address: str
    private_key: str


# Derived from DEV_MNEMONIC at m/44'/60'/0'/0/i; tests/chain/test_devchain.py re-derives them.
DEV_ACCOUNTS: tuple[DevAccount, ...] = (
    DevAccount(
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    ),
    DevAccount(
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    ),
    DevAccount(
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
        "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    ),
    DevAccount(
        "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
        "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    ),
    DevAccount(
        "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
        "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    ),
    DevAccount(
        "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
        "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    ),
    DevAccount(
        "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
        "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    ),
    DevAccount(
        "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
        "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    ),
    DevAccount(
        "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",
        "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    ),
    DevAccount(
        "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",
        "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
    ),
)


def _tools_candidates(start: Path) -> list[Path]:
    """Anvil binaries under `.tools/` in `start` or any parent (any platform package)."""
    found: list[Path] = []
    for directory in (start, *start.parents):
        scope = directory / ".tools" / "node_modules" / "@foundry-rs"
        if scope.is_dir():
            found.extend(sorted(scope.glob("anvil-*/bin/anvil")))
    return found


def find_anvil_binary() -> str:
    """Path of the anvil binary: `$TXGATE_ANVIL_BIN`, then the project's `.tools/` (searched
    upward from the working directory and from this file), then `anvil` on `PATH`."""
    configured = os.environ.get(ANVIL_BIN_ENV)
    if configured:
        # An explicit setting that is wrong must not silently fall back to another anvil.
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise ChainError(f"{ANVIL_BIN_ENV}={configured} is not an executable file")
        return configured
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for candidate in _tools_candidates(start):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    raise ChainError(
        "anvil binary not found: run `make setup` (installs it into .tools/), "
        f"put `anvil` on PATH, or set {ANVIL_BIN_ENV}"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def _exited(process: subprocess.Popen[bytes], within: float | None) -> bool:
    """Wait in a worker thread (the loop keeps running) until `process` exits and is reaped."""
    try:
        await asyncio.to_thread(process.wait, within)
    except subprocess.TimeoutExpired:
        return False
    return True


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class Anvil:
    """One anvil process. `async with Anvil() as anvil:` gives a ready node at `anvil.url`."""

    def __init__(
        self,
        *,
        port: int = 0,
        chain_id: int = DEV_CHAIN_ID,
        block_time: float | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
        log_path: str | Path | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self._requested_port = port
        self._chain_id = chain_id
        self._block_time = block_time
        self._binary = binary
        self._extra_args = list(extra_args)
        self._host = host
        self._log_path = Path(log_path) if log_path is not None else None
        self._start_timeout = start_timeout
        self._own_log = False  # a temporary log we created is ours to delete
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("anvil is not running")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("anvil is not running")
        return self._process.pid

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        where = f"{self._host}:{self._port}" if self._port else "stopped"
        return f"Anvil({where})"

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _command(self, binary: str, port: int) -> list[str]:
        command = [binary, "--host", self._host, "--port", str(port)]
        command += ["--chain-id", str(self._chain_id)]
        if self._block_time is not None:
            command += ["--block-time", f"{self._block_time:g}"]
        return command + self._extra_args

    async def start(self) -> Self:
        """Start anvil and wait until it answers; raises `ChainError` with anvil's log tail."""
        if self._process is not None:
            raise RuntimeError("anvil is already started")
        binary = self._binary or find_anvil_binary()
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="txgate-anvil-", suffix=".log")
            os.close(fd)
            self._log_path, self._own_log = Path(name), True
        attempts = _PORT_ATTEMPTS if self._requested_port == 0 else 1
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_port(self._host)
            try:
                self._spawn(binary, port)
                await self._wait_ready()
                return self
            except ChainError:
                exited = self._process is not None and self._process.poll() is not None
                tail = _log_tail(self._log_path)
                await self.stop(keep_log=True)
                if attempt < attempts and exited and "in use" in tail.lower():
                    continue
                self._discard_log()
                raise
            except BaseException:
                # Cancelled mid-start: awaiting is no longer safe, but the process must not leak.
                self.stop_sync()
                self._discard_log()
                raise
        raise AssertionError("unreachable")  # the loop returns or raises

    def _spawn(self, binary: str, port: int) -> None:
        assert self._log_path is not None
        try:
            with self._log_path.open("ab") as log:
                # The child keeps its own copy of the descriptor; ours closes with the block.
                self._process = subprocess.Popen(
                    self._command(binary, port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        except OSError as exc:
            raise ChainError(f"cannot start anvil ({binary}): {exc.strerror or exc}") from None
        self._port = port
        atexit.register(self.stop_sync)

    async def _wait_ready(self) -> None:
        assert self._process is not None and self._log_path is not None
        timeout = self._start_timeout
        deadline = time.monotonic() + timeout
        async with NodeClient(self.url, timeout=1.0) as client:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise ChainError(
                        f"anvil exited with code {code} before it was ready; last log lines:\n"
                        f"{_log_tail(self._log_path)}"
                    )
                try:
                    chain_id = await client.chain_id()
                except ChainError:
                    chain_id = None
                if chain_id is not None:
                    if chain_id != self._chain_id:
                        # Something else answered on this port; it is not our anvil.
                        raise ChainError(
                            f"node at {client.endpoint} reports chain id {chain_id}, "
                            f"expected {self._chain_id}"
                        )
                    return
                if time.monotonic() > deadline:
                    raise ChainError(
                        f"anvil did not answer within {timeout:g}s; last log lines:\n"
                        f"{_log_tail(self._log_path)}"
                    )
                await asyncio.sleep(_POLL_INTERVAL)

    async def stop(self, *, keep_log: bool = False) -> None:
        """Terminate anvil, kill it after a 5 s grace, and reap it. Safe to call twice."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            if not await _exited(process, STOP_GRACE):
                process.kill()
                await _exited(process, None)
        self._forget(keep_log=keep_log)

    def stop_sync(self) -> None:
        """`stop` without an event loop, for `atexit` and signal handlers; blocks up to 5 s."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._forget(keep_log=False)

    def _forget(self, *, keep_log: bool) -> None:
        atexit.unregister(self.stop_sync)
        self._process = None
        self._port = None
        if not keep_log:
            self._discard_log()

    def _discard_log(self) -> None:
        if self._own_log and self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path, self._own_log = None, False
