"""Sites behind NAT (masquerading routers, no port open) join through a public peer and converge
(slow; needs root for network namespaces and Debian's nftables, which it installs if it can)."""

import os
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.slow


def _need_lab() -> None:
    from bench.lab.netns import available

    if not available():
        pytest.skip("network namespaces need root and iproute2")
    if shutil.which("nft") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "nftables"], capture_output=True, timeout=600)
    if shutil.which("nft") is None:
        pytest.skip("nft (Debian's nftables) is not installed and could not be installed")


def test_site_behind_nat_joins_via_relay_and_converges(tmp_path):
    _need_lab()
    from bench.lab.natlab import run_nat

    result = run_nat(tmp_path, rounds=20)
    assert result["reachability"] == {"site_to_public": True, "public_to_site": False, "site_to_site": False}
    assert result["agree"], result
    assert all(p["rounds_completed"] == 20 for p in result["peers"])
    assert {p["records"] for p in result["peers"]} == {3 * 20}  # every site's records reached everyone


def test_the_nat_lab_leaves_nothing_behind():
    _need_lab()
    from bench.lab.nat import NatLab

    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    lab = NatLab(1, private=2, prefix=f"obn{os.getpid() % 10000}")
    assert lab.reaches(1, lab.ips[0]) and not lab.reaches(0, lab.ips[1]) and not lab.reaches(1, lab.ips[2])
    lab.close()
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    assert after <= before
