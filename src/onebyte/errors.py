"""The exception tree: every error onebyte raises on purpose derives from ``OnebyteError``."""

from __future__ import annotations

__all__ = [
    "OnebyteError",
    "ConfigError",
    "DataError",
    "ModelError",
    "ProtocolError",
    "LedgerError",
    "DivergenceError",
]


class OnebyteError(Exception):
    """Base of all onebyte errors; the CLI prints its message on one line and exits 2."""


class ConfigError(OnebyteError):
    """A configuration value or flag is invalid (all problems are reported together)."""


class DataError(OnebyteError):
    """Training or evaluation data is missing, unreadable or malformed."""


class ModelError(OnebyteError):
    """A model cannot be loaded, or is not the base the run was started from."""


class ProtocolError(OnebyteError):
    """A record (from a peer or a file) is malformed, for another run, or fails authentication."""


class LedgerError(OnebyteError):
    """A ledger file is corrupt beyond a torn tail, or is not a ledger at all."""


class DivergenceError(OnebyteError):
    """Training produced non-finite values, or replicas with equal record sets disagree."""
