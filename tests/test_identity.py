"""Site identities: signed records and heartbeats, the roster, revocation on every replica alike,
key files and the command line. Each defence has a test that fails without it."""

import dataclasses
import hashlib
import json
import random
import struct

import numpy as np
import pytest

from conftest import Toy, run_peers
from harness import FAST_PEER, Owned, wait_until
from onebyte.cli import main
from onebyte.codec import Codec
from onebyte.config import Aggregate, ListedKey, RunSpec, TrainConfig
from onebyte.errors import ConfigError, ProtocolError
from onebyte.identity import REVOCATION_SIZE, Revocation, Roster, SiteKey, peer_id_of, read_revocations
from onebyte.intake import Intake
from onebyte.membership import Heartbeat, decode_heartbeat
from onebyte.record import HEADER_SIZE, SIGNATURE_SIZE, TAG_SIZE, build_record, decode_record
from onebyte.replica import Replica
from onebyte.state import FixedPointState

RUN = b"i" * 16
SECRET = b"swarm-secret-16b"
TRAIN = TrainConfig(samples=2, lr=1e-3)
KEYS = [SiteKey.generate() for _ in range(4)]  # A, B, C listed below; D never listed
A, B, C, D = KEYS
# peer timings for in-memory swarms: rounds of a second, heartbeats every 0.2 s


@pytest.fixture
def owned():
    """The peers, transports and threads a test starts: stopped and closed, pass or fail."""
    with Owned() as o:
        yield o


def _roster(*keys: SiteKey, until: dict[int, int] | None = None) -> Roster:
    until = until or {}
    return Roster(ListedKey(f"site-{i}", k.public, until.get(k.peer_id)) for i, k in enumerate(keys))


def _rec(key: SiteKey, round_: int = 0, peer: int | None = None, g=(0.5, -1.0)):
    peer = key.peer_id if peer is None else peer
    return build_record(Codec.BYTE, RUN, round_, peer, 0, np.array(g), round_ * 7919 + peer % 1000).signed_by(key)


# ---------------------------------------------------------------------------------------- records
def test_a_signed_record_round_trips_and_replaces_the_tag():
    roster = _roster(A, B, C)
    rec = _rec(A, round_=3)
    raw = rec.to_bytes()
    back = decode_record(raw, run_tag=RUN, roster=roster)
    assert back == rec and back.is_signed and raw[2] == 2  # version 2
    assert rec.record_id == hashlib.sha256(raw[:-SIGNATURE_SIZE]).digest()
    hmac_rec = build_record(Codec.BYTE, RUN, 3, A.peer_id, 0, np.array([0.5, -1.0]), 1, SECRET)
    assert len(raw) - len(hmac_rec.to_bytes()) == SIGNATURE_SIZE - TAG_SIZE == 48
    roster.check(rec)  # listed, good signature, not revoked


def test_a_record_signed_by_an_unlisted_key_is_rejected():
    roster = _roster(A, B, C)
    rec = _rec(D)
    with pytest.raises(ProtocolError, match="unlisted key"):
        decode_record(rec.to_bytes(), run_tag=RUN, roster=roster)
    with pytest.raises(ProtocolError, match="unlisted key"):
        roster.check(rec)
    assert not roster.counts(rec)


def test_a_tampered_or_forged_signature_is_rejected():
    roster = _roster(A, B, C)
    raw = _rec(A).to_bytes()
    for pos in [HEADER_SIZE, HEADER_SIZE + 1, len(raw) - 1, len(raw) - SIGNATURE_SIZE, 30]:  # code, sig, first sample
        bad = bytearray(raw)
        bad[pos] ^= 1
        with pytest.raises(ProtocolError):
            decode_record(bytes(bad), run_tag=RUN, roster=roster)
    zeroed = raw[:-SIGNATURE_SIZE] + b"\0" * SIGNATURE_SIZE
    with pytest.raises(ProtocolError, match="does not verify"):
        decode_record(zeroed, run_tag=RUN, roster=roster)


def test_one_key_cannot_publish_as_two_peers():
    """A's key signing a record that claims B's id, or any id but A's own, is refused."""
    roster = _roster(A, B, C)
    as_b = _rec(A, peer=B.peer_id)
    with pytest.raises(ProtocolError, match="does not verify"):
        roster.check(as_b)
    as_new = _rec(A, peer=A.peer_id ^ 1)
    with pytest.raises(ProtocolError, match="unlisted key"):
        roster.check(as_new)
    roster.check(_rec(A))
    assert peer_id_of(A.public) == A.peer_id and len({k.peer_id for k in KEYS}) == len(KEYS)


def test_the_swarm_secret_alone_cannot_publish_and_modes_do_not_mix():
    roster = _roster(A, B, C)
    hmac_raw = build_record(Codec.BYTE, RUN, 0, A.peer_id, 0, np.array([0.5, -1.0]), 1, SECRET).to_bytes()
    with pytest.raises(ProtocolError, match="not signed by a site key"):
        decode_record(hmac_raw, run_tag=RUN, secret=SECRET, roster=roster)
    with pytest.raises(ProtocolError, match="lists no keys"):  # a replica in HMAC mode refuses signed records
        decode_record(_rec(A).to_bytes(), run_tag=RUN, secret=SECRET)
    assert decode_record(_rec(A).to_bytes()).is_signed  # unauthenticated decoding (a local ledger) reads both
    assert not decode_record(hmac_raw).is_signed


