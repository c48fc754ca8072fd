"""A networked peer: the simulator's round, run by one machine against a transport.

Each round a peer measures its K gradients at its current state, publishes the record, waits
for the previous round's records from the peers it knows are live (one round in flight, so the
link's latency hides behind compute; in lockstep, for this round's records from all N), applies
whatever it has and moves on. Late records are applied whenever they arrive: the state is a
function of the record *set*, so nobody waits for stragglers and partitions heal by exchanging
what is missing (anti-entropy on set digests). Everything received is validated before it can
touch the state; every accepted record is in the ledger (fsynced) before it is applied.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, DivergenceError, LedgerError, ModelError, OnebyteError, ProtocolError
from .ledger import LEDGER_NAME, LedgerWriter, load_snapshot, save_snapshot
from .membership import ForeignRun, Heartbeat, Membership, decode_heartbeat
from .record import Record, SetDigest, decode_record
from .replay import apply_records, effective, plan
from .tasks.data import Example
from .training import Privacy, Setup, make_record
from .transport.base import Transport

__all__ = ["PeerOptions", "Peer"]

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "snapshot.safetensors"
CONNECT_NAME = "connect.txt"
#: Records more than this many rounds ahead of the newest round we know of are refused.
FUTURE_ROUNDS = 4
#: Bounds on what one bulk reply may carry.
MAX_IDS = 1 << 20
#: Flood bounds: records waiting to be applied, and distinct peers accepted per round.
MAX_PENDING = 100_000
MAX_PUT = 4096
MAX_PEERS_PER_ROUND = 1024
MAX_REPLY = 512 << 20
#: Pushes in flight at once (one per live peer per round; the rest queue).
PUSH_WORKERS = 8
#: A background heartbeat exchange reads the DHT (a walk that downloads every peer's signed
#: heartbeat from every node: kilobytes) only when pushes have not kept each live peer fresh, or
#: after a dial; every DHT_READ_EVERY-th exchange reads it regardless, to find peers that do not
#: push to us (the far side of a partition, foreign runs). Our own heartbeat is stored every time.
DHT_READ_EVERY = 3


@dataclass(frozen=True)
class PeerOptions:
    peer_id: int
    rounds: int | None = None  # complete rounds 0..rounds-1; None: until stopped
    lockstep: int = 0  # > 0: every round waits for the records of peers 0..lockstep-1
    secret: bytes = b""
    snapshot_every: int = 10
    min_deadline: float = 2.0  # bounds of the adaptive round deadline (seconds)
    max_deadline: float = 60.0
    lockstep_timeout: float = 600.0
    heartbeat_interval: float = 10.0  # DHT heartbeats (discovery); pushes carry one every round too
    heartbeat_ttl: float = 30.0
    join_timeout: float = 20.0
    drain_timeout: float = 120.0
    sync_interval: float = 3.0
    poll: float = 0.05  # local check for pushed records (no network traffic)
    dht_poll: float = 2.0  # once half the deadline has passed, read the round from the DHT this often
    lookback: int = 2  # rounds re-read from the DHT while draining
    pipeline: int = 1  # rounds in flight: after publishing round r, wait for round r - pipeline (not lockstep)
    push_timeout: float = 5.0
    request_timeout: float = 30.0
    eval_size: int = 0  # held-out examples evaluated at start and end (0: none)


class Peer:
    """One replica: state + ledger + the round loop, over any ``Transport``."""

    def __init__(self, setup: Setup, shard: list[Example], transport: Transport, out: Path | str,
                 opts: PeerOptions, privacy: Privacy | None = None):
        self.setup, self.shard, self.net, self.opts = setup, shard, transport, opts
        self.privacy = privacy
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.tag = setup.spec.run_tag
        self._base = bytes.fromhex(setup.spec.base_hash)[:16]
        self.foreign: dict[int, Heartbeat] = {}  # peers of this run id with another base or config
        self.lock = threading.RLock()  # guards state, ledger and the record index
        self.records: dict[bytes, Record] = {}  # every accepted record, applied or still pending
        self.applied: set[bytes] = set()
        self.slots: dict[tuple[int, int, int], list[bytes]] = {}  # slot -> record ids (2 = equivocation)
        self.flagged: set[int] = set()  # peers caught equivocating
        self.round_peers: dict[int, set[int]] = {}  # round -> peers we hold a record from
        self.digest = SetDigest()  # of the *applied* records: what the state hash is a function of
        self.round_digest: dict[int, int] = {}  # round -> sum of record ids of that round, mod 2^256
        self.pending: list[Record] = []
        # records that decoded but can never be valid here (over the sample limit or the update
        # cap): remembered so that sync and round fetches stop asking for them again and again
        self.refused: set[bytes] = set()  # 8-byte id prefixes, as in IDS/GET
        self.refused_slots: dict[int, set[int]] = {}  # round -> authors whose record was refused
        self.rejected: Counter[str] = Counter()
        self._logged: set[tuple[int, str]] = set()
        self.members = Membership(opts.heartbeat_ttl)
        self.seq = 0
        self.round = 0  # next round this peer will run
        self.measured_through = -1  # newest round this peer has measured its own record for
        self.rounds_completed = 0
        self.done = False
        self.round_time_ema: float | None = None
        self._last_beat = 0.0
        self._exchanges = 0
        self._last_sync: dict[int, float] = {}
        self.payload_bytes = 0
        self._hash_cache = ("", "")
        self.max_round_seconds = 0.0
        self.started = time.perf_counter()
        self.eval_before: dict[str, float] | None = None
        self.eval_after: dict[str, float] | None = None
        # Pushes, DHT publication and the periodic DHT heartbeat exchange run beside the round loop:
        # on a slow link each costs round trips (stream setup, DHT walks) the round must not wait on.
        self._pusher = ThreadPoolExecutor(max_workers=PUSH_WORKERS, thread_name_prefix="onebyte-push")
        self._beater = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onebyte-beat")
        self._beating: Future | None = None
        self._first_round: int | None = None  # where run() started: that round is waited for in full
        self.ledger = LedgerWriter(self.out / LEDGER_NAME)  # creates it, or repairs a torn tail
        self._restore(self.ledger.existing)
        self.net.serve(self.handle)

    # ----------------------------------------------------------------- restoring and joining
    def _restore(self, entries: list[bytes]) -> None:
        """Rebuild from snapshot + ledger when this --out already holds a run."""
        if not entries:
            return
        path = self.out / LEDGER_NAME
        covered = 0
        snap = self.out / SNAPSHOT_NAME
        if snap.exists():
            meta = load_snapshot(snap, self.setup.state)
            covered = int(meta["ledger_entries"])
        recs = []
        for i, data in enumerate(entries):
            try:
                rec = decode_record(data, run_tag=self.tag)
            except ProtocolError as exc:
                raise LedgerError(f"{path}: entry {i}: {exc}") from None
            self._index(rec)
            recs.append(rec)
        if snap.exists() and covered and _digest_of(recs[:covered]) != meta["set_digest"]:
            raise LedgerError(f"{snap}: snapshot does not match the first {covered} ledger entries")
        with self.lock:
            # the snapshot holds effective(prefix); move to effective(all), undoing what a later
            # entry turned into an equivocation
            before = {r.record_id: r for r in effective(recs[:covered])}
            after = {r.record_id: r for r in effective(recs)}
            apply_records(self.setup.state, [r for k, r in after.items() if k not in before], self.setup.train)
            apply_records(self.setup.state, [r for k, r in before.items() if k not in after], self.setup.train,
                          sign=-1)
            self._mark_applied(recs)
        own = [r.round for r in self.records.values() if r.peer_id == self.opts.peer_id]
        self.round = max(own, default=-1) + 1
        self.measured_through = self.round - 1
        self.rounds_completed = len(set(own))
        log.info("restored %d records from %s (resuming at round %d)", len(self.records), self.out, self.round)

    def _index(self, rec: Record) -> None:
        if rec.record_id in self.records:
            return
        self.records[rec.record_id] = rec
        self.slots.setdefault((rec.round, rec.peer_id, rec.first_sample), []).append(rec.record_id)
        self.round_peers.setdefault(rec.round, set()).add(rec.peer_id)

    def _mark_applied(self, recs: list[Record]) -> None:
        for rec in recs:
            if rec.record_id in self.applied:
                continue
            self.applied.add(rec.record_id)
            self.digest.add(rec.record_id)
            rid = int.from_bytes(rec.record_id, "big")
            self.round_digest[rec.round] = (self.round_digest.get(rec.round, 0) + rid) % (1 << 256)
            self.payload_bytes += rec.payload_bytes()

    def _refuse_foreign(self) -> None:
        """Refuse to join a swarm whose peers run another base model or configuration."""
        if self.members.live().keys() - {self.opts.peer_id} or not self.foreign:
            return
        hb = next(iter(self.foreign.values()))
        if hb.base != self._base:
            raise ModelError(f"the peers of this run use another base model (hash {hb.base.hex()[:12]}…, this "
                             f"peer has {self._base.hex()[:12]}…): check --model")
        raise ConfigError(f"the peers of this run use another training configuration (run tag "
                          f"{hb.run_tag.hex()[:12]}…, this peer has {self.tag.hex()[:12]}…): every flag under "
                          "'training' must match theirs")

    def join(self) -> None:
        """A newcomer with an empty ledger: take a verified snapshot from a live peer, if any."""
        if self.records:
            return
        deadline = time.monotonic() + self.opts.join_timeout
        while time.monotonic() < deadline:
            self.beat(force=True, sync=False)  # no record-by-record sync: the snapshot brings them all
            self._refuse_foreign()
            others = {p: hb for p, hb in self.members.live().items() if p != self.opts.peer_id}
            if self.records:
                return  # records already arrive by push: we are in, and sync fills the past
            if others:
                best = max(others.values(), key=lambda hb: hb.records)
                if best.records == 0:
                    return  # everyone is new: start from the base
                try:
                    self._install_snapshot(best)
                    return
                except (ProtocolError, LedgerError) as exc:
                    log.warning("snapshot from peer %x rejected: %s", best.peer_id, exc)
            time.sleep(0.5)
        log.info("no live peer answered within %.0fs; starting from the base model", self.opts.join_timeout)

    def _install_snapshot(self, hb: Heartbeat) -> None:
        reply = self.net.request(hb.contact, b"SNAP", self.opts.request_timeout)
        if len(reply) < 8:
            raise ProtocolError("snapshot reply too short")
        n_snap, = struct.unpack_from("<Q", reply)
        snap_bytes, rest = reply[8:8 + n_snap], reply[8 + n_snap:]
        raws = _unpack_blobs(rest)
        recs = [decode_record(r, run_tag=self.tag, secret=self.opts.secret) for r in raws]
        tmp = self.out / (SNAPSHOT_NAME + ".joining")
        tmp.write_bytes(snap_bytes)
        try:
            with self.lock:
                if self.records or self.pending:
                    raise ProtocolError("records arrived before the snapshot; joining by sync instead")
                meta = load_snapshot(tmp, self.setup.state)  # checks the tensors against its state hash
                if _digest_of(recs) != meta["set_digest"]:
                    raise ProtocolError("snapshot's records do not add up to its set digest")
                for other in self.members.live().values():
                    if other.digest.hex() == meta["set_digest"] and other.state_hash.hex() != meta["state_hash"]:
                        raise ProtocolError(f"peer {other.peer_id:x} holds the same set with another state")
                for r in recs:
                    self._index(r)
                self._mark_applied(recs)
                self.flagged |= {r.peer_id for r in recs if len(self.slots[(r.round, r.peer_id, r.first_sample)]) > 1}
                self.ledger.append(recs)
                self._snapshot()
        finally:
            tmp.unlink(missing_ok=True)
        self.round = max(self.round, int(meta["round"]))
        self.measured_through = self.round - 1
        log.info("joined from peer %x: %d records, round %s", hb.peer_id, len(recs), meta["round"])

    # ----------------------------------------------------------------- intake
    def _reject(self, source: int, reason: str) -> None:
        self.rejected[reason] += 1
        if (source, reason) not in self._logged:
            self._logged.add((source, reason))
            log.warning("rejected a record from peer %x: %s (further ones are counted, not logged)", source, reason)

    def offer(self, data: bytes) -> bool:
        """Validate one raw record; queue it for applying if it is new and acceptable."""
        try:
            rec = decode_record(data, run_tag=self.tag, secret=self.opts.secret)
        except ProtocolError as exc:
            self._reject(_claimed_peer(data), str(exc))
            return False
        with self.lock:
            if rec.record_id in self.records:
                return False
            if rec.count != self.setup.train.samples or rec.first_sample != 0:
                self._refuse(rec)
                self._reject(rec.peer_id, "record exceeds the per-round sample limit")
                return False
            if rec.round > max(self.round, self._newest_known()) + FUTURE_ROUNDS:
                self._reject(rec.peer_id, "record from a round far in the future")
                return False
            if len(self.slots.get((rec.round, rec.peer_id, rec.first_sample), ())) >= 2:
                self._reject(rec.peer_id, "slot already equivocated")
                return False
            if len(self.pending) >= MAX_PENDING:
                self._reject(rec.peer_id, "too many records waiting to be applied (flood)")
                return False
            if len(self.round_peers.get(rec.round, ())) >= MAX_PEERS_PER_ROUND:
                self._reject(rec.peer_id, "too many peers in one round (flood)")
                return False
            try:
                plan([rec], self.setup.train, self.setup.state.frac_bits.values())
            except ProtocolError as exc:
                self._refuse(rec)
                self._reject(rec.peer_id, str(exc))
                return False
            self._index(rec)
            self.pending.append(rec)
            return True

    def _refuse(self, rec: Record) -> None:
        if len(self.refused) < MAX_IDS:
            self.refused.add(rec.record_id[:8])
            self.refused_slots.setdefault(rec.round, set()).add(rec.peer_id)

    def closed_digest(self, through: int) -> bytes:
        """Digest of the records of rounds <= ``through``."""
        total = sum(d for r, d in self.round_digest.items() if r <= through) % (1 << 256)
        return total.to_bytes(32, "big")

    def _newest_known(self) -> int:
        return max((hb.round for hb in self.members.latest.values()), default=0)

    def apply_pending(self) -> int:
        """Make queued records durable (ledger, fsync), then apply them as one batch.

        In lockstep, records of rounds this peer has not measured yet are held back, so each
        round is measured at exactly the state the simulator would have (all earlier rounds)."""
        with self.lock:
            if self.opts.lockstep:
                batch = [r for r in self.pending if r.round <= self.measured_through]
                self.pending = [r for r in self.pending if r.round > self.measured_through]
            else:
                batch, self.pending = self.pending, []
            if batch:
                self.ledger.append(batch)
                apply_records(self.setup.state, effective(batch + self._slot_mates(batch)), self.setup.train)
                undo = self._newly_equivocated(batch)
                if undo:
                    apply_records(self.setup.state, undo, self.setup.train, sign=-1)
                self._mark_applied(batch)
            return len(batch)

    def _slot_mates(self, batch: list[Record]) -> list[Record]:
        """Already-applied records sharing a slot with the batch (so ``effective`` sees conflicts)."""
        ids = {r.record_id for r in batch}
        mates = []
        for r in batch:
            for rid in self.slots[(r.round, r.peer_id, r.first_sample)]:
                if rid not in ids and rid in self.applied:
                    mates.append(self.records[rid])
        return mates

    def _newly_equivocated(self, batch: list[Record]) -> list[Record]:
        """Applied records whose slot the batch turned into an equivocation: to be undone exactly."""
        undo = []
        for r in batch:
            ids = self.slots[(r.round, r.peer_id, r.first_sample)]
            if len(ids) == 2 and r.record_id == ids[1]:
                self.flagged.add(r.peer_id)
                log.warning("peer %x published two different records for round %d: neither counts",
                            r.peer_id, r.round)
                if ids[0] in self.applied:
                    undo.append(self.records[ids[0]])
        return undo

    def pull(self, rounds: range) -> None:
        for r in rounds:
            try:
                raws = self.net.records(r)
            except ProtocolError as exc:
                log.debug("could not read round %d: %s", r, exc)
                continue
            for data in raws:
                self.offer(data)

    # ----------------------------------------------------------------- membership and sync
    def _dial_requested(self) -> bool:
        """An operator (or a test) asks a running peer to dial more peers by writing their
        multiaddrs to ``OUT/connect.txt``; the file is consumed (renamed) once dialled."""
        path = self.out / CONNECT_NAME
        if not path.exists():
            return False
        addrs = path.read_text().split()
        path.replace(path.with_suffix(".done"))
        try:
            self.net.connect(addrs)
            log.info("dialled %s", " ".join(addrs))
        except ProtocolError as exc:
            log.warning("%s", exc)
        return True

    def _heartbeat(self) -> Heartbeat:
        with self.lock:
            self.seq += 1
            closed = max(-1, self.round - 2)
            return Heartbeat(self.tag, self._base, self.opts.peer_id, self.seq, self.round, len(self.applied),
                             self.done, bytes.fromhex(self.digest.hex()), bytes.fromhex(self.state_hash()),
                             closed, self.closed_digest(closed), self.net.contact)

    def state_hash(self) -> str:
        """The state hash, recomputed only when the applied set changed (it reads every weight)."""
        with self.lock:
            key = self.digest.hex()
            if self._hash_cache[0] != key:
                self._hash_cache = (key, self.setup.state.state_hash())
            return self._hash_cache[1]

    def _observe(self, data: bytes) -> None:
        try:
            self.members.observe(decode_heartbeat(data, self.tag, self.opts.secret))
        except ForeignRun as exc:
            self.foreign[exc.heartbeat.peer_id] = exc.heartbeat
            self._reject(exc.heartbeat.peer_id, "heartbeat for another base model or configuration")
        except ProtocolError as exc:
            self._reject(-1, f"heartbeat: {exc}")

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
        self._exchanges += 1
        read = read or dialled or self._exchanges % DHT_READ_EVERY == 0 or self._pushes_stale()
        hb = self._heartbeat()
        try:
            self.net.announce(hb.encode(self.opts.secret))
            beats = self.net.heartbeats() if read else []
        except ProtocolError as exc:
            log.debug("heartbeat exchange failed: %s", exc)
            return
        for data in beats:
            self._observe(data)
        self.audit(hb)
        if sync:
            self.sync()

    def _pushes_stale(self) -> bool:
        """Whether some live peer has not been heard from (by push) within a heartbeat interval,
        or no other peer is live: then only the DHT can tell us who is there."""
        now = time.monotonic()
        others = [p for p in self.members.live(now) if p != self.opts.peer_id]
        return not others or any(now - self.members.seen_at[p] > self.opts.heartbeat_interval for p in others)

    def audit(self, mine: Heartbeat) -> None:
        for other in self.members.live().values():
            if other.peer_id != mine.peer_id and other.digest == mine.digest and other.state_hash != mine.state_hash:
                raise DivergenceError(
                    f"peer {other.peer_id:x} holds the same record set ({mine.digest.hex()[:12]}…) with state "
                    f"{other.state_hash.hex()[:12]}…, this peer has {mine.state_hash.hex()[:12]}…: replicas diverged")

    def sync(self) -> None:
        """Anti-entropy: fetch records a live peer holds and we lack (after partitions, restarts)."""
        now = time.monotonic()
        for other in list(self.members.live().values()):
            if other.peer_id == self.opts.peer_id or other.digest.hex() == self.digest.hex():
                continue
            settled = other.closed < self.round - 1 and other.closed_digest != self.closed_digest(other.closed)
            if not (settled or other.done or self.done):
                continue  # only the in-flight rounds differ: pushes and DHT reads will fill them
            if now - self._last_sync.get(other.peer_id, -1e9) < self.opts.sync_interval:
                continue
            self._last_sync[other.peer_id] = now
            try:
                ids = self.net.request(other.contact, b"IDS", self.opts.request_timeout)
                if len(ids) % 8 or len(ids) > 8 * MAX_IDS:
                    raise ProtocolError("malformed id list")
                with self.lock:
                    have = {rid[:8] for rid in self.records} | self.refused
                theirs = {ids[i:i + 8] for i in range(0, len(ids), 8)}
                missing = [rid for rid in theirs if rid not in have]
                if missing:
                    reply = self.net.request(other.contact, b"GET" + b"".join(missing[:MAX_IDS]),
                                             self.opts.request_timeout)
                    got = sum(self.offer(data) for data in _unpack_blobs(reply))
                    log.info("synced %d records from peer %x", got, other.peer_id)
                with self.lock:  # and hand over what they lack: the peer ahead sees the mismatch first
                    extra = [rec.to_bytes() for rid, rec in self.records.items() if rid[:8] not in theirs]
                if extra:
                    self.net.request(other.contact, b"PUT" + _pack_blobs(extra[:MAX_PUT]), self.opts.request_timeout)
                    log.info("sent %d records to peer %x", min(len(extra), MAX_PUT), other.peer_id)
            except ProtocolError as exc:
                log.debug("sync with peer %x failed: %s", other.peer_id, exc)

    def handle(self, request: bytes) -> bytes:
        """Serve bulk requests: IDS (8-byte id prefixes), GET (records by prefix), SNAP (snapshot)."""
        if request.startswith(b"PUT"):
            try:
                blobs = _unpack_blobs(request[3:])
            except ProtocolError:
                return b""
            for data in blobs[:MAX_PUT]:
                self.offer(data)  # each validated like any other record
            return b""
        if request.startswith(b"REC") and len(request) >= 5:
            n, = struct.unpack_from("<H", request, 3)  # a record pushed by its author, then its heartbeat
            self.offer(request[5:5 + n])  # validated like any other
            if len(request) > 5 + n:
                self._observe(request[5 + n:])
            return b""
        with self.lock:
            if request.startswith(b"RND") and len(request) == 7:
                r, = struct.unpack_from("<I", request, 3)
                return _pack_blobs([rec.to_bytes() for rec in self.records.values() if rec.round == r])
            if request == b"IDS":
                return b"".join(rid[:8] for rid in self.records)
            if request.startswith(b"GET"):
                body = request[3:]
                if len(body) % 8 or len(body) > 8 * MAX_IDS:
                    return b""
                by_prefix = {rid[:8]: rec for rid, rec in self.records.items()}
                wanted = (by_prefix.get(body[i:i + 8]) for i in range(0, len(body), 8))
                return _pack_blobs([r.to_bytes() for r in wanted if r is not None])
            if request == b"SNAP":
                self.apply_pending()
                from safetensors.torch import save

                st = self.setup.state
                meta = {"state_hash": st.state_hash(), "set_digest": self.digest.hex(),
                        "records": str(len(self.applied)), "round": str(self.round)}
                snap = save({k: v.contiguous() for k, v in st.tensors().items()}, metadata=meta)
                applied = [self.records[rid].to_bytes() for rid in self.applied]
                return struct.pack("<Q", len(snap)) + snap + _pack_blobs(applied)
        return b""

    # ----------------------------------------------------------------- rounds
    def _deadline(self) -> float:
        if self.round_time_ema is None:
            return self.opts.max_deadline / 2
        return min(self.opts.max_deadline, max(self.opts.min_deadline, 3.0 * self.round_time_ema + 1.0))

    def _expected(self, r: int) -> set[int]:
        if self.opts.lockstep:
            return set(range(self.opts.lockstep))
        live = self.members.live()
        # live peers at most one round behind; one further behind is catching up and is not waited for
        return {p for p, hb in live.items() if hb.round >= r - 1 and not hb.done} | {self.opts.peer_id}

    def _have(self, r: int) -> set[int]:
        """Peers whose record for round r we hold, or refused for good (nothing more will come)."""
        with self.lock:
            return set(self.round_peers.get(r, ())) | self.refused_slots.get(r, set())

    def run_round(self, r: int, stop: threading.Event | None = None) -> None:
        """Measure and publish round r, then wait (bounded) for the records of round w = r - pipeline.

        With a pipeline of one, round r's records travel while every peer measures round r + 1: the
        link's latency hides behind compute, and a round is measured at a state that has all rounds
        before r - 1 and whatever of r - 1 has arrived (lockstep waits for round r itself)."""
        t0 = time.monotonic()
        w = r - self.opts.pipeline
        if self.opts.lockstep or self._first_round is None or w < self._first_round:
            w = r  # lockstep, and the first round a peer runs, wait for the round itself (peers line up)
        lacking = self._expected(w - 1) - self._have(w - 1) if w > 0 else set()
        if lacking:
            self._fetch_round(w - 1, lacking)  # a push went missing
        self.apply_pending()
        with self.lock:
            own_ids = self.slots.get((r, self.opts.peer_id, 0))
            own = self.records[own_ids[0]] if own_ids else None
        if own is None:
            own, _ = make_record(self.setup, self.shard, r, self.opts.peer_id, 0, self.opts.secret, self.privacy)
            self.offer(own.to_bytes())
        self.measured_through = max(self.measured_through, r)
        self.apply_pending()
        self._beater.submit(self._publish, r, own.to_bytes())  # a DHT store every few rounds
        self._push(own)
        published = last_read = time.monotonic()
        limit = self.opts.lockstep_timeout if self.opts.lockstep else self._deadline()
        while True:
            # Read the DHT copy only when a peer we lack is already past round w: its record
            # exists, so its push must have been lost (waiting on a slower peer costs nothing).
            lost = {p for p in self._expected(w) - self._have(w)
                    if p in self.members.latest and self.members.latest[p].round > w}
            if lost and time.monotonic() - last_read >= self.opts.dht_poll:
                self._fetch_round(w, lost)
                last_read = time.monotonic()
            self.apply_pending()
            missing = self._expected(w) - self._have(w)
            if not missing:
                self.round_time_ema = _ema(self.round_time_ema, time.monotonic() - published)
                break
            if time.monotonic() - published > limit:
                if self.opts.lockstep:
                    raise OnebyteError(f"lockstep round {w}: no record from peers {sorted(missing)} in {limit:.0f}s")
                log.info("round %d closed at its %.1fs deadline without peers %s", w, limit,
                         ", ".join(f"{p:x}" for p in sorted(missing)))
                self.round_time_ema = _ema(self.round_time_ema, limit)
                break
            if stop is not None and stop.is_set() and time.monotonic() - t0 > self.opts.min_deadline:
                break
            self.beat()
            time.sleep(self.opts.poll)
        self.max_round_seconds = max(self.max_round_seconds, time.monotonic() - t0)
        self.round = r + 1
        self.rounds_completed += 1
        if self.opts.snapshot_every and self.rounds_completed % self.opts.snapshot_every == 0:
            self._snapshot()
        self.beat()  # rate-limited: between DHT heartbeats, our pushes carry one every round

    def _fetch_round(self, r: int, authors: set[int]) -> None:
        """Ask the authors of missing records for round r directly; the DHT copy is the fallback
        when an author cannot be reached (it may have crashed)."""
        unreachable = False
        for p in authors:
            hb = self.members.latest.get(p)
            if hb is None or p == self.opts.peer_id:
                unreachable = True
                continue
            try:
                reply = self.net.request(hb.contact, b"RND" + struct.pack("<I", r), self.opts.request_timeout)
                for data in _unpack_blobs(reply):
                    self.offer(data)
            except ProtocolError as exc:
                log.debug("could not fetch round %d from peer %x: %s", r, p, exc)
                unreachable = True
        if unreachable:
            self.pull(range(r, r + 1))

    def _push(self, rec: Record) -> None:
        """Send our record straight to every live peer, all at once and without waiting for the
        answers (each is a stream setup plus a round trip; the DHT copy is the fallback)."""
        raw = rec.to_bytes()
        data = b"REC" + struct.pack("<H", len(raw)) + raw + self._heartbeat().encode(self.opts.secret)
        for other in list(self.members.live().values()):
            if other.peer_id != self.opts.peer_id:
                self._pusher.submit(self._push_one, other, data)

    def _publish(self, r: int, raw: bytes) -> None:
        try:
            self.net.publish(r, raw)
        except ProtocolError as exc:  # the DHT copy is only the fallback for lost pushes
            log.info("DHT copy of round %d not stored: %s", r, exc)

    def _push_one(self, other: Heartbeat, data: bytes) -> None:
        try:
            self.net.request(other.contact, data, self.opts.push_timeout)
        except ProtocolError as exc:
            log.debug("push to peer %x failed: %s", other.peer_id, exc)

    def _snapshot(self) -> None:
        with self.lock:
            self.apply_pending()
            # ledger entries are appended exactly when applied, so the applied count is the prefix length
            save_snapshot(self.out / SNAPSHOT_NAME, self.setup.state, self.digest, self.round,
                          extra={"ledger_entries": str(len(self.applied))})

    def start_round(self) -> int:
        """Where to begin: after our own last round, and at the newest round the swarm has reached."""
        self.beat(force=True)
        return max(self.round, self._newest_known())

    def evaluate(self) -> dict[str, float] | None:
        """Held-out loss and accuracy at the current state (``eval_size`` 0: skip)."""
        if not self.opts.eval_size:
            return None
        with self.lock:
            return self.setup.objective.evaluate(self.setup.dataset.test[: self.opts.eval_size])

    def run(self, stop: threading.Event | None = None, on_round: Any = None) -> dict[str, Any]:
        self.join()
        self.eval_before = self.evaluate()
        r = self._first_round = self.start_round()
        while (self.opts.rounds is None or r < self.opts.rounds) and not (stop is not None and stop.is_set()):
            self.run_round(r, stop)
            self.write_summary()
            if on_round is not None:
                on_round(self)
            r += 1  # a slow peer keeps its pace; only joiners and restarters jump to the newest round
        self.drain(short=stop is not None and stop.is_set())
        self.eval_after = self.evaluate()
        return self.write_summary()

    def drain(self, short: bool = False) -> None:
        """Wait (bounded) until every live peer that has finished holds the same record set."""
        self.done = True
        timeout = min(self.opts.drain_timeout, 5.0) if short else self.opts.drain_timeout
        end = time.monotonic() + timeout
        final = self.opts.rounds
        while time.monotonic() < end:
            if final is not None:
                self.pull(range(max(0, final - self.opts.lookback), final))
            self.apply_pending()
            self.beat(force=True)
            live = {p: hb for p, hb in self.members.live().items() if p != self.opts.peer_id}
            if all(hb.done and hb.digest.hex() == self.digest.hex() for hb in live.values()):
                # hold a moment so slower peers can see our final heartbeat, then leave
                time.sleep(min(2.0, max(0.0, end - time.monotonic())))
                self.apply_pending()
                break
            time.sleep(0.5)
        else:
            log.warning("drain ended after %.0fs without agreement from every live peer", timeout)
        self._snapshot()

    # ----------------------------------------------------------------- reporting
    def summary(self) -> dict[str, Any]:
        with self.lock:
            st = self.setup.state
            return {
                "peer_id": f"{self.opts.peer_id:x}",
                "model": self.setup.spec.model,
                "task": self.setup.spec.task,
                "codec": self.setup.train.codec.label,
                "samples_per_round": self.setup.train.samples,
                "rounds": self.opts.rounds,
                "rounds_completed": self.rounds_completed,
                "round": self.round,
                "records": len(self.applied),
                "records_accepted": len(self.records),
                "records_rejected": sum(self.rejected.values()),
                "rejections": dict(self.rejected),
                "flagged_peers": sorted(f"{p:x}" for p in self.flagged),
                "gradients": sum(self.records[rid].count for rid in self.applied),
                "payload_bytes": self.payload_bytes,
                "bytes_sent": self.net.bytes_sent,
                "bytes_received": self.net.bytes_received,
                "state_hash": st.state_hash(),
                "set_digest": self.digest.hex(),
                "base_hash": self.setup.spec.base_hash,
                "run_tag": self.tag.hex(),
                "addresses": self.net.addresses,
                "done": self.done,
                "max_round_seconds": round(self.max_round_seconds, 3),
                "peers": len({rec.peer_id for rec in self.records.values()}),
                "forward_passes": 2 * sum(r.count for r in self.records.values() if r.peer_id == self.opts.peer_id),
                "eval_before": self.eval_before,
                "eval_after": self.eval_after,
                "seconds": round(time.perf_counter() - self.started, 3),
            }

    def write_summary(self) -> dict[str, Any]:
        s = self.summary()
        if self.privacy is not None:
            s["dp"] = self.privacy.accountant.report()
        tmp = self.out / "summary.json.tmp"
        tmp.write_text(json.dumps(s, indent=2) + "\n")
        os.replace(tmp, self.out / "summary.json")
        return s

    def close(self) -> None:
        self._beater.shutdown(wait=True)  # queued DHT publications still go out (each call is bounded)
        self._pusher.shutdown(wait=True, cancel_futures=True)  # each push is bounded by push_timeout
        self.ledger.close()


def _digest_of(recs: list[Record]) -> str:
    d = SetDigest()
    for rec in recs:
        d.add(rec.record_id)
    return d.hex()


def _ema(old: float | None, x: float, alpha: float = 0.3) -> float:
    return x if old is None else (1 - alpha) * old + alpha * x


def _claimed_peer(data: bytes) -> int:
    """The peer id a (possibly invalid) record claims, for logging only."""
    try:
        return struct.unpack_from("<Q", data, 24)[0]
    except struct.error:
        return -1


def _pack_blobs(blobs: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in blobs)


def _unpack_blobs(data: bytes) -> list[bytes]:
    if len(data) > MAX_REPLY:
        raise ProtocolError("reply too large")
    out, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ProtocolError("truncated reply")
        n, = struct.unpack_from("<I", data, pos)
        if pos + 4 + n > len(data):
            raise ProtocolError("truncated reply")
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out
