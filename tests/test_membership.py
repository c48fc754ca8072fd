"""Heartbeats (the authenticated binary format) and membership (who is live, judged by seq)."""

from __future__ import annotations

import hashlib
import hmac
import struct
import sys
import threading
import time
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onebyte.auth import TAG_SIZE as _TAG
from onebyte.errors import ProtocolError
from onebyte.membership import _HB, MAX_CONTACT, ForeignRun, Heartbeat, Membership, decode_heartbeat

RUN = b"R" * 16
SECRET = b"swarm secret"


def _hb(peer_id: int = 7, seq: int = 1, contact: str = "/ip4/127.0.0.1/tcp/31337", **kw) -> Heartbeat:
    fields = dict(run_tag=RUN, base=b"B" * 16, peer_id=peer_id, seq=seq, round=3, records=12, done=False,
                  digest=b"d" * 32, state_hash=b"s" * 32, closed=1, closed_digest=b"c" * 32, contact=contact)
    fields.update(kw)
    return Heartbeat(**fields)


def _signed(body: bytes, secret: bytes = SECRET) -> bytes:
    return body + hmac.new(secret, body, hashlib.sha256).digest()[:_TAG]


def _fields(data: bytes) -> list:
    return list(_HB.unpack_from(data))


def _repack(data: bytes, **changes: int | bytes) -> bytes:
    """The heartbeat ``data`` with some header fields changed, correctly signed again."""
    names = ["magic", "version", "run", "base", "peer", "seq", "round", "records", "done", "digest",
             "state", "closed", "cdigest", "examples", "clen"]
    values = dict(zip(names, _fields(data), strict=True))
    values.update(changes)
    contact = data[_HB.size:-_TAG]
    return _signed(_HB.pack(*values.values()) + contact)


# ------------------------------------------------------------------ the format
bytes16, bytes32 = st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32)
u32 = st.integers(0, 2**32 - 1)


@given(base=bytes16, peer_id=st.integers(0, 2**64 - 1), seq=u32, round_=u32, records=u32, done=st.booleans(),
       digest=bytes32, state_hash=bytes32, closed=st.integers(-1, 2**31 - 1), closed_digest=bytes32,
       contact=st.text(max_size=100).filter(lambda c: len(c.encode()) <= MAX_CONTACT), examples=u32)
def test_encode_decode_round_trip(base, peer_id, seq, round_, records, done, digest, state_hash, closed,
                                  closed_digest, contact, examples):
    hb = Heartbeat(RUN, base, peer_id, seq, round_, records, done, digest, state_hash, closed, closed_digest,
                   contact, examples)
    data = hb.encode(SECRET)
    assert len(data) == _HB.size + len(contact.encode()) + _TAG
    assert decode_heartbeat(data, RUN, SECRET) == hb
    assert decode_heartbeat(bytearray(data), RUN, SECRET) == hb


def test_every_flipped_byte_is_refused():
    data = _hb().encode(SECRET)
    for i in range(len(data)):
        for mask in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= mask
            with pytest.raises(ProtocolError):
                decode_heartbeat(bytes(bad), RUN, SECRET)


def test_a_wrong_secret_is_refused():
    with pytest.raises(ProtocolError, match="authentication"):
        decode_heartbeat(_hb().encode(SECRET), RUN, b"another secret")
    with pytest.raises(ProtocolError, match="authentication"):
        decode_heartbeat(_hb().encode(b""), RUN, SECRET)


def test_every_truncation_and_extension_is_refused():
    data = _hb().encode(SECRET)
    for n in range(len(data)):
        with pytest.raises(ProtocolError):
            decode_heartbeat(data[:n], RUN, SECRET)
    with pytest.raises(ProtocolError):
        decode_heartbeat(data + b"\0", RUN, SECRET)


@pytest.mark.parametrize("change", [{"magic": b"XX"}, {"version": 3}, {"version": 0}, {"done": 2}, {"closed": -2}])
def test_a_bad_header_is_refused_even_when_signed(change):
    data = _hb().encode(SECRET)
    assert decode_heartbeat(_repack(data), RUN, SECRET) == _hb()  # the re-signing helper is faithful
    with pytest.raises(ProtocolError, match="not a onebyte heartbeat"):
        decode_heartbeat(_repack(data, **change), RUN, SECRET)


@pytest.mark.parametrize("delta", [-1, 1, 100])
def test_a_contact_length_mismatch_is_refused_even_when_signed(delta):
    data = _hb(contact="peer-contact").encode(SECRET)
    with pytest.raises(ProtocolError, match="length does not match"):
        decode_heartbeat(_repack(data, clen=len("peer-contact") + delta), RUN, SECRET)


def test_a_contact_over_the_bound_or_not_utf8_is_refused():
    with pytest.raises(ProtocolError, match="impossible size"):
        decode_heartbeat(_hb(contact="x" * (MAX_CONTACT + 1)).encode(SECRET), RUN, SECRET)
    body = _HB.pack(b"HB", 1, RUN, b"B" * 16, 7, 1, 3, 12, 0, b"d" * 32, b"s" * 32, 1, b"c" * 32, 0, 2) + b"\xff\xfe"
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode_heartbeat(_signed(body), RUN, SECRET)


@pytest.mark.parametrize("data", ["a heartbeat as text", None, 42, memoryview(b"HB")])
def test_what_is_not_bytes_is_refused(data):
    with pytest.raises(ProtocolError):
        decode_heartbeat(data, RUN, SECRET)  # type: ignore[arg-type]


