"""The update: apply records to the state with integer arithmetic (what replay is made of).

A gradient g measured along direction z (seed s) moves tensor group f by
``c_f = -round(lr * g * 2^f)`` units of ``2^-f`` times z: one float64 rounding, then exact
integer work. Contributions that share a seed add their coefficients first, so replay generates
each distinct direction once however many records use it; the float view is refreshed once per
batch. Integer addition (mod 2^32) commutes and is invertible: any order gives the same bits and
``sign=-1`` undoes a batch exactly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from .config import Directions, TrainConfig
from .errors import ProtocolError
from .record import Record
from .seeds import direction_seeds
from .state import FixedPointState

__all__ = ["record_seeds", "check_cap", "plan", "apply_plan", "apply_records", "effective", "MAX_STEP_UNITS"]

#: Largest |c| one gradient may move a weight, in units of its step 2^-f (2^-2 of the range at
#: the finest step): a record beyond this is rejected by every replica alike.
MAX_STEP_UNITS = 1 << 27

Plan = dict[int, dict[int, int]]  # seed -> {frac_bits: coefficient}


def record_seeds(record: Record, directions: Directions) -> list[int]:
    """The perturbation seed of each gradient in ``record``."""
    return direction_seeds(record.run_tag, directions is Directions.SHARED, record.round, record.peer_id,
                           record.first_sample, record.count)


def check_cap(record: Record, train: TrainConfig, finest_frac_bits: int) -> None:
    """Raise ``ProtocolError`` if a gradient of ``record`` moves a weight by more than
    ``MAX_STEP_UNITS`` steps: the same test ``plan`` applies (the finest step gives the largest
    coefficient, and rounding is monotone in |x|), without planning the update."""
    g = float(np.max(np.abs(record.gradients()))) if record.count else 0.0
    if abs(round(math.ldexp(train.lr_at(record.round) * g, finest_frac_bits))) > MAX_STEP_UNITS:
        raise ProtocolError(f"record (round {record.round}, peer {record.peer_id:x}) exceeds the per-record update cap")


def plan(records: Iterable[Record], train: TrainConfig, frac_bits: Iterable[int], sign: int = 1) -> Plan:
    """Integer coefficients per (seed, step group) for a batch of records, same seeds merged."""
    fracs = sorted(set(frac_bits))
    out: Plan = defaultdict(lambda: defaultdict(int))
    for rec in records:
        lr = train.lr_at(rec.round)
        seeds = record_seeds(rec, train.directions)
        for seed, g in zip(seeds, rec.gradients(), strict=True):
            step = lr * float(g)
            for f in fracs:
                c = -round(math.ldexp(step, f))
                if abs(c) > MAX_STEP_UNITS:
                    raise ProtocolError(
                        f"record (round {rec.round}, peer {rec.peer_id:x}) exceeds the per-record update cap")
                out[seed][f] += sign * c
    return out


def _wrap32(c: int) -> int:
    """c mod 2^32 as a signed int32: the same update under wrap-around integer arithmetic."""
    c &= 0xFFFFFFFF
    return c - (1 << 32) if c >= 1 << 31 else c


def apply_plan(state: FixedPointState, p: Plan) -> None:
    """Add every planned direction to the accumulators, then refresh the view once."""
    items = []
    for seed in sorted(p):
        coeffs = {f: _wrap32(c) for f, c in p[seed].items() if _wrap32(c)}
        if coeffs:
            items.append((seed, coeffs))
    state.add_many(items)
    state.refresh()


def apply_records(state: FixedPointState, records: Iterable[Record], train: TrainConfig, sign: int = 1) -> None:
    """Apply (``sign=1``) or exactly undo (``sign=-1``) a batch of records."""
    apply_plan(state, plan(records, train, state.frac_bits.values(), sign))


def effective(records: Iterable[Record]) -> list[Record]:
    """The records that count: a slot (round, peer, first sample) holding two different records
    is an equivocation, and neither counts. So the state stays a function of the record *set*,
    whichever of the two arrived first."""
    by_slot: dict[tuple[int, int, int], list[Record]] = defaultdict(list)
    for rec in records:
        by_slot[(rec.round, rec.peer_id, rec.first_sample)].append(rec)
    return [recs[0] for recs in by_slot.values() if len({r.record_id for r in recs}) == 1]
