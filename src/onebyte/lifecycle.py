"""Starting and stopping: the quorum wait before a peer's first round, and the drain after its last.

No barrier makes peers agree (the state is a function of the record set); these two waits only make
a swarm start together and leave together. Before its first round a peer waits until ``min_peers``
peers are live, or until some peer has started; after its last it waits until every live peer has
finished with the same record set, bounded by ``drain_timeout`` *without progress*. Both take the
parts they read (gossip, replica, options), never the peer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .gossip import IDLE_REFRESH, PRIVATE_REFRESH, Gossip
from .options import PeerOptions
from .replica import Replica

__all__ = ["wait_for_quorum", "drain", "DRAIN_CAP"]

log = logging.getLogger(__name__)

#: A draining peer waits ``drain_timeout`` past the last progress it saw, and at most this many
#: times ``drain_timeout`` in all.
DRAIN_CAP = 10


def wait_for_quorum(gossip: Gossip, replica: Replica, opts: PeerOptions, round_: int,
                    stop: threading.Event | None = None) -> None:
    """Before the first round (``round_``, the peer's next), until ``min_peers`` peers are live
    (bounded by ``quorum_timeout``): a swarm whose sites start minutes apart then begins together,
    instead of the first ones training alone and the others catching up. A peer that restarts or
    joins a running swarm finds the others already there; and once any peer has started (a record
    of a round this one has not reached, or a heartbeat past it), the quorum was reached somewhere
    and this one starts too.

    In lockstep (every round waits for the records of ``lockstep`` peers) the first round waits
    for that many to be live, whoever has started: no round can close without them, and a site
    that weighs itself by its examples (``Weighting.EXAMPLES``) then measures its first record
    knowing every lockstep peer's count, as the simulator does."""
    want = max(opts.min_peers, opts.lockstep)
    if want <= 1:
        return
    end = time.monotonic() + opts.quorum_timeout
    greeted, every = -1e9, 0.0
    while not (stop is not None and stop.is_set()):
        if time.monotonic() - greeted >= every:
            read = gossip.greet()  # the DHT, rarely: newcomers greet us directly
            gossip.refuse_foreign()
            greeted = time.monotonic()
            # Nobody can greet a peer behind NAT; and over a thin link a read may fail, or a
            # greeting time out, so an early read is retried: 20 s, then twice as long each time
            # up to IDLE_REFRESH (a handful of reads in the first minutes, then the idle rate).
            every = (PRIVATE_REFRESH if gossip.net.private or not read
                     else min(IDLE_REFRESH, max(PRIVATE_REFRESH, 2 * every)))
        waiting = gossip.waiting()
        me = opts.peer_id
        # a peer measuring a round we have not reached (a restarted swarm's ledgers do not count)
        started = {p for p, hb in waiting.items() if p != me and hb.round > round_}
        started |= {rec.peer_id for rec in list(replica.records.values())
                    if rec.peer_id != me and rec.round >= round_}
        if started and not opts.lockstep:  # someone reached its quorum first (views differ over a thin link)
            log.info("peer %x has started: starting", min(started))
            return
        live = len(waiting.keys() | {me})
        if live >= want:
            log.info("%d peers live: starting", live)
            # a fresh heartbeat to each (the round loop's 30-second liveness), not to the DHT: the
            # first heartbeat exchange stores it there (``Gossip._exchange``)
            gossip.tell(gossip.waiting().values())
            return
        if time.monotonic() > end:
            log.warning("only %d of %d peers live after %.0fs: starting anyway", live, want, opts.quorum_timeout)
            return
        time.sleep(opts.poll)  # a local check: greetings arrive on the server


def drain(gossip: Gossip, replica: Replica, opts: PeerOptions, apply: Callable[[], int], short: bool = False) -> None:
    """Wait until every live peer has finished and holds our record set (the peer has said it is
    done: its heartbeats carry it). ``apply`` makes queued records durable and applies them.

    Bounded by ``drain_timeout`` *without progress*: while records keep arriving, or a live
    peer still moves through its rounds, a peer that finished first waits on (up to
    ``DRAIN_CAP`` × ``drain_timeout`` in all). A peer that ran ahead of slower ones (over a
    thin link, a newcomer that heard little from the others) so leaves with the whole set
    instead of the part that had reached it. Records come by push and by direct sync with
    each peer (``Gossip.sync``, per peer every ``sync_interval``); the DHT, dear on a thin link,
    is read every ``heartbeat_interval``. A short drain (stopping) waits at most ``short_drain``."""
    gossip.tell(gossip.others().values())  # now, not at the next DHT read: we are done
    timeout = min(opts.drain_timeout, opts.short_drain) if short else opts.drain_timeout
    start = time.monotonic()
    end, cap = start + timeout, start + (timeout if short else DRAIN_CAP * timeout)
    final = opts.rounds
    progress, read_at = _progress(gossip, replica), -1e9
    while time.monotonic() < end:
        now = time.monotonic()
        if now - read_at >= opts.heartbeat_interval:  # the DHT: its copy of the last rounds, heartbeats
            read_at = now
            if final is not None:
                gossip.repair.pull(range(max(0, final - opts.lookback), final))
            apply()
            gossip.beat(force=True)
        else:
            apply()
            gossip.repair.sync()
        live = gossip.others()
        if all(hb.done and hb.digest.hex() == replica.digest.hex() for hb in live.values()):
            # hold a moment so slower peers can see our final heartbeat, then leave
            time.sleep(min(opts.farewell, max(0.0, end - time.monotonic())))
            apply()
            break
        if (now_progress := _progress(gossip, replica)) != progress:
            progress, end = now_progress, min(cap, max(end, time.monotonic() + timeout))
        time.sleep(opts.drain_poll)
    else:
        log.warning("drain ended after %.0fs without agreement from every live peer", time.monotonic() - start)


def _progress(gossip: Gossip, replica: Replica) -> tuple:
    """What a draining peer watches: the records it holds and each live peer's position."""
    live = gossip.others()
    return len(replica.records), tuple(sorted((p, hb.round, hb.records, hb.done) for p, hb in live.items()))
