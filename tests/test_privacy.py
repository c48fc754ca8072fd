import numpy as np
import pytest
import torch

from onebyte.errors import BudgetExhausted
from onebyte.estimator import measure_private
from onebyte.privacy import Accountant, DPConfig, calibrate_noise, epsilon_for
from onebyte.state import FixedPointState


def test_calibrated_noise_meets_the_budget_and_is_tight():
    cfg = DPConfig(3.0, 1e-5)
    sigma = calibrate_noise(cfg, n=1000, batch=32, steps=400)
    assert epsilon_for(sigma, 1000, 32, 400, 1e-5) <= 3.0
    assert epsilon_for(sigma * 0.95, 1000, 32, 400, 1e-5) > 3.0
    assert calibrate_noise(DPConfig(1.0, 1e-5), 1000, 32, 400) > sigma  # less ε, more noise


def test_budget_is_reported_by_the_accountant_and_enforced():
    acc = Accountant(DPConfig(3.0, 1e-5), n=500, batch=16, planned_steps=20)
    acc.spend(20)
    rep = acc.report()
    assert rep["epsilon_spent"] == pytest.approx(epsilon_for(acc.noise, 500, 16, 20, 1e-5))
    assert rep["epsilon_spent"] <= 3.0 and rep["noise_multiplier"] == acc.noise
    with pytest.raises(BudgetExhausted, match="budget"):
        acc.spend(1)


def test_clipping_bounds_each_example_and_noise_is_added():
    m = torch.nn.Linear(4, 1)
    state = FixedPointState(sorted(m.named_parameters()))
    x = torch.randn(8, 4) * 100

    def losses(_):
        return (m(x).squeeze(1) * 1e3).detach().double().numpy()  # huge per-example derivatives

    no_noise = measure_private(state, losses, [None], [1], 1e-3, clip=0.5, noise_std=0.0,
                               rng=np.random.default_rng(0))
    assert abs(no_noise.ghat[0]) <= 0.5 + 1e-12
    noisy = [measure_private(state, losses, [None], [1], 1e-3, 0.5, 10.0, np.random.default_rng(s)).ghat[0]
             for s in range(50)]
    assert np.std(noisy) == pytest.approx(10.0 / 8, rel=0.3)  # N(0, 10^2) over a batch of 8


def test_simulate_with_dp_reports_the_budget(tmp_path):
    from onebyte.config import Estimator, TrainConfig
    from onebyte.simulator import SimConfig, run_simulation

    s = run_simulation(SimConfig(model="tiny-gpt2", peers=2, rounds=2, eval_size=16, dp=DPConfig(3.0, 1e-5),
                           train=TrainConfig(samples=2, batch_size=8, estimator=Estimator.SPSA, lr=1e-3)),
                       tmp_path / "r").summary
    assert 0 < s["dp"]["epsilon_spent"] <= 3.0 and s["dp"]["delta"] == 1e-5
    assert s["dp"]["steps"] == s["dp"]["planned_steps"] == 4


def test_dp_works_from_the_command_line_with_every_other_setting_at_its_default(tmp_path):
    """grad (the default) privatises by DP-SGD on the projections: one mechanism per record, so 2
    rounds plan 2 steps whatever K (1,024) is, and the budget is spent as planned."""
    import json

    from onebyte.cli import main

    assert main(["simulate", "--model", "tiny-gpt2", "--peers", "2", "--rounds", "2", "--eval-size", "8",
                 "--dp-epsilon", "3", "--dp-delta", "1e-5", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    dp = json.loads((tmp_path / "r" / "summary.json").read_text())["dp"]
    assert dp["steps"] == dp["planned_steps"] == 2 and 0 < dp["epsilon_spent"] <= 3.0


def test_dp_refuses_an_estimator_that_measures_the_batch_as_a_whole(tmp_path, capsys):
    from onebyte.cli import main

    assert main(["simulate", "--model", "tiny-gpt2", "--rounds", "2", "--estimator", "fzoo", "--dp-epsilon", "3",
                 "--dp-delta", "1e-5", "--no-progress", "--out", str(tmp_path / "r")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs grad" in err[0] and "fzoo" in err[0]
