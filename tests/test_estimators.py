"""The estimator interface (spsa, fzoo) and the round schedules: what each sends, what it costs,
and that runs made with them stay exact replicas."""

import json
import math

import numpy as np
import pytest
import torch

import onebyte
from onebyte.config import Estimator, Run, RunSpec, Schedule, Step, TrainConfig, Weighting, cosine_factor
from onebyte.estimator import measure_es, measure_fzoo
from onebyte.state import FixedPointState


class Vec(torch.nn.Module):
    def __init__(self, n: int = 64):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.linspace(-1, 1, n))


def test_fzoo_scalars_are_normalised_one_sided_differences():
    m = Vec()
    state = FixedPointState(m.named_parameters())
    c = torch.linspace(1, -1, 64)
    calls = []

    def loss(scale):
        calls.append(1)
        return float(scale * ((m.theta.detach() - c) ** 2).sum())

    before = state.state_hash()
    small, big = measure_fzoo(state, loss, 1.0, [1, 2, 3, 4, 5], 1e-2), measure_fzoo(state, loss, 1000.0,
                                                                                     [1, 2, 3, 4, 5], 1e-2)
    assert len(calls) == 2 * 6  # K + 1 forward passes per measurement
    assert state.state_hash() == before  # perturbations undone exactly
    assert abs(float(small.ghat.std(ddof=1)) - 1.0) < 1e-9  # unit spread whatever the loss scale
    np.testing.assert_allclose(small.ghat, big.ghat, rtol=1e-4)
    # each scalar has the sign of the directional derivative along its direction
    grad = (2 * (m.theta.detach() - c)).double().numpy()
    for seed, g in zip([1, 2, 3, 4, 5], small.ghat, strict=True):
        z = state.layout.segment(state.layout.rademacher(seed), 0).double().numpy()
        if abs(grad @ z) > 1.0:
            assert np.sign(g) == np.sign(grad @ z)


def test_fzoo_scalars_are_clipped_when_the_shared_offset_dwarfs_the_spread():
    from onebyte.estimator import FZOO_CLIP

    m = Vec()
    state = FixedPointState(m.named_parameters())
    # every perturbed loss 1.0 above L0, spread 1e-9: unclipped, the scalars would be ~1e9
    losses = iter([0.0, 1.0, 1.0 + 1e-9, 1.0])
    g = measure_fzoo(state, lambda _: next(losses), None, [1, 2, 3], 1e-3).ghat
    assert np.all(np.abs(g) <= FZOO_CLIP) and np.all(g == FZOO_CLIP)


def test_fzoo_with_equal_losses_sends_zeros_and_one_direction_sends_a_sign():
    m = Vec()
    state = FixedPointState(m.named_parameters())
    assert not measure_fzoo(state, lambda _: 1.0, None, [1, 2, 3], 1e-3).ghat.any()
    one = measure_fzoo(state, lambda _: float(m.theta.detach().sum()), None, [7], 1e-2).ghat
    assert one.tolist() in ([1.0], [-1.0])


def test_centered_scalars_are_z_scores_of_the_perturbed_losses():
    m = Vec()
    state = FixedPointState(m.named_parameters())
    c = torch.linspace(1, -1, 64)
    calls = []

    def loss(_):
        calls.append(1)
        return float(((m.theta.detach() - c) ** 2).sum())

    g = measure_fzoo(state, loss, None, [1, 2, 3, 4], 1e-2, centered=True).ghat
    assert len(calls) == 4  # no unperturbed pass
    assert abs(float(g.mean())) < 1e-12 and abs(float(g.std(ddof=1)) - 1.0) < 1e-9
    one_sided = measure_fzoo(state, loss, None, [1, 2, 3, 4], 1e-2).ghat
    np.testing.assert_allclose(g, one_sided - one_sided.mean(), atol=1e-9)  # the same, less the shared offset
    with pytest.raises(onebyte.ConfigError, match="train.samples"):
        TrainConfig(estimator=Estimator.CENTERED, samples=1).validate()


