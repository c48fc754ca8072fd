"""The README's demo claim, end to end (slow: about 8 minutes on 2 cores)."""

import json

import pytest

from onebyte.cli import main

pytestmark = pytest.mark.slow


def test_demo_beats_zero_shot_by_five_points(tmp_path):
    # exactly what `make demo` runs, on the embedded defaults
    assert main(["simulate", "--model", "minilm", "--task", "vader", "--peers", "4", "--codec", "byte",
                 "--no-progress", "--out", str(tmp_path / "demo")]) == 0
    s = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert s["eval_after"]["accuracy"] >= s["eval_before"]["accuracy"] + 0.05
    assert s["payload_bytes"] == s["gradients"] + s["records"]
