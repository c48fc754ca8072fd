import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onebyte.codec import Codec
from onebyte.errors import ProtocolError
from onebyte.record import HEADER_SIZE, TAG_SIZE, SetDigest, build_record, decode_record

RUN = bytes(range(16))


def _rec(codec=Codec.BYTE, secret=b"s3cret", count=5, round_=3, peer=9):
    return build_record(codec, RUN, round_, peer, 0, np.linspace(-2, 2, count), 1, secret)


@pytest.mark.parametrize("codec", list(Codec))
def test_roundtrip(codec):
    rec = _rec(codec)
    back = decode_record(rec.to_bytes(), run_tag=RUN, secret=b"s3cret")
    assert back == rec
    assert np.array_equal(back.gradients(), rec.gradients())


def test_byte_record_size_is_header_plus_one_byte_per_gradient():
    rec = _rec(count=16)
    assert len(rec.to_bytes()) == HEADER_SIZE + 16 + TAG_SIZE
    assert rec.payload_bytes() == 17  # 16 codes + the exponent byte


def test_wrong_secret_wrong_run_and_tampering_rejected():
    raw = _rec().to_bytes()
    with pytest.raises(ProtocolError, match="authentication"):
        decode_record(raw, secret=b"other")
    with pytest.raises(ProtocolError, match="run tag"):
        decode_record(raw, run_tag=b"\0" * 16)
    tampered = bytearray(raw)
    tampered[HEADER_SIZE] ^= 1  # flip a code bit: the tag no longer matches
    with pytest.raises(ProtocolError):
        decode_record(bytes(tampered), secret=b"s3cret")


@pytest.mark.parametrize("cut", [0, 1, 10, HEADER_SIZE, -1])
def test_truncated_records_rejected(cut):
    raw = _rec().to_bytes()
    with pytest.raises(ProtocolError):
        decode_record(raw[:cut])


def test_record_id_names_content_not_tag():
    a = _rec(secret=b"x")
    b = _rec(secret=b"y")
    assert a.record_id == b.record_id and a.tag != b.tag
    assert _rec(round_=4).record_id != a.record_id


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_decoder(data):
    try:
        decode_record(data)
    except ProtocolError:
        pass


@settings(max_examples=300)
@given(st.integers(0, 60), st.integers(0, 255))
def test_single_byte_mutations_rejected_or_valid(pos, value):
    raw = bytearray(_rec().to_bytes())
    raw[pos % len(raw)] = value
    try:
        rec = decode_record(bytes(raw), secret=b"s3cret")
    except ProtocolError:
        return
    assert rec.to_bytes() == bytes(raw)  # only an unchanged record can pass the tag


def test_set_digest_is_order_free_and_invertible():
    ids = [_rec(round_=r).record_id for r in range(20)]
    a, b = SetDigest(), SetDigest()
    for i in ids:
        a.add(i)
    for i in reversed(ids):
        b.add(i)
    assert a.hex() == b.hex()
    a.remove(ids[3])
    c = SetDigest()
    for i in ids[:3] + ids[4:]:
        c.add(i)
    assert a.hex() == c.hex()
