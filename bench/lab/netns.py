"""A small network lab: one namespace per peer, all cabled to a bridge in a hub namespace.

Runs as root (network namespaces + veth pairs; nothing is touched in the root namespace). Every
name carries a per-run prefix and ``Lab.close`` removes everything this lab created.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30).stdout


class Lab:
    def __init__(self, n: int, prefix: str | None = None):
        self.prefix = prefix or f"ob{os.getpid() % 100000}"
        self.hub = f"{self.prefix}hub"
        self.names = [f"{self.prefix}p{i}" for i in range(n)]
        self.ips = [f"10.77.0.{i + 1}" for i in range(n)]
        self.created: list[str] = []
        try:
            sh("ip", "netns", "add", self.hub)
            self.created.append(self.hub)
            sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.hub, "link", "set", "br0", "up")
            for i, ns in enumerate(self.names):
                sh("ip", "netns", "add", ns)
                self.created.append(ns)
                sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{i}", "netns", self.hub)
                sh("ip", "-n", self.hub, "link", "set", f"v{i}", "master", "br0", "up")
                address(ns, self.ips[i])
        except Exception:
            self.close()
            raise

    def wrap(self, i: int, cmd: list[str]) -> list[str]:
        """``cmd`` run inside peer i's namespace."""
        return ["ip", "netns", "exec", self.names[i], *cmd]

    def tx_bytes(self, i: int) -> int:
        """Bytes sent on peer i's link (everything: IP/TCP headers, TLS, yamux, DHT, p2pd)."""
        return int(sh("ip", "netns", "exec", self.names[i], "cat", "/sys/class/net/eth0/statistics/tx_bytes"))

    def limit(self, i: int, rate: str = "64kbit", burst: str = "1600", latency: str = "400ms") -> None:
        """Token-bucket rate limit on peer i's outgoing link (tc tbf)."""
        sh("ip", "netns", "exec", self.names[i], "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
           "rate", rate, "burst", burst, "latency", latency)

    def frame_every_segment(self) -> None:
        """One frame per TCP segment (``gso_max_segs 1``), as on a real 1500-byte MTU link: the tx
        counter then holds the headers such a link carries (with GSO a 64 KB super-packet is
        counted with one set of headers)."""
        for ns in self.names:
            sh("ip", "-n", ns, "link", "set", "eth0", "gso_max_segs", "1")

    def close(self) -> None:
        for ns in reversed(self.created):
            sh("ip", "netns", "delete", ns, check=False)
        self.created.clear()


def address(ns: str, ip: str) -> None:
    """Give namespace ``ns``'s eth0 the lab address ``ip`` and bring it and loopback up."""
    sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")


def available() -> bool:
    """Whether this machine lets us create namespaces (root, iproute2)."""
    if os.geteuid() != 0 or not Path("/usr/sbin/ip").exists() and not Path("/sbin/ip").exists():
        return False
    try:
        lab = Lab(1, prefix=f"obt{os.getpid() % 10000}")
    except Exception:
        return False
    lab.close()
    return True
