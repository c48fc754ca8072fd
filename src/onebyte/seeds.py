"""Seeds everyone can regenerate: keyed BLAKE2b over (run tag, purpose, integers).

A perturbation is never sent, only named: ``gradient_seed(run_tag, round, peer, sample)`` is the
64-bit Philox key of the direction that gradient was measured along. Other purposes (which batch
a sample draws, the stochastic rounding of a record) use their own domain so streams never collide.
"""

from __future__ import annotations

import hashlib
import struct

__all__ = ["gradient_seed", "direction_seeds", "stream_seed", "SHARED_PEER"]

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


def direction_seeds(run_tag: bytes, shared: bool, round_: int, peer_id: int, first_sample: int,
                    count: int) -> list[int]:
    """The seeds of the ``count`` directions a peer measures in a round from ``first_sample`` on.

    With ``shared`` directions every peer of a round measures along the same K directions (the
    record still names its author; only the direction's seed drops the peer)."""
    peer = SHARED_PEER if shared else peer_id
    return [gradient_seed(run_tag, round_, peer, first_sample + k) for k in range(count)]
