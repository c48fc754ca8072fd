"""A site behind NAT: the lab's public peers on their bridge, plus one site whose only way out is a
masquerading router, as a factory's LAN behind its gateway.

    hub (bridge br0, 10.77.0.0/24) ── p0, p1, … (public: reachable from every namespace)
         ├── router 0: eth0 10.77.0.<n+1> ── lan0 10.78.0.1 ── site 0: eth0 10.78.0.2 (default via router 0)
         └── router 1: eth0 10.77.0.<n+2> ── lan0 10.79.0.1 ── site 1: eth0 10.79.0.2 …

Each router forwards its site's packets out of eth0 and masquerades them (nftables); nothing
routes in, no port is forwarded, so no public peer and no other site can open a connection to it. Runs as root;
needs ``nft`` (Debian's ``nftables``). Everything is created in namespaces this lab owns and
removed by ``close`` (the router's nftables table goes with its namespace).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

from bench.lab.netns import Lab, address, sh


def nft_available() -> bool:
    return shutil.which("nft") is not None


def _masquerade(ns: str, net: str) -> None:
    rules = ("table ip onebyte_nat {\n"
             "  chain postrouting {\n"
             "    type nat hook postrouting priority 100; policy accept;\n"
             f"    oifname \"eth0\" ip saddr {net}.0/24 masquerade\n"
             "  }\n"
             "}\n")
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True,
                   capture_output=True, timeout=30)


class NatLab(Lab):
    """``public`` peers on the bridge (indices 0..public-1) and ``private`` sites, each behind its
    own masquerading router (indices public..public+private-1): ``wrap``, ``ips`` and ``tx_bytes``
    take a site's index like any peer's. Site j's LAN is 10.(78+j).0.0/24; no route leads into it."""

    def __init__(self, public: int, private: int = 1, prefix: str | None = None):
        if not nft_available():
            raise RuntimeError("nft not found: install Debian's nftables (apt-get install nftables)")
        super().__init__(public, prefix)
        self.routers = [f"{self.prefix}r{j}" for j in range(private)]
        self.sites = [f"{self.prefix}c{j}" for j in range(private)]
        try:
            for j, (router, site) in enumerate(zip(self.routers, self.sites, strict=True)):
                net = f"10.{78 + j}.0"
                sh("ip", "netns", "add", router)
                self.created.append(router)
                sh("ip", "-n", router, "link", "add", "eth0", "type", "veth", "peer", "name", f"vr{j}",
                   "netns", self.hub)
                sh("ip", "-n", self.hub, "link", "set", f"vr{j}", "master", "br0", "up")
                address(router, f"10.77.0.{public + 1 + j}")
                sh("ip", "netns", "add", site)
                self.created.append(site)
                sh("ip", "-n", site, "link", "add", "eth0", "type", "veth", "peer", "name", "lan0", "netns", router)
                sh("ip", "-n", router, "addr", "add", f"{net}.1/24", "dev", "lan0")
                sh("ip", "-n", router, "link", "set", "lan0", "up")
                address(site, f"{net}.2")
                sh("ip", "-n", site, "route", "add", "default", "via", f"{net}.1")
                sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
                _masquerade(router, net)
                self.names.append(site)
                self.ips.append(f"{net}.2")
        except Exception:
            self.close()
            raise

    def reaches(self, i: int, ip: str) -> bool:
        """Whether namespace i can open a TCP connection to ``ip`` (port 9, refused or not: a
        refusal means the packet got there), within 2 s."""
        code = ("import socket,sys\ns=socket.socket();s.settimeout(2)\n"
                "try:\n s.connect((sys.argv[1],9))\nexcept ConnectionRefusedError:\n sys.exit(0)\n"
                "except OSError:\n sys.exit(1)\nsys.exit(0)\n")
        return subprocess.run(self.wrap(i, [sys.executable, "-c", code, ip]), capture_output=True,
                              timeout=30).returncode == 0
