"""Seeds everyone can regenerate: keyed BLAKE2b over (run tag, purpose, integers).

A perturbation is never sent, only named: ``gradient_seed(run_tag, round, peer, sample)`` is the
64-bit Philox key of the direction that gradient was measured along. Other purposes (which batch
a sample draws, the stochastic rounding of a record) use their own domain so streams never collide.

**Seed pool** (``seed_pool = P``): every direction is then one of P pool seeds
``pool_seeds(run_tag, P)``. Which one is a function of (round, peer, sample) everyone computes:
sample k of (round r, peer p) takes pool index ``(a k + b) mod P``, with ``a`` odd and ``b`` drawn
from ``stream_seed(run_tag, "pool pick", r, p)``. P is a power of two, so an odd ``a`` makes this a
permutation of the pool: up to P directions of one (round, peer) are all distinct, and over rounds
every pool seed is used equally often.
"""

from __future__ import annotations

import functools
import hashlib
import struct

__all__ = ["gradient_seed", "direction_seeds", "stream_seed", "pool_seeds", "pool_indices", "SHARED_PEER"]

#: Peer id used for directions shared by all peers of a round (``directions = N`` mode).
SHARED_PEER = (1 << 64) - 1


def stream_seed(run_tag: bytes, purpose: str, *values: int) -> int:
    """A 64-bit seed for ``purpose`` and the non-negative integers ``values`` under ``run_tag``."""
    if len(purpose) > 16 or not purpose:
        raise ValueError("purpose must be 1..16 characters")
    for v in values:
        if not 0 <= v < 1 << 64:
            raise ValueError(f"seed input {v} out of the unsigned 64-bit range")
    h = hashlib.blake2b(
        struct.pack(f"<{len(values)}Q", *values),
        key=run_tag,
        digest_size=8,
        person=purpose.encode().ljust(16, b"\0"),
    )
    return int.from_bytes(h.digest(), "little")


def gradient_seed(run_tag: bytes, round_: int, peer_id: int, sample: int) -> int:
    """The seed of the perturbation for (round, peer, sample index)."""
    return stream_seed(run_tag, "direction", round_, peer_id, sample)


@functools.lru_cache(maxsize=8)
def pool_seeds(run_tag: bytes, pool: int) -> tuple[int, ...]:
    """The P seeds of a run's seed pool, in pool order."""
    return tuple(stream_seed(run_tag, "pool", i) for i in range(pool))


def pool_indices(run_tag: bytes, pool: int, round_: int, peer: int, first_sample: int, count: int) -> list[int]:
    """Pool indices of samples ``first_sample`` .. ``+count`` of (round, peer): ``(a k + b) mod P``."""
    key = stream_seed(run_tag, "pool pick", round_, peer)
    a, b = (2 * (key >> 32) + 1) % pool, key % pool
    return [(a * (first_sample + k) + b) % pool for k in range(count)]


def direction_seeds(run_tag: bytes, shared: bool, round_: int, peer_id: int, first_sample: int,
                    count: int, pool: int = 0) -> list[int]:
    """The seeds of the ``count`` directions a peer measures in a round from ``first_sample`` on.

    With ``shared`` directions every peer of a round measures along the same K directions (the
    record still names its author; only the direction's seed drops the peer). With a seed ``pool``
    (P > 0) each is one of the P pool seeds (see the module)."""
    peer = SHARED_PEER if shared else peer_id
    if pool:
        seeds = pool_seeds(run_tag, pool)
        return [seeds[i] for i in pool_indices(run_tag, pool, round_, peer, first_sample, count)]
    return [gradient_seed(run_tag, round_, peer, first_sample + k) for k in range(count)]
