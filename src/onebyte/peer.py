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
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .catchup import CatchUp
from .client import Client
from .config import RunSpec
from .errors import ConfigError, storage_error
from .gossip import Gossip
from .identity import Revocation, Roster, SiteKey, check_site_key
from .intake import Intake
from .lifecycle import drain, wait_for_quorum
from .membership import Heartbeat, Membership
from .modes import swarm_reference
from .options import PeerOptions
from .record import Record
from .replica import Replica
from .rounds import RoundWait, ema, samples_for_link
from .rundir import RunDir
from .server import Server
from .summary import Position, evaluate, metrics_line, peer_summary, write_summary
from .tasks.data import Example
from .training import Privacy, Setup, check_private, make_record, private_steps
from .transport.base import Transport

__all__ = ["PeerOptions", "Peer"]

log = logging.getLogger(__name__)

#: How long a newcomer that was given --join peers looks for a live one (to catch up from) before it
#: starts from the base model: over a 64 kbit/s link its first DHT read can take most of a minute.
#: Without --join it is the first peer, and ``PeerOptions.join_timeout`` applies.
JOIN_TIMEOUT = 180.0


class Peer:
    """One replica: state + ledger (``Replica``), admission (``Intake``), the others (``Gossip``,
    asked through ``Client``), the answers to their requests (``Server``), joining late
    (``CatchUp``), closing a round (``RoundWait``), and the round loop, over any ``Transport``.
    ``run()`` reads join → quorum → rounds → drain (``lifecycle``); what it reports is ``summary``'s.
    Every part reads the one ``opts`` this peer holds: replacing it changes it for all of them.

    ``Peer.open(spec, out=...)`` builds one over hivemind from a run spec; the constructor takes
    the parts (for the in-memory transport and tests). A peer is a context manager: leaving it
    stops its executors, closes its ledger and, when it opened its transport, the transport."""

    def __init__(self, setup: Setup, shard: list[Example], transport: Transport, out: Path | str,
                 opts: PeerOptions, privacy: Privacy | None = None, *, own_transport: bool = False):
        self.setup, self.shard, self.net, self.opts = setup, shard, transport, opts
        self.privacy = privacy
        self.dir = RunDir(out)
        self.out = self.dir.root
        self._own_transport = own_transport
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, str(self.out)) from None
        self.tag = setup.spec.run_tag
        self._base = bytes.fromhex(setup.spec.base_hash)[:16]
        self.round = 0  # next round this peer will run
        self.measured_through = -1  # newest round this peer has measured its own record for
        self.rounds_completed = 0
        self.done = False
        self.closed = False
        self.max_round_seconds = 0.0
        self.round_interval: float | None = None  # EMA of the time between our records (link budget)
        self._last_round_start: float | None = None
        self.samples_sent: list[int] = []  # K of each record we measured (below the run's under a budget)
        self.started = time.perf_counter()
        self.eval_before: dict[str, float] | None = None
        self.last_loss: float | None = None  # training loss of our last measured record
        if opts.catchup not in ("auto", "snapshot", "ledger"):
            raise ConfigError.of("catchup", f"must be auto, snapshot or ledger, not {opts.catchup!r}")
        self.eval_after: dict[str, float] | None = None
        self.gossip: Gossip | None = None
        self._first_round: int | None = None  # where run() started: that round is waited for in full
        # with the revocations taken before a restart: in force before the ledger is read
        self.roster = Roster.of(setup.spec.spec, self.tag, self.dir.revocations)
        check_site_key(self.roster, opts.key, opts.peer_id)
        if self.roster is not None and opts.lockstep and opts.lockstep != len(self.roster):
            raise ConfigError.of("lockstep", f"with site keys every round waits for each listed key: "
                                 f"{len(self.roster)} peers, not {opts.lockstep}")
        try:
            # the ledger is created, or a torn tail repaired; the state is rebuilt from snapshot + ledger
            # (in identity mode without the records that no longer count: a revoked key's)
            self.replica = Replica.open(self.dir, setup.state, setup.train, self.tag, self.roster)

            def horizon() -> int:  # the newest round this peer knows of (the intake bounds rounds by it)
                return max(self.round, self.gossip.newest_round())

            self.intake = Intake(self.replica, setup.train, opts.secret, horizon,
                                 lambda p: self.gossip.foreign_diff.get(p) if self.gossip else None, self.roster,
                                 self.dir.revocations)
            self.client = Client(transport, lambda: self.opts)
            self.gossip = Gossip(self.client, lambda: self.opts, self.replica, self.intake, self.tag, self._base,
                                 lambda: (self.round, self.done), setup.spec.shared, self.dir.connect,
                                 len(shard) if setup.train.learns_reference else 0)
            self.closing = RoundWait(lambda: self.opts, self.gossip, self.replica, self.intake, self.roster,
                                     self.apply_pending)
            self.catchup = CatchUp(self.client, lambda: self.opts, self.replica, self.intake, self.gossip, self.roster,
                                   self.tag, self.apply_pending, lambda: self.round, self._move_to)
            own = [r.round for r in self.replica.records.values() if r.peer_id == opts.peer_id]
            self.round = max(own, default=-1) + 1
            self.measured_through = self.round - 1
            self.rounds_completed = len(set(own))
            if self.replica.records:
                log.info("restored %d records from %s (resuming at round %d)", len(self.replica.records),
                         self.out, self.round)
            # PUT (relayed batches, anti-entropy) goes through the relays: a new record of a recent
            # round travels on along its round's tree
            self.server = Server(self.replica, self.gossip.relays.take, self.gossip.receive, lambda: self.round,
                                 setup.spec.shared_bytes, self.apply_pending, self.gossip.answer_meet,
                                 self.gossip.keys.answer)
            self.net.serve(self.handle)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, spec: RunSpec, *, out: Path | str, join: list[str] | tuple[str, ...] = (),
             secret_file: Path | str | None = None, secret: bytes | None = None, peer_id: int | None = None,
             key: SiteKey | Path | str | None = None, shard: tuple[int, int] | None = None, split: str = "iid",
             seed: int = 0, host: str = "0.0.0.0",
             port: int = 0, announce_host: str | None = None, private: bool = False, relay: bool = False,
             dp: Any = None, rounds: int | None = None, setup: Setup | None = None, **options: Any) -> Peer:
        """A networked peer over hivemind for ``spec``, with its directory at ``out``.

        ``join``: multiaddrs of live peers; ``secret_file`` (or ``secret``): the swarm secret;
        ``key``: this site's signing key (a ``SiteKey`` or its file), needed when the run file lists
        keys: the peer id is then the key's (``peer_id`` may be left out);
        ``shard=(i, n)``: train on the simulator's shard i of n; ``private``: this machine takes no
        inbound connections (NAT): the ``join`` peers relay for it; ``relay``: this machine is
        reachable and relays for private peers; ``dp``: a ``DPConfig`` (needs
        ``rounds``); ``options``: any ``PeerOptions`` field."""
        import hashlib

        from .config import parse_split
        from .tasks.data import split_shards
        from .transport.dht import DhtTransport

        secret = _read_secret(secret_file) if secret_file is not None else (secret or b"")
        site_key = SiteKey.load(key) if isinstance(key, str | Path) else key
        if site_key is not None and peer_id is None:
            peer_id = site_key.peer_id
        check_site_key(Roster.of(spec), site_key, peer_id, warn=False)  # before the model loads
        alpha = parse_split(split)
        d = RunDir(out)
        fresh = not d.root.exists()
        try:
            d.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, str(d.root)) from None
        # The DHT node starts first and bootstraps (seconds of round trips over a thin link) while
        # the model loads; the run tag, which needs the model's hash, is given to it after.
        t0 = time.monotonic()
        try:
            net = DhtTransport(None, run_id=spec.run_id, initial_peers=list(join), host=host, port=port,
                               announce_host=announce_host, identity=d.identity, private=private, relay=relay,
                               wait=False)
        except BaseException:
            _remove_if_fresh(d, fresh)
            raise
        try:
            setup = setup if setup is not None else Setup.build(spec)
            log.info("model and data ready in %.1fs", time.monotonic() - t0)
            data = setup.dataset.train
            if shard is not None:
                data = split_shards(data, shard[1], alpha, seed)[shard[0]]
            privacy = None
            if dp is not None:
                from .privacy import Accountant

                if rounds is None:
                    raise ConfigError.of("rounds", "differential privacy needs a planned number of rounds")
                check_private(setup.train)
                privacy = Privacy.create(Accountant(dp, len(data), setup.train.batch_size,
                                                    private_steps(setup.train, rounds)))
            try:
                setup.spec.save(d.run)
            except OSError as exc:
                raise storage_error(exc, str(d.run)) from None
            net.ready(setup.spec.run_tag)
            log.info("DHT node up %.1fs after it started%s", time.monotonic() - t0,
                     " (joined through the --join peers)" if join else "")
            if peer_id is None:
                peer_id = int.from_bytes(hashlib.sha256(d.identity.read_bytes()).digest()[:8], "little")
            if join and "join_timeout" not in options:
                options["join_timeout"] = JOIN_TIMEOUT  # a swarm is there: wait for it, not for 20 s
            opts = PeerOptions(peer_id=peer_id, rounds=rounds, secret=secret, key=site_key, relay=relay, **options)
            peer = cls(setup, data, net, d.root, opts, privacy, own_transport=True)
        except BaseException:
            net.close()
            if not d.run.exists():  # nothing of a run was written: leave no directory behind
                _remove_if_fresh(d, fresh)
            raise
        try:
            (d.addresses).write_text("\n".join(net.addresses) + "\n")
        except OSError as exc:
            peer.close()
            raise storage_error(exc, str(d.addresses)) from None
        return peer

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- views of the replica
    @property
    def records(self) -> dict[bytes, Record]:
        return self.replica.records

    @property
    def digest(self):
        return self.replica.digest

    @property
    def flagged(self) -> set[int]:
        return self.replica.flagged

    @property
    def addresses(self) -> list[str]:
        return self.net.addresses

    @property
    def members(self) -> Membership:
        return self.gossip.members

    @property
    def foreign_diff(self) -> dict[int, str]:
        return self.gossip.foreign_diff

    def beat(self, force: bool = False, sync: bool = True) -> None:
        """Exchange heartbeats (rate-limited unless forced) and sync (see ``Gossip.beat``)."""
        self.gossip.beat(force, sync)

    def offer(self, data: bytes) -> bool:
        """Validate one raw record from a peer; queue it for applying if new and acceptable."""
        return self.intake.offer(data)

    def revoke(self, site: str, from_round: int) -> Revocation:
        """Revoke a listed key (``site``: its name or public key) from ``from_round`` on: signed
        with this peer's key (an admin key, or the revoked key itself), made durable, put in force
        here (its records of those rounds undone) and passed to every live peer."""
        if self.roster is None or self.opts.key is None:
            raise ConfigError("revoking a key needs identity mode: a run file that lists [[keys]], and this "
                              "peer's key")
        rev = self.roster.sign_revocation(self.opts.key, self.tag, site, from_round)
        if self.intake.take(rev):
            self.gossip.keys.spread([rev.to_bytes()])
        return rev

    def apply_pending(self) -> int:
        """Make queued records durable, then apply them (in lockstep, only rounds measured)."""
        return self.replica.flush(self.measured_through if self.opts.lockstep else None)

    def state_hash(self) -> str:
        return self.replica.state_hash()

    # ----------------------------------------------------------------- joining (catchup.CatchUp)
    def join(self) -> None:
        """A newcomer with an empty ledger: catch up from a live peer, if any (``CatchUp.join``)."""
        self.catchup.join()

    def _install_snapshot(self, hb: Heartbeat, size: int | None = None) -> None:
        """Install ``hb``'s peer's snapshot (``CatchUp.install_snapshot``; tests call it directly)."""
        self.catchup.install_snapshot(hb, size)

    def _move_to(self, round_: int) -> None:
        """A newcomer takes its source's round: the rounds before it count as measured (it never
        measures the past)."""
        self.round = max(self.round, round_)
        self.measured_through = self.round - 1

    def handle(self, request: bytes) -> bytes:
        """Answer one request from a peer (see ``server.Server`` and ``protocol``)."""
        return self.server.handle(request)

    # ----------------------------------------------------------------- rounds
    def _measure(self, r: int) -> Record:
        """Our record for round r: the one in the ledger after a restart, or measured now."""
        own = self.replica.record_in_slot((r, self.opts.peer_id, 0))
        if own is None:
            # Under the replica's lock: a request served meanwhile (SNAP, LEDG) flushes pending records
            # into the state, and the state's scratch buffer holds the direction being measured:
            # applying one while perturbing along another overwrote one with the other (int32 codes
            # read as float bits, or the reverse) and corrupted the accumulators of a peer that was
            # serving a newcomer (test_restart_and_join's rare divergence and NaN losses).
            count = samples_for_link(self.setup.train, self.opts, len(self.members.live()), self.round_interval)
            reference = swarm_reference([len(self.shard)] + [hb.examples for hb in self.gossip.others().values()])
            with self.replica.lock:
                own, m = make_record(self.setup, self.shard, r, self.opts.peer_id, 0, self.opts.secret,
                                     self.privacy, count=count, reference=reference)
            self.samples_sent.append(own.count)
            if self.opts.key is not None:
                own = own.signed_by(self.opts.key)  # identity mode: the signature replaces the HMAC tag
            self.last_loss = m.loss
            self.intake.accept(own)  # our own record: the same policy, no bytes -> decode round trip
        self.measured_through = max(self.measured_through, r)
        self.apply_pending()
        return own

    def run_round(self, r: int, stop: threading.Event | None = None) -> None:
        """Measure → publish → wait → apply, for round r.

        With a pipeline of one, the wait is for round w = r - 1: round r's records travel while
        every peer measures round r + 1, so the link's latency hides behind compute, and a round
        is measured at a state holding every round before r - 1 and whatever of r - 1 has arrived.
        Lockstep (and the first round a peer runs) waits for round r itself."""
        t0 = time.monotonic()
        if self._last_round_start is not None:
            self.round_interval = ema(self.round_interval, t0 - self._last_round_start)
        self._last_round_start = t0
        w = r - self.opts.pipeline
        if self.opts.lockstep or self._first_round is None or w < self._first_round:
            w = r
        lacking = self.closing.expected(w - 1) - self.closing.have(w - 1) if w > 0 else set()
        if lacking:
            self.gossip.repair.fetch_round(w - 1, lacking)  # a push went missing
        self.apply_pending()
        own = self._measure(r)
        self.gossip.publish(own)
        self.closing.wait_for(w, t0, stop)
        self.max_round_seconds = max(self.max_round_seconds, time.monotonic() - t0)
        self.round = r + 1
        self.rounds_completed += 1
        if self.opts.snapshot_every and self.rounds_completed % self.opts.snapshot_every == 0:
            self._snapshot()
        self.beat()  # rate-limited: audit, sync, heartbeats to quiet peers, the DHT now and then

    def _snapshot(self) -> None:
        with self.replica.lock:
            self.apply_pending()
            self.replica.save_snapshot(self.round)

    def run(self, stop: threading.Event | None = None, on_round: Any = None, *,
            rounds: int | None = None) -> dict[str, Any]:
        """Join, run rounds until ``rounds`` (or ``PeerOptions.rounds``; None: until ``stop``),
        drain, and return the summary (also written to ``summary.json``)."""
        final = rounds if rounds is not None else self.opts.rounds
        if rounds is not None:
            self.opts = replace(self.opts, rounds=rounds)
        from .track import Trackers

        with Trackers(self.opts.log_to) as trackers, open(self.dir.metrics, "a") as metrics:
            def log(line: dict[str, Any]) -> None:
                try:
                    metrics.write(json.dumps(line) + "\n")
                    metrics.flush()
                except OSError as exc:
                    raise storage_error(exc, str(self.dir.metrics)) from None
                trackers.log(line)

            self.join()
            wait_for_quorum(self.gossip, self.replica, self.opts, self.round, stop)
            self.eval_before = evaluate(self.setup, self.replica, self.opts.eval_size)
            r = self._first_round = self.catchup.start_round()
            self.gossip.stop_introducing()  # pushes carry membership from here on
            while (final is None or r < final) and not (stop is not None and stop.is_set()):
                self.run_round(r, stop)
                s = write_summary(self.dir.summary, self.summary(), self.privacy)
                log(dict(metrics_line(r, s, self.last_loss)))
                if on_round is not None:
                    on_round(self)
                r += 1  # a slow peer keeps its pace; only joiners and restarters jump to the newest round
            self.done = True  # our heartbeats say so from here on
            drain(self.gossip, self.replica, self.opts, self.apply_pending, short=stop is not None and stop.is_set())
            self._snapshot()
            self.eval_after = evaluate(self.setup, self.replica, self.opts.eval_size)
            s = write_summary(self.dir.summary, self.summary(), self.privacy)
            if self.eval_after is not None:
                log({**metrics_line(self.round - 1, s, self.last_loss), "eval": self.eval_after, "final": True})
            return s

    # ----------------------------------------------------------------- reporting (summary)
    def summary(self) -> dict[str, Any]:
        """What this peer reports (``summary.peer_summary``), as of now."""
        at = Position(rounds_completed=self.rounds_completed, round=self.round, done=self.done,
                      max_round_seconds=self.max_round_seconds, samples_sent=self.samples_sent,
                      joined_by=self.catchup.joined_by, eval_before=self.eval_before, eval_after=self.eval_after,
                      started=self.started)
        return peer_summary(self.opts, self.setup, self.replica, self.intake, self.gossip, self.net, at)

    def close(self) -> None:
        """Stop the executors, close the ledger and (if this peer opened it) the transport. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.gossip is not None:
            self.gossip.close()
        replica = getattr(self, "replica", None)
        if replica is not None and replica.ledger is not None:
            replica.ledger.close()
        if self._own_transport:
            self.net.close()


def _remove_if_fresh(d: RunDir, fresh: bool) -> None:
    """Remove a run directory this attempt created, when a failure left only its network identity in it."""
    if not fresh:
        return
    try:
        d.identity.unlink(missing_ok=True)
        d.root.rmdir()
    except OSError:
        pass  # something else is in it: keep it


def _read_secret(path: Path | str) -> bytes:
    try:
        secret = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError.of("secret_file", f"{path}: {exc.strerror}") from None
    if len(secret) < 16:
        raise ConfigError.of("secret_file", f"{path} must hold at least 16 bytes")
    return secret