# ---------------------------------------------------------------------------------------- heartbeats
def _hb(peer_id: int, round_: int = 3) -> Heartbeat:
    return Heartbeat(RUN, b"B" * 16, peer_id, 1, round_, 12, False, b"d" * 32, b"s" * 32, 1, b"c" * 32, "/ip4/x")


def test_heartbeats_signed_by_an_unlisted_key_are_rejected():
    roster = _roster(A, B, C, until={C.peer_id: 5})
    good = _hb(A.peer_id).encode(SECRET, A)
    assert decode_heartbeat(good, RUN, SECRET, roster) == _hb(A.peer_id)
    assert len(good) == len(_hb(A.peer_id).encode(SECRET)) + 48
    with pytest.raises(ProtocolError, match="unlisted key"):
        decode_heartbeat(_hb(D.peer_id).encode(SECRET, D), RUN, SECRET, roster)
    with pytest.raises(ProtocolError, match="does not verify"):  # B's id, D's (or A's) key
        decode_heartbeat(_hb(B.peer_id).encode(SECRET, A), RUN, SECRET, roster)
    with pytest.raises(ProtocolError, match="not signed"):  # the secret alone no longer speaks for a peer
        decode_heartbeat(_hb(A.peer_id).encode(SECRET), RUN, SECRET, roster)
    with pytest.raises(ProtocolError, match="lists no keys"):
        decode_heartbeat(good, RUN, SECRET)
    tampered = bytearray(good)
    tampered[30] ^= 1  # its peer id... or any byte
    with pytest.raises(ProtocolError):
        decode_heartbeat(bytes(tampered), RUN, SECRET, roster)
    assert decode_heartbeat(_hb(C.peer_id, round_=4).encode(SECRET, C), RUN, SECRET, roster).round == 4
    with pytest.raises(ProtocolError, match="revoked"):
        decode_heartbeat(_hb(C.peer_id, round_=5).encode(SECRET, C), RUN, SECRET, roster)


# ---------------------------------------------------------------------------------------- revocation
def _state() -> FixedPointState:
    return FixedPointState(sorted(Toy().named_parameters()))


def _intake(replica: Replica, roster: Roster) -> Intake:
    return Intake(replica, TRAIN, b"", lambda: 10, roster=roster)


def test_a_revoked_key_stops_counting_on_every_replica_alike(tmp_path):
    """C is revoked from round 2 after its records of rounds 2 and 3 went out. Replica X accepted
    them under the old run file and is restarted from its ledger (and a snapshot that covers
    them) under the new one; replica Y, already on the new file, receives the same records in
    another order; Z never saw C's late records. All three end on one state hash, and not the
    hash that counts C's late records."""
    rng = np.random.default_rng(1)
    records = [_rec(k, r, g=rng.normal(size=2)) for r in range(4) for k in (A, B, C)]
    old, new = _roster(A, B, C), _roster(A, B, C, until={C.peer_id: 2})
    kept = [r for r in records if not (r.peer_id == C.peer_id and r.round >= 2)]

    x = Replica.open(tmp_path / "x", _state(), TRAIN, RUN, counts=old.counts)
    assert sum(_intake(x, old).offer(r.to_bytes()) for r in records) == 12
    x.flush()
    x.save_snapshot(4)
    everything = x.state_hash()
    x.ledger.close()

    x = Replica.open(tmp_path / "x", _state(), TRAIN, RUN, counts=new.counts)  # restarted with the new file
    assert (tmp_path / "x" / "snapshot.safetensors.damaged").exists()  # it covered C's late records: set aside
    assert len(x.applied) == len(kept)

    y = Replica.open(tmp_path / "y", _state(), TRAIN, RUN, counts=new.counts)
    y_in = _intake(y, new)
    order = [r.to_bytes() for r in records]
    random.Random(5).shuffle(order)
    assert sum(y_in.offer(raw) for raw in order) == len(kept)
    y.flush()
    assert y_in.rejections() == {"key 'site-2' is revoked from round 2": 2}
    assert _intake(x, new).offer(records[-1].to_bytes()) is False  # C's round 3 again, by sync: refused

    z = Replica(_state(), TRAIN, RUN)
    z.add(kept)
    assert x.state_hash() == y.state_hash() == z.state_hash() != everything
    assert x.digest.hex() == y.digest.hex() == z.digest.hex()

    # the restarted replica's next snapshot matches its (filtered) ledger: the next restart uses it
    x.save_snapshot(4)
    x.ledger.close()
    (tmp_path / "x" / "snapshot.safetensors.damaged").unlink()
    again = Replica.open(tmp_path / "x", _state(), TRAIN, RUN, counts=new.counts)
    assert not (tmp_path / "x" / "snapshot.safetensors.damaged").exists()
    assert again.state_hash() == z.state_hash()
    again.ledger.close()
    y.ledger.close()


def test_a_key_removed_from_the_run_file_counts_for_nothing(tmp_path):
    records = [_rec(k, r) for r in range(2) for k in (A, B)]
    x = Replica.open(tmp_path / "x", _state(), TRAIN, RUN, counts=_roster(A, B).counts)
    assert all(_intake(x, _roster(A, B)).offer(r.to_bytes()) for r in records)
    x.flush()
    x.ledger.close()
    x = Replica.open(tmp_path / "x", _state(), TRAIN, RUN, counts=_roster(A).counts)
    z = Replica(_state(), TRAIN, RUN)
    z.add([r for r in records if r.peer_id == A.peer_id])
    assert x.state_hash() == z.state_hash() and len(x.applied) == 2
    x.ledger.close()


