"""The seed pool: a fine-tune as one integer total per pool seed, and the snapshot that carries them.

With ``seed_pool = P`` every direction of every round is one of the P pool seeds
(``seeds.pool_seeds``). Updates are integer sums (``FixedPointState.add(seed, coeffs)``, one
coefficient per step group f), so however many records a replica has applied, its accumulators are

    A = A_base + sum_p C_p,f * z_p        (int32, wrapping)

with integer totals ``C_p,f`` per pool seed p and step group f. ``PoolTotals`` keeps them beside
the state: every coefficient that reaches the state through ``update.apply_plan`` reaches the totals
too, undos and robust re-aggregations included, so they hold exactly what the state holds.

A **coefficient snapshot** (``Coefficients``) is those totals with the set digest and state hash they
stand for: P x groups integers (16 KiB for P = 4,096 and one group), whatever the length of the run.
It is a complete, verifiable description of the fine-tuned model: regenerate the P directions, add
them to the base (``rebuild``) and the state hash must be the one claimed. A newcomer joins from one
(``Replica.install_coefficients``) at a cost that does not grow with history.

Format, version 1 (little-endian)::

    b"OBCOEF" u8 version              magic and version (1)
    run tag (16 bytes)                the run it belongs to (its base model's hash and math)
    u32 P, u8 G, G x i8 frac bits     pool size, step groups and their exponents (finest first)
    u32 round, u64 records            the round it was taken at, how many records it covers
    set digest (32), state hash (32)  what it claims to be
    P x G x i32 totals                C_p,f mod 2^32, pool order then group order
    u32 CRC-32 of everything before   a damaged or truncated copy is refused, named in one line
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LedgerError
from .record import RUN_TAG_SIZE
from .seeds import pool_seeds
from .state import FixedPointState

__all__ = ["PoolTotals", "Coefficients", "rebuild", "read_join", "group_fracs", "COEF_MAGIC", "COEF_VERSION",
           "MAX_POOL", "TAIL_ROUNDS"]

COEF_MAGIC = b"OBCOEF"
COEF_VERSION = 1
#: The largest pool a snapshot may name (``train.seed_pool``'s bound), and the most step groups.
MAX_POOL = 1 << 20
MAX_GROUPS = 64
#: A coefficient join takes the last TAIL_ROUNDS rounds as records (their slots, digests and
#: equivocations stay visible; a late record of them is still applied), the rounds before as totals.
TAIL_ROUNDS = 8
_HEAD = struct.Struct(f"<6sB{RUN_TAG_SIZE}sIB")
_TAIL = struct.Struct("<IQ32s32s")


def group_fracs(state: FixedPointState) -> tuple[int, ...]:
    """The exponents f of the state's step groups, in its order (finest first): the totals' columns."""
    return tuple(g.frac_bits for g in state.groups)


class PoolTotals:
    """``C_p,f``: the integer total of every pool seed p in every step group f, kept beside the state."""

    def __init__(self, run_tag: bytes, pool: int, fracs: Sequence[int]):
        self.run_tag, self.pool, self.fracs = run_tag, pool, tuple(fracs)
        self.seeds = pool_seeds(run_tag, pool)
        self._row = {s: i for i, s in enumerate(self.seeds)}
        self._col = {f: j for j, f in enumerate(self.fracs)}
        self.c = np.zeros((pool, len(self.fracs)), dtype=np.int64)

    def add(self, items: Iterable[tuple[int, Mapping[int, int]]]) -> None:
        """Add (seed, {f: coefficient}) items, as ``FixedPointState.add_many`` takes them. A seed
        outside the pool is a bug of the caller (the run's directions all come from the pool)."""
        for seed, coeffs in items:
            i = self._row.get(seed)
            if i is None:
                raise ValueError(f"direction seed {seed:x} is not in the run's seed pool")
            for f, c in coeffs.items():
                self.c[i, self._col[f]] += c
        np.bitwise_and(self.c + (1 << 31), 0xFFFFFFFF, out=self.c)  # keep every total in int32's range
        self.c -= 1 << 31

    def add_plan(self, plan: Mapping[int, Mapping[int, int]]) -> None:
        """Add an ``update.plan`` (seed -> {f: coefficient})."""
        self.add(plan.items())

    def load(self, totals: np.ndarray) -> None:
        """Replace the totals (a snapshot's), shape (P, groups)."""
        self.c[...] = totals.astype(np.int64)

    def items(self) -> list[tuple[int, dict[int, int]]]:
        """The non-zero totals as (seed, {f: C}) items: what ``rebuild`` adds to the base."""
        rows = np.flatnonzero(self.c.any(axis=1))
        return [(self.seeds[i], {f: int(self.c[i, j]) for j, f in enumerate(self.fracs) if self.c[i, j]})
                for i in rows]

    def snapshot(self, records: int, set_digest: bytes, state_hash: bytes, round_: int) -> Coefficients:
        return Coefficients(self.run_tag, self.fracs, self.c.astype(np.int32), records, set_digest, state_hash, round_)


@dataclass(frozen=True)
class Coefficients:
    """A coefficient snapshot (see the module): the pool's totals and the (digest, hash) they claim."""

    run_tag: bytes
    fracs: tuple[int, ...]
    totals: np.ndarray  # int32, (P, groups)
    records: int
    set_digest: bytes
    state_hash: bytes
    round: int

    @property
    def pool(self) -> int:
        return int(self.totals.shape[0])

    def to_bytes(self) -> bytes:
        body = (_HEAD.pack(COEF_MAGIC, COEF_VERSION, self.run_tag, self.pool, len(self.fracs))
                + struct.pack(f"<{len(self.fracs)}b", *self.fracs)
                + _TAIL.pack(self.round, self.records, self.set_digest, self.state_hash)
                + self.totals.astype("<i4").tobytes())
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "coefficient snapshot") -> Coefficients:
        """Parse and check a snapshot's bytes: sizes bounded before anything is allocated, then the
        checksum. Anything malformed raises ``LedgerError`` naming ``where`` in one line."""
        if len(data) < _HEAD.size + _TAIL.size + 4:
            raise LedgerError(f"{where}: truncated ({len(data)} bytes)")
        magic, version, tag, pool, groups = _HEAD.unpack_from(data)
        if magic != COEF_MAGIC:
            raise LedgerError(f"{where}: not a coefficient snapshot (bad magic)")
        if version != COEF_VERSION:
            raise LedgerError(f"{where}: version {version} is not supported (this reads {COEF_VERSION})")
        if not (1 <= pool <= MAX_POOL and not pool & (pool - 1)) or not 1 <= groups <= MAX_GROUPS:
            raise LedgerError(f"{where}: impossible pool of {pool} seeds or {groups} step groups")
        size = _HEAD.size + groups + _TAIL.size + 4 * pool * groups + 4
        if len(data) != size:
            raise LedgerError(f"{where}: {len(data)} bytes where {pool} seeds x {groups} groups take {size}"
                              + (" (truncated)" if len(data) < size else ""))
        if zlib.crc32(data[:-4]) != struct.unpack_from("<I", data, size - 4)[0]:
            raise LedgerError(f"{where}: checksum mismatch (damaged)")
        pos = _HEAD.size
        fracs = struct.unpack_from(f"<{groups}b", data, pos)
        round_, records, digest, shash = _TAIL.unpack_from(data, pos + groups)
        totals = np.frombuffer(data, dtype="<i4", count=pool * groups, offset=pos + groups + _TAIL.size)
        return cls(tag, tuple(fracs), totals.reshape(pool, groups).astype(np.int32), records, digest, shash, round_)


