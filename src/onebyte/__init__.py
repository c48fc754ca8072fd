"""onebyte: several machines fine-tune one model, sending one byte per projected gradient.

A decentralized, exact form of SPSA/MeZO with shared randomness (Zelikman et al., 2023,
"Just One Byte (per gradient)"): peers publish seeds' worth of scalars, every replica
regenerates the perturbations and applies every record with integer arithmetic.
"""

from .codec import Codec
from .config import Directions, RunSpec, TrainConfig
from .errors import (
    ConfigError,
    DataError,
    DivergenceError,
    LedgerError,
    ModelError,
    OnebyteError,
    ProtocolError,
)
from .record import Record, SetDigest, decode_record
from .replay import apply_records
from .simulate import SimConfig, simulate
from .state import FixedPointState

__all__ = [
    "Codec",
    "ConfigError",
    "DataError",
    "Directions",
    "DivergenceError",
    "FixedPointState",
    "LedgerError",
    "ModelError",
    "OnebyteError",
    "ProtocolError",
    "Record",
    "RunSpec",
    "SetDigest",
    "SimConfig",
    "TrainConfig",
    "apply_records",
    "decode_record",
    "simulate",
]

__version__ = "0.1.0"
