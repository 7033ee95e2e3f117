"""The JSON-RPC 2.0 client every part of txgate uses to talk to an Ethereum node.

`NodeClient` owns one pooled `httpx.AsyncClient` per node, the framing of single and batched
calls, and the one place where transport failures and node errors become `ChainError`.
Hex is parsed here, once: the typed methods return `int`, `bytes` and plain dicts.

The node URL may carry credentials (`user:pass@`, `?apikey=`, a key in the path); they are
sent to the node but never appear in an error message or a `repr` — only `host:port` does.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from txgate.core.errors import ChainError

# Used when the node does not implement `eth_maxPriorityFeePerGas` (1 gwei, the common default).
DEFAULT_PRIORITY_FEE = 1_000_000_000

JsonRpcCall = tuple[str, Sequence[Any]]


def node_endpoint(url: str) -> str:
    """`host:port` of `url`: the only part of a node URL that is safe to show."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "<invalid node url>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{port}"


def to_hex(value: int | bytes | str) -> str:
    """A JSON-RPC quantity (`int`) or data (`bytes`) as hex; strings pass through unchanged."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a JSON-RPC quantity")
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    return value


def rpc_tx(tx: Mapping[str, Any]) -> dict[str, Any]:
    """A call/transaction object with `int` and `bytes` fields turned into JSON-RPC hex."""
    out: dict[str, Any] = {}
    for key, value in tx.items():
        if value is None:
            continue
        if isinstance(value, list):  # accessList and the like are passed as given
            out[key] = value
        else:
            out[key] = to_hex(value)
    return out


def parse_quantity(value: Any) -> int:
    """An `int` from a node's hex quantity; a malformed one is the node's fault."""
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise ChainError(f"node returned a malformed quantity: {str(value)[:66]!r}")


def parse_data(value: Any) -> bytes:
    """`bytes` from a node's hex data."""
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise ChainError(f"node returned malformed data: {str(value)[:66]!r}")


