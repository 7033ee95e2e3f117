"""Audit: the hash-chained, tamper-evident log of security-relevant actions, its verification
and its evidence export. Appends join the caller's database transaction."""

from txgate.audit.log import GENESIS_HASH, VerifyReport, append, entry_hash, export, verify

__all__ = ["GENESIS_HASH", "VerifyReport", "append", "entry_hash", "export", "verify"]
