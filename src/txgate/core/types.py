"""Domain values parsed once at the edge: addresses, base-unit amounts, hex bytes.

Inside txgate an address is a checksummed `str`, an amount an `int` in base units, and bytes are
`bytes`. The parsers here raise `InvalidParams` naming the parameter, so every edge reports bad
input the same way.
"""

from __future__ import annotations

import re
from typing import NewType

from eth_utils.address import to_checksum_address

from txgate.core.errors import InvalidParams

Address = NewType("Address", str)
"""An EIP-55 checksummed address."""

UINT256_MAX = 2**256 - 1

# Used with `fullmatch`: `$` with `match` would also accept a trailing newline.
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
_UINT_RE = re.compile(r"^0x[0-9a-fA-F]+$")
_BYTES_RE = re.compile(r"^0x(?:[0-9a-fA-F]{2})*$")


def parse_address(value: object, *, param: str) -> Address:
    if not isinstance(value, str) or not _ADDRESS_RE.fullmatch(value):
        raise InvalidParams(f"{param} must be a 0x-prefixed 20-byte hex address", param=param)
    return Address(to_checksum_address(value))


def checksum(address: str) -> Address:
    """EIP-55 form of a stored (lower-case) address, for output."""
    return Address(to_checksum_address(address))


def normalise_address(address: str) -> str:
    """The form addresses are stored and compared in: lower-case hex."""
    return address.lower()


def parse_uint(value: object, *, param: str, maximum: int = UINT256_MAX) -> int:
    """A 0x-prefixed hex quantity (the JSON-RPC `uint`), as an int in base units."""
    if isinstance(value, bool) or not isinstance(value, str) or not _UINT_RE.fullmatch(value):
        raise InvalidParams(
            f"{param} must be a 0x-prefixed hex unsigned integer, got {_show(value)}", param=param
        )
    number = int(value, 16)
    if number > maximum:
        raise InvalidParams(f"{param} is larger than {maximum:#x}", param=param)
    return number


def parse_bytes(value: object, *, param: str) -> bytes:
    if not isinstance(value, str) or not _BYTES_RE.fullmatch(value):
        raise InvalidParams(
            f"{param} must be 0x-prefixed hex bytes of even length, got {_show(value)}", param=param
        )
    return bytes.fromhex(value[2:])


def to_hex_uint(number: int) -> str:
    return hex(number)


def to_hex_bytes(data: bytes) -> str:
    return "0x" + data.hex()


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