def test_es_scalars_estimate_the_gradient_with_their_magnitude():
    """Unnormalised mean-baseline differences: E[g z] is the gradient (so a peer's influence is its
    gradient's size, as with SPSA), one forward pass per direction."""
    m = Vec(8)
    state = FixedPointState(m.named_parameters())
    c = torch.linspace(1, -1, 8)
    loss = lambda scale: float(scale * 0.5 * ((m.theta.detach().double() - c.double()) ** 2).sum())  # noqa: E731
    true_grad = (m.theta.detach().double() - c.double()).numpy()
    acc, n, k = np.zeros(8), 3000, 4
    for i in range(n):
        seeds = [k * i + j for j in range(k)]
        g = measure_es(state, loss, 1.0, seeds, 1e-2).ghat
        for seed, gj in zip(seeds, g, strict=True):
            acc += gj * state.layout.segment(state.layout.rademacher(seed), 0).double().numpy()
    est = acc / (n * k)
    assert np.linalg.norm(est - true_grad) <= 0.1 * np.linalg.norm(true_grad), (est, true_grad)
    twice = measure_es(state, loss, 2.0, [1, 2, 3], 1e-2).ghat
    np.testing.assert_allclose(twice, 2 * measure_es(state, loss, 1.0, [1, 2, 3], 1e-2).ghat, rtol=1e-6)


def test_forward_passes_per_record():
    assert TrainConfig(estimator=Estimator.SPSA).forward_passes(4) == 8
    assert TrainConfig(estimator=Estimator.FZOO).forward_passes(4) == 5
    assert TrainConfig(estimator=Estimator.CENTERED).forward_passes(4) == 4
    assert TrainConfig(estimator=Estimator.ES).forward_passes(4) == 4
    assert TrainConfig(estimator=Estimator.GRAD).forward_passes(1024) == 3  # a backward pass counts as two
    assert TrainConfig(estimator=Estimator.JVP).forward_passes(4) == 8


def test_cosine_schedule_is_a_fixed_polynomial_matching_cos():
    for r in range(0, 101):
        want = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * r / 100))
        assert abs(cosine_factor(r, 100, 0.1) - want) < 1e-14
    assert cosine_factor(0, 100, 0.1) == 1.0 and cosine_factor(500, 100, 0.1) == cosine_factor(100, 100, 0.1)
    t = TrainConfig(lr=1e-3, lr_schedule=Schedule.COSINE, warmup=10, horizon=100, final_ratio=0.0, step=Step.SCALAR)
    assert t.lr_at(0) == pytest.approx(1e-4) and t.lr_at(9) == pytest.approx(1e-3)
    assert t.lr_at(10) == 1e-3 and t.lr_at(60) == pytest.approx(5e-4) and t.lr_at(200) == pytest.approx(0.0)
    e = TrainConfig(eps=1e-2, eps_schedule=Schedule.COSINE, lr_schedule=Schedule.CONSTANT, horizon=10, final_ratio=0.5,
                    step=Step.SCALAR)
    assert e.eps_at(0) == 1e-2 and e.eps_at(10) == pytest.approx(5e-3) and e.lr_at(10) == e.lr


def test_schedule_settings_are_checked_and_named():
    with pytest.raises(onebyte.ConfigError, match="train.horizon"):
        TrainConfig(lr_schedule=Schedule.COSINE, horizon=0).validate()
    with pytest.raises(onebyte.ConfigError, match="train.estimator: must be spsa, fzoo, centered, es, grad or jvp"):
        TrainConfig.from_dict({"estimator": "adam"})
    with pytest.raises(onebyte.ConfigError, match="train.final_ratio"):
        TrainConfig.from_dict({"final_ratio": 2})


def test_new_settings_at_their_old_values_keep_old_run_tags(tmp_path):
    """A run made before the estimator and schedules existed keeps its run tag and reads back as spsa."""
    legacy = TrainConfig.for_estimator("spsa", lr=1e-3, lr_schedule="constant", horizon=0, balance="none",
                                       weighting="equal")
    old = Run(RunSpec(train=legacy), "ab" * 32)
    assert "estimator" not in old.canonical()["train"] and "horizon" not in old.canonical()["train"]
    new = Run(RunSpec(train=TrainConfig(estimator=Estimator.FZOO, lr=1e-3, lr_schedule=Schedule.CONSTANT, horizon=0)),
              "ab" * 32)
    assert new.canonical()["train"]["estimator"] == "fzoo" and new.run_tag != old.run_tag
    d = json.loads(old.to_json())
    for k in TrainConfig.LEGACY:
        del d["spec"]["train"][k]  # as run.json was written before
    (tmp_path / "run.json").write_text(json.dumps(d))
    back = Run.load(tmp_path / "run.json")
    assert back.train.estimator is Estimator.SPSA and back.run_tag == old.run_tag