def test_a_heartbeat_of_another_run_is_foreign_and_carries_what_it_said():
    theirs = _hb(run_tag=b"O" * 16, peer_id=99, round=40)
    with pytest.raises(ForeignRun) as info:
        decode_heartbeat(theirs.encode(SECRET), RUN, SECRET)
    assert isinstance(info.value, ProtocolError)
    assert info.value.heartbeat == theirs
    with pytest.raises(ProtocolError, match="authentication"):  # unauthenticated: not even foreign
        decode_heartbeat(theirs.encode(b"outsider"), RUN, SECRET)


def test_the_layout_is_the_documented_one():
    data = replace(_hb(contact="abc"), examples=583).encode(SECRET)
    assert data[:3] == b"HB\x01"
    assert _HB.size == 2 + 1 + 16 + 16 + 8 + 4 * 3 + 1 + 32 * 2 + 4 + 32 + 4 + 2
    assert struct.unpack_from("<I", data, _HB.size - 6) == (583,)
    assert struct.unpack_from("<H", data, _HB.size - 2) == (3,)
    assert data[_HB.size:_HB.size + 3] == b"abc"


# ------------------------------------------------------------------ liveness
def test_a_peer_is_live_while_its_seq_moves():
    m = Membership(ttl=5.0)
    m.observe(_hb(seq=1), now=0.0)
    assert set(m.live(now=5.0)) == {7}
    assert m.live(now=5.01) == {}
    m.observe(_hb(seq=2), now=6.0)
    assert set(m.live(now=10.0)) == {7}


def test_a_repeated_seq_does_not_keep_a_peer_live():
    m = Membership(ttl=5.0)
    m.observe(_hb(seq=1), now=0.0)
    for t in (1.0, 2.0, 4.0, 5.0):  # the same heartbeat re-read from the DHT, or replayed
        m.observe(_hb(seq=1), now=t)
    assert m.seen(7) == 0.0
    assert m.live(now=5.5) == {}
    m.observe(_hb(seq=1, contact="/ip4/10.0.0.2/tcp/1"), now=6.0)  # a new address is news
    assert set(m.live(now=6.0)) == {7}
    assert m.get(7) is not None and m.get(7).contact == "/ip4/10.0.0.2/tcp/1"


def test_a_pushed_record_keeps_its_author_live_and_moves_its_round():
    m = Membership(ttl=5.0)
    m.heard(9, round_=4, now=0.0)  # never heard of: we would not know how to reach it
    assert m.get(9) is None and m.live(now=0.0) == {}
    m.observe(_hb(seq=1, round=3), now=0.0)
    m.heard(7, round_=5, now=4.0)
    assert set(m.live(now=9.0)) == {7} and m.get(7).round == 5
    m.heard(7, round_=2, now=4.5)  # an old round never moves it back
    assert m.get(7).round == 5
    m.observe(_hb(seq=1, round=3), now=6.0)  # the same heartbeat again (the DHT): the round stays
    assert m.get(7).round == 5 and m.seen(7) == 4.5
    m.observe(_hb(seq=2, round=4), now=7.0)  # a newer heartbeat is the peer's word
    assert m.get(7).round == 4


def test_lost_peers_are_the_quiet_ones_that_never_said_done():
    m = Membership(ttl=5.0)
    m.observe(_hb(peer_id=1), now=0.0)
    m.observe(_hb(peer_id=2, done=True), now=0.0)
    m.observe(_hb(peer_id=3), now=8.0)
    assert m.lost(60.0, now=4.0) == set()  # all live still
    assert m.lost(60.0, now=10.0) == {1}  # 2 said it was done; 3 is live
    assert m.lost(60.0, now=61.0) == {3} and m.lost(60.0, now=69.0) == set()  # given up on after the window
    assert m.lost(60.0, now=20.0) == {1, 3}


def test_the_latest_heartbeat_is_kept_and_live_is_a_copy():
    m = Membership(ttl=5.0)
    m.observe(_hb(peer_id=1, seq=1), now=0.0)
    m.observe(_hb(peer_id=2, seq=1), now=0.0)
    m.observe(_hb(peer_id=1, seq=2, round=9), now=1.0)
    live = m.live(now=1.0)
    assert live[1].round == 9 and live[1].seq == 2
    live.clear()
    assert set(m.live(now=1.0)) == {1, 2}
    peers = m.peers()
    peers.pop(1)
    assert set(m.peers()) == {1, 2}
    assert m.get(3) is None and m.seen(3) is None
    # the tables peer.py reads directly keep working
    assert m.latest[1].seq == 2 and m.latest.get(3) is None and m.seen_at[2] == 0.0


def test_observing_while_iterating_live_is_safe():
    """Server threads observe pushed heartbeats while the round loop iterates ``live()``.
    Without the lock, ``live()`` iterates a dict that grows under it and raises
    'dictionary changed size during iteration'."""
    m = Membership(ttl=1e9)
    stop = threading.Event()
    errors: list[BaseException] = []

    def observer(offset: int) -> None:
        try:
            i = 0
            while not stop.is_set():
                m.observe(replace(_hb(), peer_id=offset + i, seq=i), now=0.0)
                i += 1
        except BaseException as exc:
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show at once
    threads = [threading.Thread(target=observer, args=(k << 40,), daemon=True) for k in range(3)]
    try:
        for t in threads:
            t.start()
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            live = m.live(now=0.0)
            assert all(hb.peer_id == p for p, hb in live.items())
            assert len(m.peers()) >= len(live)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10.0)
        sys.setswitchinterval(old)
    assert not errors
    assert not any(t.is_alive() for t in threads)
    assert len(m.live(now=0.0)) > 1000  # the observers did grow the table meanwhile
