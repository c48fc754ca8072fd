"""Imbalanced labels: a user's own 3-class file, 64 / 27 / 9 % of the examples per class.

    python -m bench.experiments.imbalance [--rounds 100] [--seeds 2] [--out bench/results/imbalance.json]

The file is drawn from the labelled tweets (neutral 64 %, negative 27 %, positive 9 %; a training
file and a separate evaluation file with the same mix), written as CSV and given to
``onebyte.simulate`` as a user would: every other setting at the library's defaults (MiniLM, 4
peers, grad). Side by side, per seed: batches drawn uniformly from each site's shard
(``balance = none``, the defaults before), by class (``classes``) and by class in proportion to
the root of its examples (``sqrt``, the default chosen from this), on iid shards and on
Dirichlet(0.3) label-skewed ones. Reported: accuracy, macro-F1, balanced accuracy and each
class's recall after, on the whole evaluation file (final, and the mean of the last five
evaluations, every 10 rounds, since one evaluation swings by points from one to the next).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import shutil
import time
from pathlib import Path
from statistics import fmean

from bench.output import RESULTS, WORK, save_result
from bench.sections import Claim, Results, Section, Step

MIX = {"neutral": 0.64, "negative": 0.27, "positive": 0.09}
TRAIN_ROWS, EVAL_ROWS = 2400, 600
SPLITS = ("iid", "dirichlet:0.3")
BALANCES = ("none", "classes", "sqrt")
#: The library's default (TrainConfig.balance), chosen from this measurement.
DEFAULT = "sqrt"


def write_files(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """The imbalanced training and evaluation files (CSV, columns text and label)."""
    from onebyte.tasks.data import load_dataset

    tweets = load_dataset("tweets")
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pool, rows in (("train", tweets.train, TRAIN_ROWS), ("eval", tweets.test, EVAL_ROWS)):
        by_label = {lab: [e.text for e in pool if tweets.label_names[e.label] == lab] for lab in MIX}
        picked = [(t, lab) for lab, share in MIX.items() for t in rng.sample(by_label[lab], round(rows * share))]
        rng.shuffle(picked)
        path = folder / f"reviews_{name}.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            w.writerows(picked)
        paths.append(path)
    return paths[0], paths[1]


def run_one(train_file: Path, eval_file: Path, balance: str, split: str, seed: int, rounds: int, out: Path) -> dict:
    import onebyte

    spec = onebyte.RunSpec(model="minilm", task=str(train_file), eval_file=str(eval_file),
                           train=onebyte.TrainConfig(balance=onebyte.Balance(balance)))
    t0 = time.perf_counter()
    res = onebyte.simulate(spec, out=out, rounds=rounds, split=split, seed=seed, eval_every=10)
    s = res.summary
    return {"balance": balance, "split": split, "seed": seed, "before": s["eval_before"], "after": s["eval_after"],
            "seconds": round(time.perf_counter() - t0, 1)}


def last_evaluations(metrics: Path, n: int = 5) -> dict[str, float]:
    """The mean accuracy, macro-F1 and balanced accuracy of a run's last ``n`` evaluations."""
    evals = [line["eval"] for line in map(json.loads, metrics.read_text().splitlines()) if "eval" in line][-n:]
    return {k: fmean([e[k] for e in evals]) for k in ("accuracy", "macro_f1", "balanced_accuracy")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--splits", default=",".join(SPLITS))
    ap.add_argument("--out", type=Path, default=RESULTS / "imbalance.json")
    a = ap.parse_args()
    work = WORK / "imbalance"
    train_file, eval_file = write_files(work)
    runs = []
    for split in a.splits.split(","):
        for seed in range(a.seeds):
            for balance in BALANCES:
                out = work / f"{split.replace(':', '')}-{balance}-{seed}-{a.rounds}"
                done = out / "imbalance.json"  # a finished run is kept: a rerun with more seeds resumes
                if done.exists():
                    r = json.loads(done.read_text())
                else:
                    shutil.rmtree(out, ignore_errors=True)
                    r = run_one(train_file, eval_file, balance, split, seed, a.rounds, out)
                if "last5" not in r:
                    r["last5"] = last_evaluations(out / "metrics.jsonl")
                done.write_text(json.dumps(r))
                runs.append(r)
                print(split, seed, balance, {k: round(r["after"][k], 3) for k in ("accuracy", "macro_f1")},
                      r["after"]["recall"], flush=True)
    save_result({"mix": MIX, "train_rows": TRAIN_ROWS, "eval_rows": EVAL_ROWS, "rounds": a.rounds,
                 "seeds": a.seeds, "runs": runs}, a.out,
                f"python -m bench.experiments.imbalance --rounds {a.rounds} --seeds {a.seeds} --splits {a.splits}",
                f"{platform.machine()}, CPU")


def _table(r: dict) -> dict[tuple[str, str], dict[str, float]]:
    """(split, balance) -> the mean over seeds of each metric after, and of each class's recall."""
    out = {}
    for split in dict.fromkeys(x["split"] for x in r["runs"]):
        for balance in BALANCES:
            runs = [x for x in r["runs"] if x["split"] == split and x["balance"] == balance]
            if not runs:
                continue
            row = {k: fmean([x["after"][k] for x in runs]) for k in ("accuracy", "macro_f1", "balanced_accuracy")}
            row |= {f"recall {c}": fmean([x["after"]["recall"][c] for x in runs]) for c in runs[0]["after"]["recall"]}
            row["before macro_f1"] = runs[0]["before"]["macro_f1"]
            row["before accuracy"] = runs[0]["before"]["accuracy"]
            row["seconds"] = fmean([x["seconds"] for x in runs])
            row |= {f"last5 {k}": fmean([x["last5"][k] for x in runs]) for k in ("accuracy", "macro_f1",
                                                                                 "balanced_accuracy")}
            out[(split, balance)] = row
    return out


def render(results: Results) -> list[str]:
    r = results.get("imbalance")
    if not r:
        return []
    t = _table(r)
    classes = [k.removeprefix("recall ") for k in next(iter(t.values())) if k.startswith("recall ")]
    rare = min(r["mix"], key=r["mix"].get)
    before = next(iter(t.values()))
    mix = ", ".join(f"{lab} {share:.0%}" for lab, share in r["mix"].items())
    lines = ["## Imbalanced labels: a user's own file", "",
             f"A 3-class file drawn from the labelled tweets ({mix}; {r['train_rows']:,} training rows, a separate "
             f"evaluation file of {r['eval_rows']} rows with the same mix), given to `onebyte.simulate` with every "
             f"other setting at its default (MiniLM, 4 peers, grad), {r['rounds']} rounds, mean of {r['seeds']} "
             f"seed(s). Zero-shot: accuracy {before['before accuracy']:.1%}, macro-F1 {before['before macro_f1']:.1%}. "
             f"`{r['command']}` ({r['date']}).", "",
             "| shards | batches | accuracy | macro-F1 | balanced accuracy | "
             + " | ".join(f"recall {c}" for c in classes) + " | last five evaluations: accuracy, macro-F1, "
             "balanced accuracy |",
             "|---|---|---|---|---|" + "---|" * len(classes) + "---|",
             "| | zero-shot | " + f"{before['before accuracy']:.1%} | {before['before macro_f1']:.1%} | | "
             + " | ".join(f"{r['runs'][0]['before']['recall'][c]:.1%}" for c in classes) + " | |"]
    for (split, balance), row in t.items():
        lines.append(f"| {split} | {balance} | {row['accuracy']:.1%} | {row['macro_f1']:.1%} | "
                     f"{row['balanced_accuracy']:.1%} | " + " | ".join(f"{row[f'recall {c}']:.1%}" for c in classes)
                     + f" | {row['last5 accuracy']:.1%}, {row['last5 macro_f1']:.1%}, "
                       f"{row['last5 balanced_accuracy']:.1%} |")
    return lines + ["", "`none` draws a batch uniformly from the site's shard; `classes` draws a class uniformly "
                    "among those the shard holds, then an example of it; `sqrt` (the default) draws a class in "
                    "proportion to the square root of its examples (64/27/9 % becomes 49/32/18 %). `classes` "
                    "over-corrects: the rare classes' recall rises, but the majority's falls further and on "
                    "label-skewed shards (a site with a handful of one class draws them a third of the time) "
                    "accuracy and macro-F1 drop. `sqrt` against `none`, macro-F1 at the end and over the last five "
                    "evaluations: " + "; ".join(
                        f"{split} {100 * (t[(split, 'sqrt')]['macro_f1'] - t[(split, 'none')]['macro_f1']):+.1f} and "
                        f"{100 * (t[(split, 'sqrt')]['last5 macro_f1'] - t[(split, 'none')]['last5 macro_f1']):+.1f} "
                        "points" for split in dict.fromkeys(sp for sp, _ in t)
                        if (split, "sqrt") in t and (split, "none") in t)
                    + f" ({r['seeds']} seed(s)); recall of the rarest class ({rare}, zero-shot "
                    f"{r['runs'][0]['before']['recall'][rare]:.1%}): " + "; ".join(
                        f"{split}: {balance} {row[f'recall {rare}']:.1%}" for (split, balance), row in t.items()
                        if balance in ("none", "sqrt")) + ".", ""]


def claims(results: Results) -> list[Claim]:
    r = results.get("imbalance")
    if not r:
        return []
    t = _table(r)
    out = []
    for split in dict.fromkeys(s for s, _ in t):
        if (split, DEFAULT) not in t:
            continue
        c = t[(split, DEFAULT)]
        gain, acc = c["macro_f1"] - c["before macro_f1"], c["accuracy"] - c["before accuracy"]
        out.append((f"imbalanced 64/27/9 file, defaults (balance = {DEFAULT}), {split} shards: macro-F1 after − "
                    "zero-shot, and accuracy after − zero-shot (points)", f"{100 * gain:+.1f}, {100 * acc:+.1f}",
                    "≥ +5, ≥ 0", gain >= 0.05 and acc >= 0))
    return out


def note(results: Results) -> str | None:
    r = results.get("imbalance")
    if not r:
        return None
    t = _table(r)
    rare = min(r["mix"], key=r["mix"].get)
    mix = "/".join(f"{100 * share:.0f}" for share in r["mix"].values())
    said = []
    for split in dict.fromkeys(sp for sp, _ in t):
        if (split, DEFAULT) in t and (split, "none") in t:
            d, n = t[(split, DEFAULT)], t[(split, "none")]
            said.append(f"on {split} shards macro-F1 {100 * d['macro_f1']:.1f} % ({100 * n['macro_f1']:.1f} with "
                        f"uniform batches), accuracy {100 * d['accuracy']:.1f} % ({100 * n['accuracy']:.1f}), recall of "
                        f"the rarest class {100 * d[f'recall {rare}']:.1f} % ({100 * n[f'recall {rare}']:.1f}): against "
                        f"uniform batches {100 * (d['accuracy'] - n['accuracy']):+.1f} points of accuracy and "
                        f"{100 * (d['macro_f1'] - n['macro_f1']):+.1f} of macro-F1 for "
                        f"{100 * (d[f'recall {rare}'] - n[f'recall {rare}']):+.1f} of the rarest class's recall")
    before = next(iter(t.values()))
    return (f"**Imbalanced labels: `balance = {DEFAULT}`.** A site draws each batch by class, in proportion to the "
            "square root of each class's examples in its own shard (nothing leaves the site; records stay "
            "order-free). `none` draws uniformly (the majority class then dominates every batch), `classes` draws "
            f"each class equally (it over-corrects on skewed shards). On a {mix} % file ({r['seeds']} seed(s), "
            f"{r['rounds']} rounds, 4 peers, zero-shot macro-F1 {100 * before['before macro_f1']:.1f} %, accuracy "
            f"{100 * before['before accuracy']:.1f} %): " + "; ".join(said) + ". It costs no time. "
            "[Imbalanced labels](benchmarks.md#imbalanced-labels-a-users-own-file)")


SECTION = Section("imbalance", "bench.experiments.imbalance", render,
                  (Step("imbalance", ("--out", "{out}/imbalance.json"),
                        ("--rounds", "2", "--seeds", "1", "--splits", "iid", "--out", "{out}/imbalance.json")),),
                  claims=claims, note=note)


if __name__ == "__main__":
    main()
