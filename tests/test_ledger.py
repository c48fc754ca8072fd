import numpy as np
import pytest
import torch

from onebyte.codec import Codec
from onebyte.errors import LedgerError
from onebyte.ledger import LEDGER_MAGIC, LedgerWriter, load_snapshot, read_ledger, save_snapshot, verify_ledger
from onebyte.record import SetDigest, build_record
from onebyte.state import FixedPointState

RUN = b"L" * 16


def _write(path, n=6):
    recs = [build_record(Codec.BYTE, RUN, i, 1, 0, np.array([0.5 * i, -1.0]), i) for i in range(n)]
    with LedgerWriter(path) as w:
        w.append(recs[: n // 2])
        w.append(recs[n // 2:])
    return recs


def test_roundtrip_and_verify(tmp_path):
    p = tmp_path / "l.obl"
    recs = _write(p)
    assert read_ledger(p) == [r.to_bytes() for r in recs]
    assert verify_ledger(p, run_tag=RUN) == len(recs)


def test_reopen_appends(tmp_path):
    p = tmp_path / "l.obl"
    recs = _write(p, 4)
    with LedgerWriter(p) as w:
        assert len(w.existing) == 4
        w.append([build_record(Codec.BYTE, RUN, 9, 1, 0, np.array([1.0]), 0)])
    assert len(read_ledger(p)) == 5 and read_ledger(p)[:4] == [r.to_bytes() for r in recs]


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_torn_tail_detected_then_repaired(tmp_path, cut):
    p = tmp_path / "l.obl"
    recs = _write(p)
    data = p.read_bytes()
    p.write_bytes(data[:-cut])
    with pytest.raises(LedgerError):
        verify_ledger(p)
    with LedgerWriter(p) as w:  # opening for writing truncates to the last valid entry
        assert w.existing == [r.to_bytes() for r in recs[:-1]]
    assert verify_ledger(p) == len(recs) - 1


def test_corruption_in_the_middle_is_an_error_not_a_truncation(tmp_path):
    p = tmp_path / "l.obl"
    _write(p)
    data = bytearray(p.read_bytes())
    data[len(LEDGER_MAGIC) + 8 + 3] ^= 0x40  # inside the first record
    p.write_bytes(bytes(data))
    with pytest.raises(LedgerError, match="checksum"):
        read_ledger(p, repair=True)
    assert p.read_bytes() == bytes(data)  # nothing was dropped


def test_not_a_ledger(tmp_path):
    p = tmp_path / "x.obl"
    p.write_bytes(b"hello world, not a ledger at all")
    with pytest.raises(LedgerError, match="magic"):
        verify_ledger(p)
    with pytest.raises(LedgerError, match="no such"):
        verify_ledger(tmp_path / "missing.obl")


def test_duplicate_record_is_invalid(tmp_path):
    p = tmp_path / "l.obl"
    rec = build_record(Codec.BYTE, RUN, 0, 1, 0, np.array([1.0]), 0)
    with LedgerWriter(p) as w:
        w.append([rec, rec])
    with pytest.raises(LedgerError, match="repeats"):
        verify_ledger(p)


def test_every_single_byte_flip_is_rejected_or_harmless(tmp_path):
    p = tmp_path / "l.obl"
    _write(p, 3)
    good = p.read_bytes()
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0xA5
        p.write_bytes(bytes(bad))
        with pytest.raises(LedgerError):
            verify_ledger(p)


def test_snapshot_roundtrip_and_tamper(tmp_path):
    m = torch.nn.Linear(5, 3)
    state = FixedPointState(sorted(m.named_parameters()))
    state.acc[:7] += 3
    digest = SetDigest()
    digest.add(b"\1" * 32)
    save_snapshot(tmp_path / "s.safetensors", state, digest, 4)
    h = state.state_hash()
    state.acc.zero_()
    meta = load_snapshot(tmp_path / "s.safetensors", state)
    assert state.state_hash() == h and meta["set_digest"] == digest.hex() and meta["round"] == "4"
    (tmp_path / "bad.safetensors").write_bytes(b"\0" * 20)
    with pytest.raises(LedgerError):
        load_snapshot(tmp_path / "bad.safetensors", state)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.lists(st.floats(-50, 50), min_size=1, max_size=8)),
                min_size=1, max_size=12),
       st.integers(0, 10_000))
def test_property_any_truncation_is_detected_and_repairs_to_a_prefix(tmp_path_factory, items, cut_seed):
    path = tmp_path_factory.mktemp("prop") / "l.obl"
    recs = [build_record(Codec.BYTE, RUN, r, i, 0, np.array(g), i) for i, (r, g) in enumerate(items)]
    with LedgerWriter(path) as w:
        w.append(recs)
    data = path.read_bytes()
    assert read_ledger(path) == [r.to_bytes() for r in recs]
    cut = len(LEDGER_MAGIC) + cut_seed % (len(data) - len(LEDGER_MAGIC))
    path.write_bytes(data[:cut])
    if cut < len(data):
        try:
            verify_ledger(path)
            intact = True
        except LedgerError:
            intact = False
        kept = LedgerWriter(path).existing
        assert kept == [r.to_bytes() for r in recs[: len(kept)]]  # what survives is a prefix
        assert intact == (path.stat().st_size == cut)  # valid exactly when cut on an entry boundary