# ---------------------------------------------------------------------------------------- signed revocations
def _admin_roster(*admins: SiteKey) -> Roster:
    """A, B, C listed; ``admins`` may sign revocations of other keys."""
    return Roster(ListedKey(f"site-{i}", k.public, admin=k in admins) for i, k in enumerate((A, B, C)))


def test_a_revocation_counts_only_signed_by_the_key_itself_or_an_admin_key():
    roster = _admin_roster(A)
    by_admin, by_self = Revocation.sign(A, RUN, C.peer_id, 2), Revocation.sign(C, RUN, C.peer_id, 5)
    bad = {"neither the revoked key nor an admin": [Revocation.sign(B, RUN, C.peer_id, 0),  # B is no admin
                                                    Revocation.sign(D, RUN, C.peer_id, 0)],  # D is not listed
           "does not list": [Revocation.sign(A, RUN, D.peer_id, 0)],
           "does not verify": [dataclasses.replace(by_admin, from_round=0)]}  # signed for round 2
    for why, revs in bad.items():
        for rev in revs:
            with pytest.raises(ProtocolError, match=why):
                roster.revoke(rev)
    assert len(by_admin.to_bytes()) == REVOCATION_SIZE == 103
    assert Revocation.decode(by_admin.to_bytes(), RUN) == by_admin
    with pytest.raises(ProtocolError, match="another run"):
        Revocation.decode(Revocation.sign(A, b"x" * 16, C.peer_id, 2).to_bytes(), RUN)
    with pytest.raises(ProtocolError, match="103 bytes"):
        Revocation.decode(by_admin.to_bytes()[:-1], RUN)
    assert roster.until(C.peer_id) is None and roster.counts(_rec(C, 4))
    assert roster.revoke(by_self) and roster.until(C.peer_id) == 5
    assert roster.revoke(by_admin) and roster.until(C.peer_id) == 2 and not roster.counts(_rec(C, 4))
    assert not roster.revoke(by_self) and roster.until(C.peer_id) == 2  # in force already; the earliest wins
    # two admins revoking each other: both count, whichever arrives first (nothing depends on the order)
    a_on_b, b_on_a = Revocation.sign(A, RUN, B.peer_id, 3), Revocation.sign(B, RUN, A.peer_id, 4)
    first, second = _admin_roster(A, B), _admin_roster(A, B)
    for rev in (a_on_b, b_on_a):
        first.revoke(rev)
    for rev in (b_on_a, a_on_b):
        second.revoke(rev)
    for roster in (first, second):
        assert (roster.until(A.peer_id), roster.until(B.peer_id)) == (4, 3)


def test_a_key_holder_cannot_grow_the_revocations_kept_or_sent(tmp_path):
    """A stolen key signs thousands of revocations of itself: each replica keeps, writes and sends
    only the winner for that key (the earliest round), whatever order they come in; forged or
    foreign ones are counted, not applied, and cost no state."""
    floods = [Revocation.sign(C, RUN, C.peer_id, r).to_bytes() for r in range(500, 2500)]
    random.Random(3).shuffle(floods)
    path = tmp_path / "revocations.txt"
    rep = Replica(_state(), TRAIN, RUN)
    intake = Intake(rep, TRAIN, b"", lambda: 10, roster=_admin_roster(A), revocations=path)
    first = intake.revoke_all(floods[:1024])
    assert len(first) == 1 and Revocation.decode(first[0], RUN).from_round == min(
        Revocation.decode(f, RUN).from_round for f in floods[:1024])
    intake.revoke_all(floods[1024:])
    assert intake.revocations_in_force() == [Revocation.sign(C, RUN, C.peer_id, 500).to_bytes()]
    assert len(read_revocations(path, RUN)) <= 2  # at most one per batch that won
    bad = [b"x" * REVOCATION_SIZE, dataclasses.replace(Revocation.decode(floods[0], RUN), from_round=1).to_bytes()]
    assert intake.revoke_all(bad) == [] and intake.roster.until(C.peer_id) == 500
    assert sum(n for why, n in intake.rejections().items() if why.startswith("revocation:")) == 2