def test_differential_privacy_needs_grad_or_spsa(tmp_path):
    spec = RunSpec(model="tiny-gpt2", train=TrainConfig(estimator=Estimator.FZOO, samples=2, batch_size=4))
    with pytest.raises(onebyte.ConfigError, match="differential privacy needs grad .* or spsa"):
        onebyte.simulate(spec, out=tmp_path / "r", peers=1, rounds=1, dp=onebyte.DPConfig(epsilon=8.0, delta=1e-5))


def test_fzoo_cosine_run_replays_exactly_in_any_order(tmp_path):
    spec = RunSpec(model="tiny-gpt2", train=TrainConfig(estimator=Estimator.FZOO, samples=3, batch_size=4, lr=1e-3,
                                                        lr_schedule=Schedule.COSINE, warmup=2, horizon=6))
    result = onebyte.simulate(spec, out=tmp_path / "r", peers=3, rounds=6)
    assert result.summary["forward_passes"] == 6 * 3 * (3 + 1)
    assert onebyte.replay(tmp_path / "r", shuffle=5).state_hash == result.state_hash


def test_sites_weighted_by_examples_fold_the_weight_into_their_scalars(monkeypatch):
    """A site's weight multiplies its scalars before encoding: weight 2 sends the same codes one
    exponent up, 1/2 one down; the weight is examples / reference_examples when that is set, else
    examples / the reference learned from the swarm, in sixteenths within [1/16, 4] (1 when it has
    heard nobody, or under equal weighting), and never reaches replay (a weighted run replays to its
    own hash: below)."""
    from onebyte.training import Setup, make_record

    setup = Setup.build(RunSpec(model="tiny-gpt2", train=TrainConfig(samples=3, batch_size=4)))
    shard = setup.dataset.train[:50]
    plain, _ = make_record(setup, shard, 0, 7)
    for weight, shift in ((2.0, 1), (0.5, -1)):
        monkeypatch.setattr(TrainConfig, "site_weight", lambda self, n, ref=None, w=weight: w)
        rec, _ = make_record(setup, shard, 0, 7)
        assert rec.payload == plain.payload and rec.exponent == plain.exponent + shift
    monkeypatch.undo()
    assert TrainConfig().site_weight(10) == 1.0 and TrainConfig(reference_examples=4).site_weight(10) == 2.5
    learned = TrainConfig()
    assert [learned.site_weight(n, 583.5) for n in (583, 584, 620, 1, 2428, 10_000)] == [1, 1, 1.0625, 1 / 16, 4, 4]
    assert TrainConfig(weighting=Weighting.EQUAL).site_weight(10, 583.5) == 1.0
    with pytest.raises(onebyte.ConfigError, match="needs weighting = examples"):
        TrainConfig.from_dict({"reference_examples": 40, "weighting": "equal"})
    with pytest.raises(onebyte.ConfigError, match="train.reference_examples"):
        TrainConfig.from_dict({"reference_examples": -1})


def test_weighted_skewed_run_replays_exactly(tmp_path):
    spec = RunSpec(model="tiny-gpt2", train=TrainConfig(samples=2, batch_size=4, lr=1e-3, reference_examples=40))
    result = onebyte.simulate(spec, out=tmp_path / "r", peers=3, rounds=3, split="dirichlet:0.3")
    assert "reference_examples" in json.loads((tmp_path / "r" / "run.json").read_text())["spec"]["train"]
    assert onebyte.replay(tmp_path / "r", shuffle=3).state_hash == result.state_hash


def test_the_swarm_reference_is_the_mean_count_with_outliers_clipped():
    """Each site weighs itself against the mean count it has heard; a count over 8 times the median
    counts as 8 medians, so one site claiming a billion examples cannot shrink everyone's step."""
    from onebyte.modes import swarm_reference
    from onebyte.tasks.data import load_dataset, split_shards

    assert swarm_reference([583] * 8) == 583 and swarm_reference([]) == swarm_reference([0, 0]) == 1.0
    assert swarm_reference([100, 200, 300, 10**9]) == (100 + 200 + 300 + 8 * 250) / 4
    train = load_dataset("vader").train
    for peers in (4, 8, 16):  # iid shards weigh exactly 1 whichever of them a site has heard
        sizes = [len(s) for s in split_shards(train, peers, None, 0)]
        for heard in (sizes, sizes[:1], sizes[-2:]):
            assert {TrainConfig().site_weight(n, swarm_reference(heard)) for n in sizes} == {1.0}