def rebuild(state: FixedPointState, coefs: Coefficients, where: str = "coefficient snapshot") -> None:
    """Move ``state`` (holding the base) to base + sum_p C_p z_p, regenerating the pool's directions,
    and check the claimed state hash. On a mismatch the state is put back and ``LedgerError`` raised."""
    if coefs.fracs != group_fracs(state):
        raise LedgerError(f"{where}: step groups {list(coefs.fracs)} are not this state's {list(group_fracs(state))}")
    totals = PoolTotals(coefs.run_tag, coefs.pool, coefs.fracs)
    totals.load(coefs.totals)
    before = {k: v.clone() for k, v in state.tensors().items()}
    state.add_many(totals.items())
    state.refresh()
    if state.state_hash() != coefs.state_hash.hex():
        state.load_tensors(before)
        raise LedgerError(f"{where}: the state rebuilt from its totals does not match its state hash")


def read_join(path: Path | None, state: FixedPointState, totals: PoolTotals | None, entries: int
              ) -> tuple[int, int, Coefficients] | None:
    """After a coefficient join, on restart: the snapshot the peer joined from (``coefficients.obc``:
    u32 first round held as records, u32 ledger entries that came with it, then the snapshot),
    rebuilt into ``state`` (at the base) and ``totals``. Returns (first round held as records, ledger
    entries covered, the snapshot), or None without a join. ``entries``: how many the ledger holds."""
    if path is None or not path.exists():
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read the coefficient snapshot this peer joined from: {exc}") from None
    if len(data) < 8 or totals is None:
        raise LedgerError(f"{path}: truncated, or this run has no seed pool")
    tail_from, n = struct.unpack_from("<II", data)
    coefs = Coefficients.from_bytes(data[8:], str(path))
    if n > entries:
        raise LedgerError(f"{path}: covers {n} ledger entries, the ledger holds {entries}")
    rebuild(state, coefs, str(path))
    totals.load(coefs.totals)
    return tail_from, n, coefs
