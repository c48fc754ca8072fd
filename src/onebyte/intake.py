"""Admission: what a record must pass before it reaches the replica.

Peer input is hostile. A record from the network is decoded (every field checked, run tag, and
its author: the HMAC under the swarm secret, or in identity mode the signature of a listed site
key, see ``identity``), then held to the run's policy: a revoked key's records stop counting at
its ``until`` round, the per-round sample count, a horizon of rounds ahead of the swarm, one
record per slot, flood bounds (records waiting, distinct peers per round) and the per-gradient
update cap. A peer's own record skips only the decoding: it is held to the same policy.
Rejections are counted by reason and logged once per (peer, reason).

Signed key revocations (identity mode) are admitted here too: checked against the run file's
keys, made durable in the run directory's ``revocations.txt``, then put in force, and the records
of the revoked key they exclude are withdrawn from the replica (undone exactly).
"""

from __future__ import annotations

import logging
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from .config import TrainConfig
from .errors import ConfigError, ProtocolError
from .identity import Revocation, Roster, append_revocation, read_revocations
from .record import Record, decode_record
from .replica import Replica, refusal
from .update import check_cap

__all__ = ["Intake", "FUTURE_ROUNDS", "MAX_PENDING", "MAX_PEERS_PER_ROUND", "MAX_REFUSED", "claimed_peer"]

log = logging.getLogger(__name__)

#: Records more than this many rounds ahead of the newest round we know of are refused.
FUTURE_ROUNDS = 4
#: Flood bounds: records waiting to be applied, and distinct peers accepted per round.
MAX_PENDING = 100_000
MAX_PEERS_PER_ROUND = 1024
#: Refused record ids remembered (so sync stops asking for them again).
MAX_REFUSED = 1 << 20


def claimed_peer(data: bytes) -> int:
    """The peer id a (possibly invalid) record claims, for logging only."""
    try:
        return struct.unpack_from("<Q", data, 24)[0]
    except struct.error:
        return -1


