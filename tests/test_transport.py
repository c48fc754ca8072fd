"""The transport contract, run against every transport: the in-memory twin (at once, and with
DHT-like bundles) and the hivemind one (real DHT and P2P processes on 127.0.0.1, marked slow).

Nothing above the transport knows which one it has, so whatever a test here asserts must hold
for all of them; what only one of them promises is tested at the end of the file."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness import Owned, wait_until
from onebyte.errors import NetworkError, NetworkTimeout, PeerUnreachable
from onebyte.transport import MemoryHub, MemoryTransport, Transport

#: Every wait in this file ends; a DHT store or get is bounded by its own named timeout too.
SETTLE_S = {"memory": 0.0, "bundled": 0.0, "dht": 20.0}
#: A call given a timeout must return (or raise) within it plus this much: a bound on hangs, not a timing.
HANG_S = 30.0
DHT_BUNDLE = 8  # onebyte.transport.dht.PUBLISH_EVERY, checked in the fixture


class Swarm:
    """Transports of one kind that can see each other; ``join`` opens one more."""

    def __init__(self, kind: str):
        self.kind = kind
        self.settle = SETTLE_S[kind]
        self.opened: list[Transport] = []
        self.run_tag = os.urandom(16)
        if kind == "dht":
            from onebyte.transport import dht

            assert dht.PUBLISH_EVERY == DHT_BUNDLE
            self.bundle = DHT_BUNDLE
        else:
            self.bundle = 8 if kind == "bundled" else 1
            self.hub = MemoryHub(bundle=self.bundle)

    def join(self) -> Transport:
        if self.kind == "dht":
            from onebyte.transport.dht import DhtTransport

            first = [t for t in self.opened if not t._closed][:1]  # type: ignore[attr-defined]
            t: Transport = DhtTransport(self.run_tag, host="127.0.0.1",
                                        initial_peers=first[0].addresses if first else None)
        else:
            t = MemoryTransport(self.hub, f"m{len(self.opened)}")
        self.opened.append(t)
        return t

    def unknown_contact(self) -> str:
        """A well-formed contact that names no peer of this swarm."""
        if self.kind == "dht":
            from hivemind.p2p import PeerID

            return PeerID(b"\x12\x20" + os.urandom(32)).to_base58()  # a sha2-256 multihash
        return "nobody"

    def released(self, t: Transport) -> bool:
        """Whether ``t`` let go of what it held (checked through each transport's internals)."""
        if self.kind == "dht":
            return not t.dht.is_alive() and not t._thread.is_alive()  # type: ignore[attr-defined]
        return t.contact not in self.hub.handlers and t.contact not in self.hub.beats

    def eventually(self, probe: Callable[[], Any]) -> Any:
        """Poll ``probe`` until it returns something true, for at most ``settle`` seconds."""
        end = time.monotonic() + self.settle
        while True:
            value = probe()
            if value or time.monotonic() >= end:
                return value
            time.sleep(0.2)

    def close(self) -> None:
        """Close every transport opened, last first, each even if another's close raised."""
        with Owned() as owned:
            for t in self.opened:
                owned(t)


@pytest.fixture(params=["memory", "bundled", pytest.param("dht", marks=pytest.mark.slow)])
def swarm(request: pytest.FixtureRequest) -> Iterator[Swarm]:
    if request.param == "dht":
        pytest.importorskip("hivemind")
    s = Swarm(request.param)
    try:
        yield s
    finally:
        s.close()


def _has(*wanted: bytes) -> Callable[[list[bytes]], bool]:
    return lambda got: set(wanted) <= set(got)


def _outcome(call: Callable[[], Any], within: float) -> BaseException | Any:
    """What ``call`` returned or raised, run on a thread given ``within`` seconds (then a hang fails)."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # returned to the caller to check
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=within)
    assert not t.is_alive(), f"the call did not return within {within:g}s"
    return out[0]


# ------------------------------------------------------------------ publish / records
def test_published_records_are_visible_to_every_peer(swarm: Swarm):
    a, b = swarm.join(), swarm.join()
    r = swarm.bundle - 1  # the last round of bundle 0: publishing it publishes the bundle
    a.publish(r, b"record of a")
    b.publish(r, b"record of b")
    for t in (a, b):
        got = swarm.eventually(lambda t=t: _has(b"record of a", b"record of b")(t.records(r)))
        assert got, f"{t.contact} does not see both records of round {r}"
    # another bundle's rounds hold neither record
    assert not {b"record of a", b"record of b"} & set(a.records(r + swarm.bundle))


def test_a_peers_slot_is_its_own(swarm: Swarm):
    a, b, c = swarm.join(), swarm.join(), swarm.join()
    r = swarm.bundle - 1
    a.publish(r, b"a's record")
    assert swarm.eventually(lambda: b"a's record" in c.records(r))
    b.publish(r, b"b's record, same round")  # lands in b's own slot, beside a's
    assert swarm.eventually(lambda: _has(b"a's record", b"b's record, same round")(c.records(r)))


def test_an_unfinished_bundle_is_held_back_until_its_last_round(swarm: Swarm):
    if swarm.bundle == 1:
        pytest.skip("this transport publishes every round at once")
    a, b = swarm.join(), swarm.join()
    a.publish(0, b"early")
    a.announce(b"a, after publishing")  # stored at once: once b sees it, a's earlier publish had its chance
    assert swarm.eventually(lambda: b"a, after publishing" in b.heartbeats())
    assert b"early" not in b.records(0)
    a.publish(swarm.bundle - 1, b"last")
    assert swarm.eventually(lambda: b"early" in b.records(0) and b"last" in b.records(swarm.bundle - 1))


def test_close_publishes_an_unfinished_bundle(swarm: Swarm):
    a, b = swarm.join(), swarm.join()
    a.publish(swarm.bundle, b"first of bundle 1")  # bundle 1 is unfinished when a closes
    a.close()
    assert swarm.eventually(lambda: b"first of bundle 1" in b.records(swarm.bundle))


# ------------------------------------------------------------------ heartbeats
def test_heartbeats_show_each_peers_latest(swarm: Swarm):
    a, b = swarm.join(), swarm.join()
    a.announce(b"a beats once")
    b.announce(b"b beats")
    for t in (a, b):
        assert swarm.eventually(lambda t=t: _has(b"a beats once", b"b beats")(t.heartbeats()))
    a.announce(b"a beats twice")  # replaces a's own, never b's
    got = swarm.eventually(lambda: (hb := b.heartbeats()) and b"a beats twice" in hb and hb)
    assert got and b"a beats once" not in got and b"b beats" in got


# ------------------------------------------------------------------ serve / request
def test_request_round_trip_and_byte_counters(swarm: Swarm):
    a, b = swarm.join(), swarm.join()
    b.serve(lambda req: b"re:" + req[::-1])
    payload = os.urandom(200_000)  # bulk: larger than any single frame or DHT value
    sent, received, served_in, served_out = a.bytes_sent, a.bytes_received, b.bytes_received, b.bytes_sent
    wire = a.wire_bytes()
    reply = a.request(b.contact, payload, timeout=30.0)
    assert reply == b"re:" + payload[::-1]
    if wire is not None:  # the kernel's counters see the payload both ways, framing and headers on top
        after = a.wire_bytes()  # (both transports live in this test's process: its counters hold both)
        assert min(after["sent"] - wire["sent"], after["received"] - wire["received"]) > 2 * len(payload)
    assert a.bytes_sent - sent >= len(payload)
    assert a.bytes_received - received >= len(reply)
    assert b.bytes_received - served_in >= len(payload)
    assert b.bytes_sent - served_out >= len(reply)


def test_publishing_and_reading_move_the_counters(swarm: Swarm):
    a, b = swarm.join(), swarm.join()
    sent = a.bytes_sent
    a.publish(swarm.bundle - 1, b"r" * 100)
    a.announce(b"h" * 50)
    assert a.bytes_sent - sent >= 150
    received = b.bytes_received
    assert swarm.eventually(lambda: b"r" * 100 in b.records(swarm.bundle - 1))
    assert swarm.eventually(lambda: b"h" * 50 in b.heartbeats())
    assert b.bytes_received - received >= 150


def test_request_to_an_unknown_contact_fails_as_a_network_error(swarm: Swarm):
    a = swarm.join()
    for contact in (swarm.unknown_contact(), "not a contact at all"):  # the timeout bounds the wait
        outcome = _outcome(lambda contact=contact: a.request(contact, b"hello", timeout=3.0), 3.0 + HANG_S)
        assert isinstance(outcome, PeerUnreachable | NetworkTimeout), outcome


def test_request_to_a_closed_peer_fails_as_a_network_error(swarm: Swarm):
    a, b = swarm.join(), swarm.join()
    b.serve(lambda req: req)
    contact = b.contact  # read before closing: a closed DHT transport cannot name itself
    assert a.request(contact, b"ping", timeout=10.0) == b"ping"
    b.close()
    outcome = _outcome(lambda: a.request(contact, b"ping", timeout=3.0), 3.0 + HANG_S)
    assert isinstance(outcome, PeerUnreachable | NetworkTimeout), outcome


def test_a_slow_handler_times_out_while_the_server_finishes(swarm: Swarm):
    """The handler holds its reply until the requester has given up: the request ends at its
    timeout, not when the handler returns; the server's work still completes, and it still serves."""
    a, b = swarm.join(), swarm.join()
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow(req: bytes) -> bytes:
        if req == b"slow":
            entered.set()
            release.wait(HANG_S)
            finished.set()
        return b"done:" + req

    b.serve(slow)
    try:
        with pytest.raises(NetworkTimeout):
            a.request(b.contact, b"slow", timeout=0.3)
        assert entered.wait(HANG_S) and not finished.is_set()  # it reached the handler, which has not returned
    finally:
        release.set()
    assert finished.wait(HANG_S)  # the server's work still completes, as on a real network
    assert a.request(b.contact, b"fast", timeout=10.0) == b"done:fast"  # and it still serves


def test_a_failing_handler_is_an_unreachable_peer_and_the_server_survives(swarm: Swarm):
    a, b = swarm.join(), swarm.join()

    def fragile(req: bytes) -> bytes:
        if req == b"bad":
            raise RuntimeError("handler bug")
        return b"ok"

    b.serve(fragile)
    with pytest.raises(PeerUnreachable):
        a.request(b.contact, b"bad", timeout=10.0)
    assert a.request(b.contact, b"good", timeout=10.0) == b"ok"


# ------------------------------------------------------------------ send (pushes)
def test_sent_messages_reach_the_handler_in_order(swarm: Swarm):
    a, b = swarm.join(), swarm.join()
    got: list[bytes] = []
    b.serve(lambda req: got.append(req) or b"a reply nobody reads")
    sent = a.bytes_sent
    messages = [b"push %d " % i + os.urandom(i) for i in range(30)]
    for m in messages:
        a.send(b.contact, m, timeout=10.0)
    assert swarm.eventually(lambda: len(got) == len(messages) or None) or len(got) == len(messages)
    assert got == messages  # one channel (or, in memory, one call each): in the order sent
    assert a.bytes_sent - sent >= sum(map(len, messages))


def test_send_to_a_closed_peer_fails_as_a_network_error(swarm: Swarm):
    a, b = swarm.join(), swarm.join()
    b.serve(lambda req: b"")
    contact = b.contact
    a.send(contact, b"hello", timeout=10.0)
    b.close()
    # a message already handed to the network when the far side went away may be lost with it (as
    # over TCP); within a few tries the sender learns that the peer is gone
    tries: list[BaseException | None] = []

    def refused() -> bool:
        try:
            a.send(contact, b"anyone?", timeout=3.0)
        except NetworkError as exc:
            tries.append(exc)
            return True
        tries.append(None)
        return False

    wait_until(refused, 10 * (3.0 + 0.5), "a send to the closed peer to fail", poll=0.5)
    assert len(tries) <= 10


# ------------------------------------------------------------------ closing
def test_close_releases_and_is_idempotent(swarm: Swarm):
    a, b = swarm.join(), swarm.join()
    b.serve(lambda req: req)
    b.announce(b"b is here")
    contact = b.contact
    assert not swarm.released(b)
    b.close()
    assert swarm.released(b)
    b.close()  # a second close does nothing, and raises nothing
    with pytest.raises(NetworkError):
        a.request(contact, b"ping", timeout=3.0)


def test_a_transport_is_a_context_manager(swarm: Swarm):
    with swarm.join() as t:
        assert isinstance(t, Transport)
        t.serve(lambda req: req)
        t.announce(b"t is here")
        assert not swarm.released(t)
        contact = t.contact
    assert swarm.released(t)
    with pytest.raises(NetworkError):
        swarm.join().request(contact, b"ping", timeout=3.0)


def test_closing_on_an_error_still_releases(swarm: Swarm):
    with pytest.raises(KeyError), swarm.join() as t:
        t.serve(lambda req: req)
        assert not swarm.released(t)
        raise KeyError("boom")
    assert swarm.released(t)


# ------------------------------------------------------------------ the in-memory twin only
class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_memory_hub_delay_holds_records_back_until_it_passes():
    clock = FakeClock()
    hub = MemoryHub(delay=2.0, clock=clock)
    with MemoryTransport(hub, "a") as a, MemoryTransport(hub, "b") as b:
        a.publish(3, b"late")
        assert b.records(3) == [] and a.records(3) == []  # not even its author reads it yet
        clock.t += 1.9
        assert b.records(3) == []
        clock.t += 0.1
        assert b.records(3) == [b"late"]


def test_memory_hub_defaults_publish_at_once():
    hub = MemoryHub()
    assert (hub.bundle, hub.delay) == (1, 0.0)
    with MemoryTransport(hub, "a") as a, MemoryTransport(hub, "b") as b:
        a.publish(5, b"now")
        assert b.records(5) == [b"now"]
        a.publish(5, b"again")  # one slot per owner and round: the second replaces the first
        assert b.records(5) == [b"again"]


def test_memory_bundle_flush_publishes_what_is_held():
    hub = MemoryHub(bundle=4)
    with MemoryTransport(hub, "a") as a, MemoryTransport(hub, "b") as b:
        a.publish(4, b"x")
        a.publish(5, b"y")
        assert b.records(4) == [] and b.records(5) == []
        a.flush()
        assert b.records(4) == [b"x"] and b.records(5) == [b"y"]


def test_memory_partition_hides_records_beats_and_requests_until_healed():
    hub = MemoryHub()
    with MemoryTransport(hub, "a") as a, MemoryTransport(hub, "b") as b:
        b.serve(lambda req: req)
        b.publish(0, b"rb")
        b.announce(b"hb")
        hub.partition([["a"], ["b"]])
        assert a.records(0) == [] and a.heartbeats() == []
        with pytest.raises(PeerUnreachable):
            a.request("b", b"x", timeout=1.0)
        hub.heal()
        assert a.records(0) == [b"rb"] and a.heartbeats() == [b"hb"]
        assert a.request("b", b"x", timeout=1.0) == b"x"


@pytest.mark.parametrize("kwargs", [{"bundle": 0}, {"delay": -1.0}])
def test_memory_hub_rejects_impossible_settings(kwargs):
    with pytest.raises(ValueError):
        MemoryHub(**kwargs)


# ------------------------------------------------------------------ the wire counter
SS = """ESTAB 0 0 127.0.0.1:40317 127.0.0.1:42481 users:(("p2pd",pid=4280,fd=14))
\t bbr wscale:10,10 bytes_sent:2000 bytes_retrans:10 bytes_acked:1990 bytes_received:500 segs_out:10 segs_in:5 x
ESTAB 0 0 127.0.0.1:40318 127.0.0.1:42481 users:(("p2pd",pid=9999,fd=3))
\t bbr bytes_sent:7 bytes_received:7 segs_out:1 segs_in:1
ESTAB 0 0 127.0.0.1:40319 127.0.0.1:42482 users:(("python",pid=4281,fd=9))
\t bbr bytes_sent:100 bytes_received:300 segs_out:2 segs_in:3
"""


def test_wire_counter_sums_our_sockets_and_keeps_closed_ones(monkeypatch):
    import subprocess as sp

    from onebyte.transport import wire

    assert os.getpid() in wire.descendants(os.getpid())
    counts = wire.parse_ss(SS, {4280, 4281})
    assert sorted(c["bytes_sent"] for c in counts.values()) == [100, 2000]  # pid 9999 is not ours
    outputs = iter([SS, SS.split("ESTAB")[0] + "ESTAB" + SS.split("ESTAB")[1]])  # then only the first socket
    monkeypatch.setattr(wire, "descendants", lambda root: {4280, 4281})
    monkeypatch.setattr(wire.subprocess, "run", lambda *a, **k: sp.CompletedProcess(a, 0, next(outputs), ""))
    counter = wire.WireCounter()
    counter.ss = "ss"
    first = counter.sample()
    assert first == {"sent": 2100 + wire.HEADER_BYTES * 12, "received": 800 + wire.HEADER_BYTES * 8}
    assert counter.sample() == first  # the closed socket counts with its last values


# ------------------------------------------------------------------ the hivemind transport's push channels
def test_channel_frames_round_trip_and_bad_prefixes_are_refused():
    import asyncio

    from onebyte.errors import ProtocolError
    from onebyte.transport.channels import MAX_FRAME, _read_frame, _varint

    async def read_all(data: bytes) -> list[bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        out = []
        while (frame := await _read_frame(reader)) is not None:
            out.append(frame)
        return out

    frames = [b"", b"x", os.urandom(127), os.urandom(128), os.urandom(MAX_FRAME)]
    assert [len(_varint(n)) for n in (0, 127, 128, 16383, 16384)] == [1, 1, 2, 2, 3]
    assert asyncio.run(read_all(b"".join(_varint(len(f)) + f for f in frames))) == frames
    for bad in (_varint(MAX_FRAME + 1) + b"\0" * 8, b"\xff\xff\xff\xff\x01", b"\x85"):  # too long; too
        with pytest.raises(ProtocolError):  # long a prefix; the stream ends inside one
            asyncio.run(read_all(bad))


@pytest.mark.slow
def test_pushes_share_one_long_lived_channel_and_reopen_after_it_breaks():
    pytest.importorskip("hivemind")
    from onebyte.errors import ProtocolError
    from onebyte.transport.channels import MAX_FRAME

    swarm = Swarm("dht")
    try:
        a, b = swarm.join(), swarm.join()
        got: list[bytes] = []
        b.serve(lambda req: got.append(req) or b"")
        for i in range(5):
            a.send(b.contact, b"m%d" % i, timeout=10.0)
        # order holds on one channel; across a broken one and its successor it is not promised
        assert swarm.eventually(lambda: len(got) == 5)
        writer = a._channels.writers[b.contact]  # type: ignore[attr-defined]
        assert list(a._channels.writers) == [b.contact]  # type: ignore[attr-defined]
        with pytest.raises(ProtocolError):
            a.send(b.contact, b"x" * (MAX_FRAME + 1), timeout=10.0)
        a._call(a._channels.close(), 5.0)  # type: ignore[attr-defined]  # the stream breaks
        a.send(b.contact, b"after", timeout=10.0)
        assert a._channels.writers[b.contact] is not writer  # type: ignore[attr-defined]
        assert swarm.eventually(lambda: got[-1:] == [b"after"])
        assert got == [b"m0", b"m1", b"m2", b"m3", b"m4", b"after"]
    finally:
        swarm.close()


def test_join_contacts_are_the_peer_ids_of_the_join_addresses():
    from types import SimpleNamespace

    from onebyte.transport.dht import DhtTransport

    me = SimpleNamespace(contact="12D3KooWme", _join=[
        "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWa", "/ip4/10.0.0.2/tcp/4001/p2p/12D3KooWa",  # one peer, two addresses
        "/ip4/10.0.0.3/tcp/4001/p2p/12D3KooWb/p2p-circuit", "/ip4/10.0.0.4/tcp/4001",  # no peer id: nothing to ask
        "/ip4/10.0.0.5/tcp/4001/p2p/12D3KooWme"])  # ourselves
    assert DhtTransport.join_contacts(me) == ["12D3KooWa", "12D3KooWb"]
    with MemoryTransport(MemoryHub(), "a", join=("b", "a")) as t:
        assert t.join_contacts() == ["b"]
