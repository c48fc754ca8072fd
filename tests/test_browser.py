"""The dashboard and the report in a real browser: Debian's Chromium driven by playwright (slow).

Skips with the reason when Chromium or playwright is missing (``apt-get install chromium``; the
``test`` extra installs playwright, which drives the system's Chromium: nothing is downloaded).
``ONEBYTE_UPDATE_SCREENSHOTS=1`` copies the screenshots to ``docs/`` (the README's).
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onebyte.cli import main

pytestmark = pytest.mark.slow
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium: apt-get install chromium")
    pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install 'onebyte[test]'")
    return path


def _keep(shot: Path, name: str) -> None:
    if os.environ.get("ONEBYTE_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS / name)


def _cells(page) -> dict[tuple[str, str], str]:
    """Every number the page shows with its run and field: (run, field) -> text."""
    out = {}
    for el in page.query_selector_all("[data-field]"):
        run, field, value = (el.get_attribute(a) for a in ("data-run", "data-field", "data-value"))
        out[(run, field)] = el.inner_text().strip()
        if value not in (None, ""):
            out[(run, field + ":value")] = value
    return out


def test_dashboard_on_a_finished_demo_run_and_a_live_swarm(tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    demo = tmp_path / "demo"
    assert main(["simulate", "--model", "minilm", "--task", "vader", "--peers", "4", "--rounds", "6",
                 "--eval-size", "200", "--eval-every", "2", "--no-progress", "--out", str(demo)]) == 0
    summary = json.loads((demo / "summary.json").read_text())
    swarm_dir = tmp_path / "swarm"
    swarm = subprocess.Popen(
        [sys.executable, "-m", "onebyte", "swarm", "--model", "tiny-gpt2", "--task", "vader", "--samples", "2",
         "--batch-size", "4", "--peers", "3", "--rounds", "100000", "--no-progress", "--out", str(swarm_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not list(swarm_dir.glob("peer-*/summary.json")):
            assert time.monotonic() < deadline and swarm.poll() is None, "the swarm did not start"
            time.sleep(0.5)
        with _dashboard_command(demo, swarm_dir) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(url)
            page.wait_for_selector("[data-run='demo'][data-field='state_hash']", timeout=20_000)
            cells = _cells(page)
            # the four panels against summary.json
            assert cells[("demo", "payload_bytes:value")] == str(summary["payload_bytes"])  # traffic
            assert cells[("demo", "accuracy")] == f"{summary['eval_after']['accuracy']:.4f}"  # learning
            assert cells[("demo", "macro_f1")] == f"{summary['eval_after']['macro_f1']:.4f}"
            assert cells[("demo", "forward_passes")] == f"{summary['forward_passes']:,}"
            assert cells[("demo", "state_hash")] == summary["state_hash"][:12]  # the swarm
            assert cells[("demo", "set_digest")] == summary["set_digest"][:12]
            assert cells[("demo", "records_accepted")] == f"{summary['records']:,}"
            assert cells[("demo", "epsilon_spent")] == "not private"  # privacy
            # the live swarm moves within 5 s of a new round
            peer0 = swarm_dir / "peer-0" / "summary.json"
            moves = 0
            for _ in range(3):
                before = json.loads(peer0.read_text())["round"]
                end = time.monotonic() + 60
                while (now := _round(peer0)) == before:
                    assert time.monotonic() < end, "peer-0 made no round in 60 s"
                    time.sleep(0.05)
                seen = time.monotonic()
                page.wait_for_function(
                    "r => { const el = document.querySelector(\"[data-run='swarm/peer-0'][data-field='round']\");"
                    " return el && Number(el.textContent.replace(/,/g, '')) >= r; }", arg=now, timeout=5_000)
                assert time.monotonic() - seen <= 5.0
                moves += 1
            assert moves == 3
            badge = page.query_selector("#consistency")
            assert badge.get_attribute("data-consistent") in ("true", "false", "null")
            assert page.inner_text("#defences").startswith("Defences: ")  # the run's defaults, one line
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            _keep(shot, "dashboard.png")
            browser.close()
        _stop(swarm)
        # the README's report screenshot: the finished MiniLM run
        assert main(["report", str(demo), "--out", str(tmp_path / "demo-report.html")]) == 0
        fields = _render_offline(chromium, tmp_path / "demo-report.html", tmp_path / "report.png")
        assert fields["accuracy_after"] == f"{100 * summary['eval_after']['accuracy']:.1f} %"
        _keep(tmp_path / "report.png", "report.png")
        # the report over the swarm's directories, once its peers have stopped
        out = tmp_path / "swarm-report.html"
        assert main(["report", str(swarm_dir), "--out", str(out)]) == 0
        peer0 = json.loads((swarm_dir / "peer-0" / "summary.json").read_text())
        fields = _render_offline(chromium, out, tmp_path / "swarm-report.png")
        assert fields["rounds"] == str(peer0["rounds_completed"]) and fields["peers"] == str(peer0["peers"])
        assert fields["payload_bytes:value"] == str(peer0["payload_bytes"])
    finally:
        _stop(swarm)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the swarm's process group (its peers finish their round and drain), then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=90)  # the driver gives its peers 20 s together, then kills their groups
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _render_offline(chromium: str, html: Path, shot: Path) -> dict[str, str]:
    """Open a report with networking disabled; check its figures decoded and nothing was fetched;
    return its ``data-field`` texts."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(offline=True, viewport={"width": 1000, "height": 1400})
        requests = []
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html.as_uri())
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) == 2 and all(w > 100 for w in widths)  # both figures decoded, from data: URIs
        assert all(u.startswith(("file:", "data:")) for u in requests)
        fields = {}
        for el in page.query_selector_all("[data-field]"):
            fields[el.get_attribute("data-field")] = el.inner_text().strip()
            if el.get_attribute("data-value") is not None:
                fields[el.get_attribute("data-field") + ":value"] = el.get_attribute("data-value")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    return fields


@contextlib.contextmanager
def _dashboard_command(*runs: Path):
    """``onebyte dashboard RUN…`` as a user starts it, on a free port; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "onebyte", "dashboard", *map(str, runs), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("onebyte dashboard: http://127.0.0.1:"), line
        yield line.split()[2]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _round(path: Path) -> int:
    try:
        return json.loads(path.read_text())["round"]
    except (OSError, ValueError, KeyError):
        return -1


def test_report_renders_offline_with_the_summary_figures(tmp_path):
    chromium = _chromium()
    run = tmp_path / "run"
    assert main(["simulate", "--model", "tiny-gpt2", "--task", "vader", "--peers", "3", "--rounds", "3",
                 "--samples", "2", "--batch-size", "4", "--eval-size", "64", "--no-progress", "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    shot = tmp_path / "report.png"
    fields = _render_offline(chromium, out, shot)
    assert fields["accuracy_after"] == f"{100 * summary['eval_after']['accuracy']:.1f} %"
    assert fields["macro_f1_after"] == f"{100 * summary['eval_after']['macro_f1']:.1f} %"
    assert fields["payload_bytes:value"] == str(summary["payload_bytes"]) and fields["peers"] == "3"
