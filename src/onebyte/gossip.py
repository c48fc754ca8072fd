"""Gossip: how a peer learns who is there and exchanges records with them, over a ``Transport``.

* **Membership**: heartbeats (round, records, set digest, state hash, contact) ride on a push to
  each peer at most every ``heartbeat_interval`` (about 220 bytes: three times a 16-gradient
  record), on the first push, once done, and alone when no record has carried one lately; they
  are stored in the DHT, and everyone's read, every ``DHT_EVERY``-th heartbeat exchange (more
  often while a peer is lost, after a dial, when pushes have gone stale). Between
  heartbeats, a record pushed by its author says enough: the author is live and has reached
  its round (``Membership.heard``).
* **Push**: our record goes to every live peer at once, on the transport's long-lived channel to
  each (``Transport.send``), tried twice. A record whose push still failed goes to the DHT copy,
  that record alone, where the peer that missed it reads it if its author cannot be reached.
* **Fetch and pull**: a round's missing records are asked of their authors, then the DHT.
* **Anti-entropy**: when a settled round differs from a live peer's, exchange record ids and
  send each other what the other lacks (after partitions and restarts).
* **Audit**: a live peer with our record set and another state hash means a replica diverged.
* **Revocations** (identity mode): a signed revocation new to this peer (from the operator's
  ``revocations.txt`` or from a peer) goes to every live peer at once (``REVK``), and peers whose
  settled record sets differ from ours exchange theirs before records, so every replica ends with
  the same revocations in force.

Everything received goes through the peer's ``Intake``; the state is never touched here. The
executors that run pushes and background exchanges belong to this object (``close`` stops them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .config import differing_fields, differing_keys
from .errors import DivergenceError, ModelError, NetworkError, ProtocolError, RunMismatch
from .intake import Intake, claimed_peer
from .membership import ForeignRun, Heartbeat, Membership, decode_heartbeat
from .options import PeerOptions
from .protocol import (
    MAX_MEET,
    MAX_PUT,
    Verb,
    get_request,
    meet_request,
    parse_config,
    parse_ids,
    parse_meet,
    parse_revocations,
    push,
    put_request,
    revocations_request,
    round_request,
    unpack_blobs,
)
from .record import Record
from .replica import Replica
from .transport.base import Transport

__all__ = ["Gossip", "PUSH_WORKERS", "DHT_EVERY", "DHT_EVERY_LOST"]

log = logging.getLogger(__name__)

#: Pushes in flight at once (one per live peer per round; the rest queue).
PUSH_WORKERS = 8
#: A newcomer asks at most this many join peers at once (MEET).
MEET_WORKERS = 8
#: A record whose push failed is stored in the DHT once: the rounds remembered for that.
STORED_WINDOW = 16
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


class Gossip:
    """Membership, pushes, fetches and anti-entropy for one peer.

    ``options()`` gives the peer's ``PeerOptions`` (read on each use: one object for the peer and its
    parts); ``position()`` the peer's (next round, done) for its heartbeats; ``shared()`` what its
    run file shares with every site's (``Run.shared``: to name what differs from a foreign peer's
    configuration, and in identity mode which site keys another peer lists otherwise); ``connect`` the
    file an operator writes multiaddrs to, to make a running peer dial them."""

    def __init__(self, net: Transport, options: Callable[[], PeerOptions], replica: Replica, intake: Intake,
                 tag: bytes, base: bytes, position: Callable[[], tuple[int, bool]],
                 shared: Callable[[], dict[str, Any]], connect: Path):
        self.net, self._options, self.replica, self.intake = net, options, replica, intake
        opts = options()
        self.tag, self.base, self.me = tag, base, opts.peer_id
        self._position, self._shared, self._connect = position, shared, connect
        self.members = Membership(opts.heartbeat_ttl)
        self.foreign: dict[int, Heartbeat] = {}  # peers of this run id with another base or config
        self.foreign_diff: dict[int, str] = {}  # their differing settings, once asked (CONF)
        self.keys_diff: dict[int, str] = {}  # identity mode: peers whose run file lists other site keys
        self._keys_compared: set[int] = set()
        self.seq = 0
        self.closed = False
        self._last_beat = 0.0
        self._exchanges = 0
        self._last_sync: dict[int, float] = {}
        # Pushes, DHT publication and the periodic DHT heartbeat exchange run beside the round loop:
        # on a slow link each costs round trips (stream setup, DHT walks) the round must not wait on.
        self._pusher = ThreadPoolExecutor(max_workers=PUSH_WORKERS, thread_name_prefix="onebyte-push")
        self._pushes: dict[str, dict[str, int]] = {}  # per peer: our records pushed to it, delivered or failed
        self._told: dict[int, float] = {}  # per peer: when a push last carried our heartbeat to it
        self._revocations_told: set[int] = set()  # peers we have exchanged revocations with
        self.relayed = 0  # records of others passed on, as a relay
        self.dht_copies = 0  # our records stored in the DHT copy (none while every push is delivered)
        self._newcomer = False  # a peer never seen before was heard from: read the DHT at the next exchange
        self._stored: set[int] = set()  # rounds of our records whose push failed and went to the DHT
        self._push_lock = threading.Lock()
        self.introducing = True  # until the first round: pass new peers' heartbeats on (_introduce)
        self._raw: dict[int, bytes] = {}  # the latest heartbeat as its author signed it, per peer
        self._beater = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onebyte-beat")
        self._beating: Future | None = None

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
        same, so the ones already waiting hear of it at once. False when the DHT could not be read."""
        hb = self.heartbeat().encode(self.opts.secret, self.opts.key)
        read = self._dht_exchange(hb, IDLE_TTL, read=True)
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
        data = push(b"", hb if hb is not None else self.heartbeat().encode(self.opts.secret, self.opts.key))
        for other in peers:
            if other.peer_id != self.me:
                self._pusher.submit(self._push_one, other, data, True)

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
                             rep.closed_digest(closed), self.net.contact)

    def meet(self) -> bool:
        """Ask each join peer directly who is live (MEET: one round trip, our heartbeat there, the
        heartbeats it knows back), instead of a first DHT exchange, which over a thin link took 12 s
        of a newcomer's start. Whether some other peer is now live."""
        request = meet_request(self.heartbeat().encode(self.opts.secret, self.opts.key))
        timeout = min(self.opts.request_timeout, self.opts.meet_timeout)

        def ask(contact: str) -> list[bytes]:
            try:
                return parse_meet(self.net.request(contact, request, timeout))
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
        return bool(self.others())

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
        if record and self.intake.offer(record, heard=self._heard) and self.opts.relay:
            self.forward(record, claimed_peer(record))  # authentic: offer accepted it

    def _heard(self, rec: Record) -> None:
        self.members.heard(rec.peer_id, rec.round)

    def forward(self, record: bytes, author: int) -> None:
        """As a relay: pass a record its author pushed to us on to every other live peer, once (when
        it is new to us). Peers behind NAT that cannot reach each other get each other's records so."""
        data = push(record, b"")
        for other in self.others().values():
            if other.peer_id != author:
                self._pusher.submit(self._forward_one, other, data)

    def _send(self, other: Heartbeat, data: bytes, what: str) -> bool:
        """One message on our channel to ``other``; whether it was handed over."""
        try:
            self.net.send(other.contact, data, self.opts.push_timeout)
        except (ProtocolError, NetworkError) as exc:
            log.debug("%s to peer %x failed: %s", what, other.peer_id, exc)
            return False
        return True

    def _forward_one(self, other: Heartbeat, data: bytes) -> None:
        if self._send(other, data, "relaying"):
            with self._push_lock:
                self.relayed += 1

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
        every other peer heard within ``IDLE_TTL``, and them to it, by passing on the heartbeats
        their authors signed (a relay cannot forge one). A peer whose DHT read missed some of the
        others (over a thin link a read can time out) so learns of them through anyone who met
        both, and every quorum count sees the same peers. Once per newcomer: 2 (n − 2) pushes of a
        few hundred bytes."""
        if self.closed or not self.introducing:
            return
        known = {p: hb for p, hb in self.waiting().items() if p not in (peer_id, self.me)}
        newcomer = self.members.get(peer_id)
        message = push(b"", data)
        for p, other in known.items():
            self._pusher.submit(self._push_one, other, message)  # not our heartbeat: nothing "told"
            if newcomer is not None and (raw := self._raw.get(p)) is not None:
                self._pusher.submit(self._push_one, newcomer, push(b"", raw))

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
            theirs = parse_config(self.net.request(hb.contact, Verb.CONF.value, self.opts.request_timeout))
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
            self.spread_revocations(new)
        self._exchanges += 1
        lost = self.members.lost(LOST_WINDOW) - {self.me}
        every = DHT_EVERY_LOST if lost else DHT_EVERY
        read = read or dialled or self._newcomer or self._exchanges % every == 1 or self._pushes_stale()
        self._newcomer = False
        hb = self.heartbeat()
        encoded = hb.encode(self.opts.secret, self.opts.key)
        if read:  # a fresh heartbeat wherever we look, so whoever looks next finds us moved
            self._dht_exchange(encoded, DHT_TTL_EXCHANGES * self.opts.heartbeat_interval, True)
        now, interval = time.monotonic(), self.opts.heartbeat_interval
        # peers our records have not carried a heartbeat to lately (slow rounds): keep them told
        quiet = [o for o in self.others().values() if now - self._told.get(o.peer_id, -1e9) >= interval]
        if quiet and not self.closed:
            self.tell(quiet, encoded)
        self.greet_revocations()
        self.audit(hb)
        if sync:
            self.sync()

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

    def sync(self) -> None:
        """Anti-entropy: fetch records a live peer holds and we lack (after partitions, restarts)."""
        now = time.monotonic()
        rep = self.replica
        round_, done = self._position()
        for other in list(self.members.live().values()):
            if other.peer_id == self.me or other.digest.hex() == rep.digest.hex():
                continue
            settled = other.closed < round_ - 1 and other.closed_digest != rep.closed_digest(other.closed)
            if not (settled or other.done or done):
                continue  # only the in-flight rounds differ: pushes and DHT reads will fill them
            if now - self._last_sync.get(other.peer_id, -1e9) < self.opts.sync_interval:
                continue
            self._last_sync[other.peer_id] = now
            try:
                self.reconcile(other)
            except (ProtocolError, NetworkError) as exc:
                log.debug("sync with peer %x failed: %s", other.peer_id, exc)

    # ----------------------------------------------------------------- revocations
    def spread_revocations(self, revocations: list[bytes]) -> None:
        """Send revocations new to us to every live peer, taking whatever each holds in return."""
        for other in self.others().values():
            self._exchange_revocations(other, revocations)

    def greet_revocations(self) -> None:
        """Identity mode: exchange every revocation in force with each live peer not yet exchanged
        with (once per peer: a newcomer, a restarted peer, an operator's revocation written while
        this peer was stopped or alone)."""
        if self.intake.roster is None:
            return
        for other in self.others().values():
            if other.peer_id not in self._revocations_told:
                self._exchange_revocations(other, self.intake.revocations_in_force())
            if other.peer_id not in self._keys_compared:
                self.compare_keys(other)

    def compare_keys(self, other: Heartbeat) -> None:
        """Identity mode, once per peer met: ask its run file's site keys (CONF) and warn when they
        differ from ours. Keys are not in the run tag, so a site whose run file lists another key,
        another ``until`` or another admin would otherwise count other records, silently apart."""
        try:
            theirs = parse_config(self.net.request(other.contact, Verb.CONF.value, self.opts.request_timeout))
        except (ProtocolError, NetworkError) as exc:
            log.info("could not compare site keys with peer %x: %s", other.peer_id, exc)
            return
        self._keys_compared.add(other.peer_id)
        if "keys" not in theirs:  # a peer older than this comparison
            return
        diff = "; ".join(differing_keys(self._shared()["keys"], theirs["keys"]))
        if diff and other.peer_id not in self.keys_diff:
            log.warning("peer %x's run file lists other site keys than ours (the replicas will count different "
                        "records): %s", other.peer_id, diff)
        if diff:
            self.keys_diff[other.peer_id] = diff
        else:
            self.keys_diff.pop(other.peer_id, None)

    def _exchange_revocations(self, other: Heartbeat, revocations: list[bytes]) -> None:
        try:
            reply = self.net.request(other.contact, revocations_request(revocations), self.opts.request_timeout)
            self.intake.revoke_all(parse_revocations(reply))
            self._revocations_told.add(other.peer_id)
        except (ProtocolError, NetworkError) as exc:
            log.info("could not exchange revocations with peer %x: %s", other.peer_id, exc)

    def answer_revocations(self, revocations: list[bytes]) -> list[bytes]:
        """REVK, answered: take each (checked like any other), pass the new ones on, and return
        every revocation in force here."""
        new = self.intake.revoke_all(revocations)
        if new and not self.closed:
            self._beater.submit(self.spread_revocations, new)
        return self.intake.revocations_in_force()

    def reconcile(self, other: Heartbeat) -> None:
        """Exchange with ``other`` what each lacks: revocations first, then records (by id)."""
        rep = self.replica
        if self.intake.roster is not None:  # the same revocations first, or records would go back and forth
            self._exchange_revocations(other, self.intake.revocations_in_force())
        theirs = parse_ids(self.net.request(other.contact, Verb.IDS.value, self.opts.request_timeout))
        with rep.lock:
            have = {rid[:8] for rid in rep.records} | self.intake.refused_ids()
        missing = [rid for rid in theirs if rid not in have]
        if missing:
            reply = self.net.request(other.contact, get_request(missing), self.opts.request_timeout)
            got = sum(self.intake.offer(data) for data in unpack_blobs(reply))
            log.info("synced %d records from peer %x", got, other.peer_id)
        with rep.lock:  # and hand over what they lack: the peer ahead sees the mismatch first
            extra = [rec.to_bytes() for rid, rec in rep.records.items() if rid[:8] not in theirs]
        if extra:
            self.net.request(other.contact, put_request(extra), self.opts.request_timeout)
            log.info("sent %d records to peer %x", min(len(extra), MAX_PUT), other.peer_id)

    # ----------------------------------------------------------------- records
    def publish(self, own: Record) -> None:
        """Push our record to every live peer now, and queue its durable DHT copy."""
        raw = own.to_bytes()
        now = time.monotonic()
        others = self.targets()
        durable = not others  # nobody to push to: the DHT copy is where a newcomer finds it
        if durable:
            self._beater.submit(self._store, own.round, raw)  # bundled: a DHT store every few rounds
        bare, full = push(raw, b""), None  # the heartbeat (a state hash) only when a peer is due one
        for other in others.values():
            told = now - self._told.get(other.peer_id, -1e9) < self.opts.heartbeat_interval
            if not told and full is None:
                full = push(raw, self.heartbeat().encode(self.opts.secret, self.opts.key))
            self._pusher.submit(self._push_one, other, bare if told else full, not told,
                                None if durable else (own.round, raw))

    def _store(self, r: int, raw: bytes, now: bool = False) -> None:
        try:
            self.net.publish(r, raw, now)
            with self._push_lock:
                self.dht_copies += 1
        except (ProtocolError, NetworkError) as exc:  # the DHT copy is only the fallback for lost pushes
            log.info("DHT copy of round %d not stored: %s", r, exc)

    def _push_one(self, other: Heartbeat, data: bytes, with_heartbeat: bool = False,
                  record: tuple[int, bytes] | None = None) -> None:
        # One retry before the DHT fallback: on a lossy link a lone push fails now and then, and a DHT
        # store walks the DHT (about 17 KB with 4 peers: two seconds of a 64 kbit/s line for a 1 KB
        # record). Only the record whose push failed is stored: when a failure turned on a DHT copy
        # of every record for a minute, gradient codes fell to 0.28 of a thin-link peer's bytes.
        if not (self._send(other, data, "push") or (not self.closed and self._send(other, data, "push retry"))):
            outcome = "failed"
            with self._push_lock:
                stored = record is None or record[0] in self._stored
                if not stored:  # the pushes of one record fail together: store it once
                    self._stored = {r for r in self._stored if r > record[0] - STORED_WINDOW} | {record[0]}
            if not stored and not self.closed:
                self._beater.submit(self._store, *record, True)  # where the peer that missed it reads it
        else:
            outcome = "delivered"
            if with_heartbeat:
                self._told[other.peer_id] = time.monotonic()
        with self._push_lock:
            counts = self._pushes.setdefault(f"{other.peer_id:x}", {"delivered": 0, "failed": 0})
            counts[outcome] += 1

    def push_counts(self) -> dict[str, dict[str, int]]:
        """Per peer: our records pushed to it, delivered or failed."""
        with self._push_lock:
            return {p: dict(c) for p, c in sorted(self._pushes.items())}

    def fetch_round(self, r: int, authors: Iterable[int]) -> None:
        """Ask the authors of missing records for round r directly; the DHT copy is the fallback
        when an author cannot be reached (it may have crashed)."""
        unreachable = False
        for p in authors:
            hb = self.members.get(p)
            if hb is None or p == self.me:
                unreachable = True
                continue
            try:
                reply = self.net.request(hb.contact, round_request(r), self.opts.request_timeout)
                for data in unpack_blobs(reply):
                    self.intake.offer(data)
            except (ProtocolError, NetworkError) as exc:
                log.debug("could not fetch round %d from peer %x: %s", r, p, exc)
                unreachable = True
        if unreachable:
            self.pull(range(r, r + 1))

    def pull(self, rounds: range) -> None:
        """Read rounds from the DHT copy."""
        for r in rounds:
            try:
                raws = self.net.records(r)
            except (ProtocolError, NetworkError) as exc:
                log.debug("could not read round %d: %s", r, exc)
                continue
            for data in raws:
                self.intake.offer(data)

    def close(self) -> None:
        """Stop the executors: queued DHT publications still go out (each call is bounded), pushes
        not started are dropped (each one in flight is bounded by ``push_timeout``). Idempotent."""
        self.closed = True
        self._beater.shutdown(wait=True)
        self._pusher.shutdown(wait=True, cancel_futures=True)
