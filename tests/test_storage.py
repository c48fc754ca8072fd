"""Storage faults keep the data: a full disk is one line and exit 2 with the ledger a valid prefix;
a damaged snapshot is set aside and the state rebuilt from the ledger."""

import contextlib
import os
import subprocess
import sys
import threading
import uuid

import pytest

from onebyte.cli import main
from onebyte.config import RunSpec, TrainConfig
from onebyte.errors import StorageError
from onebyte.ledger import read_ledger, verify_ledger
from onebyte.peer import Peer, PeerOptions
from onebyte.training import Setup
from onebyte.transport.memory import MemoryHub, MemoryTransport

TRAIN = TrainConfig(samples=1, batch_size=4, tune="bias")
SIM = ["simulate", "--model", "tiny-gpt2", "--task", "vader", "--samples", "1", "--batch-size", "4",
       "--eval-size", "4", "--eval-every", "1000", "--no-progress"]


@contextlib.contextmanager
def small_disk(tmp_path, kib: int):
    """A tmpfs of ``kib`` KiB mounted for this test (needs root; skipped otherwise)."""
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _assert_valid_prefix(ledger):
    if ledger.exists():
        entries = read_ledger(ledger)  # no repair needed: a valid prefix, not a torn tail
        assert verify_ledger(ledger) == len(entries)


@pytest.mark.parametrize("kib", [12, 40])
def test_full_disk_ends_simulate_with_one_line_and_a_valid_ledger(tmp_path, capsys, kib):
    with small_disk(tmp_path, kib) as disk:
        rc = main([*SIM, "--peers", "2", "--rounds", "400", "--out", str(disk / "run")])
        err = capsys.readouterr().err
        assert rc == 2
        assert err.count("\n") == 1 and "disk is full" in err and "Traceback" not in err
        _assert_valid_prefix(disk / "run" / "ledger.obl")


def test_full_disk_ends_a_peer_with_storage_error_and_a_valid_ledger(tmp_path):
    with small_disk(tmp_path, 16) as disk:
        setup = Setup.build(RunSpec(run_id="disk", model="tiny-gpt2", train=TRAIN))
        opts = PeerOptions(peer_id=1, rounds=2000, snapshot_every=0, min_deadline=0.01, max_deadline=0.1,
                           heartbeat_interval=0.1, join_timeout=0.0, drain_timeout=0.5)
        with Peer(setup, setup.dataset.train, MemoryTransport(MemoryHub(), "p"), disk / "peer", opts) as peer:
            with pytest.raises(StorageError, match="disk is full"):
                peer.run()
            applied = len(peer.replica.applied)
        entries = read_ledger(disk / "peer" / "ledger.obl")
        assert len(entries) >= applied > 0  # everything applied was durable first


def test_peer_restarted_over_a_damaged_snapshot_rebuilds_from_its_ledger(tmp_path, caplog):
    def start():
        setup = Setup.build(RunSpec(run_id="snap", model="tiny-gpt2", train=TRAIN))
        opts = PeerOptions(peer_id=1, rounds=6, snapshot_every=2, min_deadline=0.01, max_deadline=0.1,
                           heartbeat_interval=0.1, join_timeout=0.0, drain_timeout=0.5)
        return Peer(setup, setup.dataset.train, MemoryTransport(MemoryHub(), "p"), tmp_path / "p", opts)

    with start() as peer:
        done = peer.run()
    snap = tmp_path / "p" / "snapshot.safetensors"
    data = bytearray(snap.read_bytes())
    data[-5] ^= 0xFF  # a flipped bit inside the accumulators: the contents no longer match its hash
    snap.write_bytes(bytes(data))
    with start() as again:
        assert again.replica.state_hash() == done["state_hash"]
        assert again.replica.digest.hex() == done["set_digest"]
    assert (tmp_path / "p" / "snapshot.safetensors.damaged").exists()
    assert any("rebuilding the state from the ledger" in r.getMessage() for r in caplog.records)
    # an unreadable one (truncated to nothing) is set aside the same way
    (tmp_path / "p" / "snapshot.safetensors").write_bytes(b"\0\0")
    with start() as third:
        assert third.replica.state_hash() == done["state_hash"]


@pytest.mark.slow
def test_full_disk_ends_the_peer_command_with_exit_2(tmp_path):
    pytest.importorskip("hivemind")
    with small_disk(tmp_path, 24) as disk:
        cmd = [sys.executable, "-m", "onebyte", "peer", "--model", "tiny-gpt2", "--samples", "1", "--batch-size",
               "4", "--rounds", "3000", "--eval-size", "0", "--snapshot-every", "0", "--host", "127.0.0.1",
               "--out", str(disk / "peer")]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        timer = threading.Timer(300, lambda: os.killpg(proc.pid, 9))
        timer.start()
        try:
            _out, err = proc.communicate()
        finally:
            timer.cancel()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)  # the DHT child and p2pd share the group
        lines = [line for line in err.splitlines() if line.startswith("onebyte: error")]
        assert proc.returncode == 2, err[-2000:]
        assert len(lines) == 1 and "disk is full" in lines[0] and "Traceback" not in err
        _assert_valid_prefix(disk / "peer" / "ledger.obl")
