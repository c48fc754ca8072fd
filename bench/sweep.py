"""The sweep runner the learning-curve experiments share: conditions × seeds in a pool of worker
processes, resumable from the result file, summarised as mean ± std over seeds, and plotted.

* ``sweep``: each task in a spawned, single-threaded worker (torch's threads would fight over the
  cores), results as they finish; ``guarded`` turns a run that raises into a result with ``error``.
* ``earlier_runs``: the finished runs of an earlier result file that a plan asks for again.
* ``simulate``: one ``onebyte.simulate`` run in a scratch folder, as a learning curve (``point``s).
* ``mean_std``, ``stat``, ``pm``, ``interp``, ``mean_curve``, ``reach``: the summaries over seeds.
* ``adam``, ``adam_curve``: first-order Adam with backprop, the upper bound every quality section
  shows.
* ``figure``: one Matplotlib figure written to a file (no display).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def machine() -> str:
    """How a result names the machine it ran on."""
    return f"{platform.machine()}, {mp.cpu_count()} cores"


# --------------------------------------------------------------------------- the pool


def single_threaded() -> None:
    """A worker's initializer: one torch thread, so that ``workers`` runs share the cores evenly."""
    import torch

    torch.set_num_threads(1)


def sweep(fn: Callable[[Any], dict], tasks: Iterable, workers: int, *, fresh: bool = False) -> Iterator[dict]:
    """``fn(task)`` for every task in ``workers`` spawned single-threaded processes, yielded as each
    finishes. ``fresh``: a new process per task (nothing a run loads outlives it)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=single_threaded, maxtasksperchild=1 if fresh else None) as pool:
        yield from pool.imap_unordered(fn, list(tasks))


def guarded(fn: Callable[[dict], dict], task: dict) -> dict:
    """``fn(task)`` with its key and seconds; a run that raises (a setting that diverges or breaks
    the update cap) is a result with ``error``, not a crash of the sweep."""
    t = time.perf_counter()
    try:
        out = fn(task)
    except Exception as exc:
        out = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
    return {"key": task["key"], **out, "task_seconds": round(time.perf_counter() - t, 1)}


# --------------------------------------------------------------------------- resuming


def plan_key(task: dict) -> str:
    """A run's key from its task, the settings read back through ``TrainConfig``: settings added
    since the run was made then match at their old value."""
    from onebyte.config import TrainConfig

    if task.get("train") is not None:
        task = {**task, "train": TrainConfig.from_dict(task["train"]).to_dict()}
    return json.dumps(task, sort_keys=True)


def finished_runs(path: Path) -> list[dict]:
    """The runs of an earlier result file that finished (errors run again)."""
    try:
        runs = json.loads(path.read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return []
    return [run for run in runs if "error" not in run and "curve" in run]


def earlier_runs(path: Path, wanted: set[str], task_of: Callable[[dict], dict | None],
                 drop: tuple[str, ...] = ()) -> dict[str, dict]:
    """The finished runs of an earlier result file that this plan needs again, by their plan key:
    ``task_of(run)`` is the task a run was made from (None: unknown), ``drop`` the fields not kept."""
    out = {}
    for run in finished_runs(path):
        task = task_of(run)
        key = None if task is None else plan_key(task)
        if key in wanted:
            out[key] = {**{k: v for k, v in run.items() if k not in drop}, "key": key}
    return out


# --------------------------------------------------------------------------- summaries


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def stat(xs: list[float | None]) -> dict | None:
    """``{"mean", "std"}`` over seeds; None when a value is missing."""
    if not xs or any(x is None for x in xs):
        return None
    mean, std = mean_std(xs)
    return {"mean": mean, "std": std}


def pm(s: dict | None) -> str:
    """A ``stat`` in percent: ``87.2 ± 0.4`` (``—`` when missing)."""
    return "—" if s is None else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"


def point(line: dict, ev: dict) -> dict:
    """One point of a learning curve from a simulator round line (``{}``: before training) and its evaluation."""
    return {"round": line.get("round", -1) + 1, "forward_passes": line.get("forward_passes", 0),
            "seconds": line.get("seconds", 0.0), "swarm_seconds": line.get("swarm_seconds", 0.0),
            "payload_bytes": line.get("payload_bytes", 0),
            **{k: ev[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "loss")}}


def simulate(spec, **sim) -> dict:
    """``onebyte.simulate(spec, **sim)`` in a scratch folder: its learning curve (before training and
    at every evaluation), ``summary`` and the summary's totals."""
    import onebyte

    lines: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="onebyte-bench-") as tmp:
        s = onebyte.simulate(spec, out=Path(tmp) / "run", **sim,
                             on_round=lambda line: lines.append(line) if "eval" in line else None).summary
    return {"curve": [point({}, s["eval_before"])] + [point(line, line["eval"]) for line in lines], "summary": s,
            **{k: s[k] for k in ("seconds", "swarm_seconds", "forward_passes", "payload_bytes")}}


def interp(curve: list[dict], x: float, key: str) -> float | None:
    """``key`` at ``x`` forward passes, linear between evaluations (None past the last one)."""
    for a, b in zip(curve, curve[1:], strict=False):
        if a["forward_passes"] <= x <= b["forward_passes"]:
            span = b["forward_passes"] - a["forward_passes"]
            w = (x - a["forward_passes"]) / span if span else 1.0
            return a[key] + w * (b[key] - a[key])
    return None


def mean_curve(runs: list[dict]) -> list[dict]:
    """Mean and std over seeds at each evaluation (seeds of one condition evaluate at the same rounds)."""
    n = min(len(r["curve"]) for r in runs)
    out = []
    for i in range(n):
        pts = [r["curve"][i] for r in runs]
        row = {"round": pts[0]["round"], "forward_passes": statistics.fmean(p["forward_passes"] for p in pts)}
        for k in ("accuracy", "macro_f1", "balanced_accuracy"):
            row[k], row[k + "_std"] = mean_std([p[k] for p in pts])
        out.append(row)
    return out


