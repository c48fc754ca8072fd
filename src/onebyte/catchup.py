"""Joining late: a newcomer takes a live peer's snapshot or ledger, then tops up what ran meanwhile.

A newcomer with an empty ledger looks for live peers (MEET to its join peers, else the DHT), picks
the one with the most records, and joins from it by whichever costs fewer bytes: its snapshot (the
accumulators ``A_t``, checked against the claimed set digest) or its ledger (every record, replayed
here from the base model, so the state is ours by construction). A ledger comes in pieces from up
to LEDGER_SOURCES live peers at once. A source that fails (it may have left) is backed off and
another is tried; the tries, and so the bytes, are bounded. Before its first round the newcomer
fetches the rounds the swarm ran while it downloaded (``top_up``).

``CatchUp`` takes the parts it needs (client, options, replica, intake, gossip) and two doors
into its peer's round position (``position``, ``move_to``), never the peer itself.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from .client import Client
from .errors import CatchUpError, LedgerError, NetworkError, ProtocolError
from .gossip import Gossip
from .identity import Roster
from .intake import Intake
from .membership import Heartbeat
from .options import PeerOptions
from .record import decode_record
from .replica import Replica

__all__ = ["CatchUp", "CATCHUP_BACKOFF", "CATCHUP_TRIES", "CATCHUP_TRIES_TOTAL", "LEDGER_PIECE", "LEDGER_SOURCES"]

log = logging.getLogger(__name__)

#: A catch-up source that fails (it may have left) is tried again after CATCHUP_BACKOFF seconds,
#: twice that after a second failure, and given up after CATCHUP_TRIES; the best of the other live
#: peers is tried meanwhile. After CATCHUP_TRIES_TOTAL failed tries in all, or every source given
#: up, the peer stops with a CatchUpError: the bytes spent are bounded by the tries, each at most
#: the download its source announced.
CATCHUP_BACKOFF = 1.0
CATCHUP_TRIES = 3
CATCHUP_TRIES_TOTAL = 8
#: A ledger download's piece, in bytes of records before deflating (about 1,000 records of K = 4,
#: about 26 KB on the wire).
LEDGER_PIECE = 64 * 1024
#: At most this many peers serve a newcomer's ledger pieces at once.
LEDGER_SOURCES = 4
#: What one deflated piece (or the top-up) may inflate to: 16 pieces' worth, against a bomb.
PIECE_LIMIT = 16 * LEDGER_PIECE
#: A newcomer that no join peer answered reads the DHT every ``join_poll`` seconds at first, then
#: twice as long each time up to this: each read walks the DHT (with 4 peers about 12 KB, fetched
#: from the others), and the first peer, whose DHT is empty until the others come, read it 40 times.
JOIN_READ_MAX = 8.0
#: The round a ranged LEDG request gives as "and every later one".
OPEN_END = 0xFFFFFFFF


class CatchUp:
    """A newcomer's join: ``join`` finds a source and catches up from it (``catch_up``), and
    ``start_round`` says where the first round begins, after a ``top_up``. ``joined_by`` records how."""

    def __init__(self, client: Client, options: Callable[[], PeerOptions], replica: Replica, intake: Intake,
                 gossip: Gossip, roster: Roster | None, tag: bytes, apply: Callable[[], int],
                 position: Callable[[], int], move_to: Callable[[int], None]):
        self.client, self._options, self.replica, self.intake, self.gossip = client, options, replica, intake, gossip
        self.roster, self.tag = roster, tag
        self._apply, self._position, self._move_to = apply, position, move_to
        self.joined_by: dict[str, Any] | None = None  # how this peer caught up when it joined

    @property
    def opts(self) -> PeerOptions:
        return self._options()

    def join(self) -> None:
        """A newcomer with an empty ledger: catch up from the live peer with the most records, if any.

        Lockstep peers never do: they all start from the base and measure every round at the
        simulator's state, so a snapshot holding rounds they have not measured would be wrong."""
        if self.replica.records or self.opts.lockstep:
            return
        deadline = time.monotonic() + self.opts.join_timeout
        failures: Counter[int] = Counter()  # source -> its failed tries
        not_before: dict[int, float] = {}  # source -> when it may be tried again (its back-off)
        received = self.client.net.bytes_received
        read_at, every = -1e9, self.opts.join_poll  # the DHT's, at a doubling interval (JOIN_READ_MAX)
        while time.monotonic() < deadline:
            # the join peers answer in a round trip; else the DHT (seconds)
            if not self.gossip.meet() and time.monotonic() - read_at >= every:
                read_at, every = time.monotonic(), min(2 * every, max(JOIN_READ_MAX, self.opts.join_poll))
                self.gossip.beat(force=True, sync=False)  # no record-by-record sync: the download brings them all
            self.gossip.refuse_foreign()
            others = self.gossip.others()
            now = time.monotonic()
            # a source that failed (it may have left) waits out its back-off, and after
            # CATCHUP_TRIES it is given up: the best of the others is tried meanwhile
            sources = [hb for p, hb in others.items()
                       if failures[p] < CATCHUP_TRIES and not_before.get(p, 0.0) <= now]
            if sources:
                # peers not yet failed first, then the most records
                best = max(sources, key=lambda hb: (-failures[hb.peer_id], hb.records))
                log.info("found %d live peer(s); the most records: peer %x, %d, at round %d",
                         len(others), best.peer_id, best.records, best.round)
                if best.records <= len(self.replica.records):
                    return  # everyone is new (or pushes brought what they hold): start from here
                try:
                    self.catch_up(best)
                    return
                except (ProtocolError, NetworkError, LedgerError) as exc:
                    failures[best.peer_id] += 1
                    tries = failures[best.peer_id]
                    not_before[best.peer_id] = time.monotonic() + CATCHUP_BACKOFF * 2 ** (tries - 1)
                    log.warning("catching up from peer %x failed (try %d of %d): %s", best.peer_id, tries,
                                CATCHUP_TRIES, exc)
                    if failures.total() >= CATCHUP_TRIES_TOTAL or all(failures[p] >= CATCHUP_TRIES for p in others):
                        raise CatchUpError(
                            f"could not catch up from any live peer ({len(failures)} tried, "
                            f"{failures.total()} tries, "
                            f"{self.client.net.bytes_received - received:,} bytes received; last: {exc})") from None
            elif self.replica.records and not failures:
                return  # records arrive by push from peers not seen yet: we are in, sync fills the past
            time.sleep(self.opts.join_poll)
        if failures:
            raise CatchUpError(f"could not catch up from any live peer within {self.opts.join_timeout:.0f}s "
                               f"({len(failures)} tried)")
        if self.opts.join_timeout:
            log.info("no live peer answered within %.0fs; starting from the base model", self.opts.join_timeout)

    def catch_up(self, hb: Heartbeat) -> None:
        """Join from ``hb``'s peer by whichever costs fewer bytes on the link: its snapshot (the
        accumulators, 4 bytes per tuned weight, plus its records) or its ledger alone (every record,
        replayed here from the base model). After 1,000 rounds of 4 peers the ledger is ~250 KiB
        where the snapshot of all MiniLM weights is 87 MiB; early in a run with few tuned weights the
        snapshot can be the smaller. A peer that does not know SIZE answers nothing: snapshot.

        In a run with a seed pool, ``auto`` first asks for the peer's coefficient snapshot, whose size
        does not grow with the run's history (``install_coefficients``); one that fails its checks is
        refused and the peer's ledger or snapshot is taken instead."""
        if self.replica.pool is not None and self.opts.catchup == "auto" and not self.replica.records:
            try:
                if self.install_coefficients(hb):
                    return
            except (ProtocolError, LedgerError) as exc:
                log.warning("refused peer %x's coefficient snapshot (%s): joining by its ledger or snapshot",
                            hb.peer_id, exc)
        sizes = self.client.size(hb.contact)
        snap_bytes, ledger_bytes = sizes if sizes is not None else (None, None)
        mode = self.opts.catchup
        if mode == "auto":
            mode = "ledger" if ledger_bytes is not None and ledger_bytes < snap_bytes else "snapshot"
        if mode == "ledger" and ledger_bytes is None:
            mode = "snapshot"
        if mode == "snapshot" and self.replica.records:  # pushes came first: a snapshot cannot join them
            if ledger_bytes is None:
                log.info("records arrived before the snapshot, and peer %x serves no ledger: joining by sync",
                         hb.peer_id)
                return
            mode = "ledger"
        why = (f"ledger {ledger_bytes:,} B, snapshot {snap_bytes:,} B" if ledger_bytes is not None
               else "the peer does not report sizes")
        if mode == "ledger":
            self.install_ledger(hb, ledger_bytes)
        else:
            self.install_snapshot(hb, snap_bytes)
        self.joined_by = {"path": mode, "from_peer": f"{hb.peer_id:x}", "ledger_bytes": ledger_bytes,
                          "snapshot_bytes": snap_bytes, "chosen_by": self.opts.catchup}
        log.info("joined from peer %x by its %s (%s)", hb.peer_id, mode, why)

    def install_ledger(self, hb: Heartbeat, size: int | None = None) -> None:
        """Every record ``hb``'s peer holds, each validated as if pushed, replayed here from the base:
        the state is ours by construction, so it needs no trust in the other peer's arithmetic.

        Downloaded deflated (about 2.5x fewer bytes: the headers repeat), in pieces of about
        LEDGER_PIECE bytes of records (a range of rounds each, the last one open-ended), each tried
        up to ``piece_tries`` times: over a thin link one long transfer was cut short at 32–128 KB,
        while short ones get through, and a lost piece costs only itself. The pieces come from up to
        LEDGER_SOURCES live peers at once, one piece per peer at a time (``_ledger_sources``): one
        peer's uplink, which also carries its training, is then no longer the bottleneck, our own
        link is. A peer that fails a piece hands it back to the others and serves no more (unless it
        is the last one). Which peer sent a record does not matter: each is checked on its own; a
        piece inflates to at most PIECE_LIMIT bytes."""
        per_round = max(1.0, hb.records / max(hb.round, 1))
        record_bytes = (size or 0) / max(hb.records, 1) or 100.0
        step = max(1, int(LEDGER_PIECE / (per_round * record_bytes)))
        starts = list(range(0, max(hb.round, 1), step))
        pieces = [range(start, starts[i + 1] if i + 1 < len(starts) else OPEN_END) for i, start in enumerate(starts)]
        sources = self._ledger_sources(hb, starts[-1])
        # the pieces share our link (deflated to about 0.4x)
        timeout = self.client.bulk_timeout(LEDGER_PIECE * len(sources) // 2)
        todo = deque((i, 0) for i in range(len(pieces)))  # (piece, failed tries)
        serving, idle = list(sources), list(sources)
        running: dict[Future, tuple[int, int, Heartbeat]] = {}
        accepted, got, round_ = 0, 0, 0
        pool = ThreadPoolExecutor(max_workers=len(sources), thread_name_prefix="onebyte-ledger")
        try:
            while todo or running:
                while todo and idle:  # one piece per source at a time
                    (i, tries), src = todo.popleft(), idle.pop(0)
                    piece = pool.submit(self.client.ledg, src.contact, pieces[i], timeout, PIECE_LIMIT)
                    running[piece] = (i, tries, src)
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    i, tries, src = running.pop(future)
                    try:
                        piece_round, raws, wire = future.result()
                    except (NetworkError, ProtocolError) as exc:
                        log.info("ledger piece %d from peer %x failed (%s)", i + 1, src.peer_id, exc)
                        if tries + 1 >= self.opts.piece_tries:
                            raise
                        todo.append((i, tries + 1))
                        if len(serving) > 1:  # a failed source serves no more, unless it is the last
                            serving.remove(src)
                        else:
                            idle.append(src)
                        continue
                    idle.append(src)
                    if i == len(pieces) - 1:
                        round_ = piece_round
                    log.info("ledger piece %d of %d from peer %x: %d records, %d B", i + 1, len(pieces),
                             src.peer_id, len(raws), wire)
                    got += len(raws)
                    accepted += sum(bool(self.intake.offer(data)) for data in raws)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # a failure does not wait for the other pieces
        if got and not accepted and not self.replica.records:
            raise ProtocolError("none of the ledger's records was accepted")
        self._adopt([], round_)
        if len(sources) > 1 and hb.closed >= 0 and self.replica.closed_digest(hb.closed) != hb.closed_digest:
            # a source lacked records of a settled round: ask the chosen peer for exactly what we lack
            log.info("the ledger pieces differ from peer %x's settled rounds: syncing with it", hb.peer_id)
            try:
                self.gossip.repair.reconcile(hb)
            except (NetworkError, ProtocolError) as exc:  # anti-entropy repairs it later all the same
                log.info("sync after the ledger download failed: %s", exc)

    def _ledger_sources(self, hb: Heartbeat, settled_before: int) -> list[Heartbeat]:
        """``hb`` first, then the other live peers past every round before ``settled_before``, whose
        pieces of those rounds any of them can serve, up to LEDGER_SOURCES in all."""
        others = [o for o in self.gossip.others().values()
                  if o.peer_id != hb.peer_id and o.closed >= settled_before - 1 and o.records]
        others.sort(key=lambda o: -o.records)
        return [hb, *others[:LEDGER_SOURCES - 1]]

    def install_snapshot(self, hb: Heartbeat, size: int | None = None) -> None:
        """``hb``'s peer's snapshot and the records it covers, installed once its state hash matches
        the set digest the live peers claim (``Replica.install``)."""
        snap, raws = self.client.snap(hb.contact, size)
        meta = self.replica.install(snap, raws, self._checked(raws), self._claims())
        self._move_to(int(meta.get("round", "0")))
        log.info("joined from peer %x: %d records, round %s", hb.peer_id, len(raws), meta.get("round"))

    def install_coefficients(self, hb: Heartbeat) -> bool:
        """``hb``'s peer's coefficient snapshot (seed pool) and its records of the last rounds, installed
        once the state rebuilt from the totals has the hash it claims and no live peer holds that set
        with another state (``Replica.install_coefficients``). False if the peer serves none."""
        received = self.client.net.bytes_received
        got = self.client.coef(hb.contact, 4 * self.replica.pool.c.size)
        if got is None:
            return False
        data, tail_from, raws = got
        coefs = self.replica.install_coefficients(data, tail_from, raws, self._checked(raws), self._claims())
        self._move_to(coefs.round)
        self.joined_by = {"path": "coefficients", "from_peer": f"{hb.peer_id:x}", "coefficient_bytes": len(data),
                          "tail_records": len(raws), "tail_from": tail_from,
                          "bytes_received": self.client.net.bytes_received - received, "chosen_by": self.opts.catchup}
        log.info("joined from peer %x by its coefficients (%s B of totals for %d records, %d records of rounds "
                 ">= %d)", hb.peer_id, f"{len(data):,}", coefs.records, len(raws), tail_from)
        return True

    def _claims(self) -> list[tuple[int, str, str]]:
        """(peer, set digest, state hash) that each live peer reports: a download is checked against them."""
        return [(o.peer_id, o.digest.hex(), o.state_hash.hex()) for o in self.gossip.members.live().values()]

    def _checked(self, raws: list[bytes]) -> bytes | None:
        """The secret downloaded records are checked with; in identity mode None, after checking that
        every one is signed by a listed key (the install then refuses one that does not count here,
        ``replica.refusal``, and checks the rest of each record without the secret, which signed
        records lack)."""
        if self.roster is None:
            return self.opts.secret
        for raw in raws:
            decode_record(raw, run_tag=self.tag, roster=self.roster)
        return None

    def start_round(self) -> int:
        """Where to begin: after our own last round, and at the newest round the swarm has reached.
        A newcomer that has just downloaded a peer's ledger or snapshot has that peer's round: it
        exchanges heartbeats in the background instead of waiting on the DHT (seconds over a thin link),
        and fetches the records of the rounds the swarm ran while it downloaded (``top_up``). Any other
        peer forces a heartbeat exchange with its record sync, even one a join peer met: a peer
        restarting from its own ledger has missed the rounds it was down (the churn lab's restarted
        peer started at the swarm's round without them when this exchange was skipped)."""
        self.gossip.beat(force=self.joined_by is None)
        start = max(self._position(), self.gossip.newest_round())
        if self.joined_by is not None and start > self._position():
            self.top_up()
        return max(start, self._position())

    def top_up(self) -> None:
        """The records of the rounds from the downloaded ledger's (or snapshot's) last on, from the
        live peer furthest ahead: one small deflated LEDG piece. Without it the newcomer's first
        round began without the rounds pushed while it downloaded (sync brought them later)."""
        others = self.gossip.others()
        if not others:
            return
        ahead = max(others.values(), key=lambda hb: (hb.round, hb.records))
        try:
            round_, raws, _ = self.client.ledg(ahead.contact, range(max(0, self._position() - 2), OPEN_END),
                                               self.client.bulk_timeout(LEDGER_PIECE), PIECE_LIMIT)
            round_ = min(round_, ahead.round + 1)  # the reply's round is the peer's word: no further than its heartbeat
        except (NetworkError, ProtocolError) as exc:
            log.info("fetching the rounds since the download from peer %x failed: %s", ahead.peer_id, exc)
            return
        accepted = self._adopt(raws, round_)
        log.info("topped up from peer %x: %d new records, to round %d", ahead.peer_id, accepted, round_)

    def _adopt(self, raws: list[bytes], round_: int) -> int:
        """Offer downloaded records, apply them, and move to the serving peer's round ``round_``
        (the rounds before it count as measured: a newcomer never measures the past). How many
        of ``raws`` were accepted."""
        accepted = sum(bool(self.intake.offer(data)) for data in raws)
        self._apply()
        self._move_to(round_)
        return accepted
