"""A site behind NAT: the lab's public peers on their bridge, plus one site whose only way out is a
masquerading router, as a factory's LAN behind its gateway.

    hub (bridge br0, 10.77.0.0/24) ── p0, p1, … (public: reachable from every namespace)
         └── router eth0 10.77.0.<n+1> ── lan0 10.78.0.1 ── site eth0 10.78.0.2 (default via the router)

The router forwards the site's packets out of eth0 and masquerades them (nftables); nothing
routes in, no port is forwarded, so no public peer can open a connection to the site. Runs as root;
needs ``nft`` (Debian's ``nftables``). Everything is created in namespaces this lab owns and
removed by ``close`` (the router's nftables table goes with its namespace).
"""

from __future__ import annotations

import shutil

from bench.lab.netns import Lab, address, sh

PRIVATE_NET = "10.78.0"


def nft_available() -> bool:
    return shutil.which("nft") is not None


class NatLab(Lab):
    """``public`` peers on the bridge (indices 0..public-1) and the site behind NAT (index ``public``):
    ``wrap``, ``ips`` and ``tx_bytes`` take the site's index like any peer's."""

    def __init__(self, public: int, prefix: str | None = None):
        if not nft_available():
            raise RuntimeError("nft not found: install Debian's nftables (apt-get install nftables)")
        super().__init__(public, prefix)
        self.router, self.site = f"{self.prefix}r", f"{self.prefix}c"
        try:
            sh("ip", "netns", "add", self.router)
            self.created.append(self.router)
            sh("ip", "-n", self.router, "link", "add", "eth0", "type", "veth", "peer", "name", "vr", "netns", self.hub)
            sh("ip", "-n", self.hub, "link", "set", "vr", "master", "br0", "up")
            address(self.router, f"10.77.0.{public + 1}")
            sh("ip", "netns", "add", self.site)
            self.created.append(self.site)
            sh("ip", "-n", self.site, "link", "add", "eth0", "type", "veth", "peer", "name", "lan0", "netns", self.router)
            sh("ip", "-n", self.router, "addr", "add", f"{PRIVATE_NET}.1/24", "dev", "lan0")
            sh("ip", "-n", self.router, "link", "set", "lan0", "up")
            address(self.site, f"{PRIVATE_NET}.2")
            sh("ip", "-n", self.site, "route", "add", "default", "via", f"{PRIVATE_NET}.1")
            sh("ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            rules = ("table ip onebyte_nat {\n"
                     "  chain postrouting {\n"
                     "    type nat hook postrouting priority 100; policy accept;\n"
                     f"    oifname \"eth0\" ip saddr {PRIVATE_NET}.0/24 masquerade\n"
                     "  }\n"
                     "}\n")
            import subprocess

            subprocess.run(["ip", "netns", "exec", self.router, "nft", "-f", "-"], input=rules, text=True,
                           check=True, capture_output=True, timeout=30)
        except Exception:
            self.close()
            raise
        self.names.append(self.site)
        self.ips.append(f"{PRIVATE_NET}.2")

    def reaches(self, i: int, ip: str) -> bool:
        """Whether namespace i can open a TCP connection to ``ip`` (port 9, refused or not: a
        refusal means the packet got there), within 2 s."""
        code = ("import socket,sys\ns=socket.socket();s.settimeout(2)\n"
                "try:\n s.connect((sys.argv[1],9))\nexcept ConnectionRefusedError:\n sys.exit(0)\n"
                "except OSError:\n sys.exit(1)\nsys.exit(0)\n")
        import subprocess
        import sys

        return subprocess.run(self.wrap(i, [sys.executable, "-c", code, ip]), capture_output=True,
                              timeout=30).returncode == 0
