"""The update: apply records to the state with integer arithmetic (what replay is made of).

A gradient g measured along direction z (seed s) moves tensor group f by
``c_f = -round(lr * g * 2^f)`` units of ``2^-f`` times z: one float64 rounding, then exact
integer work. Contributions that share a seed add their coefficients first, so replay generates
each distinct direction once however many records use it; the float view is refreshed once per
batch. Integer addition (mod 2^32) commutes and is invertible: any order gives the same bits and
``sign=-1`` undoes a batch exactly.

Robust aggregation (``aggregate`` median or trimmed): the peers of a round share its K directions
and the step along each is a robust statistic of their scalars, so a round's contribution is a
function of its whole record set rather than a sum of independent terms. ``plan_set`` gives the
contribution of a set; moving from one set to a larger one applies the difference of the two plans
(``apply_change``), which undoes the old aggregate of every round the new records touch and applies
the new one, exactly, in integers. The statistic is computed from the decoded float64 scalars
sorted by value, with the same IEEE operations everywhere, so every replica gets the same step.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from .codec import Codec, decode_codes
from .config import Aggregate, TrainConfig
from .errors import ProtocolError
from .record import Record
from .seeds import SHARED_PEER, direction_seeds
from .state import FixedPointState

if TYPE_CHECKING:
    from .pool import PoolTotals

__all__ = ["record_seeds", "check_cap", "plan", "plan_set", "robust_step", "apply_plan", "apply_records",
           "apply_change", "effective", "MAX_STEP_UNITS"]

#: Largest |c| one gradient may move a weight, in units of its step 2^-f (2^-2 of the range at
#: the finest step): a record beyond this is rejected by every replica alike.
MAX_STEP_UNITS = 1 << 27

Plan = dict[int, dict[int, int]]  # seed -> {frac_bits: coefficient}


def record_seeds(record: Record, shared: bool, pool: int = 0) -> list[int]:
    """The perturbation seed of each gradient in ``record`` (``shared``: the round's common directions;
    ``pool``: the run's seed pool, 0 for none)."""
    return direction_seeds(record.run_tag, shared, record.round, record.peer_id, record.first_sample, record.count,
                           pool)


def check_cap(record: Record, train: TrainConfig, finest_frac_bits: int) -> None:
    """Raise ``ProtocolError`` if a gradient of ``record`` moves a weight by more than
    ``MAX_STEP_UNITS`` steps: the same test ``plan`` applies (the finest step gives the largest
    coefficient, and rounding is monotone in |x|), without planning the update."""
    g = float(np.max(np.abs(record.gradients()))) if record.count else 0.0
    if abs(round(math.ldexp(train.lr_at(record.round) * g, finest_frac_bits))) > MAX_STEP_UNITS:
        raise _past_cap(record)


def _past_cap(rec: Record) -> ProtocolError:
    return ProtocolError(f"record (round {rec.round}, peer {rec.peer_id:x}) exceeds the per-record update cap")


def plan(records: Iterable[Record], train: TrainConfig, frac_bits: Iterable[int], sign: int = 1) -> Plan:
    """Integer coefficients per (seed, step group) for a batch of records, same seeds merged.

    Each coefficient is ``-round(ldexp(lr * g, f))`` (round half to even, as Python's ``round``), in
    numpy. Under shared directions the records of a round share their seeds: their coefficients are
    summed per direction as int64 columns (``_round_coefficients``) and the round's seeds grown once,
    so a round of n records costs a few (n × K) array passes and K seeds, not n × K Python steps and
    seed hashes (1,000 peers at K = 1,024 spent 5 s a round here on those)."""
    fracs = sorted(set(frac_bits))
    out: Plan = defaultdict(lambda: defaultdict(int))
    if train.shared_directions:
        groups: dict[tuple[bytes, int, int, int], list[Record]] = defaultdict(list)  # a round's records
        for rec in records:
            groups[(rec.run_tag, rec.round, rec.first_sample, rec.count)].append(rec)
        for (tag, round_, first, count), recs in groups.items():
            seeds = direction_seeds(tag, True, round_, SHARED_PEER, first, count, train.seed_pool)
            for f, sums in _round_coefficients(recs, train.lr_at(round_), fracs):
                for seed, ci in zip(seeds, sums.tolist(), strict=True):
                    out[seed][f] += sign * ci
        return out
    lrs: dict[int, float] = {}  # a round's learning rate (a 24-term cosine), once per round, not per record
    for rec in records:
        seeds = record_seeds(rec, False, train.seed_pool)
        lr = lrs[rec.round] if rec.round in lrs else lrs.setdefault(rec.round, train.lr_at(rec.round))
        steps = lr * rec.gradients()  # float64, as lr * float(g)
        for f in fracs:
            for seed, ci in zip(seeds, _coefficients(steps[None, :], f, [rec]).tolist(), strict=True):
                out[seed][f] += sign * ci
    return out


def _round_coefficients(recs: list[Record], lr: float, fracs: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(f, column sums of the coefficients) of records that share their directions and learning rate.

    ``byte`` records (all of them, else the general path) go through a table: a record's coefficient
    depends only on its code and exponent, so each (exponent, code) pair is computed once with the
    same float64 operations as the definition, and the round's codes, decoded into one int8 array,
    index it. Per record that leaves a slice of bytes, not a decode and five float passes."""
    if not all(rec.codec is Codec.BYTE for rec in recs):
        steps = lr * np.stack([rec.gradients() for rec in recs])  # float64, as lr * float(g)
        for f in fracs:
            yield f, _coefficients(steps, f, recs)
        return
    exps = np.fromiter((rec.exponent for rec in recs), dtype=np.int64, count=len(recs))
    codes = decode_codes(exps, [rec.payload for rec in recs], recs[0].count).view(np.uint8)
    present, which = np.unique(exps, return_inverse=True)
    rows = [codes] if len(present) == 1 else [codes[which == i] for i in range(len(present))]
    for f in fracs:
        table = -np.rint(np.ldexp(lr * np.ldexp(_BYTE_CODES, present[:, None]), f))  # (exponents, 256)
        table[:, 0x80] = 0  # code -128: refused by decode_codes
        over = np.abs(table) > MAX_STEP_UNITS
        if over.any():
            hit = np.zeros(len(recs), dtype=bool)
            for i, block in enumerate(rows):
                hit[which == i] = over[i][block].any(axis=1)
            if hit.any():
                raise _past_cap(recs[int(np.argmax(hit))])
            table[over] = 0  # codes no record uses
        small = table.astype(np.int32)  # |c| <= MAX_STEP_UNITS < 2^31
        yield f, sum(np.take(small[i], block).sum(axis=0, dtype=np.int64) for i, block in enumerate(rows))


#: The value of each byte as a ``byte`` code (0x80 is -128, which no valid record holds), float64.
_BYTE_CODES = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.float64)


def _coefficients(steps: np.ndarray, f: int, recs: list[Record]) -> np.ndarray:
    """Column sums of ``-round(ldexp(steps, f))`` (int64; row i is ``recs[i]``'s), or
    ``ProtocolError`` naming the first record past the cap."""
    c = -np.rint(np.ldexp(steps, f))
    over = np.abs(c).max(axis=1) > MAX_STEP_UNITS if c.size else np.zeros(len(recs), bool)
    if over.any():
        rec = recs[int(np.argmax(over))]
        raise _past_cap(rec)
    return c.astype(np.int64).sum(axis=0)


def robust_step(values: list[float], aggregate: Aggregate) -> float:
    """The step along one direction from the peers' scalars: the statistic times their number (so
    honest peers move the model as far as ``sum`` would). Median: the middle value, or the mean of
    the two middle ones; trimmed: the mean after dropping the lowest and highest quarter; clipped:
    the mean of the scalars within ``CLIP_MADS`` robust standard deviations of the median. Python
    floats from decoded codes, sorted first: the same value on every replica in any order."""
    v = sorted(values)
    n = len(v)
    if aggregate is Aggregate.MEDIAN:
        stat = _median(v)
    elif aggregate is Aggregate.TRIMMED:
        t = n // 4
        stat = math.fsum(v[t:n - t]) / (n - 2 * t)
    elif aggregate is Aggregate.CLIPPED:
        # the mean of the scalars within CLIP_MADS robust standard deviations of the median: with no
        # outlier that is sum's step; an outlier (a flipped or capped record) counts not at all, and
        # the others stand in for it, so excluding hostile peers does not also shorten the step
        med = _median(v)
        band = CLIP_MADS * MAD_TO_STD * _median(sorted(abs(x - med) for x in v))
        kept = [x for x in v if abs(x - med) <= band]  # never empty: the middle value(s) lie within
        stat = math.fsum(kept) / len(kept)
    else:
        raise ValueError(f"{aggregate} is not a robust aggregate")
    return stat * n


#: ``clipped``: how far from the median a scalar may lie and still count, in robust standard
#: deviations (the median absolute deviation times MAD_TO_STD, which is 1 for a normal sample).
CLIP_MADS = 3.0
MAD_TO_STD = 1.4826


def _median(v: list[float]) -> float:
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _robust_plan(records: list[Record], train: TrainConfig, frac_bits: Iterable[int], sign: int) -> Plan:
    """Coefficients of effective records under a robust aggregate: per round and direction, one step."""
    fracs = sorted(set(frac_bits))
    columns: dict[tuple[int, int], list[float]] = defaultdict(list)  # (round, sample) -> scalars
    tags: dict[int, bytes] = {}
    for rec in records:
        tags[rec.round] = rec.run_tag
        for k, g in enumerate(rec.gradients()):
            columns[(rec.round, rec.first_sample + k)].append(float(g))
    out: Plan = defaultdict(lambda: defaultdict(int))
    for (round_, sample), values in columns.items():
        step = train.lr_at(round_) * robust_step(values, train.aggregate)
        seed, = direction_seeds(tags[round_], True, round_, SHARED_PEER, sample, 1, train.seed_pool)
        for f in fracs:
            out[seed][f] += sign * -round(math.ldexp(step, f))
    return out


def plan_set(records: Iterable[Record], train: TrainConfig, frac_bits: Iterable[int], sign: int = 1) -> Plan:
    """The contribution of a record *set* to the state: its effective records' coefficients, summed
    (``sum``) or aggregated per round and direction (robust aggregates)."""
    recs = effective(records)
    if train.aggregate is Aggregate.SUM:
        return plan(recs, train, frac_bits, sign)
    return _robust_plan(recs, train, frac_bits, sign)


def apply_change(state: FixedPointState, before: Iterable[Record], after: Iterable[Record],
                 train: TrainConfig, totals: PoolTotals | None = None) -> None:
    """Move the state from holding set ``before`` to holding set ``after``: apply ``plan_set(after)``
    and undo ``plan_set(before)`` in one pass (directions whose coefficient did not change are skipped).
    ``totals``: a seed pool's running totals, moved by the same coefficients (``apply_plan``)."""
    fracs = list(state.frac_bits.values())
    p = plan_set(after, train, fracs)
    for seed, coeffs in plan_set(before, train, fracs, sign=-1).items():
        for f, c in coeffs.items():
            p[seed][f] += c
    apply_plan(state, p, totals)


def _wrap32(c: int) -> int:
    """c mod 2^32 as a signed int32: the same update under wrap-around integer arithmetic."""
    c &= 0xFFFFFFFF
    return c - (1 << 32) if c >= 1 << 31 else c


def apply_plan(state: FixedPointState, p: Plan, totals: PoolTotals | None = None) -> None:
    """Add every planned direction to the accumulators, then refresh the view once. ``totals``: a
    seed pool's running totals (``pool.PoolTotals``), which take the same integer coefficients, so
    the state stays the base plus the sum of total x direction over the pool."""
    items = []
    for seed in sorted(p):
        coeffs = {f: _wrap32(c) for f, c in p[seed].items() if _wrap32(c)}
        if coeffs:
            items.append((seed, coeffs))
    if totals is not None:
        totals.add(items)  # first: a seed outside the pool raises before the state has moved
    state.add_many(items)
    state.refresh()


def apply_records(state: FixedPointState, records: Iterable[Record], train: TrainConfig, sign: int = 1,
                  totals: PoolTotals | None = None) -> None:
    """Apply (``sign=1``) or exactly undo (``sign=-1``) a batch of records (and move ``totals`` alike)."""
    apply_plan(state, plan(records, train, state.frac_bits.values(), sign), totals)


def effective(records: Iterable[Record]) -> list[Record]:
    """The records that count: a slot (round, peer, first sample) holding two different records
    is an equivocation, and neither counts. So the state stays a function of the record *set*,
    whichever of the two arrived first."""
    by_slot: dict[tuple[int, int, int], list[Record]] = defaultdict(list)
    for rec in records:
        by_slot[(rec.round, rec.peer_id, rec.first_sample)].append(rec)
    return [recs[0] for recs in by_slot.values() if len({r.record_id for r in recs}) == 1]
