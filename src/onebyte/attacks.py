"""Hostile insiders for the simulator: ``simulate --attack KIND:FRACTION``.

That fraction of the virtual peers (the last ones, at least one) hold the swarm's credentials and
measure like everyone else, then publish what they like within what every replica accepts (the
per-gradient update cap; a record over it is refused everywhere, so an attacker stays under it):

* ``signflip``: the negated measurement, four times as large;
* ``max``: the largest value the cap allows, against the sign of the measurement;
* ``random``: values drawn uniformly across the whole allowed range;
* ``sybil``: each hostile site also publishes as ``SYBILS`` more peer ids, every record sign-flipped;
  identities (one key, one listed peer id) refuse the extra ids, and ``identities=False`` shows
  what the swarm secret alone would let through;
* ``lie-late``: sign-flipped records held back ``LATE`` rounds and released after the others of
  their round were applied (under a robust aggregate the round's step is then recomputed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import TrainConfig
from .errors import ConfigError, ProtocolError
from .record import Record, build_record
from .seeds import stream_seed
from .update import MAX_STEP_UNITS, check_cap

__all__ = ["Attack", "Attacker", "KINDS", "SYBILS", "LATE"]

KINDS = ("signflip", "max", "random", "sybil", "lie-late")
#: Extra peer ids a ``sybil`` site claims, and the rounds a ``lie-late`` record is held back.
SYBILS = 3
LATE = 2
FLIP = 4.0
#: Attack values stay this far inside the cap, so the codec's rounding never pushes them over.
MARGIN = 0.9


@dataclass(frozen=True)
class Attack:
    kind: str
    fraction: float

    @classmethod
    def parse(cls, text: str) -> Attack:
        """``KIND:FRACTION``, e.g. ``signflip:0.25``."""
        kind, _, frac = str(text).partition(":")
        if kind not in KINDS:
            raise ConfigError.of("attack", f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        try:
            fraction = float(frac)
        except ValueError:
            raise ConfigError.of("attack", f"needs KIND:FRACTION (e.g. {kind}:0.25), not {text!r}") from None
        if not 0 < fraction < 1:
            raise ConfigError.of("attack", f"fraction must be in (0, 1), not {frac}")
        return cls(kind, fraction)

    def hostile(self, peers: int) -> list[int]:
        """The hostile virtual peers: the last round(fraction x peers), at least one."""
        n = min(peers, max(1, round(self.fraction * peers)))
        return list(range(peers - n, peers))

    def __str__(self) -> str:
        return f"{self.kind}:{self.fraction:g}"


class Attacker:
    """Turns the hostile peers' honest records of a round into what they publish (and when)."""

    def __init__(self, attack: Attack, peers: int, train: TrainConfig, finest_frac_bits: int, run_tag: bytes):
        self.attack, self.train, self.finest, self.tag = attack, train, finest_frac_bits, run_tag
        self.hostile = set(attack.hostile(peers))
        self.held: list[tuple[int, Record]] = []  # (release round, record): lie-late
        self.refused = 0

    def round(self, r: int, records: list[Record], last: bool = False) -> list[Record]:
        """The records published in round ``r``: honest ones as measured, hostile ones replaced
        (and sybils added); held-back records whose release round came (all of them when ``last``)."""
        out = []
        for rec in records:
            if rec.peer_id not in self.hostile:
                out.append(rec)
                continue
            kind = self.attack.kind
            g = rec.gradients()
            if kind == "max":
                bad = np.where(g < 0, 1.0, -1.0) * self._limit(r)
            elif kind == "random":
                rng = np.random.default_rng(stream_seed(self.tag, "attack", r, rec.peer_id))
                bad = rng.uniform(-1.0, 1.0, size=g.shape) * self._limit(r)
            else:
                bad = np.clip(-FLIP * g, -self._limit(r), self._limit(r))
            forged = self._encode(rec, r, rec.peer_id, bad)
            if kind == "lie-late":
                self.held.append((r + LATE, forged))
                continue
            out.append(forged)
            if kind == "sybil":
                out += [self._encode(rec, r, _sybil_id(rec.peer_id, j), bad) for j in range(SYBILS)]
        due = [rec for when, rec in self.held if last or when <= r]
        self.held = [(when, rec) for when, rec in self.held if not (last or when <= r)]
        kept = []
        for rec in out + due:
            try:
                check_cap(rec, self.train, self.finest)
                kept.append(rec)
            except ProtocolError:  # every replica would refuse it
                self.refused += 1
        return kept

    def _limit(self, r: int) -> float:
        """The largest |scalar| the per-gradient cap admits in round ``r``, less a margin."""
        return MARGIN * math.ldexp(MAX_STEP_UNITS, -self.finest) / self.train.lr_at(r)

    def _encode(self, rec: Record, r: int, peer: int, values: np.ndarray) -> Record:
        seed = stream_seed(self.tag, "attack-round", r, peer)
        return build_record(rec.codec, rec.run_tag, r, peer, rec.first_sample, values, seed)


def _sybil_id(peer: int, j: int) -> int:
    return (1 << 40) + peer * 64 + j