class NodeClient:
    """Async JSON-RPC 2.0 client for one node, sharing one connection pool across calls.

    `transport` lets tests (and embedders) swap httpx's transport, e.g. `httpx.MockTransport`.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url
        self._endpoint = node_endpoint(url)
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"content-type": "application/json", "accept": "application/json"},
            # A node answers JSON-RPC, never a redirect worth following with our body.
            follow_redirects=False,
        )

    @property
    def endpoint(self) -> str:
        """`host:port` of the node, safe to log."""
        return self._endpoint

    def __repr__(self) -> str:
        return f"NodeClient({self._endpoint})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- framing ---------------------------------------------------------------------------

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """The `result` of one JSON-RPC call; a node error raises `ChainError`."""
        request_id = next(self._ids)
        body = await self._post(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        )
        if not isinstance(body, dict):
            raise ChainError(f"node at {self._endpoint} sent a malformed JSON-RPC response")
        return self._outcome(method, body, raise_error=True)

    async def batch(self, calls: Sequence[JsonRpcCall]) -> list[Any | ChainError]:
        """Results of `calls` sent in one HTTP request, in order; a failed call's slot holds its
        `ChainError` instead of raising, so one bad call does not lose the others' answers."""
        if not calls:
            return []
        ids = [next(self._ids) for _ in calls]
        payload = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": list(params)}
            for i, (method, params) in zip(ids, calls, strict=True)
        ]
        body = await self._post(payload)
        if isinstance(body, dict):
            # A node that rejects the batch as a whole answers with a single error object.
            self._outcome("batch", body, raise_error=True)
        if not isinstance(body, list):
            raise ChainError(f"node at {self._endpoint} sent a malformed JSON-RPC batch response")
        by_id = {item.get("id"): item for item in body if isinstance(item, dict)}
        results: list[Any | ChainError] = []
        for request_id, (method, _) in zip(ids, calls, strict=True):
            item = by_id.get(request_id)
            if item is None:
                results.append(ChainError(f"{method}: node at {self._endpoint} sent no answer"))
            else:
                results.append(self._outcome(method, item, raise_error=False))
        return results

    def _outcome(self, method: str, body: dict[str, Any], *, raise_error: bool) -> Any:
        """The result of one response object, or its error as a `ChainError`."""
        if "error" in body and body["error"] is not None:
            raw = body["error"]
            if isinstance(raw, dict):
                message = f"{method}: {raw.get('message', 'node error')} (code {raw.get('code')})"
            else:
                message = f"{method}: {raw}"
            error = ChainError(message, rpc_error=raw)
            if raise_error:
                raise error
            return error
        if "result" not in body:
            error = ChainError(f"{method}: node at {self._endpoint} sent neither result nor error")
            if raise_error:
                raise error
            return error
        return body["result"]

    async def _post(self, payload: Any) -> Any:
        """POST `payload` and return the decoded JSON body; the only place that maps transport
        failures to `ChainError`. Causes are suppressed because httpx errors carry the full URL."""
        where = self._endpoint
        try:
            response = await self._http.post(self._url, content=json.dumps(payload).encode())
        except httpx.TimeoutException:
            raise ChainError(f"node at {where} did not answer within {self._timeout:g}s") from None
        except httpx.ConnectError:
            raise ChainError(f"cannot connect to node at {where}") from None
        except httpx.HTTPError as exc:
            raise ChainError(
                f"transport error talking to node at {where}: {type(exc).__name__}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            # Some providers put a JSON-RPC error in a 4xx/5xx body; it says more than the status.
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                self._outcome("request", body, raise_error=True)
            raise ChainError(f"node at {where} answered HTTP {response.status_code}")
        if body is None:
            raise ChainError(f"node at {where} sent a non-JSON answer")
        return body

    # -- typed methods ---------------------------------------------------------------------

    async def chain_id(self) -> int:
        return parse_quantity(await self.call("eth_chainId"))

    async def block_number(self) -> int:
        return parse_quantity(await self.call("eth_blockNumber"))

    async def get_transaction_count(self, address: str, block: int | str = "pending") -> int:
        return parse_quantity(await self.call("eth_getTransactionCount", [address, to_hex(block)]))

    async def get_balance(self, address: str, block: int | str = "latest") -> int:
        return parse_quantity(await self.call("eth_getBalance", [address, to_hex(block)]))

    async def get_code(self, address: str, block: int | str = "latest") -> bytes:
        return parse_data(await self.call("eth_getCode", [address, to_hex(block)]))

    async def send_raw_transaction(self, raw: bytes) -> str:
        """Broadcast a signed transaction; returns its hash as 0x-hex."""
        tx_hash = await self.call("eth_sendRawTransaction", [to_hex(raw)])
        if not isinstance(tx_hash, str):
            raise ChainError("eth_sendRawTransaction: node returned no transaction hash")
        return tx_hash

    async def get_transaction_receipt(self, tx_hash: str | bytes) -> dict[str, Any] | None:
        """The receipt, or `None` while the transaction is not mined."""
        return await self.call("eth_getTransactionReceipt", [to_hex(tx_hash)])

    async def get_transaction(self, tx_hash: str | bytes) -> dict[str, Any] | None:
        """The transaction, or `None` when the node does not know it."""
        return await self.call("eth_getTransactionByHash", [to_hex(tx_hash)])

    async def get_block(
        self, number_or_tag: int | str = "latest", *, full_transactions: bool = False
    ) -> dict[str, Any]:
        """A block by number or tag (`latest`, `safe`, `finalized`, ...)."""
        block = await self.call("eth_getBlockByNumber", [to_hex(number_or_tag), full_transactions])
        if not isinstance(block, dict):
            raise ChainError(f"node has no block {number_or_tag!r}")
        return block

    async def eth_call(self, tx: Mapping[str, Any], block: int | str = "latest") -> bytes:
        """Run `tx` read-only; a revert raises `ChainError`; `rpc_error` keeps the revert data."""
        return parse_data(await self.call("eth_call", [rpc_tx(tx), to_hex(block)]))

    async def estimate_gas(self, tx: Mapping[str, Any]) -> int:
        return parse_quantity(await self.call("eth_estimateGas", [rpc_tx(tx)]))

    async def fee_suggestion(self) -> tuple[int, int]:
        """`(max_fee_per_gas, max_priority_fee_per_gas)` for an EIP-1559 transaction.

        Twice the latest base fee leaves room for six full blocks of base-fee growth before the
        transaction stops being includable. One round trip: block and tip are batched.
        """
        block, tip = await self.batch(
            [("eth_getBlockByNumber", ["latest", False]), ("eth_maxPriorityFeePerGas", [])]
        )
        if isinstance(block, ChainError):
            raise block
        priority = DEFAULT_PRIORITY_FEE if isinstance(tip, ChainError) else parse_quantity(tip)
        base_fee = block.get("baseFeePerGas") if isinstance(block, dict) else None
        if base_fee is None:
            # Pre-London chain: no base fee, so the legacy gas price is the whole fee.
            gas_price = parse_quantity(await self.call("eth_gasPrice"))
            return gas_price, gas_price
        return 2 * parse_quantity(base_fee) + priority, priority
