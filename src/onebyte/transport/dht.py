"""The hivemind transport: a DHT for discovery and record publication, P2P streams for bulk.

* Records are pushed straight to live peers by the peer itself; the DHT holds the durable copy
  that stragglers, joiners and restarted peers read. To keep that copy cheap (every DHT value
  costs ~750 bytes of signature and owner key per replica, and a store walks the DHT), a peer's
  records are published in *bundles*: the records of rounds [kE, kE+E) live under the key
  ``onebyte/<run tag>/b/<k>``, each peer under its own *signed subkey* (hivemind's
  ``RSASignatureValidator``: the subkey holds the owner's public key and the value its
  signature), so no peer can overwrite another's slot. Heartbeats live the same way under
  ``onebyte/<run tag>/peers``. The swarm secret's HMAC inside each record and heartbeat is what
  keeps outsiders out; the DHT signature only pins slots to their owners.
* Pushes (a record, a heartbeat now and then) go over one *long-lived channel* per neighbour: a
  libp2p stream opened on the first push and kept, each message framed by a varint length
  (``channels``): no stream set-up, no protocol negotiation and no reply per push.
* Bulk requests (snapshots, record sync, round fetches) open a stream per request over a hivemind
  binary stream handler, served from a background asyncio loop in this process.

Known failure modes (hivemind 1.1.12, measured here): a ``store`` of more than ~20 KB from the
host process can kill the DHT process (upstream PR #660), so only small values go through the
DHT and every DHT call carries a timeout; p2pd refuses DHT messages over 4 MiB; a value can only
be replaced by one with a strictly later expiration; the DHT child and its p2pd survive a
SIGKILL of this process, so callers run peers in their own process group and stop the group.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from ..errors import ConfigError, MissingDependency, NetworkError, NetworkTimeout, PeerUnreachable, ProtocolError
from .base import BULK_RATE, Handler, Transport, one_line
from .channels import CHANNEL, Channels, frame, receive

__all__ = ["DhtTransport"]

log = logging.getLogger(__name__)

#: Named timeouts (seconds) for every network wait.
STORE_TIMEOUT = 20.0
GET_TIMEOUT = 20.0
START_TIMEOUT = 60.0
#: A bulk reply's stream stays open until the requester closes it, for at most LINGER_S plus its
#: size at ``BULK_RATE``.
LINGER_S = 30.0
#: A peer that could not reach its join peers at start dials them again this often.
REJOIN_EVERY = 20.0
#: How long published values stay in the DHT; late joiners older than this sync from peers.
RECORD_TTL = 3600.0
HEARTBEAT_TTL = 30.0
MAX_DHT_VALUE = 16 * 1024
#: Nodes that keep each value; every copy costs the record plus ~750 bytes of signature and key.
NUM_REPLICAS = 3
#: Rounds per DHT bundle (E).
PUBLISH_EVERY = 8
#: DHTNode settings for a swarm that reads its few keys with ``latest=True``: hivemind's defaults
#: re-store every value found on one more node after each get (``cache_nearest``; here that is the
#: whole heartbeat dictionary, ~1 KB per peer, every heartbeat) and re-read cached values shortly
#: before they expire. Neither helps a swarm that always asks for the latest value; both cost
#: link bytes every heartbeat interval.
#: ``wait_timeout``: how long a DHT RPC may take before its node is deemed lost (hivemind: 3 s). Over
#: a 64 kbit/s, 200 ms path a first RPC sets up the connection (TCP, noise, yamux, identify: several
#: round trips, behind other peers' handshakes on the join peer's link) and 3 s lost most bootstrap
#: pings of an 8-peer swarm starting together.
DHT_NODE_OPTIONS = {"cache_nearest": 0, "cache_refresh_before_expiry": 0, "wait_timeout": 10.0}
_HANDLER = "onebyte.bulk"


def _load_key(path: Path | None):
    from cryptography.hazmat.primitives import serialization  # noqa: I001 - hivemind depends on it
    from hivemind.utils.crypto import RSAPrivateKey

    if path is not None and path.exists():
        key = RSAPrivateKey.__new__(RSAPrivateKey)
        key._private_key = serialization.load_der_private_key(path.read_bytes(), password=None)
        return key
    key = RSAPrivateKey()
    if path is not None:
        path.write_bytes(key.to_bytes())
        path.chmod(0o600)
    return key


class DhtTransport(Transport):
    def __init__(self, run_tag: bytes | None, *, run_id: str | None = None, initial_peers: list[str] | None = None,
                 host: str = "0.0.0.0", port: int = 0, announce_host: str | None = None, identity: Path | None = None,
                 private: bool = False, relay: bool = False, wait: bool = True):
        """``private``: this machine cannot be reached from outside (behind NAT, no open port). Its
        DHT node is then a client (it asks, it is never asked), and its p2p daemon reserves a slot on
        the join peers, which relay for it (libp2p circuit relay v2): others reach it through
        ``/p2p-circuit`` addresses, it reaches them directly. ``relay``: this machine is reachable
        and says so (libp2p's reachability forced to public), which makes its daemon serve relay
        reservations for private peers; without it a daemon serves them only once AutoNAT has
        found it reachable, which on a LAN or in a lab it may never do.

        ``wait=False``: start the DHT process and return; ``ready(run_tag)`` finishes the start.
        The bootstrap over a thin link takes seconds of waiting on the network, which a peer
        spends loading its model instead (the run tag, which names the DHT's keys, needs the
        model's hash). ``run_id`` and ``run_tag`` name the keys: heartbeats by run id, records by tag."""
        try:
            import hivemind
            from hivemind.dht.crypto import RSASignatureValidator
        except ImportError:
            raise MissingDependency("hivemind", "net", "a networked peer") from None
        from .wire import WireCounter

        self._hivemind = hivemind
        self.private = private
        self.bytes_sent = 0
        self.bytes_received = 0
        self._wire = WireCounter()  # this process and what it starts: the DHT process, p2pd
        self._run_id = run_id
        self._bundles: dict[int, list[bytes]] = {}
        self._stored_early: set[int] = set()  # bundles stored at once (publish now=True), unchanged since
        self._validator = RSASignatureValidator(_load_key(identity))
        self._subkey = self._validator.local_public_key
        kwargs: dict = {}
        if announce_host:
            kwargs["announce_maddrs"] = [f"/ip4/{announce_host}/tcp/{port}"]
        if private and relay:
            raise ConfigError("a peer cannot be both --private (unreachable) and --relay (reachable)")
        if relay:
            kwargs["force_reachability"] = "public"
        if private:
            if not initial_peers:
                raise ConfigError("a private peer (behind NAT) needs --join: the peers it joins relay for it")
            kwargs.update(client_mode=True, use_auto_relay=True, force_reachability="private",
                          trusted_relays=list(initial_peers))
        def start(peers: list[str], ready: bool = True):
            return hivemind.DHT(start=True, host_maddrs=[f"/ip4/{host}/tcp/{port}"], initial_peers=peers,
                                record_validators=[self._validator], await_ready=ready, num_replicas=NUM_REPLICAS,
                                **DHT_NODE_OPTIONS, **kwargs)

        self._start, self._join = start, list(initial_peers or [])
        self._closed = False
        self._started = False
        try:
            self.dht = start(self._join, ready=False)
        except Exception as exc:
            raise ConfigError(f"could not start the DHT node: {one_line(exc)}") from None
        if wait:
            try:
                self.ready(run_tag)
            except BaseException:
                self.close()
                raise

    def ready(self, run_tag: bytes | None) -> None:
        """Wait for the DHT node started by the constructor (see ``wait``) and finish starting:
        then the transport can be used. ``run_tag`` names the keys of record bundles."""
        if self._started:
            return
        tag = (run_tag or b"").hex()
        # heartbeats are found by run id, so a peer with another base or configuration is told so
        self._peers_key = "onebyte/" + (self._run_id if self._run_id is not None else tag) + "/peers"
        self._bundle_key = "onebyte/" + tag + "/b/{}"
        initial_peers, start = self._join, self._start
        redial = False
        try:
            self.dht.wait_until_ready()
        except Exception as exc:  # hivemind raises plain exceptions for unreachable peers / bad addrs
            self.dht.shutdown()
            if not initial_peers or "bootstrap" not in str(exc):
                raise ConfigError(f"could not start the DHT node: {one_line(exc)}") from None
            # The bootstrap ping has hivemind's 3 s RPC timeout, which a slow link can exceed before
            # the connection is even up (TCP + TLS + stream setup over a 400 ms round trip, a lost
            # SYN costs 1 s): start alone, then dial the join peers without that limit.
            log.warning("none of the --join peers answered in time (%s); starting alone and dialling them again",
                        str(exc).splitlines()[-1])
            redial = True
            try:
                self.dht = start([])
            except Exception as exc2:
                raise ConfigError(f"could not start the DHT node: {one_line(exc2)}") from None
        # sampled in the background from now on: not before the DHT process is forked (a thread
        # running ss at that moment could leave a lock held in the child)
        self._wire.start()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="onebyte-p2p", daemon=True)
        self._thread.start()
        self._p2p = self._call(self.dht.replicate_p2p(), START_TIMEOUT)
        self._contact: str | None = None
        _ = self.contact
        self._last_expiry: dict[str, float] = {}
        self._channels = Channels(self._open_channel)
        self._stranded = redial  # the join peers not reached yet: rejoin() dials them again
        self._rejoined_at = -1e9
        self._started = True
        if redial:
            self.rejoin()

    # ----------------------------------------------------------------- helpers
    def _call(self, coro, timeout: float):
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except FutureTimeout:
            fut.cancel()
            raise NetworkTimeout(f"network operation timed out after {timeout:g}s") from None

    def _call_peer(self, coro, timeout: float, what: str, contact: str):
        """``_call`` for talking to one peer: whatever goes wrong there is ``PeerUnreachable``."""
        try:
            return self._call(coro, timeout)
        except NetworkError:
            raise
        except Exception as exc:
            raise PeerUnreachable(f"{what} to peer {contact[:16]}… failed: {one_line(exc)}") from None

    def _expiry(self, key: str, ttl: float) -> float:
        from hivemind.utils import get_dht_time

        # a value is only replaced by one with a strictly later expiration
        t = max(get_dht_time() + ttl, self._last_expiry.get(key, 0.0) + 1e-3)
        self._last_expiry[key] = t
        return t

    def _store(self, key: str, value: bytes, ttl: float) -> None:
        if len(value) > MAX_DHT_VALUE:
            raise ProtocolError(f"value of {len(value)} bytes is too large for the DHT")
        try:
            ok = self.dht.store(key, value, self._expiry(key, ttl), subkey=self._subkey,
                                return_future=True).result(STORE_TIMEOUT)
        except (FutureTimeout, TimeoutError):
            raise NetworkTimeout(f"DHT store timed out after {STORE_TIMEOUT:.0f}s") from None
        if not ok:
            log.debug("DHT store of %s was not accepted by any node", key)
        self.bytes_sent += len(value)

    def _get(self, key: str) -> list[bytes]:
        try:
            res = self.dht.get(key, latest=True, return_future=True).result(GET_TIMEOUT)
        except (FutureTimeout, TimeoutError):
            raise NetworkTimeout(f"DHT get timed out after {GET_TIMEOUT:.0f}s") from None
        if res is None or not isinstance(res.value, dict):
            return []
        out = [item.value for item in res.value.values() if isinstance(item.value, bytes)]
        self.bytes_received += sum(map(len, out))
        return out

    # ----------------------------------------------------------------- Transport
    def wire_bytes(self) -> dict[str, int] | None:
        return self._wire.sample()

    def join_contacts(self) -> list[str]:
        """The peer ids named by the join multiaddrs (``.../p2p/<id>``), each once."""
        ids = (a.rsplit("/p2p/", 1)[1].split("/", 1)[0] for a in self._join if "/p2p/" in a)
        return list(dict.fromkeys(i for i in ids if i and i != self.contact))

    @property
    def contact(self) -> str:
        if self._contact is None:  # hivemind looks the peer id up lazily, and not after shutdown
            self._contact = self.dht.peer_id.to_base58()
        return self._contact

    @property
    def addresses(self) -> list[str]:
        return [str(m) for m in self.dht.get_visible_maddrs()]

    def publish(self, round_: int, record: bytes, now: bool = False) -> None:
        k = round_ // PUBLISH_EVERY
        for j in [j for j in self._stored_early if j < k]:  # stored already, and complete
            self._bundles.pop(j, None)
            self._stored_early.discard(j)
        bundle = self._bundles.setdefault(k, [])
        bundle.append(bytes(record))
        self._stored_early.discard(k)
        if round_ % PUBLISH_EVERY == PUBLISH_EVERY - 1 or sum(map(len, bundle)) > MAX_DHT_VALUE // 2:
            self._flush(k)
        elif now:  # stored at once, and kept: a later store of this bundle replaces this one
            self._flush(k, keep=True)
            self._stored_early.add(k)

    def _flush(self, k: int, keep: bool = False) -> None:
        bundle = self._bundles.get(k, []) if keep else self._bundles.pop(k, [])
        if bundle:
            self._store(self._bundle_key.format(k), b"".join(len(r).to_bytes(4, "little") + r for r in bundle),
                        RECORD_TTL)

    def records(self, round_: int) -> list[bytes]:
        out = []
        for value in self._get(self._bundle_key.format(round_ // PUBLISH_EVERY)):
            pos = 0
            while pos + 4 <= len(value):  # unvalidated: the caller decodes and checks every record
                n = int.from_bytes(value[pos:pos + 4], "little")
                out.append(value[pos + 4:pos + 4 + n])
                pos += 4 + n
        return out

    def announce(self, heartbeat: bytes, ttl: float | None = None) -> None:
        self._store(self._peers_key, heartbeat, HEARTBEAT_TTL if ttl is None else ttl)

    def heartbeats(self) -> list[bytes]:
        return self._get(self._peers_key)

    def serve(self, handler: Handler) -> None:
        from hivemind.p2p import P2P

        loop = self._loop
        transport = self

        async def on_stream(_info, reader, writer):
            try:
                request = await P2P.receive_raw_data(reader)
                reply = await loop.run_in_executor(None, handler, request)
                transport.bytes_received += len(request)
                transport.bytes_sent += len(reply)
                await P2P.send_raw_data(reply, writer)
                # Linger until the requester has read it all and closed its end: closing ours at once
                # handed p2pd a stream with most of a large reply unsent, and it cut it short (a 259 KB
                # ledger over a 64 kbit/s link arrived as 64 or 128 KB).
                await asyncio.wait_for(reader.read(1), LINGER_S + len(reply) / BULK_RATE)
            except Exception as exc:  # a broken requester must never take the server down
                log.debug("bulk request failed: %s", exc)
            finally:
                writer.close()

        async def on_frame(message: bytes) -> None:
            transport.bytes_received += len(message)
            await loop.run_in_executor(None, handler, message)

        async def on_channel(_info, reader, writer):
            await receive(reader, writer, on_frame)

        self._call(self._p2p.add_binary_stream_handler(_HANDLER, on_stream), START_TIMEOUT)
        self._call(self._p2p.add_binary_stream_handler(CHANNEL, on_channel), START_TIMEOUT)

    def request(self, contact: str, payload: bytes, timeout: float) -> bytes:
        from hivemind.p2p import P2P, PeerID

        async def ask() -> bytes:
            _info, reader, writer = await self._p2p.call_binary_stream_handler(PeerID.from_base58(contact), _HANDLER)
            try:
                await P2P.send_raw_data(payload, writer)
                return await P2P.receive_raw_data(reader)
            finally:
                writer.close()

        reply = self._call_peer(ask(), timeout, "request", contact)
        self.bytes_sent += len(payload)
        self.bytes_received += len(reply)
        return reply

    def send(self, contact: str, payload: bytes, timeout: float) -> None:
        """Write one message on our channel to ``contact`` (``channels.Channels.put``). Delivery is
        TCP's: a peer that dies takes unread messages with it."""
        data = frame(payload)
        self._call_peer(self._channels.put(contact, data), timeout, "push", contact)
        self.bytes_sent += len(data)

    async def _open_channel(self, contact: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        from hivemind.p2p import PeerID

        _info, reader, writer = await self._p2p.call_binary_stream_handler(PeerID.from_base58(contact), CHANNEL)
        return reader, writer

    def rejoin(self) -> bool:
        if not self._stranded:
            return True
        now = time.monotonic()
        if now - self._rejoined_at < REJOIN_EVERY:
            return False
        self._rejoined_at = now
        try:
            self.connect(self._join)
        except NetworkError as exc:
            log.warning("%s; dialling again in %.0fs (others can join this peer meanwhile)", exc, REJOIN_EVERY)
            return False
        self._stranded = False
        log.info("reached the --join peers")
        return True

    def connect(self, addresses: list[str]) -> None:
        """Dial peers by multiaddr at runtime (to heal a partition or bridge two swarms)."""
        from functools import partial

        try:
            self.dht.run_coroutine(partial(_connect, list(addresses)), return_future=True).result(START_TIMEOUT)
        except Exception as exc:
            raise PeerUnreachable(f"could not connect to {addresses}: {one_line(exc)}") from None

    def close(self) -> None:
        """Publish unfinished bundles, stop the P2P replica, the DHT and the loop; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wire.stop()
        if getattr(self, "_p2p", None) is not None:  # started (``ready`` got that far): publish, then stop p2p
            for k in [k for k in self._bundles if k not in self._stored_early]:
                try:
                    self._flush(k)
                except (ProtocolError, NetworkError) as exc:
                    log.debug("final bundle not published: %s", exc)
            try:
                self._call(self._channels.close(), 5.0)
            except Exception as exc:
                log.debug("push channels: %s", exc)
            try:
                self._call(self._p2p.shutdown(), 10.0)
            except Exception as exc:
                log.debug("p2p replica shutdown: %s", exc)
        self.dht.shutdown()
        if getattr(self, "_loop", None) is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


async def _connect(addresses: list[str], _dht, node) -> bool:
    from hivemind.p2p import PeerID
    from hivemind.utils.multiaddr import Multiaddr

    answered = []
    for text in addresses:
        peer = PeerID.from_base58(Multiaddr(text)["p2p"])
        await node.p2p._client.connect(peer, [Multiaddr(text.split("/p2p/")[0])])  # transport part only
        for _ in range(3):  # the ping puts the peer in our routing table: without it the DHT is empty here
            if await node.protocol.call_ping(peer) is not None:
                answered.append(text)
                break
    if not answered:
        raise RuntimeError("connected, but no peer answered a DHT ping")
    await node.find_nearest_nodes([node.node_id])
    return True

