"""End-to-end: real peer processes over hivemind on loopback (marked slow: a few minutes)."""

import json
import subprocess
import sys

import pytest

from harness import Owned
from onebyte.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def owned():
    """The peer processes (``owned.defer(lambda: stop_group(p))``) and other processes a test starts:
    stopped (their whole process group) however the test ends."""
    with Owned() as o:
        yield o


def _popen(owned: Owned, args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(args)

    def end() -> None:
        proc.kill()
        proc.wait(timeout=60)

    owned.defer(end)
    return proc

SMALL = ["--model", "tiny-gpt2", "--task", "vader", "--samples", "2", "--batch-size", "8", "--tune", "all"]


ROBUST = ("--aggregate", "robust")


@pytest.mark.parametrize("flags", [(), ROBUST], ids=["sum", "robust"])
def test_lockstep_swarm_equals_simulate(tmp_path, capsys, flags):
    assert main(["swarm", *SMALL, *flags, "--peers", "3", "--rounds", "3", "--lockstep", "--no-progress",
                 "--out", str(tmp_path / "swarm")]) == 0
    assert main(["simulate", *SMALL, *flags, "--peers", "3", "--rounds", "3", "--eval-size", "8", "--no-progress",
                 "--out", str(tmp_path / "sim")]) == 0
    swarm = json.loads((tmp_path / "swarm" / "swarm.json").read_text())
    sim = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert swarm["agree"]
    assert {s["state_hash"] for s in swarm["summaries"]} == {sim["state_hash"]}
    assert {s["set_digest"] for s in swarm["summaries"]} == {sim["set_digest"]}


def test_lockstep_swarm_with_site_keys_equals_simulate_given_those_keys(tmp_path):
    """onebyte swarm --site-keys: each peer signs as its own site; the simulator, handed the same key
    files, publishes and signs as those sites and ends on the swarm's (digest, hash)."""
    flags = [*SMALL, "--aggregate", "clipped", "--peers", "3", "--rounds", "3", "--no-progress"]
    assert main(["swarm", *flags, "--lockstep", "--site-keys", "--out", str(tmp_path / "swarm")]) == 0
    swarm = json.loads((tmp_path / "swarm" / "swarm.json").read_text())
    keys = sorted((tmp_path / "swarm" / "keys").glob("site-*.key"))
    assert [k.name for k in keys] == ["site-0.key", "site-1.key", "site-2.key"]
    assert "[[keys]]" in (tmp_path / "swarm" / "run.toml").read_text()
    assert main(["simulate", "--config", str(tmp_path / "swarm" / "run.toml"), "--peers", "3", "--rounds", "3",
                 "--eval-size", "8", "--no-progress", "--keys", ",".join(map(str, keys)),
                 "--out", str(tmp_path / "sim")]) == 0
    sim = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert swarm["agree"]
    assert sim["records"] == 9
    assert {(s["state_hash"], s["set_digest"]) for s in swarm["summaries"]} == {(sim["state_hash"],
                                                                                   sim["set_digest"])}


@pytest.mark.parametrize("flags", [(), ROBUST], ids=["sum", "robust"])
def test_churn_crash_join_restart_converge(tmp_path, flags):
    from bench.lab.churn import MAX_DEADLINE, run_churn

    result = run_churn(tmp_path, rounds=60, flags=flags)
    assert result["agree"], result
    assert len(result["peers"]) == 4
    # nobody stalled longer than the deadline allows (plus one round of compute and I/O)
    assert result["max_round_seconds"] <= MAX_DEADLINE + 2.0


def test_sixteen_peers_with_a_crash_and_a_restart_converge(tmp_path):
    """15 peers train, one is SIGKILLed, a 16th joins, the killed one restarts: one (digest, hash)."""
    from bench.lab.churn import run_churn

    result = run_churn(tmp_path, rounds=60, peers=16)
    assert result["agree"], result
    assert len(result["peers"]) == 16
    assert len({p["peer_id"] for p in result["peers"]}) == 16


@pytest.mark.parametrize("flags", [(), ROBUST], ids=["sum", "robust"])
def test_partition_heals_within_30s(tmp_path, flags):
    from bench.lab.partition import run_partition

    result = run_partition(tmp_path, flags=flags)
    assert result["distinct_digests_while_apart"] >= 2  # the groups really trained apart
    assert result["seconds_to_same_records_after_reconnect"] is not None
    assert result["seconds_to_same_records_after_reconnect"] <= 30
    assert result["agree"] and result["exit_codes"] == [0, 0, 0, 0]


def _peer(owned: Owned, *args, **kwargs):
    """``bench.lab.loopback.peer``, stopped (its process group) at the end of the test."""
    from bench.lab.loopback import peer

    from onebyte.swarm import stop_group

    p = peer(*args, **kwargs)
    owned.defer(lambda: stop_group(p))
    return p


def test_peer_without_the_secret_gets_nothing_applied(tmp_path, owned):
    from bench.lab.loopback import address, finish, secret_file

    good = ["--rounds", "8", "--secret-file", str(secret_file(tmp_path / "good"))]
    bad = ["--rounds", "8", "--secret-file", str(secret_file(tmp_path / "bad"))]
    p0 = _peer(owned, tmp_path / "good", 0, 3, good)
    join = address(p0)
    p1 = _peer(owned, tmp_path / "good", 1, 3, good, join)
    intruder = _peer(owned, tmp_path / "bad", 2, 3, bad, join)
    s0, s1, si = finish([p0, p1, intruder], 600)
    assert s0["set_digest"] == s1["set_digest"] and s0["state_hash"] == s1["state_hash"]
    assert s0["records"] == s1["records"] == 16  # 8 rounds x 2 honest peers, nothing from the intruder
    assert s0["records_rejected"] > 0 and s1["records_rejected"] > 0
    assert si["state_hash"] != s0["state_hash"]


def test_peers_from_run_files_differing_in_one_setting_name_it(tmp_path, owned):
    from bench.lab.loopback import address, secret_file, wait_until

    from onebyte.config import RunSpec, TrainConfig

    key = ["--secret-file", str(secret_file(tmp_path))]
    RunSpec(model="tiny-gpt2", train=TrainConfig(samples=2, tune="all")).save(tmp_path / "a.toml")
    RunSpec(model="tiny-gpt2", train=TrainConfig(samples=2, tune="all", lr=2e-3)).save(tmp_path / "b.toml")
    first = _peer(owned, tmp_path / "a", 0, 2, ["--config", str(tmp_path / "a.toml"), "--rounds", "40", *key])
    other = _peer(owned, tmp_path / "b", 1, 2, ["--config", str(tmp_path / "b.toml"), "--rounds", "40", *key],
                  address(first))
    wait_until(lambda: not other.alive(), 300, "the mismatched peer to give up")
    log = (other.out / "peer.log").read_text()
    assert other.proc.returncode == 2, log[-2000:]
    errors = [line for line in log.splitlines() if line.startswith("onebyte: error")]
    expected = f"train.lr: 0.002 here, {TrainConfig().lr} there"  # the default lr, in a.toml
    assert len(errors) == 1 and expected in errors[0], log[-2000:]


@pytest.mark.parametrize("busy", [0, 2], ids=["quiet", "two-cpu-bound-beside"])
def test_the_swarm_command_at_sixteen_peers_starts_them_together(tmp_path, busy, owned):
    """``onebyte swarm --peers 16``: on 2 cores the last peer is up long after the first could have
    run its 12 rounds alone; as a quorum they start together and all 16 end on one (digest, hash),
    also with two CPU-bound processes (started and ended here) beside them."""
    burners = [_popen(owned, [sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    assert main(["swarm", "--peers", "16", "--rounds", "12", "--model", "tiny-gpt2", "--no-progress",
                 "--timeout", "900", "--out", str(tmp_path / "swarm")]) == 0
    for b in burners:  # not beside the checks below
        b.kill()
        b.wait(timeout=60)
    swarm = json.loads((tmp_path / "swarm" / "swarm.json").read_text())
    assert swarm["agree"]
    assert all(s["peers"] == 16 and s["rounds_completed"] == 12 for s in swarm["summaries"])
