"""A userspace thin-link emulator: one TAP device per peer namespace, a learning switch between them.

    lab = ThinLab(4, rate_bps=64_000, delay=0.1, loss=0.01)   # as root
    ... run one process per namespace with lab.wrap(i, cmd) ...
    lab.close()

This kernel has no ``tc netem``, so delay and loss are applied here instead. Each peer's access
link is a TAP device (``/dev/net/tun``, ``IFF_TAP | IFF_NO_PI``) created in the root namespace,
moved into the peer's namespace at once and renamed ``eth0`` there; the file descriptor stays
with this process, which is the switch. Every frame crosses two links (sender's uplink, then
receiver's downlink); each link direction applies, in order:

* random loss (seeded): the frame is serialized but never delivered, like a corrupted frame;
* a serialization queue at ``rate_bps`` with drop-tail once ``queue`` seconds of backlog wait;
* a fixed one-way propagation ``delay``.

So a peer-to-peer path has twice the delay (RTT 4x) and about twice the loss of one link. The
event loop runs in one thread, is bounded by ``close`` (and by ``max_seconds``), and removes
every device and namespace it created: closing a non-persistent TAP's fd deletes the device.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import random
import select
import struct
import threading
import time
from collections import Counter

from bench.lab.netns import address, sh

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_FRAME = 65536
#: Frames read from one TAP per wake-up (bounds one loop iteration).
READ_BURST = 64


class Direction:
    """One direction of one link: loss, a rate-limited drop-tail queue, propagation delay."""

    def __init__(self, rate_bps: float | None, delay: float, loss: float, queue: float, rng: random.Random):
        self.rate = None if rate_bps is None else rate_bps / 8.0  # bytes per second
        self.delay, self.loss, self.queue, self.rng = delay, loss, queue, rng
        self.busy_until = 0.0
        self.frames = self.bytes = self.lost = self.dropped = 0

    def admit(self, now: float, size: int) -> float | None:
        """When a frame offered now arrives at the far end (None: lost or dropped)."""
        start = max(now, self.busy_until)
        if self.rate is not None:
            if start - now > self.queue:  # the backlog ahead of it already holds `queue` seconds
                self.dropped += 1
                return None
            self.busy_until = start + size / self.rate
        else:
            self.busy_until = start
        self.frames += 1
        self.bytes += size
        if self.loss and self.rng.random() < self.loss:
            self.lost += 1
            return None
        return self.busy_until + self.delay

    def stats(self) -> dict:
        return {"frames": self.frames, "bytes": self.bytes, "lost": self.lost, "queue_drops": self.dropped}


class ThinLab:
    """Same interface as ``netns.Lab`` (names, ips, wrap, tx_bytes, close), over emulated links."""

    def __init__(self, n: int, *, rate_bps: float | None = 64_000, delay: float = 0.1, loss: float = 0.01,
                 queue: float = 0.5, seed: int = 0, prefix: str | None = None, max_seconds: float = 3600.0):
        self.prefix = prefix or f"ot{os.getpid() % 100000}"
        self.names = [f"{self.prefix}p{i}" for i in range(n)]
        self.ips = [f"10.78.0.{i + 1}" for i in range(n)]
        self.params = {"rate_bps": rate_bps, "delay_s": delay, "loss": loss, "queue_s": queue, "seed": seed}
        rng = random.Random(seed)
        self.up = [Direction(rate_bps, delay, loss, queue, random.Random(rng.random())) for _ in range(n)]
        self.down = [Direction(rate_bps, delay, loss, queue, random.Random(rng.random())) for _ in range(n)]
        self.created: list[str] = []
        self.fds: list[int] = []
        self.max_seconds = max_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lag_max = 0.0  # worst lateness of a scheduled delivery (emulator fidelity)
        self.kinds: Counter[str] = Counter()  # bytes sent by the peers, by kind of frame
        try:
            for i, ns in enumerate(self.names):
                sh("ip", "netns", "add", ns)
                self.created.append(ns)
                tap = f"{self.prefix}t{i}"
                fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
                self.fds.append(fd)
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", tap.encode(), IFF_TAP | IFF_NO_PI))
                sh("ip", "link", "set", tap, "netns", ns)  # out of the root namespace at once
                sh("ip", "-n", ns, "link", "set", tap, "name", "eth0")
                address(ns, self.ips[i])
        except Exception:
            self.close()
            raise
        self._thread = threading.Thread(target=self._run, name="linkemu", daemon=True)
        self._thread.start()

    def wrap(self, i: int, cmd: list[str]) -> list[str]:
        """``cmd`` run inside peer i's namespace."""
        return ["ip", "netns", "exec", self.names[i], *cmd]

    def tx_bytes(self, i: int) -> int:
        """Bytes peer i's processes sent on their link (everything, as netns.Lab counts them)."""
        return int(sh("ip", "netns", "exec", self.names[i], "cat", "/sys/class/net/eth0/statistics/tx_bytes"))

    # ----------------------------------------------------------------- the switch
    def _run(self) -> None:
        try:  # keep the clock honest while the peers load both cores
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)
        except OSError:
            pass
        events: list[tuple[float, int, int, int, bytes]] = []  # (due, seq, kind 0=up 1=down, port, frame)
        macs: dict[bytes, int] = {}
        seq = 0
        end = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < end:
            now = time.monotonic()
            timeout = 0.05 if not events else min(0.05, max(0.0, events[0][0] - now))
            ready, _, _ = select.select(self.fds, [], [], timeout)
            now = time.monotonic()
            for fd in ready:
                i = self.fds.index(fd)
                for _ in range(READ_BURST):
                    try:
                        frame = os.read(fd, MAX_FRAME)
                    except BlockingIOError:
                        break
                    if len(frame) < 14:
                        continue
                    self.kinds[_kind(frame)] += len(frame)
                    due = self.up[i].admit(now, len(frame))
                    if due is not None:
                        heapq.heappush(events, (due, seq, 0, i, frame))
                        seq += 1
            now = time.monotonic()
            while events and events[0][0] <= now:
                due, _, kind, i, frame = heapq.heappop(events)
                self.lag_max = max(self.lag_max, now - due)
                if kind == 1:
                    try:
                        os.write(self.fds[i], frame)
                    except OSError:
                        pass  # interface down or gone: the frame is lost
                    continue
                macs[frame[6:12]] = i  # learn the sender's port
                dst = frame[0:6]
                ports = [macs[dst]] if dst in macs and not dst[0] & 1 else [j for j in range(len(self.fds)) if j != i]
                for j in ports:
                    if j == i:
                        continue
                    due_j = self.down[j].admit(now, len(frame))
                    if due_j is not None:
                        heapq.heappush(events, (due_j, seq, 1, j, frame))
                        seq += 1

    def stats(self) -> dict:
        links = []
        for i in range(len(self.names)):
            links.append({"up": self.up[i].stats(), "down": self.down[i].stats()})
        frames = sum(d.frames for d in self.up + self.down)
        lost = sum(d.lost for d in self.up + self.down)
        return {
            "links": links,
            "frames": frames,
            "bytes": sum(d.bytes for d in self.up + self.down),
            "lost": lost,
            "queue_drops": sum(d.dropped for d in self.up + self.down),
            "loss_applied": lost / frames if frames else 0.0,
            "max_lateness_s": round(self.lag_max, 4),
            "sent_bytes_by_kind": dict(self.kinds.most_common()),
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in self.fds:  # a non-persistent TAP disappears with its last fd
            os.close(fd)
        self.fds.clear()
        for ns in reversed(self.created):
            sh("ip", "netns", "delete", ns, check=False)
        self.created.clear()


def _kind(frame: bytes) -> str:
    """A coarse label for a frame: what eats a thin link (multicast chatter, bare ACKs, data)."""
    if frame[0] & 1:
        return "broadcast/multicast"
    if frame[12:14] != b"\x08\x00" or len(frame) < 34:
        return "other"
    ihl = (frame[14] & 15) * 4
    proto, total = frame[23], int.from_bytes(frame[16:18], "big")
    if proto == 6 and len(frame) >= 14 + ihl + 13:
        thl = (frame[14 + ihl + 12] >> 4) * 4
        return "tcp, no payload" if total - ihl - thl == 0 else "tcp, payload"
    return "udp" if proto == 17 else "other ip"