@pytest.mark.parametrize("aggregate", [Aggregate.SUM, Aggregate.MEDIAN])
def test_a_signed_revocation_undoes_a_keys_late_records_on_every_replica_alike(tmp_path, aggregate):
    """C's records of rounds 2 and 3 went out, then the admin A revoked C from round 2. Replica X
    had applied them and undoes them when the revocation arrives; Y takes the revocation first and
    refuses them; Z never saw them. One state hash and set digest, and X restarted from its ledger
    (with or without a snapshot that still counted them) lands on it again."""
    train = dataclasses.replace(TRAIN, aggregate=aggregate)
    rng = np.random.default_rng(2)
    records = [_rec(k, r, g=rng.normal(size=2)) for r in range(4) for k in (A, B, C)]
    kept = [r for r in records if not (r.peer_id == C.peer_id and r.round >= 2)]
    rev = Revocation.sign(A, RUN, C.peer_id, 2).to_bytes()

    def replica(name: str) -> tuple[Replica, Intake, Roster]:
        roster = _admin_roster(A)
        path = tmp_path / name / "revocations.txt"
        for r in read_revocations(path, RUN):
            roster.revoke(r)
        rep = Replica.open(tmp_path / name, _state(), train, RUN, counts=roster.counts)
        return rep, Intake(rep, train, b"", lambda: 10, roster=roster, revocations=path), roster

    x, x_in, _ = replica("x")
    assert sum(x_in.offer(r.to_bytes()) for r in records) == 12
    x.flush()
    x.save_snapshot(4)  # counts C's late records
    everything = x.state_hash()
    assert x_in.revoke_all([rev]) == [rev] and x_in.revoke_all([rev]) == []
    assert len(x.applied) == len(kept)
    assert read_revocations(tmp_path / "x" / "revocations.txt", RUN) == [Revocation.decode(rev, RUN)]  # durable

    y, y_in, _ = replica("y")
    assert y_in.revoke_all([rev]) == [rev]
    order = [r.to_bytes() for r in records]
    random.Random(7).shuffle(order)
    assert sum(y_in.offer(raw) for raw in order) == len(kept)
    y.flush()

    z = Replica(_state(), train, RUN)
    z.add(kept)
    assert x.state_hash() == y.state_hash() == z.state_hash() != everything
    assert x.digest.hex() == y.digest.hex() == z.digest.hex()
    assert x.closed_digest(3) == z.closed_digest(3)

    x.ledger.close()
    x, _, _ = replica("x")  # its snapshot still counted C's late records: set aside, rebuilt from the ledger
    assert (tmp_path / "x" / "snapshot.safetensors.damaged").exists()
    assert x.state_hash() == z.state_hash()
    x.save_snapshot(4)
    x.ledger.close()
    (tmp_path / "x" / "snapshot.safetensors.damaged").unlink()
    x, _, _ = replica("x")  # a snapshot taken after the revocation is used as it is
    assert not (tmp_path / "x" / "snapshot.safetensors.damaged").exists()
    assert x.state_hash() == z.state_hash() and len(x.applied) == len(kept)
    x.ledger.close()
    y.ledger.close()


# ---------------------------------------------------------------------------------------- key files
def test_a_key_file_is_private_never_overwritten_and_loads_back(tmp_path):
    path = tmp_path / "site.key"
    A.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    back = SiteKey.load(path)
    assert back.public == A.public and back.peer_id == A.peer_id
    with pytest.raises(ConfigError, match="never overwritten"):
        B.save(path)
    assert SiteKey.load(path).public == A.public
    for name, body in [("empty", b""), ("text", b"hello\n"), ("cut", A.pem()[:60]), ("big", b"x" * 10_000)]:
        (tmp_path / name).write_bytes(body)
        with pytest.raises(ConfigError, match=f"key file {tmp_path / name} "):
            SiteKey.load(tmp_path / name)
    with pytest.raises(ConfigError, match="not found"):
        SiteKey.load(tmp_path / "none.key")


def test_keys_are_in_the_run_file_but_not_in_the_run_tag(tmp_path):
    from onebyte.config import Run

    spec = RunSpec(run_id="ident", keys=[{"name": "a", "public": A.public_hex},
                                         {"name": "b", "public": B.public_hex, "until": 9}])
    path = tmp_path / "run.toml"
    spec.save(path)
    back = RunSpec.load(path)
    assert back == spec and back.keys[1].until == 9
    assert Run(spec, "00" * 32).run_tag == Run(RunSpec(run_id="ident"), "00" * 32).run_tag
    Run(spec, "00" * 32).save(tmp_path / "run.json")
    assert Run.load(tmp_path / "run.json").spec.keys == spec.keys
    with pytest.raises(ConfigError, match="listed twice"):
        RunSpec(keys=[{"name": "a", "public": A.public_hex}, {"name": "a", "public": B.public_hex}])
    with pytest.raises(ConfigError, match=r"keys\[0\].until"):
        RunSpec(keys=[{"name": "a", "public": A.public_hex, "until": -1}])


