"""The request framing: what is sent parses back to the same thing, and anything malformed parses
to nothing (it gets an empty reply) before anything is allocated for it."""

import struct
import zlib

import pytest

from onebyte.errors import ProtocolError
from onebyte.protocol import (
    DEFLATE,
    MAX_HEARTBEAT,
    MAX_MEET,
    MAX_PUT,
    MAX_REVOCATIONS,
    Verb,
    get_request,
    ledger_reply,
    ledger_request,
    meet_request,
    pack_blobs,
    parse,
    parse_ids,
    parse_ledger,
    parse_meet,
    parse_revocations,
    parse_sizes,
    parse_snapshot,
    push,
    put_request,
    revocations_request,
    round_request,
    unpack_blobs,
)
from onebyte.server import Server


def test_requests_round_trip():
    assert parse(push(b"record", b"beat")) == (Verb.REC, (b"record", b"beat"))
    assert parse(push(b"record", b"")) == (Verb.REC, (b"record", b""))
    assert parse(round_request(7)) == (Verb.RND, 7)
    assert parse(ledger_request(range(100, 200))) == (Verb.LEDG, (100, 200, 0))
    assert parse(ledger_request(range(100, 200), deflate=True)) == (Verb.LEDG, (100, 200, DEFLATE))
    assert parse(ledger_request()) == (Verb.LEDG, None)
    assert parse(meet_request(b"beat")) == (Verb.MEET, b"beat")
    assert parse(get_request([b"a" * 8, b"b" * 8])) == (Verb.GET, [b"a" * 8, b"b" * 8])
    assert parse(put_request([b"x", b"yz"])) == (Verb.PUT, [b"x", b"yz"])
    assert parse(revocations_request([b"r" * 103, b"s" * 103])) == (Verb.REVK, [b"r" * 103, b"s" * 103])
    assert parse(revocations_request([])) == (Verb.REVK, [])
    for verb in (Verb.IDS, Verb.SIZE, Verb.LEDG, Verb.SNAP, Verb.CONF):
        assert parse(verb.value) == (verb, None)


@pytest.mark.parametrize("bad", [
    b"", b"HELO", b"REC", b"REC\x05", b"REC" + struct.pack("<H", 10) + b"short",
    b"RND", b"RND\x01\x02\x03", b"RND" + b"\0" * 5, b"GET" + b"x" * 7, b"PUT\x05\x00\x00\x00ab",
    b"IDSx", b"SNAP\0", b"CONF?", b"LEDG\0", b"LEDG" + b"\0" * 10,
    b"LEDG" + b"\0" * 8 + b"\x02",  # an unknown flag
    b"MEET", b"MEET" + b"h" * (MAX_HEARTBEAT + 1),
    b"REVK" + b"r" * 102, b"REVK" + b"r" * 103 * (MAX_REVOCATIONS + 1),  # not whole revocations, or too many
])
def test_malformed_requests_parse_to_nothing(bad):
    assert parse(bad) is None


def test_put_is_bounded():
    verb, records = parse(Verb.PUT.value + pack_blobs([b"r"] * (MAX_PUT + 10)))
    assert verb is Verb.PUT and len(records) == MAX_PUT


def test_replies_are_checked():
    assert unpack_blobs(pack_blobs([b"a", b"", b"bcd"])) == [b"a", b"", b"bcd"]
    with pytest.raises(ProtocolError):
        unpack_blobs(b"\x09\x00\x00\x00abc")
    with pytest.raises(ProtocolError):
        parse_ids(b"x" * 9)
    assert parse_sizes(b"") is None and parse_sizes(struct.pack("<QQ", 5, 6)) == (5, 6)
    assert parse_ledger(struct.pack("<I", 3) + pack_blobs([b"r"])) == (3, [b"r"])
    with pytest.raises(ProtocolError):
        parse_ledger(b"\x01")
    records = [b"OB" + bytes(16) + i.to_bytes(4, "little") for i in range(300)]
    deflated = ledger_reply(9, records, DEFLATE)
    assert len(deflated) < len(ledger_reply(9, records)) / 2
    assert parse_ledger(deflated, deflated=True) == (9, records)
    for bad in (deflated[:-3], deflated[:4] + b"not zlib", deflated + b"trailing"):
        with pytest.raises(ProtocolError):
            parse_ledger(bad, deflated=True)
    assert parse_meet(pack_blobs([b"a", b"b"])) == [b"a", b"b"]
    for bad in (pack_blobs([b"h"] * (MAX_MEET + 1)), pack_blobs([b"h" * (MAX_HEARTBEAT + 1)])):
        with pytest.raises(ProtocolError):
            parse_meet(bad)
    assert parse_snapshot(struct.pack("<Q", 2) + b"ss" + pack_blobs([b"r"])) == (b"ss", [b"r"])
    with pytest.raises(ProtocolError):
        parse_snapshot(struct.pack("<Q", 99) + b"ss")


def test_an_inflating_ledger_reply_is_bounded(monkeypatch):
    import onebyte.protocol as protocol

    monkeypatch.setattr(protocol, "MAX_REPLY", 1 << 16)
    bomb = struct.pack("<I", 1) + zlib.compress(b"\0" * (1 << 20), 9)  # 1 KB that inflates to 1 MB
    with pytest.raises(ProtocolError, match="inflates past"):
        parse_ledger(bomb, deflated=True)
    monkeypatch.undo()
    with pytest.raises(ProtocolError, match="inflates past 65536"):  # a piece's own bound, far under MAX_REPLY
        parse_ledger(bomb, deflated=True, limit=1 << 16)


def test_a_revocation_reply_is_checked():
    assert parse_revocations(b"r" * 206) == [b"r" * 103] * 2
    for bad in (b"r" * 104, b"r" * 103 * (MAX_REVOCATIONS + 1)):
        with pytest.raises(ProtocolError):
            parse_revocations(bad)


def test_every_verb_has_its_rpc_method():
    assert all(callable(getattr(Server, f"rpc_{v.name.lower()}", None)) for v in Verb)
