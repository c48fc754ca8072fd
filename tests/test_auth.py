"""The authentication trailer (``auth``): one implementation seals and checks records and heartbeats,
in both modes, and a corrupt trailer is refused with the same clear error whichever message it ends."""

import hashlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from onebyte import auth
from onebyte.codec import Codec
from onebyte.config import ListedKey
from onebyte.errors import ProtocolError
from onebyte.identity import Roster, SiteKey
from onebyte.membership import Heartbeat, decode_heartbeat
from onebyte.record import build_record, decode_record

RUN = b"g" * 16
SECRET = b"secret"
KEY = SiteKey(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))  # fixed: signatures are deterministic
ROSTER = Roster([ListedKey("site-a", KEY.public, None)])


def _record():
    return build_record(Codec.BYTE, RUN, 3, KEY.peer_id, 5, np.array([0.5, -1.0, 0.25]), 99, SECRET)


def _heartbeat() -> Heartbeat:
    return Heartbeat(RUN, b"B" * 16, KEY.peer_id, 2, 3, 12, False, b"d" * 32, b"s" * 32, 1, b"c" * 32,
                     "/ip4/1.2.3.4/tcp/5")


def _messages() -> dict[str, tuple[bytes, bytes]]:
    """what -> (HMAC-tagged bytes, signed bytes)."""
    rec, hb = _record(), _heartbeat()
    return {"record": (rec.to_bytes(), rec.signed_by(KEY).to_bytes()),
            "heartbeat": (hb.encode(SECRET), hb.encode(SECRET, KEY))}


def _decode(what: str, data: bytes, roster: Roster | None = None) -> None:
    if what == "record":
        decode_record(data, run_tag=RUN, secret=SECRET, roster=roster)
    else:
        decode_heartbeat(data, RUN, SECRET, roster)


def test_the_wire_bytes_are_those_of_the_two_copies_it_replaced():
    """SHA-256 prefixes of the bytes the earlier record.py and membership.py wrote (same inputs);
    the heartbeat's since it carries its site's example count (four zero bytes here)."""
    got = {what: [hashlib.sha256(b).hexdigest()[:32] for b in pair] for what, pair in _messages().items()}
    assert got == {"record": ["921e08d53fa18399341c7b0874acc2e8", "3d7eb60329ec5f179835f41e714b3a58"],
                   "heartbeat": ["cdaac544e4a87b8334dda4e65ac24912", "46187327e8f7e29557b83e81249845c0"]}
    for tagged, signed in _messages().values():
        assert tagged[-auth.TAG_SIZE:] == auth.hmac_tag(SECRET, tagged[:-auth.TAG_SIZE])
        assert signed[-auth.SIGNATURE_SIZE:] == KEY.sign(signed[:-auth.SIGNATURE_SIZE])


def test_records_and_heartbeats_are_sealed_and_checked_by_the_one_implementation(monkeypatch):
    sealed, checked = [], []
    seal, check = auth.seal, auth.check
    monkeypatch.setattr(auth, "seal", lambda body, *a, **kw: sealed.append(body) or seal(body, *a, **kw))
    monkeypatch.setattr(auth, "check", lambda what, *a, **kw: checked.append(what) or check(what, *a, **kw))
    messages = _messages()
    assert len(sealed) == 4  # a record and a heartbeat, each HMAC-tagged and signed
    for what, (tagged, signed) in messages.items():
        _decode(what, tagged)
        _decode(what, signed, ROSTER)
    ROSTER.check(decode_record(messages["record"][1]))  # unauthenticated decoding (a ledger), then the roster
    assert checked == ["record", "record", "heartbeat", "heartbeat", "record", "record"]


@pytest.mark.parametrize("what", ["record", "heartbeat"])
def test_a_corrupt_trailer_is_refused_with_the_same_clear_error(what):
    tagged, signed = _messages()[what]
    with pytest.raises(ProtocolError, match=rf"^{what} authentication failed \(wrong or missing swarm secret\)$"):
        _decode(what, tagged[:-1] + bytes([tagged[-1] ^ 1]))
    with pytest.raises(ProtocolError, match=rf"^{what} signature does not verify under the key of 'site-a'$"):
        _decode(what, signed[:-1] + bytes([signed[-1] ^ 1]), ROSTER)
    with pytest.raises(ProtocolError, match=rf"^{what} is not signed by a site key"):
        _decode(what, tagged, ROSTER)
    with pytest.raises(ProtocolError, match=rf"^{what} is signed by a site key, but this run lists no keys"):
        _decode(what, signed)
    _decode(what, tagged)  # and the intact ones pass
    _decode(what, signed, ROSTER)