# ---------------------------------------------------------------------------------------- the command line
def _one_line_error(capsys, argv) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_keygen_then_a_bad_or_missing_key_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["keygen", "plant-a.key"]) == 0
    out = capsys.readouterr().out
    key = SiteKey.load(tmp_path / "plant-a.key")
    assert key.public_hex in out and f"{key.peer_id:x}" in out
    assert main(["init", "run.toml", "--model", "tiny-gpt2"]) == 0
    capsys.readouterr()
    with open("run.toml", "a") as fh:  # paste the printed lines, as the message says
        fh.write("\n" + out.split("\n\n", 1)[1])
    spec = RunSpec.load("run.toml")
    assert [(k.name, k.public) for k in spec.keys] == [("plant-a", key.public)]

    assert "never overwritten" in _one_line_error(capsys, ["keygen", "plant-a.key"])
    assert SiteKey.load(tmp_path / "plant-a.key").public == key.public
    (tmp_path / "bad.key").write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    peer = ["peer", "--config", "run.toml", "--out", "x"]
    assert "not a site key" in _one_line_error(capsys, [*peer, "--key", "bad.key"])
    assert "not found" in _one_line_error(capsys, [*peer, "--key", "missing.key"])
    assert "--key: the run file lists site keys" in _one_line_error(capsys, peer)
    assert main(["keygen", "other.key"]) == 0
    capsys.readouterr()
    assert "not listed" in _one_line_error(capsys, [*peer, "--key", "other.key"])
    assert "--peer-id" in _one_line_error(capsys, [*peer, "--key", "plant-a.key", "--peer-id", "7"])
    assert "--key: the run file lists no site keys" in _one_line_error(
        capsys, ["peer", "--model", "tiny-gpt2", "--out", "x", "--key", "plant-a.key"])
    text = (tmp_path / "run.toml").read_text().replace(key.public_hex, key.public_hex[:-2])
    (tmp_path / "run.toml").write_text(text)
    assert "keys[0].public" in _one_line_error(capsys, [*peer, "--key", "plant-a.key"])
    assert "keys[0].public" in _one_line_error(capsys, ["init", "y.toml", "--config", "run.toml"])
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------- peers
def test_signed_peers_agree_and_an_outsider_with_the_secret_or_a_key_gets_nothing_applied(tmp_path, owned):
    from onebyte.peer import Peer, PeerOptions
    from onebyte.tasks.data import split_shards
    from onebyte.training import Setup
    from onebyte.transport.memory import MemoryHub, MemoryTransport

    train = TrainConfig(samples=2, batch_size=8, lr=1e-3, tune="all")
    spec = RunSpec(run_id="ident", model="tiny-gpt2", task="vader", train=train,
                   keys=[{"name": "a", "public": A.public_hex}, {"name": "b", "public": B.public_hex},
                         {"name": "c", "public": C.public_hex}])  # C only joins at the end
    hub = MemoryHub()
    setup = Setup.build(spec)
    with pytest.raises(ConfigError, match="give this peer"):
        owned(Peer(setup, [], MemoryTransport(hub, "x"), tmp_path / "x", PeerOptions(peer_id=A.peer_id, secret=SECRET)))
    with pytest.raises(ConfigError, match="not listed"):
        owned(Peer(setup, [], MemoryTransport(hub, "x"), tmp_path / "x", PeerOptions(peer_id=D.peer_id, key=D)))
    peers = []
    for i, key in enumerate((A, B)):
        setup = Setup.build(spec)
        shard = split_shards(setup.dataset.train, 2, None, 0)[i]
        opts = PeerOptions(peer_id=key.peer_id, rounds=3, secret=SECRET, key=key, **FAST_PEER)
        peers.append(owned(Peer(setup, shard, MemoryTransport(hub, f"p{i}"), tmp_path / f"p{i}", opts)))
    evil = owned(MemoryTransport(hub, "evil"))
    tag = peers[0].tag
    for r in range(3):
        g = np.array([100.0, -100.0])
        forged = [build_record(Codec.BYTE, tag, r, 7, 0, g, r, SECRET),  # the secret, no key
                  build_record(Codec.BYTE, tag, r, D.peer_id, 0, g, r).signed_by(D),  # an unlisted key
                  build_record(Codec.BYTE, tag, r, B.peer_id, 0, g, r).signed_by(D)]  # as B, by D
        for raw in (f.to_bytes() for f in forged):
            for target in ("p0", "p1"):
                evil.request(target, b"REC" + struct.pack("<H", len(raw)) + raw, 1.0)
    summaries = run_peers(peers)
    # a newcomer joins from A's snapshot, whose records it checks against its roster first
    newcomer = owned(Peer(Setup.build(spec), [], MemoryTransport(hub, "c"), tmp_path / "c",
                          PeerOptions(peer_id=C.peer_id, key=C, catchup="snapshot", **FAST_PEER)))
    newcomer._install_snapshot(peers[0].gossip.heartbeat())
    assert newcomer.state_hash() == summaries[0]["state_hash"] and len(newcomer.records) == 6
    # ... and one whose run file revokes B from round 1 refuses that snapshot (it counts B's late records)
    revoking = RunSpec(run_id="ident", model="tiny-gpt2", task="vader", train=train,
                       keys=[*spec.keys[:1], ListedKey("b", B.public, 1), ListedKey("c", C.public)])
    late = owned(Peer(Setup.build(revoking), [], MemoryTransport(hub, "c2"), tmp_path / "c2",
                      PeerOptions(peer_id=C.peer_id, key=C, catchup="snapshot", **FAST_PEER)))
    with pytest.raises(ProtocolError, match="does not count here"):
        late._install_snapshot(peers[0].gossip.heartbeat())
    assert late.records == {}
    assert len({s["state_hash"] for s in summaries}) == 1
    assert {s["peer_id"] for s in summaries} == {f"{A.peer_id:x}", f"{B.peer_id:x}"}
    assert all(s["records"] == 6 for s in summaries)  # only the two sites' own records
    assert all(rec.is_signed for rec in peers[0].records.values())
    for s in summaries:
        rejected = json.dumps(s["rejections"])
        assert "not signed by a site key" in rejected and "unlisted key" in rejected and "does not verify" in rejected


def _signed_run_dir(tmp_path, listed: list[dict], rounds: int):
    """A run directory of a tiny-gpt2 run listing ``listed`` keys, whose ledger holds a signed record
    of A and of C for each of ``rounds`` rounds: (setup, train, records, RunDir)."""
    from onebyte.config import Run
    from onebyte.ledger import LedgerWriter
    from onebyte.rundir import RunDir
    from onebyte.training import Setup

    train = TrainConfig(samples=2, batch_size=8, lr=1e-3, tune="all")
    setup = Setup.build(RunSpec(run_id="ident", model="tiny-gpt2", task="vader", train=train, keys=listed))
    records = [build_record(Codec.BYTE, setup.spec.run_tag, r, k.peer_id, 0, np.array([0.5, -1.0]), r).signed_by(k)
               for r in range(rounds) for k in (A, C)]
    d = RunDir(tmp_path / "run")
    d.root.mkdir()
    Run(setup.spec.spec, setup.spec.base_hash).save(d.run)
    ledger = LedgerWriter(d.ledger)
    ledger.append(records)
    ledger.close()
    return setup, train, records, d


