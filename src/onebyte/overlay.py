"""The round's relay tree: who passes a record on to whom once a swarm outgrows a full mesh.

Up to ``DEGREE + 1`` peers a record goes straight from its author to every other peer (a full
mesh, one hop). In a larger swarm each round arranges the peers in a tree in which every peer has
at most ``DEGREE`` neighbours: a heap of branching ``DEGREE - 1`` over a permutation of the peer
ids drawn from the round (``order``), so who carries most changes from round to round. A record
travels along the tree of its own round: its author pushes it to its neighbours, and each peer that
accepts it as new passes it on to its neighbours but the one on the path back to the author
(``onward``). With one view of who is there every peer receives each record exactly once, an
author sends its record ``DEGREE`` times whatever the swarm's size, and relays coalesce what they
pass on to one neighbour into one message; the bytes a peer sends per round are then about the
n − 1 records every peer must receive (the floor of any dissemination of signed records, averaged
over the peers) plus a bounded number of framings, where a full mesh costs n − 1 framings per record.

Each peer computes the tree from its own view of who is live. Where views differ a record may take
a detour (intake drops the duplicate, and nothing is passed on twice: the seen set is the replica's)
or miss a branch (a failed hop skips to the failed peer's own neighbours; the round-start fetch, the
DHT copy and anti-entropy sync find what is still missing). A relay passes on the bytes it verified:
the author's HMAC or signature covers every byte, so a relay can drop a record, never alter it.

Pure functions of (round, peer ids): no network, no state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["DEGREE", "mesh", "order", "neighbours", "onward"]

#: The most peers a peer pushes to directly per record: its neighbours in the round's tree (and the
#: largest swarm, minus one, that stays a full mesh). gossipsub's mesh degree is 6 to 12.
DEGREE = 6


def mesh(peers: int, degree: int = DEGREE) -> bool:
    """Whether a swarm of ``peers`` stays a full mesh (every record one hop from its author)."""
    return peers <= degree + 1


def order(r: int, peers: Iterable[int]) -> list[int]:
    """The round's permutation of ``peers``: sorted by a hash of (round, id), the same everywhere."""
    def key(p: int) -> bytes:
        return hashlib.blake2b(r.to_bytes(8, "little") + p.to_bytes(8, "little"), digest_size=8).digest()

    return sorted(set(peers), key=lambda p: (key(p), p))


def _tree(r: int, peers: Iterable[int], degree: int) -> tuple[list[int], dict[int, int], int]:
    ids = order(r, peers)
    return ids, {p: i for i, p in enumerate(ids)}, max(2, degree - 1)


def _links(i: int, n: int, b: int) -> list[int]:
    """Heap positions next to position i: its parent, then its children."""
    up = [(i - 1) // b] if i else []
    return up + [c for c in range(b * i + 1, min(b * i + b + 1, n))]


def neighbours(r: int, me: int, peers: Iterable[int], degree: int = DEGREE) -> list[int]:
    """Where ``me`` pushes its own record of round r: every other peer in a mesh, else its
    neighbours in the round's tree (at most ``degree``). ``peers``: who is there (``me`` included
    or not)."""
    ids, at, b = _tree(r, {*peers, me}, degree)
    if mesh(len(ids), degree):
        return [p for p in ids if p != me]
    return [ids[j] for j in _links(at[me], len(ids), b)]


def onward(r: int, me: int, author: int, peers: Iterable[int], degree: int = DEGREE) -> list[int]:
    """Where ``me`` passes on ``author``'s record of round r: nowhere in a mesh (the author reached
    everyone), else its tree neighbours but the one towards the author (from whom it came)."""
    ids, at, b = _tree(r, {*peers, me, author}, degree)
    if me == author:
        return neighbours(r, me, ids, degree)
    if mesh(len(ids), degree):
        return []
    i, a = at[me], at[author]
    back = a
    while back and (back - 1) // b != i:  # climb from the author: reaching i's child means it is below i
        back = (back - 1) // b
    towards = back if back and (back - 1) // b == i else (i - 1) // b
    return [ids[j] for j in _links(i, len(ids), b) if j != towards]
