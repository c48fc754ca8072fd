"""onebyte: several machines fine-tune one model, sending one byte per projected gradient.

A decentralized, exact form of SPSA/MeZO with shared randomness (Zelikman et al., 2023,
"Just One Byte (per gradient)"): peers publish seeds' worth of scalars, every replica
regenerates the perturbations and applies every record with integer arithmetic.

The public face::

    import onebyte
    spec = onebyte.RunSpec.load("run.toml")            # or onebyte.RunSpec(model=..., task=..., ...)
    result = onebyte.simulate(spec, peers=4, rounds=100, out="runs/x")
    tuned = onebyte.replay("runs/x")
    with onebyte.Peer.open(spec, out="site-a", join=[addr], secret_file="swarm.key") as peer:
        peer.run(rounds=100)

Importing onebyte does not import torch: the heavy names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .codec import Codec
from .config import Balance, Directions, ObjectiveKind, Run, RunSpec, TrainConfig, Weighting
from .errors import (
    BudgetExhausted,
    CatchUpError,
    ConfigError,
    DataError,
    DivergenceError,
    LedgerError,
    MissingDependency,
    ModelError,
    NetworkError,
    NetworkTimeout,
    OnebyteError,
    PeerProcessError,
    PeerUnreachable,
    ProtocolError,
    RunMismatch,
    StorageError,
)

if TYPE_CHECKING:
    from .api import Replayed, replay, simulate
    from .identity import SiteKey
    from .peer import Peer, PeerOptions
    from .privacy import DPConfig
    from .simulator import SimResult

__version__ = "0.1.0"

_LAZY = {
    "simulate": ("api", "simulate"),
    "replay": ("api", "replay"),
    "Replayed": ("api", "Replayed"),
    "SimResult": ("simulator", "SimResult"),
    "Peer": ("peer", "Peer"),
    "PeerOptions": ("peer", "PeerOptions"),
    "DPConfig": ("privacy", "DPConfig"),
    "SiteKey": ("identity", "SiteKey"),
}

__all__ = [
    "BudgetExhausted",
    "Codec",
    "ConfigError",
    "DPConfig",
    "DataError",
    "Directions",
    "DivergenceError",
    "LedgerError",
    "MissingDependency",
    "ModelError",
    "NetworkError",
    "NetworkTimeout",
    "CatchUpError",
    "ObjectiveKind",
    "OnebyteError",
    "Peer",
    "PeerOptions",
    "PeerProcessError",
    "PeerUnreachable",
    "ProtocolError",
    "Replayed",
    "Run",
    "RunMismatch",
    "RunSpec",
    "SimResult",
    "SiteKey",
    "StorageError",
    "TrainConfig",
    "Balance",
    "Weighting",
    "replay",
    "simulate",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'onebyte' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