def test_replay_counts_what_the_run_files_roster_counts(tmp_path):
    from onebyte.api import replay

    listed = [{"name": "a", "public": A.public_hex}, {"name": "c", "public": C.public_hex, "until": 1}]
    setup, train, records, d = _signed_run_dir(tmp_path, listed, rounds=2)
    z = Replica(setup.state, train, setup.spec.run_tag)
    z.add([r for r in records if not (r.peer_id == C.peer_id and r.round >= 1)])
    tuned = replay(d.root)
    assert tuned.records == 3 and tuned.state_hash == z.state_hash()


def _admin_spec(run_id: str) -> RunSpec:
    """A tiny-gpt2 run listing A (an admin key), B and C."""
    train = TrainConfig(samples=2, batch_size=8, lr=1e-3, tune="all")
    return RunSpec(run_id=run_id, model="tiny-gpt2", task="vader", train=train,
                   keys=[{"name": "a", "public": A.public_hex, "admin": True}, {"name": "b", "public": B.public_hex},
                         {"name": "c", "public": C.public_hex}])


def test_a_revocation_signed_mid_run_reaches_every_peer_and_they_agree(tmp_path, owned):
    """Three signed peers; A holds an admin key and revokes C from round 2 while they run. B and C
    learn it over the network (REVK), whether C's late records reached them before it or not; all
    three end on one (digest, hash), counting none of C's records from round 2, and B's copy of
    the revocation is durable."""
    from onebyte.peer import Peer, PeerOptions
    from onebyte.tasks.data import split_shards
    from onebyte.training import Setup
    from onebyte.transport.memory import MemoryHub, MemoryTransport

    spec = _admin_spec("revoke")
    hub, peers = MemoryHub(), []
    for i, key in enumerate((A, B, C)):
        setup = Setup.build(spec)
        shard = split_shards(setup.dataset.train, 3, None, 0)[i]
        opts = PeerOptions(peer_id=key.peer_id, rounds=6, secret=SECRET, key=key, min_peers=3, **FAST_PEER)
        peers.append(owned(Peer(setup, shard, MemoryTransport(hub, f"p{i}"), tmp_path / f"p{i}", opts)))
    errors: list[BaseException] = []

    def go(p):
        try:
            p.run(owned.stop)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    with pytest.raises(ConfigError, match="neither the revoked key nor an admin"):
        peers[1].revoke("a", 0)  # B holds no admin key
    for p in peers:
        owned.thread(go, p)
    wait_until(lambda: peers[0].round >= 3, 120, "A's round 3 (C's round-2 record is out by then)")
    rev = peers[0].revoke("c", 2)
    owned.join(300)
    assert not errors, errors
    summaries = [p.summary() for p in peers]
    assert len({(s["set_digest"], s["state_hash"]) for s in summaries}) == 1
    for p in peers:
        assert p.roster.until(C.peer_id) == 2
        assert not [r for r in p.replica.applied_records() if r.peer_id == C.peer_id and r.round >= 2]
        assert {r.peer_id for r in p.replica.applied_records() if r.round < 2} == {A.peer_id, B.peer_id, C.peer_id}
    assert read_revocations(tmp_path / "p1" / "revocations.txt", peers[0].tag) == [rev]


def test_onebyte_revoke_writes_a_signed_revocation_that_replay_and_peers_honour(tmp_path, capsys):
    from onebyte.api import replay
    from onebyte.config import Run
    from onebyte.rundir import RunDir

    listed = [{"name": "a", "public": A.public_hex, "admin": True}, {"name": "c", "public": C.public_hex}]
    setup, train, records, d = _signed_run_dir(tmp_path, listed, rounds=3)
    for k in "ac":
        {"a": A, "c": C}[k].save(tmp_path / f"{k}.key")
    D.save(tmp_path / "d.key")
    revoke = ["revoke", "--run", str(d.root), "--from"]
    assert "neither the revoked key nor an admin" in _one_line_error(
        capsys, [*revoke, "0", "--key", str(tmp_path / "c.key"), "a"])  # C is no admin
    assert "no key named 'b'" in _one_line_error(capsys, [*revoke, "0", "--key", str(tmp_path / "a.key"), "b"])
    assert "neither" in _one_line_error(capsys, [*revoke, "0", "--key", str(tmp_path / "d.key"), "c"])
    assert not d.revocations.exists()
    assert main([*revoke, "1", "--key", str(tmp_path / "a.key"), "c"]) == 0
    assert "revocations.txt" in capsys.readouterr().out
    assert [(r.revoked, r.from_round) for r in read_revocations(d.revocations, setup.spec.run_tag)] == [(C.peer_id, 1)]
    z = Replica(setup.state, train, setup.spec.run_tag)
    z.add([r for r in records if not (r.peer_id == C.peer_id and r.round >= 1)])
    tuned = replay(d.root)
    assert tuned.records == 4 and tuned.state_hash == z.state_hash()
    with open(d.revocations, "a") as fh:  # a torn or foreign line is skipped, the rest still counts
        fh.write("deadbeef")
    assert replay(d.root).state_hash == z.state_hash()
    assert main([*revoke, "2", "--key", str(tmp_path / "c.key"), "c"]) == 0  # later than the one in force
    assert "already revoked from round 1" in capsys.readouterr().out
    assert main([*revoke, "0", "--key", str(tmp_path / "c.key"), "c"]) == 0  # a key may revoke itself
    assert len(read_revocations(d.revocations, setup.spec.run_tag)) == 2
    assert "Not a directory" in _one_line_error(  # a file given for the run directory
        capsys, ["revoke", "--run", str(d.ledger), "--from", "0", "--key", str(tmp_path / "a.key"), "c"])
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "run.json").write_text("[]")
    assert "not a valid run description" in _one_line_error(
        capsys, ["revoke", "--run", str(tmp_path / "odd"), "--from", "0", "--key", str(tmp_path / "a.key"), "c"])

    plain = RunDir(tmp_path / "plain")
    plain.root.mkdir()
    Run(RunSpec(run_id="p", model="tiny-gpt2", task="vader", train=train), setup.spec.base_hash).save(plain.run)
    assert "lists no [[keys]]" in _one_line_error(
        capsys, ["revoke", "--run", str(plain.root), "--from", "0", "--key", str(tmp_path / "a.key"), "c"])


