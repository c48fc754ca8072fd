"""A real causal LM on real sentences: SmolLM2-135M-Instruct on the labelled tweets (3 classes).

    python -m bench.experiments.llm [--quick] [--rounds 60] [--out bench/results/llm.json]
    python -m bench.experiments.llm --task reviews.tsv --text-column review --label-column rating \
        --eval-file reviews-test.tsv --template "Review: {review}\nSentiment:" --out bench/results/llm_tsv.json
    python -m bench.experiments.llm --tsv DIR ...   # the tweets written as two TSV files, read back as a site's own

Three conditions on the same model, data, prompt and held-out sample (`--eval-size` tweets drawn
with a fixed seed from the fixed test split; accuracy, balanced accuracy and macro-F1):
  * zero-shot (the untouched model, chat prompt, label = likeliest of negative/neutral/positive);
  * onebyte: `onebyte simulate` with 4 peers (iid shards), the configuration below;
  * first-order Adam with backprop on all weights, same batches' size, for `--adam-steps` steps.
Wall-clock is this machine's, everything in one process, peers measured one after another
(`swarm_seconds` is what 4 real machines would need: each round costs its slowest peer).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.output import RESULTS, save_result
from bench.sections import Claim, Results, Section, Step
from bench.sweep import adam, simulate

TEMPLATE = "Tweet: {text}\nIs the sentiment of this tweet negative, neutral or positive?"
FULL = {"rounds": 60, "eval_size": 300, "eval_every": 20, "adam_steps": 60}
QUICK = {"rounds": 1, "eval_size": 8, "eval_every": 1, "adam_steps": 1}


def spec(a: argparse.Namespace):
    import onebyte
    from onebyte.codec import Codec
    from onebyte.config import Directions, Estimator, Scalar, Schedule, Step

    return onebyte.RunSpec(run_id="llm-bench", model=a.model, task=a.task, labels=tuple(a.labels.split(",")),
                           template=a.template, chat=a.chat, text_column=a.text_column,
                           label_column=a.label_column, eval_file=a.eval_file,
                           train=onebyte.TrainConfig(tune=a.tune, lr=a.lr, eps=a.eps, samples=a.samples,
                                                     batch_size=a.batch_size, max_length=a.max_length,
                                                     estimator=Estimator(a.estimator),
                                                     lr_schedule=Schedule(a.lr_schedule), warmup=a.warmup,
                                                     horizon=a.horizon or 0, final_ratio=a.final_ratio,
                                                     scalar=Scalar(a.scalar), step=Step(a.step),
                                                     codec=Codec.parse(a.codec),
                                                     directions=Directions(a.directions), seed_pool=a.seed_pool))


def write_tsv(folder: Path) -> tuple[Path, Path]:
    """The tweets task's fixed train and test splits as a site would have them: two tab-separated
    files with their own column names (``tweet``, ``mood``), written by pyarrow (quoting as needed)."""
    import pyarrow as pa
    import pyarrow.csv as pc

    from onebyte.tasks.data import load_dataset

    ds = load_dataset("tweets", label_names=["negative", "neutral", "positive"])
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in (("train", ds.train), ("test", ds.test)):
        table = pa.table({"tweet": [e.text for e in rows], "mood": [ds.label_names[e.label] for e in rows]})
        paths.append(folder / f"tweets-{name}.tsv")
        pc.write_csv(table, paths[-1], pc.WriteOptions(delimiter="\t"))
    return paths[0], paths[1]


def run_onebyte(a: argparse.Namespace, p: dict) -> dict:
    out = simulate(spec(a), peers=a.peers, rounds=p["rounds"], eval_every=p["eval_every"], eval_size=p["eval_size"])
    s = out.pop("summary")
    return {"before": s["eval_before"], "after": s["eval_after"], "tuned_parameters": s["tuned_parameters"], **out}


def run_adam(a: argparse.Namespace, p: dict) -> dict:
    import numpy as np
    import torch

    from onebyte.tasks.data import eval_subset
    from onebyte.training import Setup

    setup = Setup.build(spec(a).with_overrides(tune="all"))
    model, obj = setup.loaded.model, setup.objective
    if a.adam_tune == "all":
        params = list(model.parameters())
    else:  # the tuned set onebyte tunes (norm): Adam on the same weights as grad
        from onebyte.params import TuneSpec, select_parameters

        params = [p_ for _, p_ in select_parameters(model, TuneSpec.parse(a.adam_tune))]
    test = eval_subset(setup.dataset.test, p["eval_size"])
    seconds, curve = 0.0, []
    # the model stays in the mode Setup.build leaves it in (no train mode, as before)
    for n, seconds in adam(model, params, obj, setup.dataset.train, np.random.default_rng(0), lr=a.adam_lr,
                           batch_size=a.batch_size, steps=p["adam_steps"], dropout=False):
        if a.adam_eval_every and n % a.adam_eval_every == 0 and n < p["adam_steps"]:
            with torch.no_grad():
                curve.append({"step": n, "seconds": round(seconds, 1), **obj.evaluate(test)})
    with torch.no_grad():
        after = obj.evaluate(test)
    curve.append({"step": p["adam_steps"], "seconds": round(seconds, 1), **after})
    return {"after": after, "seconds": round(seconds, 1), "steps": p["adam_steps"], "tune": a.adam_tune,
            "forward_backward_passes": p["adam_steps"], "curve": curve}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--task", default="tweets")
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--tune", default="norm")
    ap.add_argument("--lr", type=float, default=7e-5)
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--adam-lr", type=float, default=1e-5)
    ap.add_argument("--adam-steps", type=int)
    ap.add_argument("--adam-tune", default="all", help="what Adam tunes: all, or the run's tuned set (e.g. norm)")
    ap.add_argument("--adam-eval-every", type=int, default=0, help="evaluate Adam every this many steps too")
    ap.add_argument("--eval-size", type=int)
    ap.add_argument("--eval-every", type=int)
    ap.add_argument("--skip-adam", action="store_true")
    ap.add_argument("--adam-only", action="store_true",
                    help="only the first-order Adam baseline (with --tsv: --out bench/results/llm_tsv_adam.json)")
    ap.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True,
                    help="wrap prompts in the model's chat template")
    ap.add_argument("--estimator", default="fzoo", choices=["spsa", "fzoo", "centered", "grad", "jvp"])
    ap.add_argument("--scalar", default="auto", choices=["auto", "derivative", "normalised"])
    ap.add_argument("--codec", default="byte", choices=["byte", "sign", "float32"])
    ap.add_argument("--step", default="scalar", choices=["scalar", "mean"])
    ap.add_argument("--directions", default="distinct", choices=["distinct", "shared"])
    ap.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"])
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--horizon", type=int, default=0, help="cosine horizon [the rounds]")
    ap.add_argument("--final-ratio", type=float, default=0.1)
    ap.add_argument("--seed-pool", type=int, default=0, help="a finite pool of P directions (0: none)")
    ap.add_argument("--labels", default="negative,neutral,positive")
    ap.add_argument("--template", default=TEMPLATE)
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--eval-file")
    ap.add_argument("--tsv", type=Path, help="write the tweets as DIR/tweets-{train,test}.tsv and train on those files")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "llm.json")
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    p = dict(QUICK if a.quick else FULL)
    p.update({k: v for k, v in (("rounds", a.rounds), ("adam_steps", a.adam_steps), ("eval_size", a.eval_size),
                                ("eval_every", a.eval_every)) if v is not None})
    if a.tsv:
        train_file, test_file = write_tsv(a.tsv)
        a.task, a.eval_file, a.text_column, a.label_column = str(train_file), str(test_file), "tweet", "mood"
        a.template = a.template.replace("{text}", "{tweet}")
    if a.lr_schedule == "cosine" and not a.horizon:
        a.horizon = p["rounds"]
    keys = ["model", "task", "peers", "tune", "lr", "eps", "samples", "batch_size", "max_length", "adam_lr",
            "estimator", "scalar", "step", "directions", "codec", "lr_schedule", "warmup", "horizon", "final_ratio", "labels"]
    keys += [k for k in ("text_column", "label_column", "eval_file", "seed_pool") if getattr(a, k) != ap.get_default(k)]
    result = {"config": {k: getattr(a, k) for k in keys}, "template": a.template, "chat": a.chat,
              "prompt_applied": True, **p}
    if not a.adam_only:
        result["onebyte"] = run_onebyte(a, p)
    if not a.skip_adam:
        result["adam"] = run_adam(a, p)
    from_tsv = ("task", "text_column", "label_column", "eval_file")  # --tsv sets these, and the template
    args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in result["config"].items()
                    if not (a.tsv and k in from_tsv))
    if a.tsv:
        args += f" --tsv {a.tsv}"
    elif a.template != TEMPLATE:
        args += " --template " + json.dumps(a.template)
    if a.skip_adam:
        args += " --skip-adam"
    if a.adam_only:
        args += " --adam-only"
    if a.adam_tune != "all":
        args += f" --adam-tune {a.adam_tune}"
    if a.adam_eval_every:
        args += f" --adam-eval-every {a.adam_eval_every}"
    save_result(result, a.out, f"python -m bench.experiments.llm {'--quick ' if a.quick else ''}"
                f"--rounds {p['rounds']} --adam-steps {p['adam_steps']} --eval-size {p['eval_size']} "
                f"--eval-every {p['eval_every']} {args}", "2-core CPU, no GPU")


def _row(name: str, ev: dict, extra: str) -> str:
    return (f"| {name} | {ev['accuracy']:.3f} | {ev.get('balanced_accuracy', float('nan')):.3f} | "
            f"{ev.get('macro_f1', float('nan')):.3f} | {extra} |")


#: The result files of this section: the FZOO run (`--out bench/results/llm_fzoo.json`), the earlier
#: two-point SPSA run with its Adam baseline (`llm.json`), and the run on TSV files (`--tsv`).
RUNS = (("llm_fzoo", "A real causal LM on real sentences"), ("llm", "The same with two-point SPSA (the earlier run)"),
        ("llm_tsv", "The same on a local TSV file"))
#: Which result holds the Adam baseline of each run that has none of its own (same model, data,
#: prompt and held-out sample): the TSV run's was measured alone (``--tsv DIR --adam-only``).
ADAM_OF = {"llm_fzoo": "llm", "llm_tsv": "llm_tsv_adam"}


def render(results: Results) -> list[str]:
    return [line for key, title in RUNS
            for line in _render(results.get(key), title, (results.get(ADAM_OF.get(key, "")) or {}).get("adam"))]


def _prompt(r: dict) -> str:
    """How the onebyte run put examples to the model. Runs made before 2026-11-26 22:00 went through
    a simulator that dropped the run's template, chat setting and columns: they used the default
    prompt, whatever their command line says (their Adam baseline, built directly, did not)."""
    if r.get("prompt_applied") or "text_column" in r["config"]:  # a file with its own columns needed the fix
        return f"{'chat template' if r['chat'] else 'no chat template'}, prompt `{r['template']!r}`"
    return ("**default prompt** (the text, then `\\nsentiment:`; no chat template): this run predates a fix, the "
            f"simulator then dropped the template `{r['template']!r}` and chat setting its command names (an Adam "
            "baseline built beside it did use them)")


def _render(r: dict | None, title: str, adam: dict | None = None) -> list[str]:
    """One run's table; ``adam`` is the Adam baseline measured with another run on the same model,
    data and held-out sample, shown when this run has none of its own."""
    if not r:
        return []
    ob, c = r["onebyte"], r["config"]
    schedule = (f"cosine over {c['horizon']} rounds to {c['final_ratio']}×" if c.get("lr_schedule") == "cosine"
                else "constant") + (f" after {c['warmup']} warm-up rounds" if c.get("warmup") else "")
    out = [f"## {title} ({c['model']} on {c['task']})", "",
           f"`{r['command']}` ({r['date']}, {r['machine']}). {c['peers']} peers, estimator "
           f"`{c.get('estimator', 'spsa')}`, tune `{c['tune']}` "
           f"({ob['tuned_parameters']:,} scalars), lr {c['lr']} ({schedule}), ε {c['eps']}, K = {c['samples']}, batch "
           f"{c['batch_size']}, max length {c['max_length']}, {_prompt(r)}; "
           f"held-out: {r['eval_size']} examples (fixed-seed sample) of "
           f"{'`' + c['eval_file'] + '`' if c.get('eval_file') else 'the fixed test split'}.", "",
           "| condition | accuracy | balanced accuracy | macro-F1 | cost |", "|---|---|---|---|---|",
           _row("zero-shot", ob["before"], "—"),
           _row(f"onebyte, {c['peers']} peers, {r['rounds']} rounds", ob["after"],
                f"{ob['forward_passes']} forward passes, {ob['seconds'] / 60:.1f} min here "
                f"({ob['swarm_seconds'] / 60:.1f} min as a swarm), {ob['payload_bytes']} gradient bytes")]
    ad = r.get("adam") or adam
    if ad:
        out.append(_row(f"Adam, all weights, {ad['steps']} steps", ad["after"],
                        f"{ad['steps']} forward+backward passes, {ad['seconds'] / 60:.1f} min"
                        + ("" if "adam" in r else " (measured in a separate run: same model, data, prompt and "
                           "held-out sample)")))
    out += ["", "Held-out curve of the onebyte run:", "", "| round | forward passes | minutes | accuracy | macro-F1 |",
            "|---|---|---|---|---|"]
    out += [f"| {pt['round']} | {pt['forward_passes']} | {pt['seconds'] / 60:.1f} | {pt['accuracy']:.3f} | "
            f"{pt['macro_f1']:.3f} |" for pt in ob["curve"]]
    return out + [""]


def claims(results: Results) -> list[Claim]:
    out = []
    for key, _ in RUNS:
        r = results.get(key)
        if not r:
            continue
        ob, c = r["onebyte"], r["config"]
        # the last evaluation within 30 minutes of training (the whole run's end if it was shorter)
        inside = [pt for pt in ob["curve"] if pt["seconds"] <= 1800]
        at = inside[-1] if inside else None
        if at is None:
            out.append((f"{c['model']} on {Path(c['task']).name} ({c.get('estimator', 'spsa')}): accuracy over "
                        "zero-shot within 30 min", "no evaluation within 30 min", "≥ +5 points, ≤ 30 min", False))
            continue
        gain = 100 * (at["accuracy"] - ob["before"]["accuracy"])
        f1 = 100 * (at["macro_f1"] - ob["before"]["macro_f1"])
        out.append((f"{c['model']} on {Path(c['task']).name} ({c.get('estimator', 'spsa')}): accuracy over zero-shot "
                    "within 30 min", f"{gain:+.1f} points ({f1:+.1f} macro-F1) at round {at['round']}, "
                    f"{at['seconds'] / 60:.1f} min", "≥ +5 points, ≤ 30 min", gain >= 5))
    return out


SECTION = Section("llm", "bench.experiments.llm", render,
                  steps=(Step("llm", ("--out", "{out}/llm.json"), ("--quick", "--peers", "2", "--batch-size", "2", "--out", "{out}/llm.json")),),
                  claims=claims)


if __name__ == "__main__":
    main()
