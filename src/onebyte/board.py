"""What the dashboard and the pilot report read: run directories, as they are while being written.

A directory given to ``onebyte dashboard`` or ``onebyte report`` is a *run* (a simulation's
``--out`` or one peer's ``--out``: it holds ``run.json``, ``summary.json`` or ``metrics.jsonl``) or a
*swarm* (``onebyte swarm --out``: ``peer-*/`` run directories). Everything here tolerates files that
are being written: a missing summary, a half-written last line of ``metrics.jsonl``, a ``run.json``
not there yet. What cannot be read is named in the view's ``problems`` rather than raised; only a
directory that is no run at all is an error.

``state(views)`` is the JSON the dashboard polls; the report reads the same views.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .rundir import METRICS, RUN, SUMMARY, RunDir

__all__ = ["RunView", "read_run", "find_runs", "state", "traffic", "swarm_table", "learning_curve", "privacy_rows",
           "defences"]

#: Bytes of one float32 value: what a data-parallel or FedAvg step moves per tuned weight.
FLOAT_BYTES = 4


@dataclass
class RunView:
    """One run directory as it reads now."""

    path: Path
    name: str
    run: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    modified: float = 0.0  # newest modification time of its files (epoch seconds)

    @property
    def kind(self) -> str:
        """``peer`` (a networked peer's directory) or ``simulation``."""
        return "peer" if self.summary is not None and "peer_id" in self.summary else "simulation"

    @property
    def run_tag(self) -> str | None:
        if self.summary and self.summary.get("run_tag"):
            return self.summary["run_tag"]
        if self.run:
            return self.run.get("run_tag")
        return None

    def get(self, key: str, default: Any = None) -> Any:
        """A summary figure, else the last metrics line's, else ``default``."""
        if self.summary is not None and self.summary.get(key) is not None:
            return self.summary[key]
        for line in reversed(self.metrics):
            if line.get(key) is not None:
                return line[key]
        return default


def _is_run(path: Path) -> bool:
    return any((path / name).is_file() for name in (RUN, SUMMARY, METRICS))


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name}: not a JSON object")
        return None
    return data


def _read_lines(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """Every complete, valid line; a half-written last line is skipped quietly, a bad one is named."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        problems.append(f"{path.name}: unreadable ({exc.strerror or exc})")
        return []
    out, bad = [], 0
    lines = text.split("\n")
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # the last piece without its newline is still being written
                bad += 1
            continue
        if isinstance(line, dict) and isinstance(line.get("round"), int):
            out.append(line)
        else:
            bad += 1
    if bad:
        problems.append(f"{path.name}: {bad} line(s) skipped (not a metrics line)")
    return out


def read_run(path: Path | str, name: str | None = None) -> RunView:
    """The run directory at ``path`` as it reads now (``problems`` names what could not be read)."""
    d = RunDir(path)
    view = RunView(d.root, name or d.root.name)
    view.run = _read_json(d.run, view.problems)
    view.summary = _read_json(d.summary, view.problems)
    view.metrics = _read_lines(d.metrics, view.problems)
    if view.summary is None and not any("summary" in p for p in view.problems):
        view.problems.append("summary.json: not written yet (the run is starting or still running)")
    times = [p.stat().st_mtime for p in (d.run, d.summary, d.metrics) if p.is_file()]
    view.modified = max(times, default=0.0)
    return view


def find_runs(paths: list[Path | str]) -> list[Path]:
    """The run directories named by ``paths``: each one itself, or a swarm's ``peer-*`` directories.

    Raises ``ConfigError`` (one line) for a path that is neither."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            raise ConfigError(f"{p} is not a directory")
        if _is_run(p):
            found.append(p)
            continue
        peers = sorted((q for q in p.glob("peer-*") if q.is_dir()), key=lambda q: (len(q.name), q.name))
        if not peers:
            raise ConfigError(f"{p} is not a run directory (no run.json, summary.json or metrics.jsonl, "
                              "and no peer-*/ directories)")
        found.extend(peers)
    return found


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}" if path.name.startswith("peer-") else path.name


def read_all(paths: list[Path]) -> list[RunView]:
    return [read_run(p, _name(p)) for p in paths]


# --------------------------------------------------------------------------- the four panels


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) else None