def test_a_revocation_written_while_a_peer_was_stopped_reaches_the_others_when_it_starts(tmp_path, owned):
    """The operator revoked C in A's directory while A was stopped. A takes it at start; B, whose
    record set never differs from A's (so no sync would carry it), learns it when the two meet."""
    from onebyte.identity import append_revocation
    from onebyte.peer import Peer, PeerOptions
    from onebyte.training import Setup
    from onebyte.transport.memory import MemoryHub, MemoryTransport

    spec = _admin_spec("greet")
    setups = [Setup.build(spec) for _ in range(2)]
    rev = Revocation.sign(A, setups[0].spec.run_tag, C.peer_id, 5)
    (tmp_path / "p0").mkdir()
    append_revocation(tmp_path / "p0" / "revocations.txt", rev)
    hub = MemoryHub()
    peers = [owned(Peer(setups[i], setups[i].dataset.train[i::2], MemoryTransport(hub, f"p{i}"), tmp_path / f"p{i}",
                        PeerOptions(peer_id=key.peer_id, rounds=3, secret=SECRET, key=key, min_peers=2, **FAST_PEER)))
             for i, key in enumerate((A, B))]
    assert peers[0].roster.until(C.peer_id) == 5 and peers[1].roster.until(C.peer_id) is None
    for p in [*peers, *peers]:  # they hear of each other, then exchange heartbeats: nothing to sync
        p.beat(force=True)
    assert peers[0].digest.hex() == peers[1].digest.hex()
    assert peers[1].roster.until(C.peer_id) == 5
    assert read_revocations(tmp_path / "p1" / "revocations.txt", peers[0].tag) == [rev]


def test_peers_whose_run_files_list_other_site_keys_say_so(tmp_path):
    """The keys are not in the run tag, so two sites can run one tag with different key lists and
    count different records. When they meet, each names what differs; equal lists say nothing."""
    from onebyte.peer import Peer, PeerOptions
    from onebyte.training import Setup
    from onebyte.transport.memory import MemoryHub, MemoryTransport

    ours = _admin_spec("keys-differ")
    theirs = RunSpec.from_dict({**ours.to_dict(), "keys": [{"name": "a", "public": A.public_hex},  # not admin
                                                          {"name": "b", "public": B.public_hex},
                                                          {"name": "c", "public": C.public_hex, "until": 4}]})
    for spec_b, differs in ((ours, False), (theirs, True)):
        setups = [Setup.build(ours), Setup.build(spec_b)]
        assert setups[0].spec.run_tag == setups[1].spec.run_tag
        hub, out = MemoryHub(), tmp_path / f"differs-{differs}"
        with Owned() as own:  # these two closed before the next two start
            peers = [own(Peer(setups[i], setups[i].dataset.train[i::2], MemoryTransport(hub, f"p{i}"), out / f"p{i}",
                              PeerOptions(peer_id=key.peer_id, rounds=1, secret=SECRET, key=key, min_peers=2,
                                          **FAST_PEER)))
                     for i, key in enumerate((A, B))]
            for p in [*peers, *peers]:
                p.beat(force=True)
            said = [p.summary()["key_list_peers"] for p in peers]
        if not differs:
            assert said == [{}, {}]
            continue
        assert list(said[0]) == [f"{B.peer_id:x}"] and list(said[1]) == [f"{A.peer_id:x}"]
        assert "key 'a': admin True here, None there" in said[0][f"{B.peer_id:x}"]
        assert "key 'c': until None here, 4 there" in said[0][f"{B.peer_id:x}"]
        assert "key 'c': until 4 here, None there" in said[1][f"{A.peer_id:x}"]


def test_a_hostile_configuration_reply_is_refused_or_shown_short():
    from onebyte.config import MAX_DIFFERENCES, differing_fields, differing_keys
    from onebyte.protocol import parse_config

    with pytest.raises(ProtocolError, match="not JSON"):
        parse_config(b"[" * 5000)  # nested past the parser's recursion limit
    deep = json.loads("[" * 900 + "]" * 900)
    line = differing_keys({}, {"k": {"name": deep}})[0]
    assert len(line) < 200 and "listed there only" in line
    assert differing_keys({}, "junk") == ["keys: not a list of keys there ('junk')"]
    ours = {"run_id": "x"}
    many = differing_fields(ours, {f"f{i}": "y" * 10_000 for i in range(1000)})
    assert len(many) == MAX_DIFFERENCES + 1 and many[-1].endswith("more") and max(map(len, many)) < 300
    # a renamed key is the same key: only until and admin count
    a = {"name": "a", "public": A.public_hex}
    assert differing_keys({A.public_hex: a}, {A.public_hex: {**a, "name": "site-a"}}) == []