def condition_summary(name: str, runs: list[dict], xs: list[float]) -> dict:
    """One condition's runs over the seeds done, mean ± std: at each of ``xs`` forward passes
    (interpolated), at the end, and its mean curve; a run that failed makes the row an ``error``."""
    errors = [r["error"] for r in runs if "error" in r]
    if errors or not runs:
        return {"name": name, "error": errors[0] if errors else "no runs yet"}
    final = [r["curve"][-1] for r in runs]
    return {"name": name, "seeds": len(runs), "forward_passes": final[0]["forward_passes"],
            "at": [{k: stat([interp(r["curve"], x, k) for r in runs]) for k in ("accuracy", "macro_f1")} for x in xs],
            "final": {k: stat([f[k] for f in final]) for k in ("accuracy", "macro_f1", "balanced_accuracy")},
            "per_seed": [f["accuracy"] for f in final], "mean_curve": mean_curve(runs),
            "seconds_mean": statistics.fmean(r["seconds"] for r in runs)}


def reach(curve: list[dict], target: float) -> dict | None:
    """The first point at or above ``target`` accuracy: its forward passes and round."""
    hit = next((pt for pt in curve if pt["accuracy"] >= target), None)
    return None if hit is None else {"forward_passes": hit["forward_passes"], "round": hit["round"]}


# --------------------------------------------------------------------------- the first-order baseline


def adam(model, params: list, objective, examples: list, rng, *, lr: float, batch_size: int, steps: int,
               dropout: bool = True) -> Iterator[tuple[int, float]]:
    """First-order Adam with backprop on ``params`` (the rest of ``model`` frozen), batches drawn by
    ``rng`` without replacement: yields (steps done, training seconds) after every step. ``dropout``:
    the model trains in train mode and is back in eval mode after each step."""
    import torch

    model.requires_grad_(False)
    for prm in params:
        prm.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    seconds = 0.0
    for step in range(steps):
        t = time.perf_counter()
        if dropout:
            model.train()
        idx = rng.choice(len(examples), size=batch_size, replace=False)
        opt.zero_grad()
        objective.logits_and_loss([examples[i] for i in idx])[1].backward()
        opt.step()
        if dropout:
            model.eval()
        seconds += time.perf_counter() - t
        yield step + 1, seconds


def adam_curve(model, params: list, objective, examples: list, test: list, *, seed: int, lr: float, batch_size: int,
               steps: int, every: int, dropout: bool = True) -> dict:
    """``adam`` seeded by ``seed`` (torch and the batches) as a learning curve on ``test``: evaluated
    before the first step, every ``every`` steps and after the last (a step counts one forward pass)."""
    import numpy as np
    import torch

    def at(n: int, seconds: float) -> dict:
        with torch.no_grad():
            ev = objective.evaluate(test)
        s = round(seconds, 3)
        return point({"round": n - 1, "forward_passes": n, "seconds": s, "swarm_seconds": s} if n else {}, ev)

    torch.manual_seed(seed)
    curve, seconds = [at(0, 0.0)], 0.0
    for n, seconds in adam(model, params, objective, examples, np.random.default_rng(seed), lr=lr,
                           batch_size=batch_size, steps=steps, dropout=dropout):
        if n % every == 0 or n == steps:
            curve.append(at(n, seconds))
    return {"curve": curve, "seconds": round(seconds, 1), "forward_passes": steps}


# --------------------------------------------------------------------------- plots


@contextmanager
def figure(path: Path, *, size: tuple[float, float] = (8, 5), dpi: int = 90, rows: int = 0, cols: int = 0,
           **subplots):
    """An Agg figure written to ``path`` on exit: yields (figure, axes); ``rows``/``cols`` give a grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(rows, cols, figsize=size, **subplots) if rows else plt.subplots(figsize=size)
    try:
        yield fig, ax
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def plot_mean_curves(ax, rows: list[dict], dashed: dict | None = None) -> None:
    """Each row's ``mean_curve`` (accuracy against forward passes), shaded ± std over seeds; rows
    with an ``error`` are left out, ``dashed`` (the first-order baseline) is drawn dashed."""
    for row in rows:
        if "error" in row:
            continue
        mc = row["mean_curve"]
        xs, ys, sd = ([pt[k] for pt in mc] for k in ("forward_passes", "accuracy", "accuracy_std"))
        line, = ax.plot(xs, ys, marker=".", lw=1.2, label=row["name"], ls="--" if row is dashed else "-")
        ax.fill_between(xs, [y - s for y, s in zip(ys, sd, strict=True)], [y + s for y, s in zip(ys, sd, strict=True)],
                        color=line.get_color(), alpha=0.15, lw=0)


def plot_forward(path: Path, rows: list[dict], adam: dict, zero_shot: float | None, *, target: float | None = None,
                 title: str | None = None) -> str:
    """Accuracy against forward passes: each row's mean curve and Adam's (dashed), the zero-shot
    accuracy and ``target`` as lines; the figure's file name."""
    with figure(path) as (_, ax):
        plot_mean_curves(ax, [*rows, adam], dashed=adam)
        if zero_shot is not None:
            ax.axhline(zero_shot, ls=":", c="grey", lw=1, label="zero-shot")
        if target is not None:
            ax.axhline(target, ls="-.", c="black", lw=0.8, label=f"{100 * target:.1f} %")
        ax.set_xlabel("forward passes, all peers (Adam: steps, each one forward + one backward)")
        ax.set_ylabel("held-out accuracy (mean ± std over seeds)")
        if title:
            ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    return path.name