def learning_curve(view: RunView) -> dict[str, list]:
    """Training loss per round, and held-out accuracy / macro-F1 against rounds and forward passes
    (the evaluation before training at round 0, each metrics line's ``eval`` after its round)."""
    loss = [(ln["round"] + 1, ln["train_loss"]) for ln in view.metrics if _finite(ln.get("train_loss")) is not None]
    evals = []
    before = (view.summary or {}).get("eval_before")
    if isinstance(before, dict):
        evals.append({"round": 0, "forward_passes": 0, **before})
    for ln in view.metrics:
        if isinstance(ln.get("eval"), dict):
            evals.append({"round": ln["round"] + 1, "forward_passes": ln.get("forward_passes", 0), **ln["eval"]})
    after = (view.summary or {}).get("eval_after")
    if isinstance(after, dict) and not any(isinstance(ln.get("eval"), dict) for ln in view.metrics):
        evals.append({"round": view.get("rounds_completed", view.get("rounds", 0)),
                      "forward_passes": view.get("forward_passes", 0), **after})
    return {"loss": loss, "evals": evals}


def traffic(view: RunView) -> dict[str, Any]:
    """Bytes this run moved per round and in all, beside what the same steps would move as float32
    gradients (data-parallel, ring all-reduce: each peer sends 2(n-1)/n x 4 bytes per tuned weight
    per step) or FedAvg (each peer uploads a float32 model delta of 4 bytes per tuned weight per
    round, one local step per round for the same steps; the download of the average is as large)."""
    peers = int(view.get("peers", 1) or 1)
    rounds = int(view.get("rounds_completed", 0) or 0) or (view.metrics[-1]["round"] + 1 if view.metrics else 0)
    d = int(view.get("tuned_parameters", 0) or 0)
    per_round = []
    prev: dict[str, float] = {}
    for ln in view.metrics:
        row = {"round": ln["round"] + 1}
        for key in ("payload_bytes", "bytes_sent", "bytes_received"):
            v = _finite(ln.get(key))
            if v is not None:
                row[key] = v - prev.get(key, 0.0)
                prev[key] = v
        per_round.append(row)
    out = {"peers": peers, "rounds": rounds, "tuned_parameters": d,
           "payload_bytes": view.get("payload_bytes", 0), "bytes_sent": view.get("bytes_sent"),
           "bytes_received": view.get("bytes_received"), "per_round": per_round}
    if view.kind == "simulation":  # the payload every peer's records put on the wire, whole swarm
        out["payload_per_peer_per_round"] = out["payload_bytes"] / max(1, peers * rounds) if rounds else None
    else:
        out["payload_per_peer_per_round"] = None
        own = sum(1 for ln in view.metrics if not ln.get("final"))
        if own and out["bytes_sent"] is not None:
            out["sent_per_round"] = out["bytes_sent"] / own
    dp_step = 2 * (peers - 1) / peers * FLOAT_BYTES * d if peers > 1 else FLOAT_BYTES * d
    out["data_parallel_per_peer_per_round"] = dp_step
    out["fedavg_per_peer_per_round"] = FLOAT_BYTES * d
    out["data_parallel_total"] = dp_step * peers * rounds
    out["fedavg_total"] = 2 * FLOAT_BYTES * d * peers * rounds
    return out


def swarm_table(views: list[RunView], now: float | None = None) -> dict[str, Any]:
    """Each peer's round, last seen, pace, intake and (set digest, state hash); whether every peer
    that holds the same set digest holds the same state hash."""
    now = time.time() if now is None else now
    rows = []
    for v in views:
        s = v.summary or {}
        rate = None
        lines = [ln for ln in v.metrics if not ln.get("final") and _finite(ln.get("seconds")) is not None]
        if len(lines) >= 2 and lines[-1]["seconds"] > lines[0]["seconds"]:
            rate = (len(lines) - 1) / (lines[-1]["seconds"] - lines[0]["seconds"])
        elif s.get("seconds"):
            done = s.get("rounds_completed", s.get("rounds"))
            rate = done / s["seconds"] if done else None
        rows.append({
            "name": v.name, "kind": v.kind, "peer_id": s.get("peer_id"),
            "round": s.get("round", s.get("rounds")), "rounds_completed": s.get("rounds_completed", s.get("rounds")),
            "last_seen_seconds": round(now - v.modified, 1) if v.modified else None,
            "rounds_per_second": rate, "records_accepted": s.get("records_accepted", s.get("records")),
            "records_rejected": s.get("records_rejected", 0), "rejections": s.get("rejections", {}),
            "flagged_peers": s.get("flagged_peers", []), "set_digest": s.get("set_digest"),
            "state_hash": s.get("state_hash"), "done": s.get("done", s.get("eval_after") is not None),
            "problems": v.problems})
    groups: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r["set_digest"] and r["state_hash"]:
            groups[r["set_digest"]].add(r["state_hash"])
    for r in rows:
        r["consistent"] = None if not r["set_digest"] else len(groups[r["set_digest"]]) == 1
    return {"rows": rows, "consistent": all(len(h) == 1 for h in groups.values()) if groups else None,
            "digests": len(groups)}