@pytest.mark.parametrize("aggregate", [Aggregate.SUM, Aggregate.CLIPPED], ids=["sum", "clipped"])
def test_signed_peers_in_lockstep_equal_the_simulator_given_their_keys(tmp_path, aggregate, owned):
    """swarm = simulate with site keys: the simulator publishes and signs as each site, so three
    signed peers in lockstep and the simulation end on one (digest, hash). C's key is revoked by
    the run file from round 2: lockstep stops waiting for it, and neither side counts it there."""
    from onebyte.peer import Peer, PeerOptions
    from onebyte.simulator import SimConfig, run_simulation
    from onebyte.tasks.data import split_shards
    from onebyte.training import Setup
    from onebyte.transport.memory import MemoryHub, MemoryTransport

    train = TrainConfig(samples=2, batch_size=8, lr=1e-3, tune="all", aggregate=aggregate)
    spec = RunSpec(run_id="keyed-lockstep", model="tiny-gpt2", task="vader", train=train,
                   keys=[{"name": "a", "public": A.public_hex}, {"name": "b", "public": B.public_hex},
                         {"name": "c", "public": C.public_hex, "until": 2}])
    cfg = SimConfig.from_spec(spec, peers=3, rounds=3, eval_size=8)
    with pytest.raises(ConfigError, match="one private key per peer"):
        run_simulation(cfg, tmp_path / "bad", keys=(A, B))
    with pytest.raises(ConfigError, match="not listed"):
        run_simulation(cfg, tmp_path / "bad", keys=(A, B, D))
    sim = run_simulation(cfg, tmp_path / "sim", keys=(A, B, C)).summary
    assert sim["records"] == 8  # three sites for rounds 0 and 1, then A and B
    hub, peers = MemoryHub(), []
    with pytest.raises(ConfigError, match="3 peers, not 4"):
        owned(Peer(Setup.build(spec), [], MemoryTransport(hub, "x"), tmp_path / "x",
                   PeerOptions(peer_id=A.peer_id, key=A, lockstep=4)))
    for i, key in enumerate((A, B, C)):
        setup = Setup.build(spec)
        shard = split_shards(setup.dataset.train, 3, None, 0)[i]
        opts = PeerOptions(peer_id=key.peer_id, rounds=3, lockstep=3, key=key, **FAST_PEER)
        peers.append(owned(Peer(setup, shard, MemoryTransport(hub, f"p{i}"), tmp_path / f"p{i}", opts)))
    summaries = run_peers(peers)
    assert {(s["set_digest"], s["state_hash"]) for s in summaries} == {(sim["set_digest"], sim["state_hash"])}


def test_onebyte_simulate_with_key_files_signs_as_each_site(tmp_path, capsys):
    from onebyte.simulator import SimConfig, run_simulation

    train = TrainConfig(samples=2, batch_size=8, lr=1e-3, tune="all")
    spec = RunSpec(run_id="keyed-cli", model="tiny-gpt2", task="vader", train=train,
                   keys=[{"name": "a", "public": A.public_hex}, {"name": "b", "public": B.public_hex}])
    spec.save(tmp_path / "run.toml")
    A.save(tmp_path / "a.key")
    B.save(tmp_path / "b.key")
    argv = ["simulate", "--config", str(tmp_path / "run.toml"), "--peers", "2", "--rounds", "2", "--eval-size", "8",
            "--no-progress"]
    assert "one private key per peer" in _one_line_error(
        capsys, [*argv, "--keys", str(tmp_path / "a.key"), "--out", str(tmp_path / "one")])
    assert "missing.key" in _one_line_error(
        capsys, [*argv, "--keys", f"{tmp_path / 'a.key'},{tmp_path / 'missing.key'}", "--out", str(tmp_path / "x")])
    assert main([*argv, "--keys", f"{tmp_path / 'a.key'},{tmp_path / 'b.key'}", "--out", str(tmp_path / "cli")]) == 0
    got = json.loads((tmp_path / "cli" / "summary.json").read_text())
    want = run_simulation(SimConfig.from_spec(spec, peers=2, rounds=2, eval_size=8), tmp_path / "api",
                          keys=(A, B)).summary
    assert (got["set_digest"], got["state_hash"]) == (want["set_digest"], want["state_hash"])
    assert got["records"] == 4


def test_onebyte_swarm_site_keys_refuses_a_run_file_that_lists_keys(tmp_path, capsys):
    """--site-keys makes the sites' keys itself: a run file with its own [[keys]] is one line, exit 2,
    before any peer starts or any key file is written."""
    spec = RunSpec(run_id="keyed-swarm", model="tiny-gpt2", task="vader",
                   keys=[{"name": "a", "public": A.public_hex}])
    spec.save(tmp_path / "run.toml")
    err = _one_line_error(capsys, ["swarm", "--config", str(tmp_path / "run.toml"), "--site-keys", "--peers", "2",
                                   "--no-progress", "--out", str(tmp_path / "swarm")])
    assert "already lists site keys" in err
    assert not (tmp_path / "swarm" / "keys").exists()
