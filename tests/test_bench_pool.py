"""The seed-pool benchmark's report and claims, read from measured-looking numbers (no model, no run):
the download is claimed independent of history only when the bytes are equal and every join agreed,
and the accuracy claim compares each pool with unrestricted directions on the same seeds."""

import json

from bench.experiments import pool as bp
from bench.sections import Results

STAMP = {"command": "python -m bench.experiments.pool catchup", "date": "2026-12-06 16:00", "machine": "test"}


def _case(pool, k, rounds, received, agree=True):
    return {"pool": pool, "samples": k, "rounds_before": rounds, "records_before": 4 * rounds, "tuned": 26112,
            "step_groups": 1, "ledger_file_bytes": 1, "path": "coefficients", "coefficient_bytes": 4 * pool + 109,
            "tail_records": 32, "received_bytes": received, "sent_bytes": 4,
            "seconds_at_64kbit": round(received * 8 / bp.LINK_BPS, 2), "join_seconds_here": 1.0,
            "join_cpu_seconds_here": 1.0, "agree": agree, "round": rounds,
            "announced": {"ledger_bytes": 63 * 4 * rounds, "snapshot_bytes": 10**5,
                          "ledger_seconds_at_64kbit": 1.0, "snapshot_seconds_at_64kbit": 1.0}}


def _results(tmp_path, cases, runs=None):
    (tmp_path / "pool_catchup.json").write_text(json.dumps({
        **STAMP, "peers": 4, "model": "minilm", "task": "vader", "link_bps": bp.LINK_BPS, "scalars": "synthetic",
        "in_sync_target_s": bp.SYNC_TARGET_S, "cases": cases}))
    if runs is not None:
        (tmp_path / "pool_accuracy.json").write_text(json.dumps({
            **STAMP, "peers": 4, "rounds": 300, "eval_size": None, "complete": True,
            "table": bp.summarize(runs), "runs": runs}))
    return Results(tmp_path)


def test_the_history_claim_holds_only_for_equal_bytes_and_agreeing_joins(tmp_path):
    equal = [_case(4096, 4, 1000, 18521), _case(4096, 4, 100000, 18521)]
    claims = bp.claims(_results(tmp_path, equal))
    assert claims[0][1] == "18,521 B and 18,521 B" and claims[0][3]
    assert claims[-1][3]  # 2.3 s at 64 kbit/s <= 60 s
    grown = [_case(4096, 4, 1000, 18521), _case(4096, 4, 100000, 18525)]
    assert not bp.claims(_results(tmp_path, grown))[0][3]
    disagreed = [_case(4096, 4, 1000, 18521), _case(4096, 4, 100000, 18521, agree=False)]
    assert not bp.claims(_results(tmp_path, disagreed))[0][3]
    slow = [_case(16384, 1024, 1000, 600_000)]  # 75 s over the line
    assert not bp.claims(_results(tmp_path, slow))[-1][3]
    text = "\n".join(bp.render(_results(tmp_path, equal)))
    assert "**18,521 B**" in text and "**2.3 s**" in text and "100,000" in text


def test_the_accuracy_table_pairs_seeds_against_unrestricted(tmp_path):
    runs = [{"pool": p, "seed": s, "accuracy": a} for p, s, a in
            [(0, 0, 0.90), (0, 1, 0.88), (1024, 0, 0.85), (1024, 1, 0.86), (4096, 0, 0.90), (4096, 1, 0.878)]]
    table = bp.summarize(runs)
    assert round(table["1024"]["loss_points"], 6) == 3.5 and round(table["4096"]["loss_points"], 6) == 0.1
    claims = {c[0].split(" on the demo")[0]: c[3] for c in bp.claims(_results(tmp_path, [], runs))
              if "on the demo" in c[0]}
    assert claims == {"seed pool 1,024": False, "seed pool 4,096": True}
    text = "\n".join(bp.render(_results(tmp_path, [], runs)))
    assert "| unrestricted | 89.0 % ± 1.4 | 2 | — |" in text and "| 1,024 | 85.5 %" in text
