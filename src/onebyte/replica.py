"""The replica: a record set, its ledger, the state it determines, and the digests that name it.

Every path that changes a model's state goes through here — the simulator, a networked peer,
a restart and ``replay`` — in one order: *admit* (index the record, queue it), *flush* (append
the batch to the ledger and fsync, then apply it with integer arithmetic). So nothing touches the
state before it is durable, and replicas holding the same record set hold the same bits.

Equivocation: a slot (round, peer, first sample) holding two different records counts for
nothing; when the second arrives after the first was applied, the first is undone exactly. The
state is therefore a function of the record *set*, whichever arrived first.

Snapshots are the accumulators at a known set digest, as safetensors bytes with metadata
(``snapshot_bytes``/``read_snapshot``); a file is the same bytes written atomically. They are a
cache of the ledger: a damaged one is set aside with a warning and the state is rebuilt from the
ledger, which holds every record.

Robust aggregation: a round's step is a statistic of all its records, so a batch moves the state
from the rounds' old record sets to their new ones (``apply_change``): a record arriving after its
round was applied costs one more pass over that round's K directions, as it would under ``sum``.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from .config import Aggregate, TrainConfig
from .errors import LedgerError, ProtocolError
from .identity import Roster
from .ledger import LedgerWriter, read_snapshot, snapshot_bytes, write_atomic
from .pool import Coefficients, PoolTotals, group_fracs, read_join, rebuild
from .record import Record, SetDigest, decode_record
from .rundir import COEFFICIENTS, RunDir
from .state import FixedPointState
from .update import apply_change, apply_records, effective, plan_set

__all__ = ["Replica", "Slot", "digest_of", "refusal"]

log = logging.getLogger(__name__)

Slot = tuple[int, int, int]  # (round, peer id, first sample): one record per slot
Filter = Roster | Callable[[Record], bool] | None  # the run's roster, or a predicate; None: every record counts


def refusal(roster: Filter, rec: Record) -> str | None:
    """The roster filter, written once (``Replica.admit``, a restart, an install and the ``Intake`` ask
    it): why ``rec`` does not count here, its key not listed in the run file or revoked by its round;
    None if it counts. Cheap (no signature check). Given a predicate (``Roster.counts``), a generic why."""
    if roster is None or (roster.counts if isinstance(roster, Roster) else roster)(rec):
        return None
    if not isinstance(roster, Roster):
        return "record's key is not listed in this run file, or is revoked by its round"
    listed = rec.is_signed and rec.peer_id in roster
    return roster.revoked_reason(rec) if listed else "record's key is not listed in this run file"


def digest_of(records: Iterable[Record], base: int = 0) -> str:
    d = SetDigest()
    d.value = base
    for rec in records:
        d.add(rec.record_id)
    return d.hex()


class Replica:
    """Record set → ledger → state → set and per-round digests. Thread-safe (one lock)."""

    def __init__(self, state: FixedPointState, train: TrainConfig, run_tag: bytes,
                 ledger: LedgerWriter | None = None, snapshot_path: Path | None = None,
                 counts: Filter = None):
        self.state, self.train, self.run_tag = state, train, run_tag
        # the roster filter (``refusal``): which records count here (identity mode: not a revoked key's)
        self.counts = counts
        self.ledger = ledger
        self.snapshot_path = snapshot_path
        self.lock = threading.RLock()
        self.records: dict[bytes, Record] = {}  # every admitted record, applied or pending
        self.applied: set[bytes] = set()
        self.slots: dict[Slot, list[bytes]] = {}  # slot -> record ids (two: an equivocation)
        self.flagged: set[int] = set()  # peers caught equivocating
        self.round_peers: dict[int, set[int]] = {}  # round -> peers we hold a record from
        self.round_records: dict[int, list[bytes]] = {}  # round -> ids of the records we hold
        self.digest = SetDigest()  # of the *applied* records: the state hash is a function of it
        self.round_digest: dict[int, int] = {}  # round -> sum of applied record ids, mod 2^256
        self.pending: list[Record] = []
        self.payload_bytes = 0
        self.ledger_entries = 0  # records appended to the ledger (applied ones, and any withdrawn since)
        self._hash_cache = ("", "")
        # seed pool: the totals C_p,f beside the state (pool.py); every apply below moves them alike
        self.pool = PoolTotals(run_tag, train.seed_pool, group_fracs(state)) if train.seed_pool else None
        self._join_path = snapshot_path.with_name(COEFFICIENTS) if snapshot_path is not None else None
        # joined from a coefficient snapshot: the rounds <= base_round are in the totals only (no
        # record of them is held), named by base_digest; a record of those rounds is refused (intake)
        self.base_round, self.base_digest = -1, 0

    @classmethod
    def open(cls, out: RunDir | Path | str, state: FixedPointState, train: TrainConfig, run_tag: bytes,
             counts: Filter = None) -> Replica:
        """The replica of a run directory: its ledger (created, or a torn tail repaired) and its
        state restored from snapshot + ledger. Storage faults raise ``StorageError``."""
        out = out if isinstance(out, RunDir) else RunDir(out)
        replica = cls(state, train, run_tag, LedgerWriter(out.ledger), out.snapshot, counts)
        replica._restore(replica.ledger.existing)
        return replica

    # ------------------------------------------------------------------ the record set
    def knows(self, record_id: bytes) -> bool:
        with self.lock:
            return record_id in self.records

    def in_slot(self, slot: Slot) -> int:
        """How many different records we hold for a slot (two or more: an equivocation)."""
        with self.lock:
            return len(self.slots.get(slot, ()))

    def peers_in_round(self, round_: int) -> set[int]:
        with self.lock:
            return set(self.round_peers.get(round_, ()))

    def record_in_slot(self, slot: Slot) -> Record | None:
        with self.lock:
            ids = self.slots.get(slot)
            return self.records[ids[0]] if ids else None

    def admit(self, rec: Record, queue: bool = True) -> bool:
        """The one way a record enters this replica, whatever its source: own, network (``Intake``),
        restart (``_restore``), snapshot (``install``), replay and the simulator (``add``). False if
        it is known already or does not count here (``refusal``: a revoked or unlisted key's); else it
        is indexed and, with ``queue``, queued for ``flush``. ``queue=False``: the record is already
        in the state (a snapshot's, or a restored one), which the caller moves itself."""
        with self.lock:
            if rec.record_id in self.records or refusal(self.counts, rec) is not None:
                return False
            self._index(rec)
            if queue:
                self.pending.append(rec)
            return True

    def flush(self, through: int | None = None) -> int:
        """Make queued records durable (ledger, fsync), then apply them as one batch.

        ``through``: hold back records of later rounds (lockstep measures each round at exactly
        the simulator's state). Returns how many were applied."""
        with self.lock:
            batch = [r for r in self.pending if through is None or r.round <= through]
            if not batch:
                return 0
            self.pending = [r for r in self.pending if through is not None and r.round > through]
            if self.ledger is not None:
                try:
                    self.ledger.append(batch)
                except BaseException:
                    self.pending = batch + self.pending  # not durable: not applied, still queued
                    raise
            self.ledger_entries += len(batch)
            if self.train.aggregate is Aggregate.SUM:
                apply_records(self.state, effective(batch + self._slot_mates(batch)), self.train, totals=self.pool)
                undo = self._newly_equivocated(batch)
                if undo:
                    apply_records(self.state, undo, self.train, sign=-1, totals=self.pool)
            else:
                held = self._applied_in({r.round for r in batch})
                apply_change(self.state, held, held + batch, self.train, self.pool)
                self._newly_equivocated(batch)  # flags and logs; the change already undid the slot
            self._mark_applied(batch)
            return len(batch)

    def add(self, records: Iterable[Record]) -> int:
        """Admit and flush: the simulator's and replay's path (records already validated). Returns
        how many were applied (those admitted)."""
        with self.lock:
            for rec in records:
                self.admit(rec)
            return self.flush()

    def _index(self, rec: Record) -> None:
        self.records[rec.record_id] = rec
        slot = (rec.round, rec.peer_id, rec.first_sample)
        self.slots.setdefault(slot, []).append(rec.record_id)
        self.round_peers.setdefault(rec.round, set()).add(rec.peer_id)
        self.round_records.setdefault(rec.round, []).append(rec.record_id)

    def _applied_in(self, rounds: Iterable[int]) -> list[Record]:
        return [self.records[rid] for r in rounds for rid in self.round_records.get(r, ()) if rid in self.applied]

    def _mark_applied(self, recs: Iterable[Record], sign: int = 1) -> None:
        """Count records in (``sign`` 1) or out (-1, withdrawn) of the applied set and its digests."""
        for rec in recs:
            if (rec.record_id in self.applied) == (sign > 0):
                continue
            if sign > 0:
                self.applied.add(rec.record_id)
                self.digest.add(rec.record_id)
            else:
                self.applied.discard(rec.record_id)
                self.digest.remove(rec.record_id)
            rid = int.from_bytes(rec.record_id, "big")
            self.round_digest[rec.round] = (self.round_digest.get(rec.round, 0) + sign * rid) % (1 << 256)
            self.payload_bytes += sign * rec.payload_bytes()

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

    def withdraw(self, peer_id: int, from_round: int) -> int:
        """Stop counting ``peer_id``'s records of rounds >= ``from_round`` (its key was revoked):
        undo the applied ones exactly, drop the queued ones. They stay in the ledger (which the
        ``counts`` filter reads past on restart) and stay known, so they are not admitted again.
        The state and set digest become those of a replica that never held them. Returns how many
        applied records were undone."""
        with self.lock:
            self.pending = [r for r in self.pending if not (r.peer_id == peer_id and r.round >= from_round)]
            gone = [rec for rid in self.applied
                    if (rec := self.records[rid]).peer_id == peer_id and rec.round >= from_round]
            if not gone:
                return 0
            if self.train.aggregate is Aggregate.SUM:
                # every record of the slots involved goes, so what they contributed is effective(gone)
                apply_records(self.state, effective(gone), self.train, sign=-1, totals=self.pool)
            else:
                held = self._applied_in({r.round for r in gone})
                ids = {r.record_id for r in gone}
                apply_change(self.state, held, [r for r in held if r.record_id not in ids], self.train, self.pool)
            self._mark_applied(gone, sign=-1)
            return len(gone)

    # ------------------------------------------------------------------ names of the set and state
    def closed_digest(self, through: int) -> bytes:
        """Digest of the applied records of rounds <= ``through``."""
        with self.lock:
            total = sum(d for r, d in self.round_digest.items() if r <= through)
            if through >= self.base_round:  # the rounds a coefficient join holds as totals only
                total += self.base_digest
        return (total % (1 << 256)).to_bytes(32, "big")

    def state_hash(self) -> str:
        """The state hash, recomputed only when the applied set changed (it reads every weight)."""
        with self.lock:
            key = self.digest.hex()
            if self._hash_cache[0] != key:
                self._hash_cache = (key, self.state.state_hash())
            return self._hash_cache[1]

    def applied_records(self) -> list[Record]:
        with self.lock:
            return [self.records[rid] for rid in self.applied]

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, round_: int) -> bytes:
        """The state after flushing, as snapshot bytes naming its set digest and ``round_``."""
        with self.lock:
            self.flush()
            # ledger entries are appended exactly when applied: the snapshot covers them all (the
            # applied records among them are those that count: a revoked key's are withdrawn)
            meta = {"state_hash": self.state_hash(), "set_digest": self.digest.hex(),
                    "records": str(len(self.applied)), "round": str(round_),
                    "ledger_entries": str(self.ledger_entries)}
            return snapshot_bytes(self.state, meta)

    def save_snapshot(self, round_: int) -> None:
        """Write ``snapshot(round_)`` to the run directory atomically."""
        if self.snapshot_path is not None:
            write_atomic(self.snapshot_path, self.snapshot(round_))

    def install(self, snap: bytes, raws: list[bytes], secret: bytes, others: Iterable[tuple[int, str, str]] = ()
                ) -> dict[str, str]:
        """Join from a peer's snapshot and the records it covers, checking both first (a record that does
        not count here, ``refusal``, makes it ProtocolError: the snapshot's state holds what it added).

        ``others``: (peer, set digest, state hash) that live peers report; one holding the same
        set with another state makes the snapshot suspect."""
        recs = [decode_record(r, run_tag=self.run_tag, secret=secret) for r in raws]
        _all_count(self.counts, recs, "snapshot")
        with self.lock:
            if self.records or self.pending:
                raise ProtocolError("records arrived before the snapshot; joining by sync instead")
            before = {k: v.clone() for k, v in self.state.tensors().items()}
            meta = read_snapshot(snap, self.state, "peer's snapshot")  # checks it against its state hash
            problem = None
            if digest_of(recs) != meta.get("set_digest"):
                problem = "snapshot's records do not add up to its set digest"
            for peer, digest, shash in others:
                if digest == meta.get("set_digest") and shash != meta.get("state_hash"):
                    problem = f"peer {peer:x} holds the same set with another state"
            if problem is not None:
                self.state.load_tensors(before)
                raise ProtocolError(problem)
            _keep_installed(self, recs)
            self.save_snapshot(int(meta.get("round", "0")))
        return meta

    # ------------------------------------------------------------------ the seed pool (pool.py)
    def coefficients(self, round_: int) -> Coefficients:
        """The coefficient snapshot of the applied set (flushed first): its totals, digest and state hash."""
        with self.lock:
            self.flush()
            if self.pool is None:
                raise ProtocolError("this run has no seed pool")
            return self.pool.snapshot(self.digest.count, self.digest.value.to_bytes(32, "big"),
                                      bytes.fromhex(self.state_hash()), round_)

    def install_coefficients(self, data: bytes, tail_from: int, raws: list[bytes], secret: bytes | None,
                             others: Iterable[tuple[int, str, str]] = ()) -> Coefficients:
        """Join from a peer's coefficient snapshot of its whole set and its records of rounds >=
        ``tail_from`` (which the totals include), checking both first: the state rebuilt from the
        totals must have the claimed hash, and no live peer in ``others`` (peer, set digest, state
        hash) may hold that set with another state. On any failure nothing is changed and
        ``ProtocolError`` or ``LedgerError`` is raised: the caller falls back to a ledger or snapshot."""
        if self.pool is None:
            raise ProtocolError("this run has no seed pool")
        coefs = Coefficients.from_bytes(data, "peer's coefficient snapshot")
        if coefs.run_tag != self.run_tag or coefs.pool != self.pool.pool:
            raise ProtocolError("coefficient snapshot of another run or seed pool")
        recs = [decode_record(r, run_tag=self.run_tag, secret=secret) for r in raws]
        if any(r.round < tail_from for r in recs) or len({r.record_id for r in recs}) != len(recs):
            raise ProtocolError("coefficient snapshot's records are not those of its last rounds")
        _all_count(self.counts, recs, "coefficient snapshot")
        for peer, digest, shash in others:
            if digest == coefs.set_digest.hex() and shash != coefs.state_hash.hex():
                raise ProtocolError(f"peer {peer:x} holds the same set with another state")
        base = (int.from_bytes(coefs.set_digest, "big") - sum(int.from_bytes(r.record_id, "big") for r in recs))
        with self.lock:
            if self.records or self.pending:
                raise ProtocolError("records arrived before the coefficient snapshot; joining by sync instead")
            rebuild(self.state, coefs, "peer's coefficient snapshot")
            self.pool.load(coefs.totals)
            self.base_round, self.base_digest = tail_from - 1, base % (1 << 256)
            self.digest.value, self.digest.count = self.base_digest, coefs.records - len(recs)
            _keep_installed(self, recs)
            if self._join_path is not None:
                write_atomic(self._join_path, struct.pack("<II", tail_from, len(recs)) + data)
            self.save_snapshot(coefs.round)
        return coefs

    def _restore(self, entries: list[bytes]) -> None:
        """Rebuild from snapshot + ledger when the run directory already holds records (after a
        coefficient join: from the coefficient snapshot it joined from, then the same)."""
        if not entries and not (self._join_path and self._join_path.exists()):
            return
        where = self.ledger.path if self.ledger is not None else "ledger"
        recs = []
        for i, data in enumerate(entries):
            try:
                recs.append(decode_record(data, run_tag=self.run_tag))
            except ProtocolError as exc:
                raise LedgerError(f"{where}: entry {i}: {exc}") from None
        self.ledger_entries = len(recs)
        counted = [refusal(self.counts, r) is None for r in recs]
        if not all(counted):  # only the records that count are rebuilt
            log.warning("%s: %d records do not count (their keys are revoked or not listed in the run file)",
                        where, counted.count(False))
        joined = 0  # the ledger entries the coefficient snapshot this peer joined from covers (pool.read_join)
        if (join := read_join(self._join_path, self.state, self.pool, len(recs))) is not None:
            tail_from, joined, coefs = join
            tail = sum(int.from_bytes(r.record_id, "big") for r in recs[:joined])
            self.base_round = tail_from - 1
            self.base_digest = (int.from_bytes(coefs.set_digest, "big") - tail) % (1 << 256)
            self.digest.value, self.digest.count = self.base_digest, coefs.records - joined
        covered = self._load_own_snapshot(recs, counted) or joined
        recs = [r for r, c in zip(recs, counted, strict=True) if c]
        with self.lock:
            if self.pool is not None:  # the totals of what the state now holds: base + plan_set(prefix)
                self.pool.add_plan(plan_set(recs[:covered], self.train, self.pool.fracs))
                self.pool.add_plan(plan_set(recs[:joined], self.train, self.pool.fracs, sign=-1))
            for rec in recs:
                self.admit(rec, queue=False)
            # the snapshot holds effective(prefix); move to effective(all), undoing what a later
            # entry turned into an equivocation
            if self.train.aggregate is Aggregate.SUM:
                before = {r.record_id: r for r in effective(recs[:covered])}
                after = {r.record_id: r for r in effective(recs)}
                apply_records(self.state, [r for k, r in after.items() if k not in before], self.train,
                              totals=self.pool)
                apply_records(self.state, [r for k, r in before.items() if k not in after], self.train, sign=-1,
                              totals=self.pool)
            else:
                apply_change(self.state, recs[:covered], recs, self.train, self.pool)
            self._mark_applied(recs)
            self.flagged |= {peer for (_, peer, _), ids in self.slots.items() if len(ids) > 1}

    def _load_own_snapshot(self, recs: list[Record], counted: list[bool]) -> int:
        """Load this directory's snapshot; return how many of the counted records among the ledger
        entries it covers it holds (0 without one).

        A damaged or mismatched snapshot is only a lost cache: it is set aside and the state is
        rebuilt from the ledger."""
        snap = self.snapshot_path
        if snap is None or not snap.exists():
            return 0
        base = {k: v.clone() for k, v in self.state.tensors().items()}
        try:
            meta = read_snapshot(snap.read_bytes(), self.state, str(snap))
            covered = int(meta.get("ledger_entries", "-1"))
            held = [r for r, c in zip(recs[:max(covered, 0)], counted, strict=False) if c]
            if not 0 <= covered <= len(recs) or digest_of(held, self.base_digest) != meta.get("set_digest"):
                raise LedgerError(f"{snap}: snapshot does not match the first {covered} ledger entries "
                                  "that count")
            return len(held)
        except (LedgerError, OSError, ValueError) as exc:
            self.state.load_tensors(base)
            aside = snap.with_name(snap.name + ".damaged")
            log.warning("%s; set aside as %s, rebuilding the state from the ledger", exc, aside.name)
            try:
                snap.replace(aside)
            except OSError:
                pass
            return 0


def _all_count(roster: Filter, recs: list[Record], what: str) -> None:
    """An install whose state holds a record that does not count here is refused, before any change."""
    for r in recs:
        if why := refusal(roster, r):
            raise ProtocolError(f"the {what} covers a record that does not count here "
                                f"(peer {r.peer_id:x}, round {r.round}: {why})")


def _keep_installed(rep: Replica, recs: list[Record]) -> None:
    """Records an install (a snapshot's, or a coefficient join's tail) has already put in ``rep``'s
    state: admitted without queueing, marked applied, the authors of equivocated slots flagged, and
    appended to the ledger. The caller holds the replica's lock."""
    for r in recs:
        rep.admit(r, queue=False)
    rep._mark_applied(recs)
    rep.flagged |= {r.peer_id for r in recs if len(rep.slots[(r.round, r.peer_id, r.first_sample)]) > 1}
    if rep.ledger is not None:
        rep.ledger.append(recs)
    rep.ledger_entries += len(recs)
