"""What a peer's processes really put on the wire, from the kernel's own per-socket counters.

Our transport can count only the payloads it hands to libp2p; the daemon (p2pd) adds framing,
encryption, multiplexing, DHT lookups, pings and identify exchanges, which on a thin link are
most of the traffic. ``WireCounter`` reads the kernel's TCP counters of every socket owned by this
process or its descendants (hivemind's DHT process and the p2pd daemons it starts) through
``ss -tinpH`` (iproute2, socket diagnostics over netlink): ``bytes_sent`` (retransmissions
included) and ``bytes_received`` per socket, plus ``HEADER_BYTES`` of Ethernet, IPv4 and TCP
headers per segment (``segs_out``/``segs_in``), so the figures compare with an interface's
``tx_bytes``/``rx_bytes``. A socket seen at one sample and gone at the next counts with its last
sampled values (what it moved after that sample is missed: connections are long-lived, so little).
Where ``ss`` or ``/proc`` is missing, ``sample`` returns None and callers fall back to payload
counts, labelled as such.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

__all__ = ["WireCounter", "descendants", "HEADER_BYTES", "METHOD"]

#: Per TCP segment: Ethernet (14) + IPv4 (20) + TCP with the timestamp option (32).
HEADER_BYTES = 66

METHOD = ("kernel TCP counters of this peer's processes (libp2p daemon included) from ss, plus 66 bytes "
          "of Ethernet/IPv4/TCP headers per segment")

_USER = re.compile(r"pid=(\d+),fd=(\d+)")
_FIELDS = {k: re.compile(rf"\b{k}:(\d+)") for k in ("bytes_sent", "bytes_received", "segs_out", "segs_in")}


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


def parse_ss(text: str, pids: set[int]) -> dict[tuple[str, ...], dict[str, int]]:
    """Per socket owned by ``pids``: its counters (``ss -tinpH``: a socket line, then its info line)."""
    out: dict[tuple[str, ...], dict[str, int]] = {}
    lines = text.splitlines()
    for head, info in zip(lines[::2], lines[1::2], strict=False):
        owners = [(int(p), int(fd)) for p, fd in _USER.findall(head)]
        mine = [o for o in owners if o[0] in pids]
        if not mine:
            continue
        cols = head.split()
        key = (cols[3], cols[4], *map(str, mine[0])) if len(cols) >= 5 else tuple(map(str, mine[0]))
        out[key] = {k: int(m.group(1)) if (m := rx.search(info)) else 0 for k, rx in _FIELDS.items()}
    return out


class WireCounter:
    """Bytes on the wire of this process and its descendants (thread-safe). ``sample`` reads the
    counters now; ``start(interval)`` also samples in the background, so sockets that live only a
    few seconds (DHT lookups, joining) are seen before they close."""

    def __init__(self, root: int | None = None):
        self.root = os.getpid() if root is None else root
        self.ss = shutil.which("ss")
        self.live: dict[tuple[str, ...], dict[str, int]] = {}
        self.closed = dict.fromkeys(_FIELDS, 0)
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, interval: float = 0.5) -> WireCounter:
        if self.available and self._thread is None:
            def loop() -> None:
                while not self._stop.wait(interval):
                    self.sample()

            self._thread = threading.Thread(target=loop, name="onebyte-wire", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def available(self) -> bool:
        return self.ss is not None and Path("/proc").is_dir()

    def sample(self) -> dict[str, int] | None:
        """``{"sent", "received"}`` in bytes so far (headers included), or None when unavailable."""
        if not self.available:
            return None
        with self.lock:  # one sample at a time, in order: an older one never replaces a newer one
            try:
                text = subprocess.run([self.ss, "-tinpH"], capture_output=True, text=True, timeout=5,
                                      check=True).stdout
            except (OSError, subprocess.SubprocessError):
                return None
            now = parse_ss(text, descendants(self.root))
            for key, counts in self.live.items():
                if key not in now:  # closed since the last sample: keep what it had moved
                    for k in _FIELDS:
                        self.closed[k] += counts[k]
            self.live = now
            total = {k: self.closed[k] + sum(c[k] for c in now.values()) for k in _FIELDS}
        return {"sent": total["bytes_sent"] + HEADER_BYTES * total["segs_out"],
                "received": total["bytes_received"] + HEADER_BYTES * total["segs_in"]}