class Intake:
    """The admission policy in front of a ``Replica``.

    ``horizon()`` gives the newest round this peer knows of (its own or a peer's heartbeat);
    ``explain(peer)`` may add why a peer's records are for another run (the differing settings);
    ``roster``: the run's site keys (identity mode: records must be signed by a listed key, and the
    secret is not used for them), or None (records carry the swarm secret's HMAC)."""

    def __init__(self, replica: Replica, train: TrainConfig, secret: bytes, horizon: Callable[[], int],
                 explain: Callable[[int], str | None] | None = None, roster: Roster | None = None,
                 revocations: Path | None = None):
        self.replica, self.train, self.secret = replica, train, secret
        self.revocations = revocations  # the run directory's revocations.txt (None: kept in memory only)
        self._revocations_seen: tuple[int, int] | None = None  # (size, mtime) of that file when last read
        self.roster = roster
        self.horizon = horizon
        self.explain = explain
        self._finest = max(replica.state.frac_bits.values())
        self._lock = threading.Lock()  # guards the counters; server threads reject while the loop reads
        self._rejected: Counter[str] = Counter()
        self._logged: set[tuple[int, str]] = set()
        # records that decoded but can never be valid here (over the sample limit or the update
        # cap): remembered so that sync and round fetches stop asking for them again and again
        self.refused: set[bytes] = set()  # 8-byte id prefixes, as in IDS/GET
        self.refused_slots: dict[int, set[int]] = {}  # round -> authors whose record was refused

    def offer(self, data: bytes, heard: Callable[[Record], None] | None = None) -> bool:
        """Decode and validate one raw record from a peer; queue it if new and acceptable.
        ``heard`` is called with the record once it has proved authentic (before the policy)."""
        try:
            rec = decode_record(data, run_tag=self.replica.run_tag, secret=self.secret, roster=self.roster)
        except ProtocolError as exc:
            source = claimed_peer(data)
            reason = str(exc)
            if "run tag mismatch" in reason and self.explain is not None:
                why = self.explain(source)
                if why:
                    reason = f"{reason}: {why}"
            self.reject(source, reason)
            return False
        if heard is not None:
            heard(rec)
        return self.accept(rec)

    def accept(self, rec: Record) -> bool:
        """Hold a decoded record (a peer's own, or one from ``offer``) to the run's policy."""
        rep = self.replica
        with rep.lock:
            if rep.knows(rec.record_id) or rec.round <= rep.base_round:  # in a coefficient join's totals
                return False
            if why := refusal(self.roster, rec):
                self._refuse(rec)  # authentic, and never to count here: sync stops asking for it
                self.reject(rec.peer_id, why)
                return False
            if not 1 <= rec.count <= self.train.samples or rec.first_sample != 0:  # a site may measure fewer
                self._refuse(rec)
                self.reject(rec.peer_id, "record exceeds the per-round sample limit")
                return False
            if rec.round > self.horizon() + FUTURE_ROUNDS:
                self.reject(rec.peer_id, "record from a round far in the future")
                return False
            if rep.in_slot((rec.round, rec.peer_id, rec.first_sample)) >= 2:
                self.reject(rec.peer_id, "slot already equivocated")
                return False
            if len(rep.pending) >= MAX_PENDING:
                self.reject(rec.peer_id, "too many records waiting to be applied (flood)")
                return False
            if len(rep.peers_in_round(rec.round) - {rec.peer_id}) >= MAX_PEERS_PER_ROUND:
                self.reject(rec.peer_id, "too many peers in one round (flood)")
                return False
            try:
                check_cap(rec, self.train, self._finest)
            except ProtocolError as exc:
                self._refuse(rec)
                self.reject(rec.peer_id, str(exc))
                return False
            return rep.admit(rec)

    # ----------------------------------------------------------------- revocations
    def revoke_all(self, datas: list[bytes]) -> list[bytes]:
        """Signed revocations from a peer (REVK): the best of them for each key (the earliest
        round) checked, made durable, put in force if it wins there, and the records it excludes
        withdrawn. Returns those newly in force (worth passing on). Known or losing ones cost no
        signature check; a bad one is counted and logged once per reason."""
        if self.roster is None:
            return []
        best: dict[int, Revocation] = {}
        for data in datas:
            try:
                rev = Revocation.decode(data, self.replica.run_tag)
            except ProtocolError as exc:
                self.reject(Revocation.claimed_signer(data), f"revocation: {exc}", "a revocation")
                continue
            old = best.get(rev.revoked)
            if old is None or rev.rank < old.rank:
                best[rev.revoked] = rev
        return self._take_winners(best.values(), False,
                                  lambda rev, exc: self.reject(rev.signer, f"revocation: {exc}", "a revocation"))

    def revocations_in_force(self) -> list[bytes]:
        return [] if self.roster is None else [rev.to_bytes() for rev in self.roster.revocations]

    def read_revocations_file(self) -> list[bytes]:
        """Revocations written to the run directory's file since it was last read (by ``onebyte
        revoke``): checked and put in force if they win. Returns those newly in force, to pass on.
        One that does not check out, or a file that cannot be read, is skipped with a warning."""
        if self.roster is None or self.revocations is None:
            return []
        try:
            st = self.revocations.stat()
        except OSError:
            return []
        if self._revocations_seen == (st.st_size, st.st_mtime_ns):
            return []
        self._revocations_seen = (st.st_size, st.st_mtime_ns)
        try:
            found = read_revocations(self.revocations, self.replica.run_tag)
        except ConfigError as exc:
            log.warning("%s", exc)
            return []
        return self._take_winners(found, True,
                                  lambda _rev, exc: log.warning("%s: a revocation is skipped: %s", self.revocations,
                                                                exc))

    def _take_winners(self, revs: Iterable[Revocation], durable: bool,
                      bad: Callable[[Revocation, ProtocolError], None]) -> list[bytes]:
        """``take`` each revocation that would win here and checks out (``bad`` is told of those
        that do not; the signature is checked only for would-be winners); those newly in force."""
        new = []
        for rev in revs:
            if not self.roster.wins(rev):
                continue
            try:
                self.roster.check_revocation(rev)
            except ProtocolError as exc:
                bad(rev, exc)
                continue
            if self.take(rev, durable):
                new.append(rev.to_bytes())
        return new

    def take(self, rev: Revocation, durable: bool = False) -> bool:
        """Put a checked revocation in force if it wins for its key, made durable in the run
        directory's file first (``durable``: it is there already); False if it does not win."""
        rep, roster = self.replica, self.roster
        with rep.lock:
            if not roster.wins(rev):
                return False
            if not durable and self.revocations is not None:
                append_revocation(self.revocations, rev)
            roster.install(rev)
            undone = rep.withdraw(rev.revoked, roster.until(rev.revoked))
        log.warning("key %r is revoked from round %d (signed by %r); %d of its records undone",
                    roster.name(rev.revoked), rev.from_round, roster.name(rev.signer), undone)
        return True

    def reject(self, source: int, reason: str, what: str = "a record") -> None:
        with self._lock:
            self._rejected[reason] += 1
            first = (source, reason) not in self._logged and len(self._logged) < MAX_REFUSED
            if first:
                self._logged.add((source, reason))
        if first:
            log.warning("rejected %s from peer %x: %s (further ones are counted, not logged)", what, source, reason)

    def rejections(self) -> dict[str, int]:
        with self._lock:
            return dict(self._rejected)

    def _refuse(self, rec: Record) -> None:
        with self._lock:
            if len(self.refused) < MAX_REFUSED:
                self.refused.add(rec.record_id[:8])
                self.refused_slots.setdefault(rec.round, set()).add(rec.peer_id)

    def refused_in(self, round_: int) -> set[int]:
        with self._lock:
            return set(self.refused_slots.get(round_, ()))

    def refused_ids(self) -> set[bytes]:
        with self._lock:
            return set(self.refused)
