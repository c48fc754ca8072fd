import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onebyte.codec import Codec, decode, encode, payload_size
from onebyte.errors import DivergenceError, ProtocolError

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(st.lists(finite, min_size=1, max_size=64), st.integers(0, 2**64 - 1))
def test_byte_roundtrip_within_one_step(values, seed):
    g = np.array(values)
    e, payload = encode(Codec.BYTE, g, seed)
    assert len(payload) == payload_size(Codec.BYTE, len(g)) == len(g)
    back = decode(Codec.BYTE, e, payload, len(g))
    assert np.all(np.abs(back - g) <= 2.0**e)
    assert np.all(np.abs(np.frombuffer(payload, np.int8)) <= 127)


@given(st.lists(finite, min_size=1, max_size=64))
def test_float32_roundtrip_exact_to_float32(values):
    g = np.array(values)
    e, payload = encode(Codec.FLOAT32, g, 0)
    assert np.array_equal(decode(Codec.FLOAT32, e, payload, len(g)), g.astype(np.float32).astype(np.float64))


@given(st.lists(finite, min_size=1, max_size=70))
def test_sign_roundtrip_keeps_signs(values):
    g = np.array(values)
    e, payload = encode(Codec.SIGN, g, 0)
    assert len(payload) == (len(g) + 7) // 8
    assert np.array_equal(decode(Codec.SIGN, e, payload, len(g)), np.where(g >= 0, 1.0, -1.0))


def test_stochastic_rounding_is_unbiased():
    g = np.array([0.3, -1.7, 2.25, 100.0, -0.01])  # max 100 -> step 1: fractions get rounded
    n = 20_000
    total = np.zeros_like(g)
    for s in range(n):
        e, p = encode(Codec.BYTE, g, s)
        total += decode(Codec.BYTE, e, p, len(g))
    mean = total / n
    step = 1.0
    # standard error of a rounded value is at most step/2/sqrt(n); allow 5 of them
    assert np.all(np.abs(mean - g) < 5 * 0.5 * step / np.sqrt(n)), mean
    # and the rounding is really stochastic (deterministic rounding of 0.3 gives 0 every time)
    assert abs(mean[0] - 0.3) < 0.02


def test_rounding_reproducible_from_seed():
    g = np.linspace(-3, 3, 17)
    assert encode(Codec.BYTE, g, 42) == encode(Codec.BYTE, g, 42)


def test_non_finite_gradient_is_divergence():
    with pytest.raises(DivergenceError):
        encode(Codec.BYTE, np.array([1.0, np.nan]), 0)


@pytest.mark.parametrize("codec,exponent,payload,count", [
    (Codec.BYTE, 0, b"\x80", 1),  # -128 is not a code
    (Codec.BYTE, 99, b"\x01", 1),  # exponent out of range
    (Codec.BYTE, 0, b"\x01\x02", 1),  # wrong length
    (Codec.SIGN, 0, b"\xff", 3),  # bits past the count
    (Codec.SIGN, 1, b"\x01", 1),  # sign has no exponent
    (Codec.FLOAT32, 0, np.array([np.inf], "<f4").tobytes(), 1),
])
def test_decode_rejects_bad_payloads(codec, exponent, payload, count):
    with pytest.raises(ProtocolError):
        decode(codec, exponent, payload, count)


@settings(max_examples=200)
@given(st.sampled_from(list(Codec)), st.integers(-128, 127), st.binary(max_size=40), st.integers(1, 40))
def test_decode_never_crashes(codec, exponent, payload, count):
    try:
        out = decode(codec, exponent, payload, count)
    except ProtocolError:
        return
    assert out.shape == (count,) and np.all(np.isfinite(out))