def privacy_rows(views: list[RunView]) -> list[dict[str, Any]]:
    """ε spent against the budget, per peer (a simulation: each virtual peer's)."""
    out = []
    for v in views:
        dp = (v.summary or {}).get("dp")
        if not isinstance(dp, dict):
            spent = next((ln["dp_epsilon_spent"] for ln in reversed(v.metrics) if "dp_epsilon_spent" in ln), None)
            out.append({"name": v.name, "private": spent is not None, "epsilon_spent": spent})
            continue
        per_peer = (v.summary or {}).get("dp_epsilon_per_peer")
        names = [f"{v.name} peer {i}" for i in range(len(per_peer))] if per_peer else [v.name]
        for name, spent in zip(names, per_peer or [dp.get("epsilon_spent")], strict=True):
            out.append({"name": name, "private": True, "epsilon_spent": spent,
                        **{k: dp.get(k) for k in ("epsilon_target", "delta", "steps", "planned_steps")}})
    return out


def defences(view: RunView, privacy: list[dict[str, Any]] | None = None) -> str:
    """One sentence: which of the defaults that guard against imbalanced labels, hostile insiders and
    leaks ``view``'s run used (``privacy``: its rows of ``privacy_rows``, read when None), and where
    what each costs was measured."""
    spec = (view.run or {}).get("spec", {})
    train = spec.get("train", {})
    balance = train.get("balance", "none")
    drawn = {"classes": "by class", "sqrt": "by class, in proportion to the root of its examples"}
    private = [p for p in (privacy_rows([view]) if privacy is None else privacy) if p["private"]]
    spent = ", ".join(f"ε = {p['epsilon_spent']:.2f}" for p in private if p["epsilon_spent"] is not None)
    pinned = train.get("reference_examples", 0)
    weighting = "examples" if pinned else train.get("weighting", "equal")  # run.json before weighting had a name
    weighed = {"examples": "by their examples" + (f" (a site of {pinned} counting once)" if pinned else ""),
               "equal": "equally"}
    parts = [f"batches drawn {drawn.get(balance, 'uniformly')} (balance = {balance})",
             f"sites weighted {weighed.get(weighting, weighting)} (weighting = {weighting})",
             f"records combined by {train.get('aggregate', 'sum')}",
             f"authorship by {'site keys (Ed25519)' if spec.get('keys') else 'the swarm secret (HMAC)'}",
             "differential privacy: " + (spent or ("on" if private else "off"))]
    return ("Defences: " + "; ".join(parts) + " (what each costs: BENCHMARKS.md: Imbalanced labels, Label skew, "
            "Hostile insiders, Accuracy against the privacy budget).")


def state(views: list[RunView]) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON."""
    runs = []
    for v in views:
        s = v.summary or {}
        runs.append({"name": v.name, "path": str(v.path), "kind": v.kind, "run_tag": v.run_tag,
                     "model": s.get("model") or (v.run or {}).get("spec", {}).get("model"),
                     "task": s.get("task") or (v.run or {}).get("spec", {}).get("task"),
                     "problems": v.problems, "summary": v.summary, "learning": learning_curve(v),
                     "traffic": traffic(v), "defences": defences(v)})
    return {"generated": time.time(), "runs": runs, "swarm": swarm_table(views), "privacy": privacy_rows(views)}
