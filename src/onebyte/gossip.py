"""Gossip: how a peer learns who is there and exchanges records with them, over a ``Transport``.

* **Membership**: heartbeats (round, records, set digest, state hash, contact) ride on a push to
  each peer at most every ``heartbeat_interval`` (about 220 bytes: three times a 16-gradient
  record), on the first push, once done, and alone when no record has carried one lately; they
  are stored in the DHT, and everyone's read, every ``DHT_EVERY``-th heartbeat exchange (more
  often while a peer is lost, after a dial, when pushes have gone stale). Between
  heartbeats, a record pushed by its author says enough: the author is live and has reached
  its round (``Membership.heard``).
* **Push** (``pushes.Pushes``): our record goes to every live peer at once, on the transport's
  long-lived channel to each, tried twice; a record whose push still failed goes to the DHT copy.
  Beyond ``overlay.DEGREE + 1`` peers it goes to our neighbours in the round's tree instead, and
  each peer passes a record new to it on along the tree (``relays.Relays``); heartbeats then go to
  the round's neighbours, and the others learn that we are live from our records.
* **Repair** (``repair.Repair``): a round's missing records are asked of their authors, then the
  DHT; anti-entropy with a live peer whose settled rounds differ from ours.
* **Audit**: a live peer with our record set and another state hash means a replica diverged.
* **Site keys** (``sitekeys.SiteKeys``, identity mode): revocations go to every live peer at once,
  and key lists are compared, so every replica ends with the same revocations in force.
* **Foreign runs**: a peer of this run id with another base model or configuration is refused,
  naming the settings that differ (CONF).

Everything received goes through the peer's ``Intake``; the state is never touched here. The
executors that run pushes and background exchanges belong to this object (``close`` stops them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .client import Client
from .config import differing_fields
from .errors import DivergenceError, ModelError, NetworkError, ProtocolError, RunMismatch
from .intake import Intake
from .membership import ForeignRun, Heartbeat, Membership, decode_heartbeat
from .options import PeerOptions
from .overlay import mesh, neighbours
from .protocol import MAX_MEET, push
from .pushes import Pushes
from .record import Record
from .relays import Relays
from .repair import Repair
from .replica import Replica
from .sitekeys import SiteKeys

__all__ = ["Gossip", "DHT_EVERY", "DHT_EVERY_LOST"]

log = logging.getLogger(__name__)

#: A newcomer asks at most this many join peers at once (MEET).
MEET_WORKERS = 8
#: A background heartbeat exchange (every ``heartbeat_interval``) audits and syncs from what
#: pushes told us. It touches the DHT rarely, because the DHT is dear: with 4 peers one store of
#: a heartbeat moved 17 KB and one read 12 KB (the walk before a store fetches the key's whole
#: dictionary from each node; each entry carries an RSA key and signature), measured with
#: ``DhtTransport`` wire counters. Every DHT_EVERY-th exchange stores our heartbeat (for newcomers,
#: who read the DHT and then greet every peer directly; it lives DHT_TTL_EXCHANGES intervals) and
#: reads everyone's, to find peers that do not push to us (foreign runs, a dial). While a peer we
#: knew has gone quiet without saying it was done (a partition, a crash) within LOST_WINDOW
#: seconds, every DHT_EVERY_LOST-th exchange does it instead, so the two sides of a healed
#: partition find each other in seconds; also when forced, after a dial, after hearing from a peer
#: never seen before (it may know peers we do not: two swarms merging), and when pushes are stale.
DHT_EVERY = 24
DHT_EVERY_LOST = 3
DHT_TTL_EXCHANGES = 30
LOST_WINDOW = 300.0
#: A peer waiting for a quorum keeps its DHT heartbeat this long and stores it again this often;
#: it reads the DHT only then. A newcomer reads it on arrival and greets every peer it finds
#: directly, so waiting peers learn of it at once without polling: a waiting peer sends a few
#: hundred bytes every IDLE_REFRESH seconds, not a DHT walk every second.
IDLE_TTL = 300.0
IDLE_REFRESH = 240.0
#: ... except a peer behind NAT, which nobody can greet: it reads the DHT itself this often.
PRIVATE_REFRESH = 20.0
#: A greeting this soon after one that read the DHT only tells the waiting peers (``greet``).
GREET_FRESH = 15.0


class Gossip:
    """Membership for one peer, and its parts that move records: ``pushes`` (``Pushes``), ``repair``
    (``Repair``: fetches, DHT pulls, anti-entropy) and ``keys`` (``SiteKeys``, identity mode).

    ``options()`` gives the peer's ``PeerOptions`` (read on each use: one object for the peer and its
    parts); ``position()`` the peer's (next round, done) for its heartbeats; ``shared()`` what its
    run file shares with every site's (``Run.shared``: to name what differs from a foreign peer's
    configuration, and in identity mode which site keys another peer lists otherwise); ``connect`` the
    file an operator writes multiaddrs to, to make a running peer dial them."""

    def __init__(self, client: Client, options: Callable[[], PeerOptions], replica: Replica, intake: Intake,
                 tag: bytes, base: bytes, position: Callable[[], tuple[int, bool]],
                 shared: Callable[[], dict[str, Any]], connect: Path, examples: int = 0):
        self.client, self.net, self._options, self.replica, self.intake = client, client.net, options, replica, intake
        opts = options()
        self.tag, self.base, self.me = tag, base, opts.peer_id
        self._position, self._shared, self._connect = position, shared, connect
        self.examples = examples  # our site's training examples, in every heartbeat (Weighting.EXAMPLES)
        self.members = Membership(opts.heartbeat_ttl)
        self.foreign: dict[int, Heartbeat] = {}  # peers of this run id with another base or config
        self.foreign_diff: dict[int, str] = {}  # their differing settings, once asked (CONF)
        self.seq = 0
        self.closed = False
        self._last_beat = 0.0
        self._exchanges = 0
        self._newcomer = False  # a peer never seen before was heard from: read the DHT at the next exchange
        self.introducing = True  # until the first round: pass new peers' heartbeats on (_introduce)
        self._raw: dict[int, bytes] = {}  # the latest heartbeat as its author signed it, per peer
        self._greet_read = -1e9  # when a greeting last read the DHT (greet)
        self.met = False  # a join peer answered MEET: newcomers find us through it (greet, _exchange)
        # Pushes, DHT publication and the periodic DHT heartbeat exchange run beside the round loop:
        # on a slow link each costs round trips (stream setup, DHT walks) the round must not wait on.
        self._beater = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onebyte-beat")
        self._beating: Future | None = None
        self.pushes = Pushes(client, self._beater)
        self.keys = SiteKeys(client, intake, self.others, shared, self._beater)
        self.repair = Repair(client, options, replica, intake, self.members, self.keys, position)
        self.relays = Relays(self.pushes, intake, self.members, options, self.me, self.targets, position)

    @property
    def opts(self) -> PeerOptions:
        """The peer's options, as they are now."""
        return self._options()

    # ----------------------------------------------------------------- who is there
    def others(self) -> dict[int, Heartbeat]:
        """Live peers other than this one."""
        return {p: hb for p, hb in self.members.live().items() if p != self.me}

    def targets(self) -> dict[int, Heartbeat]:
        """Where our records go: the live peers, and the peers waiting for their first round (heard
        within ``IDLE_TTL``, holding no record, not done). A waiting peer greets rarely, so it drops
        out of ``others`` after ``heartbeat_ttl``; our pushes are what tells it the swarm has started
        (over a thin link, peers that reached their quorum late otherwise waited minutes)."""
        targets = self.others()
        for p, hb in self.members.live(ttl=IDLE_TTL).items():
            if p != self.me and p not in targets and hb.records == 0 and not hb.done:
                targets[p] = hb
        return targets

    def waiting(self) -> dict[int, Heartbeat]:
        """Peers heard from within ``IDLE_TTL``, this one included: who is there while waiting."""
        return self.members.live(ttl=IDLE_TTL)

    def greet(self) -> bool:
        """For a peer waiting to start: store our heartbeat for ``IDLE_TTL``, read everyone's, and
        send ours directly to each peer found (a push with no record). A peer arriving later does the
        same, so the ones already waiting hear of it at once. False when the DHT could not be read.
        Within ``GREET_FRESH`` seconds of a read that succeeded, the DHT is left alone (the greeting
        when the quorum is reached, seconds after the first): a walk of the DHT fetches every
        peer's signed heartbeat from each node it asks, about 29 KB with 4 peers and growing with
        the square of the swarm.

        So does the first greeting of a peer a join peer met (``meet``): it has every live peer's
        heartbeat, and the join peer passes ours on (``_introduce``); two walks would fetch the same
        view again. Later greetings (a long wait) read it; a peer behind NAT always does."""
        hb = self.heartbeat().encode(self.opts.secret, self.opts.key)
        now = time.monotonic()
        if self.met and self._greet_read < 0 and not self.net.private:
            self._greet_read = now  # once
        read = now - self._greet_read < GREET_FRESH or self._dht_exchange(hb, IDLE_TTL, read=True)
        if read and now - self._greet_read >= GREET_FRESH:
            self._greet_read = now
        self.tell(self.waiting().values(), hb)
        return read

    def _dht_exchange(self, hb: bytes, ttl: float, read: bool) -> bool:
        """Store our heartbeat in the DHT, then read everyone's: each bounded, the read tried even
        when the store failed (a store walks further than a read, and fails more). Whether it read.
        A peer that could not reach its join peers dials them again first (rate-limited); until
        it has reached them, a read counts as not done (it could only find this peer)."""
        joined = self.net.rejoin()
        try:
            self.net.announce(hb, ttl=ttl)
        except (ProtocolError, NetworkError) as exc:
            log.debug("heartbeat not stored: %s", exc)
        if not read:
            return False
        try:
            beats = self.net.heartbeats()
        except (ProtocolError, NetworkError) as exc:
            log.debug("heartbeats not read: %s", exc)
            return False
        for data in beats:
            self.observe(data)
        return joined

    def tell(self, peers: Iterable[Heartbeat], hb: bytes | None = None) -> None:
        """Send our heartbeat directly to each of ``peers`` (a push with no record)."""
        self.pushes.tell(peers, hb if hb is not None else self.heartbeat().encode(self.opts.secret, self.opts.key),
                         self.me)

    def newest_round(self) -> int:
        return max((hb.round for hb in self.members.peers().values()), default=0)

    def heartbeat(self) -> Heartbeat:
        rep = self.replica
        round_, done = self._position()
        with rep.lock:
            self.seq += 1
            closed = max(-1, round_ - 2)
            return Heartbeat(self.tag, self.base, self.me, self.seq, round_, len(rep.applied), done,
                             bytes.fromhex(rep.digest.hex()), bytes.fromhex(rep.state_hash()), closed,
                             rep.closed_digest(closed), self.net.contact, self.examples)

    def meet(self) -> bool:
        """Ask each join peer directly who is live (MEET: one round trip, our heartbeat there, the
        heartbeats it knows back), instead of a first DHT exchange, which over a thin link took 12 s
        of a newcomer's start. Whether some other peer is now live."""
        ours = self.heartbeat().encode(self.opts.secret, self.opts.key)

        def ask(contact: str) -> list[bytes]:
            try:
                return self.client.meet(contact, ours)
            except (ProtocolError, NetworkError) as exc:
                log.info("join peer %s did not answer: %s", contact, exc)
                return []

        contacts = self.net.join_contacts()
        if contacts:  # all at once: a dead join peer costs its timeout once, not once per peer
            workers = min(len(contacts), MEET_WORKERS)
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onebyte-meet") as pool:
                for beats in pool.map(ask, contacts):
                    for data in beats:
                        self.observe(data)
        found = bool(self.others())
        self.met = self.met or found
        return found

    def answer_meet(self, heartbeat: bytes) -> list[bytes]:
        """MEET, answered: observe the newcomer's heartbeat; ours, and the latest of every other
        live peer as its author signed it (a relay cannot forge one), at most MAX_MEET. A heartbeat
        that is not authentic gets nothing: an outsider learns no peer from us."""
        if not self.observe(heartbeat):
            return []
        live = [raw for p in self.others() if (raw := self._raw.get(p)) is not None and raw != heartbeat]
        return [self.heartbeat().encode(self.opts.secret, self.opts.key), *live[:MAX_MEET - 1]]

    def receive(self, record: bytes, heartbeat: bytes) -> None:
        """A push: the author's record, its heartbeat, or both (REC). An authentic record pushed by
        its author also tells us the author is live and has measured that round."""
        if heartbeat:
            self.observe(heartbeat)
        if record:  # validated; new and authentic, it travels on (Relays.take)
            self.relays.take(record, pushed=True)

    def observe(self, data: bytes) -> bool:
        """A heartbeat from a peer (pushed, or read from the DHT); whether it was authentic (a peer of
        another configuration's included)."""
        try:
            hb = decode_heartbeat(data, self.tag, self.opts.secret, self.intake.roster)
            new = hb.peer_id != self.me and self.members.get(hb.peer_id) is None
            self.members.observe(hb)
            self._raw[hb.peer_id] = bytes(data)
            if new:
                self._newcomer = True  # it may know peers we do not (two swarms merging): read the DHT
                self._introduce(hb.peer_id, data)
            return True
        except ForeignRun as exc:
            hb = exc.heartbeat
            first = hb.peer_id not in self.foreign
            self.foreign[hb.peer_id] = hb
            self.intake.reject(hb.peer_id, "heartbeat for another base model or configuration")
            if first and hb.base == self.base and not self.closed:
                self._beater.submit(self.learn_config, hb)  # off the server thread: a request
            return True
        except ProtocolError as exc:
            self.intake.reject(-1, f"heartbeat: {exc}")
            return False

    def stop_introducing(self) -> None:
        """From the first round on, pushes carry membership: no more introductions."""
        self.introducing = False

    def _introduce(self, peer_id: int, data: bytes) -> None:
        """While waiting for the first round: introduce a peer heard from for the first time to
        the other peers heard within ``IDLE_TTL``, and them to it, by passing on the heartbeats
        their authors signed (a relay cannot forge one). A peer whose DHT read missed some of the
        others (over a thin link a read can time out) so learns of them through anyone who met
        both, and every quorum count sees the same peers. Up to a full mesh: to every other waiting
        peer, and each of them to it (2 (n − 2) pushes of a few hundred bytes per newcomer). Beyond:
        an epidemic of bounded fan-out, as records travel: to our neighbours (at most ``DEGREE``) in a
        tree drawn from the newcomer's id, each of which does the same on first hearing of it, and
        our own heartbeat to it (so it hears of every peer once the news has reached them all):
        ``DEGREE + 1`` pushes per newcomer, not 2 (n − 2)."""
        if self.closed or not self.introducing:
            return
        known = {p: hb for p, hb in self.waiting().items() if p not in (peer_id, self.me)}
        newcomer = self.members.get(peer_id)
        message = push(b"", data)
        if not mesh(len(known) + 2):
            for p in neighbours(peer_id, self.me, {*known, peer_id}):
                if p in known:
                    self.pushes.send(known[p], message)  # not our heartbeat: nothing "told"
            if newcomer is not None:
                self.pushes.send(newcomer, push(b"", self.heartbeat().encode(self.opts.secret, self.opts.key)))
            return
        for p, other in known.items():
            self.pushes.send(other, message)  # not our heartbeat: nothing "told"
            if newcomer is not None and (raw := self._raw.get(p)) is not None:
                self.pushes.send(newcomer, push(b"", raw))

    def refuse_foreign(self) -> None:
        """Refuse to join a swarm whose peers run another base model or configuration."""
        if self.others() or not self.foreign:
            return
        hb = next(iter(self.foreign.values()))
        if hb.base != self.base:
            raise ModelError(f"the peers of this run use another base model (hash {hb.base.hex()[:12]}…, this "
                             f"peer has {self.base.hex()[:12]}…): check model")
        why = self.foreign_diff.get(hb.peer_id) or self.learn_config(hb)
        raise RunMismatch(f"the peers of this run use another configuration (run tag {hb.run_tag.hex()[:12]}…, "
                          f"this peer has {self.tag.hex()[:12]}…): " + (why or "every [math] setting must match"))

    def learn_config(self, hb: Heartbeat) -> str | None:
        """Ask a peer of another configuration for it (CONF) and log the settings that differ."""
        try:
            theirs = self.client.conf(hb.contact)
        except (ProtocolError, NetworkError) as exc:
            log.debug("could not learn peer %x's configuration: %s", hb.peer_id, exc)
            return None
        ours = {k: v for k, v in self._shared().items() if k != "keys"}  # what the run tag covers
        theirs.pop("keys", None)
        diff = "; ".join(differing_fields(ours, theirs)) or "settings differ"
        if hb.peer_id not in self.foreign_diff:
            log.warning("peer %x runs another configuration of this run: %s", hb.peer_id, diff)
        self.foreign_diff[hb.peer_id] = diff
        return diff

    def _dial_requested(self) -> bool:
        """An operator (or a test) asks a running peer to dial more peers by writing their
        multiaddrs to ``OUT/connect.txt``; the file is consumed (renamed) once dialled."""
        if not self._connect.exists():
            return False
        addrs = self._connect.read_text().split()
        self._connect.replace(self._connect.with_suffix(".done"))
        try:
            self.net.connect(addrs)
            log.info("dialled %s", " ".join(addrs))
        except (ProtocolError, NetworkError) as exc:
            log.warning("%s", exc)
        return True

    # ----------------------------------------------------------------- heartbeats and sync
    def beat(self, force: bool = False, sync: bool = True) -> None:
        """Publish our heartbeat, read everyone's, audit, and sync: every ``heartbeat_interval``
        in the background (a DHT store and get walk the DHT: seconds over a slow link), or now
        when forced. A background exchange's error (a divergence) is raised here, on the caller."""
        beating = self._beating
        if beating is not None and beating.done():
            self._beating = None
            beating.result()
        now = time.monotonic()
        if not force and now - self._last_beat < self.opts.heartbeat_interval:
            return
        self._last_beat = now
        if force:
            self._exchange(sync, read=True)
        elif self._beating is None:
            self._beating = self._beater.submit(self._exchange, sync)

    def _exchange(self, sync: bool, read: bool = False) -> None:
        dialled = self._dial_requested()  # always: it consumes OUT/connect.txt
        new = self.intake.read_revocations_file()  # an operator's onebyte revoke
        if new:
            self.keys.spread(new)
        self._exchanges += 1
        lost = self.members.lost(LOST_WINDOW) - {self.me}
        every = DHT_EVERY_LOST if lost else DHT_EVERY
        stale = self._pushes_stale()
        periodic = self._exchanges % every == 1
        if self._position()[1] and not (lost or dialled or stale):
            # finished (draining): every live peer tells us its heartbeat directly, so no DHT walk
            # (with 4 peers a store and a read moved 29 KB; with 32, hundreds: most of what leaving cost)
            read = store = False
        else:
            # the first exchange reads only after hearing of peers new to us (``_newcomer``: then it
            # stores too, so swarms that merge later find us), or when stale; else it stores only if
            # no join peer met us: a newcomer finds the swarm through a join peer's MEET, and only
            # through the DHT where join peers do not answer it
            read = read or dialled or self._newcomer or (periodic and self._exchanges > 1) or stale
            store = read or periodic and (self._exchanges > 1 or not self.met)
        self._newcomer = False
        hb = self.heartbeat()
        encoded = hb.encode(self.opts.secret, self.opts.key)
        if store:  # a fresh heartbeat wherever we look, so whoever looks next finds us moved
            self._dht_exchange(encoded, DHT_TTL_EXCHANGES * self.opts.heartbeat_interval, read)
        now, interval = time.monotonic(), self.opts.heartbeat_interval
        # peers our records have not carried a heartbeat to lately (slow rounds): keep them told
        # (in a large swarm, once a round's tree neighbours: the others hear of us from our records)
        told = self.others() if self._position()[1] else self.relays.near(self.others())
        quiet = self.pushes.quiet(told.values(), now, interval)
        if quiet and not self.closed and not read and self._position()[1]:
            self.pushes.deliver(quiet, push(b"", encoded))  # no DHT walk: told before the exchange returns
        elif quiet and not self.closed:
            self.tell(quiet, encoded)
        self.keys.greet()
        self.audit(hb)
        if sync:
            self.repair.sync()

    def _pushes_stale(self) -> bool:
        """Whether some live peer has not been heard from (by push) within two heartbeat intervals,
        or no other peer is live: then only the DHT can tell us who is there."""
        now = time.monotonic()
        others = [p for p in self.members.live(now) if p != self.me]
        quiet = 2 * self.opts.heartbeat_interval  # a peer tells us at least every interval
        return not others or any(now - (self.members.seen(p) or 0.0) > quiet for p in others)

    def audit(self, mine: Heartbeat) -> None:
        for other in self.members.live().values():
            if other.peer_id != mine.peer_id and other.digest == mine.digest and other.state_hash != mine.state_hash:
                raise DivergenceError(
                    f"peer {other.peer_id:x} holds the same record set ({mine.digest.hex()[:12]}…) with state "
                    f"{other.state_hash.hex()[:12]}…, this peer has {mine.state_hash.hex()[:12]}…: replicas diverged")

    # ----------------------------------------------------------------- records
    def publish(self, own: Record) -> None:
        """Push our record to every live peer now (beyond a mesh, to our neighbours in the round's
        tree: ``Relays.ours``), and queue its durable DHT copy."""
        raw = own.to_bytes()
        now = time.monotonic()
        others = self.targets()
        durable = not others  # nobody to push to: the DHT copy is where a newcomer finds it
        tree = self.relays.tree()
        others = self.relays.ours(own.round, others)

        def missed(other: Heartbeat) -> None:  # in a tree: its branch gets our record from us
            self.relays.skip(own.round, self.me, raw, other)
        if durable:
            self.pushes.store(own.round, raw)  # bundled: a DHT store every few rounds
        bare, full = push(raw, b""), None  # the heartbeat (a state hash) only when a peer is due one
        quiet = {o.peer_id for o in self.pushes.quiet(others.values(), now, self.opts.heartbeat_interval)}
        for other in others.values():
            told = other.peer_id not in quiet
            if not told and full is None:
                full = push(raw, self.heartbeat().encode(self.opts.secret, self.opts.key))
            self.pushes.send(other, bare if told else full, not told, None if durable else (own.round, raw),
                             missed if tree else None)

    def close(self) -> None:
        """Stop the executors: queued DHT publications still go out (each call is bounded), pushes
        not started are dropped (each one in flight is bounded by ``push_timeout``). Idempotent."""
        self.closed = self.pushes.closed = self.keys.closed = True
        self._beater.shutdown(wait=True)
        self.pushes.close()
