"""``onebyte report RUN_DIR… --out report.html``: one self-contained HTML file for a pilot.

For people who will not open a terminal: what was trained, on which sites and for how long;
accuracy and macro-F1 before and after (and against a site training alone, given ``--alone``);
bytes on the wire against data-parallel and FedAvg; ε spent; incidents (rejected records,
restarts, divergence); and a short plain-language summary of the trade-off. Figures are PNGs drawn
with matplotlib and embedded as data URIs: the file fetches nothing.

Every figure comes from the runs' own files through ``board`` (the dashboard's reader), so the
report says what the summaries say. Runs of different run tags are not one pilot: refused.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .board import RunView, defences, find_runs, learning_curve, privacy_rows, read_all, swarm_table, traffic
from .errors import ConfigError, storage_error

__all__ = ["write_report", "render_report", "figures"]


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _bytes(x: float | None) -> str:
    if x is None:
        return "—"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if x >= size:
            return f"{x / size:,.2f} {unit}"
    return f"{x:,.0f} B"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def figures(views: list[RunView], alone: list[RunView]) -> dict[str, str]:
    """The report's figures as data URIs: learning curves and traffic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for v in views + alone:
        ev = learning_curve(v)["evals"]
        if ev:
            style = "--" if v in alone else "-"
            ax.plot([e["round"] for e in ev], [e.get("accuracy") for e in ev], style, marker="o", ms=3,
                    label=f"{v.name}{' (alone)' if v in alone else ''} accuracy")
    ax.set_xlabel("round")
    ax.set_ylabel("held-out accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    out["learning"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    t = traffic(views[0])
    names = ["onebyte payload", "data-parallel", "FedAvg"]
    vals = [t["payload_per_peer_per_round"] or 0.0, t["data_parallel_per_peer_per_round"],
            t["fedavg_per_peer_per_round"]]
    sent = [x for x in (traffic(v).get("sent_per_round") for v in views) if x]
    if sent:
        names.insert(1, "onebyte on the wire (peer counters)")
        vals.insert(1, sum(sent) / len(sent))
    colors = ["#2e9d4f"] + ["#5b8def"] * (len(names) - 3) + ["#c9302c", "#e08b2c"]
    ax.barh(names, [max(v, 1e-3) for v in vals], color=colors)
    ax.set_xscale("log")
    ax.set_xlabel("bytes sent per peer per round (log scale)")
    for i, v in enumerate(vals):
        ax.text(max(v, 1e-3), i, " " + _bytes(v), va="center", fontsize=8)
    out["traffic"] = _png(fig)
    return out


def _check(views: list[RunView]) -> None:
    tags = {v.run_tag for v in views if v.run_tag}
    if len(tags) > 1:
        raise ConfigError("the runs have different run tags (" + ", ".join(sorted(t[:12] for t in tags))
                          + "): a report covers one run; report each separately")
    if not any(v.summary for v in views):
        raise ConfigError("no summary.json in any run directory yet: nothing to report")


def _incidents(views: list[RunView], table: dict[str, Any]) -> list[str]:
    out = []
    for r in table["rows"]:
        if r["records_rejected"]:
            reasons = ", ".join(f"{k}: {v}" for k, v in (r["rejections"] or {}).items())
            out.append(f"{r['name']} rejected {r['records_rejected']} record(s){f' ({reasons})' if reasons else ''}.")
        if r["flagged_peers"]:
            out.append(f"{r['name']} flagged peer(s) {', '.join(r['flagged_peers'])} for equivocation.")
    for v in views:
        rounds = [ln["round"] for ln in v.metrics if not ln.get("final")]
        restarts = sum(1 for a, b in zip(rounds, rounds[1:], strict=False) if b <= a)
        if restarts:
            out.append(f"{v.name} restarted {restarts} time(s) and caught up from its ledger.")
        if v.problems:
            out.append(f"{v.name}: {'; '.join(v.problems)}.")
    if table["consistent"] is False:
        out.append("Replicas holding the same records hold different weights: a divergence. Do not ship this "
                   "model; report it.")
    return out


def render_report(views: list[RunView], alone: Sequence[RunView] = ()) -> str:
    """The report's HTML (see the module's docstring)."""
    _check(views)
    alone = list(alone)
    main = next(v for v in views if v.summary)
    s = main.summary or {}
    table = swarm_table(views)
    t = traffic(main)
    curve = learning_curve(main)["evals"]
    before = curve[0] if curve else {}
    after = curve[-1] if curve else {}
    figs = figures(views, alone)
    privacy = [p for p in privacy_rows(views) if p["private"]]
    incidents = _incidents(views, table)
    sites = [v for v in views if v.kind == "peer"]
    peers = s.get("peers", len(sites) or 1)
    rounds = t["rounds"]
    seconds = max((v.get("seconds", 0) or 0) for v in views)
    gain = None if "accuracy" not in after or "accuracy" not in before else after["accuracy"] - before["accuracy"]
    alone_final = [ev[-1].get("accuracy") for ev in (learning_curve(v)["evals"] for v in alone) if ev]
    wire = sum(x for x in (v.get("bytes_sent") for v in sites) if x) if sites else None

    e = html.escape
    rows = "".join(
        f"<tr><td>{e(r['name'])}</td><td class=n>{r['rounds_completed'] or '—'}</td><td class=n>"
        f"{r['records_accepted'] or 0}</td><td class=n>{r['records_rejected'] or 0}</td>"
        f"<td><code>{e((r['set_digest'] or '—')[:12])}</code></td><td><code>{e((r['state_hash'] or '—')[:12])}</code>"
        f"</td></tr>" for r in table["rows"])
    priv_html = ("<p>No site trained with differential privacy: the scalars sent carry no formal privacy "
                 "guarantee (only the seeds and one byte per direction leave a site).</p>") if not privacy else (
        "<table><tr><th>site</th><th>ε spent</th><th>budget</th><th>δ</th></tr>" + "".join(
            f"<tr><td>{e(p['name'])}</td><td class=n data-field=epsilon_spent>{p['epsilon_spent']:.3f}</td>"
            f"<td class=n>{p.get('epsilon_target', '—')}</td><td class=n>{p.get('delta', '—')}</td></tr>"
            for p in privacy) + "</table>")
    recall_before, recall_after = before.get("recall") or {}, after.get("recall") or {}
    recall_rows = "\n".join(  # each class: a rare one the model ignores shows here first
        f"<tr><td>recall of {e(name)}</td><td class=n>{_pct(recall_before.get(name))}</td>"
        f"<td class=n data-field=recall_after>{_pct(recall_after.get(name))}</td></tr>"
        for name in dict.fromkeys([*recall_before, *recall_after]))
    alone_html = ""
    if alone_final:
        mean_alone = sum(alone_final) / len(alone_final)
        alone_html = (f"<p>Trained alone on its own data, a site reached <b data-field=alone_accuracy>"
                      f"{_pct(mean_alone)}</b> (mean of {len(alone_final)} site run(s)); in the swarm every site got "
                      f"<b>{_pct(after.get('accuracy'))}</b>: joining was worth "
                      f"<b>{100 * (after.get('accuracy', 0) - mean_alone):+.1f} points</b>.</p>")
    ratio = (t["data_parallel_per_peer_per_round"] / t["payload_per_peer_per_round"]
             if t.get("payload_per_peer_per_round") else None)
    verdict = []
    if gain is not None:
        verdict.append(f"The shared model's held-out accuracy went from {_pct(before.get('accuracy'))} to "
                       f"{_pct(after.get('accuracy'))} ({100 * gain:+.1f} points) in {rounds} rounds.")
    if ratio:
        verdict.append(f"Each site sent about {t['payload_per_peer_per_round']:.0f} bytes of gradient per round, "
                       f"{ratio:,.0f} times less than data-parallel training of the same weights would.")
    if privacy:
        verdict.append(f"The largest privacy loss of any site was ε = {max(p['epsilon_spent'] for p in privacy):.2f}.")
    if alone_final:
        verdict.append("Joining paid: the swarm beat training alone." if after.get("accuracy", 0) > max(alone_final)
                       else "Joining did not beat the best site training alone on this data.")
    verdict.append("Replicas agree bit for bit." if table["consistent"] else
                   "Replicas did not agree: see incidents." if table["consistent"] is False else
                   "Not every replica has reported its hash yet.")

    incidents_html = ("<ul>" + "".join(f"<li>{e(i)}</li>" for i in incidents) + "</ul>" if incidents else
                      "<p>None: no record was rejected, no site restarted, no replica diverged.</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>onebyte pilot report: {e(str(s.get('model')))} on {e(str(s.get('task')))}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:860px;margin:24px auto;color:#1d2330;padding:0 16px}}
h1{{font-size:22px}}h2{{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse;font-size:13px}}
td,th{{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}}td.n{{text-align:right}}img{{max-width:100%}}
.summary{{background:#f1f6f2;border-left:4px solid #2e9d4f;padding:8px 14px}}</style></head><body>
<h1>Pilot report: {e(str(s.get('model')))} on {e(str(s.get('task')))}</h1>
<p>Written {time.strftime('%Y-%m-%d %H:%M')} from {len(views)} run director{'y' if len(views) == 1 else 'ies'}
(run tag <code>{e(str(main.run_tag))}</code>).</p>
<h2>What was trained</h2>
<p>Model <b>{e(str(s.get('model')))}</b>, task <b>{e(str(s.get('task')))}</b>;
{s.get('tuned_parameters', '?'):,} weights tuned
({e(str(s.get('tune', (main.run or {}).get('spec', {}).get('train', {}).get('tune', '?'))))});
<b data-field=peers>{peers}</b> site(s), <b data-field=rounds>{rounds}</b> rounds, {seconds / 60:.1f} minutes;
{s.get('forward_passes', 0):,} forward passes.</p>
<p data-field=defences>{html.escape(defences(main, privacy))}</p>
<table><tr><th>site</th><th>rounds</th><th>records</th><th>rejected</th><th>set digest</th><th>state hash</th></tr>
{rows}</table>
<h2>How the model improved</h2>
<table><tr><th></th><th>before</th><th>after</th></tr>
<tr><td>accuracy</td><td class=n data-field=accuracy_before>{_pct(before.get('accuracy'))}</td>
<td class=n data-field=accuracy_after>{_pct(after.get('accuracy'))}</td></tr>
<tr><td>macro-F1</td><td class=n data-field=macro_f1_before>{_pct(before.get('macro_f1'))}</td>
<td class=n data-field=macro_f1_after>{_pct(after.get('macro_f1'))}</td></tr>
<tr><td>balanced accuracy</td><td class=n>{_pct(before.get('balanced_accuracy'))}</td>
<td class=n>{_pct(after.get('balanced_accuracy'))}</td></tr>
{recall_rows}</table>
{alone_html}
<img alt="learning curve" src="{figs['learning']}">
<h2>Traffic on the line</h2>
<table><tr><td>gradient payload, all sites</td>
<td class=n data-field=payload_bytes data-value={t['payload_bytes']}>{_bytes(t['payload_bytes'])}</td></tr>
<tr><td>payload per site per round</td><td class=n>{_bytes(t['payload_per_peer_per_round'])}</td></tr>
<tr><td>on the wire, all sites (peers' counters)</td><td class=n data-field=bytes_sent>{_bytes(wire)}</td></tr>
<tr><td>data-parallel, same steps (float32 ring all-reduce)</td><td class=n>{_bytes(t['data_parallel_total'])}</td></tr>
<tr><td>FedAvg, same steps (float32 deltas up and down)</td><td class=n>{_bytes(t['fedavg_total'])}</td></tr></table>
<img alt="traffic" src="{figs['traffic']}">
<h2>Privacy spent</h2>{priv_html}
<h2>Incidents</h2>{incidents_html}
<h2>In short</h2><p class=summary>{e(' '.join(verdict))}</p>
</body></html>
"""


def write_report(runs: Sequence[Path | str], out: Path | str, alone: Sequence[Path | str] = ()) -> Path:
    """Read ``runs`` (and ``alone``), write the report to ``out``; one-line errors for bad input."""
    views = read_all(find_runs(list(runs)))
    alone_views = read_all(find_runs(list(alone))) if alone else []
    text = render_report(views, alone_views)
    path = Path(out)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise storage_error(exc, str(path)) from None
    return path
