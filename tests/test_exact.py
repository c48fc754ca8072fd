"""Exact projected gradients (``grad``, ``jvp``): projections checked against float64 dot products
of the same directions, the run's scalar meaning in the run tag, the step that means the same
whatever K is, and mixed swarms that stay exact replicas."""

import numpy as np
import pytest
import torch

import onebyte
from onebyte.config import Estimator, Run, RunSpec, Scalar, Step, TrainConfig
from onebyte.estimator import gradient, measure_grad, measure_jvp, projected_gradient, scaled
from onebyte.rng import PerturbationLayout
from onebyte.state import FixedPointState
from onebyte.training import Setup, make_record


@pytest.mark.parametrize("sparsity", [0, 2])
def test_projection_equals_a_float64_dot_product_of_the_same_directions(sparsity):
    layout = PerturbationLayout(["a", "b", "c"], [300, 5000, 17], sparsity=sparsity)
    vec = torch.zeros(layout.size)
    for i in range(3):  # zero in the padding, as a flattened gradient is
        layout.segment(vec, i).copy_(torch.randn(layout.numels[i], generator=torch.Generator().manual_seed(i)))
    seeds = [3, 1 << 40, 77, 5, 9]
    got = np.asarray(layout.project(vec, seeds, block=2 * layout.size))  # blocks of two seeds
    want = [float(layout.rademacher(s, torch.float32).double() @ vec.double()) for s in seeds]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(vec.norm()))
    if sparsity:  # a sparse direction keeps about 2^-sparsity of the elements
        kept = float(layout.rademacher(seeds[0], torch.float32).abs().sum()) / layout.size
        assert 0.15 < kept < 0.35


@pytest.fixture(scope="module")
def tiny():
    return Setup.build(RunSpec(model="tiny-gpt2", train=TrainConfig(estimator=Estimator.GRAD, samples=16,
                                                                    batch_size=4)))


def test_grad_projects_the_autograd_gradient_and_agrees_with_jvp_and_differences(tiny):
    state, obj = tiny.state, tiny.objective
    batch = tiny.dataset.train[:4]
    before = state.state_hash()
    g, loss = gradient(state, obj.loss_tensor, batch)
    assert state.state_hash() == before and not any(p.requires_grad for p in state.parameters())
    assert loss == pytest.approx(obj.loss(batch), rel=1e-6)
    seeds = [11, 12, 13]
    want = np.array([float(state.layout.rademacher(s, torch.float32).double() @ g.double()) for s in seeds])
    exact = measure_grad(state, obj.loss_tensor, batch, seeds, normalised=False)
    np.testing.assert_allclose(exact.ghat, want, rtol=1e-5, atol=1e-5 * float(g.norm()))
    fwd = measure_jvp(state, tiny.loaded.model, obj.loss_tensor, batch, seeds, normalised=False)
    np.testing.assert_allclose(fwd.ghat, want, rtol=1e-4, atol=1e-4 * float(g.norm()))
    with torch.inference_mode():  # a two-point difference agrees to its own O(eps^2) error
        fd, _, _ = projected_gradient(state, obj.loss, batch, seeds[0], 1e-3)
    assert fd == pytest.approx(want[0], rel=2e-2)
    assert state.state_hash() == before


def test_normalised_exact_scalars_have_unit_spread_and_keep_signs():
    proj = np.array([3.0, -1.0, 0.5, 2.0])
    out = scaled(proj, normalised=True)
    assert float(out.std(ddof=1)) == pytest.approx(1.0) and (np.sign(out) == np.sign(proj)).all()
    assert (scaled(proj, normalised=False) == proj).all()
    assert scaled(np.array([-0.2]), normalised=True).tolist() == [-1.0]


def test_the_run_tag_holds_the_scalars_meaning_not_how_a_site_measures():
    def tag(**kw):
        return Run(RunSpec(train=TrainConfig(**kw)), "ab" * 32).run_tag

    assert tag(estimator=Estimator.GRAD) == tag(estimator=Estimator.FZOO) == tag(estimator=Estimator.JVP)
    assert tag(estimator=Estimator.GRAD, scalar=Scalar.DERIVATIVE) == tag(estimator=Estimator.SPSA)
    assert tag(estimator=Estimator.GRAD) != tag(estimator=Estimator.SPSA)
    assert tag(estimator=Estimator.GRAD, step=Step.SCALAR) != tag(estimator=Estimator.GRAD)
    with pytest.raises(onebyte.ConfigError, match="train.scalar"):
        TrainConfig(estimator=Estimator.SPSA, scalar=Scalar.NORMALISED).validate()
    with pytest.raises(onebyte.ConfigError, match="fzoo sends normalised"):
        TrainConfig(estimator=Estimator.GRAD, scalar=Scalar.DERIVATIVE).check_method(Estimator.FZOO)
    TrainConfig(estimator=Estimator.FZOO).check_method(Estimator.GRAD)  # grad sends either


def test_mean_step_divides_the_learning_rate_by_k():
    for k in (4, 1024):
        t = TrainConfig(samples=k, step=Step.MEAN, lr=0.5, lr_schedule=onebyte.config.Schedule.CONSTANT)
        assert t.lr_at(3) == 0.5 / k
    plain = TrainConfig(samples=8, lr=0.5, step=Step.SCALAR, lr_schedule=onebyte.config.Schedule.CONSTANT)
    assert plain.lr_at(3) == 0.5


def test_a_grad_record_carries_one_scalar_per_direction(tiny):
    rec, m = make_record(tiny, tiny.dataset.train[:40], 0, 3)
    assert rec.count == 16 and len(m.ghat) == 16
    np.testing.assert_allclose(rec.gradients(), m.ghat, rtol=0.02, atol=0.02 * float(np.abs(m.ghat).max()))


@pytest.mark.parametrize("run, sites", [(Estimator.FZOO, ("grad", "fzoo")), (Estimator.SPSA, ("grad", "jvp", "spsa"))])
def test_a_mixed_swarm_replays_to_one_state_in_any_order(tmp_path, run, sites):
    spec = RunSpec(model="tiny-gpt2", train=TrainConfig(estimator=run, samples=3, batch_size=4, lr=1e-3,
                                                        step=Step.MEAN, horizon=4))
    result = onebyte.simulate(spec, out=tmp_path / "r", peers=4, rounds=4, estimators=sites)
    assert result.summary["records"] == 16
    assert onebyte.replay(tmp_path / "r", shuffle=7).state_hash == result.state_hash
    plain = onebyte.simulate(spec, out=tmp_path / "p", peers=4, rounds=4)
    assert plain.summary["run_tag"] == result.summary["run_tag"] and plain.state_hash != result.state_hash


def test_a_site_whose_estimator_sends_another_meaning_is_refused(tmp_path):
    spec = RunSpec(model="tiny-gpt2", train=TrainConfig(estimator=Estimator.GRAD, scalar=Scalar.DERIVATIVE, samples=2,
                                                        batch_size=4))
    with pytest.raises(onebyte.ConfigError, match="estimator"):
        onebyte.simulate(spec, out=tmp_path / "r", peers=2, rounds=1, estimators=("grad", "fzoo"))
    with pytest.raises(onebyte.ConfigError, match="not an estimator"):
        onebyte.simulate(spec, out=tmp_path / "s", peers=2, rounds=1, estimators=("adam",))


def test_the_gradient_is_laid_out_as_the_state_with_zero_padding():
    m = torch.nn.Module()
    m.theta = torch.nn.Parameter(torch.linspace(-1, 1, 64))
    state = FixedPointState(m.named_parameters())
    target = torch.linspace(1, -1, 64)

    def loss(_):
        return ((m.theta - target) ** 2).mean()

    g, _ = gradient(state, loss, None)
    np.testing.assert_allclose(g[:64].numpy(), (2 * (m.theta.detach() - target) / 64).numpy(), rtol=1e-5)
    assert float(g[64:].abs().sum()) == 0.0  # padding stays zero


def test_a_site_may_measure_fewer_of_the_rounds_directions(tmp_path):
    """A forward-only site in a run of many directions measures its first few: its record is
    shorter, replicas accept it, and the run replays exactly; more than K is refused."""
    spec = RunSpec(model="tiny-gpt2", train=TrainConfig(estimator=Estimator.FZOO, samples=8, batch_size=4, lr=1e-3,
                                                        step=Step.MEAN, horizon=3))
    result = onebyte.simulate(spec, out=tmp_path / "r", peers=2, rounds=3, estimators=("grad", "fzoo"),
                              site_samples=(8, 2))
    assert result.summary["gradients"] == 3 * (8 + 2) and result.summary["forward_passes"] == 3 * (3 + 3)
    assert onebyte.replay(tmp_path / "r", shuffle=2).state_hash == result.state_hash
    with pytest.raises(onebyte.ConfigError, match="site_samples"):
        onebyte.simulate(spec, out=tmp_path / "s", peers=2, rounds=1, site_samples=(9,))


def test_the_default_is_grad_and_forward_only_estimators_get_their_own_defaults():
    d = TrainConfig()
    assert (d.estimator, d.meaning, d.step, d.shared_directions) == (Estimator.GRAD, Scalar.NORMALISED, Step.MEAN, True)
    f = TrainConfig.for_estimator("fzoo")
    assert (f.samples, f.lr, f.step, f.shared_directions) == (4, 3e-3, Step.SCALAR, False)
    assert TrainConfig.for_estimator("jvp", lr=0.5) == TrainConfig(estimator=Estimator.JVP, lr=0.5)


def test_k_fits_the_link_budget():
    from onebyte.codec import PUSH_OVERHEAD, RECORD_SHARE, Codec, fit_samples

    # 8 kB/s, one round a second, three other peers: 0.8 * 8000 / 3 = 2133 bytes a push
    k = fit_samples(Codec.BYTE, 8000, 1.0, 3, 56, 4096)
    assert k == int(RECORD_SHARE * 8000 / 3 - 56 - PUSH_OVERHEAD)
    assert 8 * k <= fit_samples(Codec.SIGN, 8000, 1.0, 3, 56, 100_000) < 8 * (k + 1)  # eight codes a byte
    assert fit_samples(Codec.BYTE, 8000, 10.0, 3, 56, 1024) == 1024  # the run's K at most
    assert fit_samples(Codec.BYTE, 100, 0.1, 30, 56, 1024) == 1  # a site always contributes
    # what it sends stays within the budget whenever more than one scalar fits
    for budget, secs, fanout in ((8000, 0.5, 3), (8000, 2.0, 7), (64_000, 0.3, 15)):
        k = fit_samples(Codec.BYTE, budget, secs, fanout, 56, 100_000)
        assert k > 1 and fanout * (56 + PUSH_OVERHEAD + k) <= budget * secs


def test_link_rates_parse_in_bytes_a_second():
    from onebyte.cli import _rate

    assert _rate("8kB/s") == 8000 and _rate("64kbit/s") == 8000 and _rate("1500") == 1500
    for bad in ("fast", "-3kB/s", "0"):
        with pytest.raises(Exception, match="not a rate"):
            _rate(bad)


def test_project_rows_equals_projecting_each_row():
    layout = PerturbationLayout(["a", "b"], [300, 70])
    rows = torch.zeros(3, layout.size)
    gen = torch.Generator().manual_seed(5)
    for b in range(3):
        for i in range(2):
            layout.segment(rows[b], i).copy_(torch.randn(layout.numels[i], generator=gen))
    seeds = [4, 1 << 33, 12]
    got = layout.project_rows(rows, seeds, block=layout.size)  # a block per seed
    for b in range(3):
        np.testing.assert_allclose(got[:, b].numpy(), layout.project(rows[b], seeds), rtol=1e-5,
                                   atol=1e-5 * float(rows[b].norm()))  # float32 sums in another order


def test_private_grad_clips_each_examples_projections_and_without_noise_is_the_batch_projection(tiny):
    from onebyte.estimator import measure_grad_private

    state, obj = tiny.state, tiny.objective
    batch, seeds = tiny.dataset.train[:4], [7, 8, 9, 10, 11]
    exact = measure_grad(state, obj.loss_tensor, batch, seeds, normalised=False)
    rng = np.random.default_rng(0)
    model, losses = tiny.loaded.model, obj.example_rows
    loose = measure_grad_private(state, model, losses, batch, seeds, clip=1e9, noise_std=0.0, rng=rng,
                                 normalised=False)
    np.testing.assert_allclose(loose.ghat, exact.ghat, rtol=1e-4, atol=1e-6)  # the mean of per-example gradients
    tight = measure_grad_private(state, model, losses, batch, seeds, clip=1e-3, noise_std=0.0, rng=rng,
                                 normalised=False)
    assert np.linalg.norm(tight.ghat) <= 1e-3 + 1e-12  # each example's K-vector clipped to 1e-3, then averaged
    noisy = [measure_grad_private(state, model, losses, batch, seeds, 1e-3, 1.0, np.random.default_rng(s),
                                  normalised=False).ghat for s in range(2)]
    assert not np.allclose(noisy[0], noisy[1]) and np.abs(noisy[0]).max() > 0.01  # noise of std 1/B per scalar


def test_a_private_grad_record_is_one_gaussian_mechanism(tiny):
    from onebyte.privacy import Accountant, DPConfig
    from onebyte.training import Privacy, private_steps

    train = tiny.train
    assert private_steps(train, 10) == 10 and private_steps(TrainConfig.for_estimator("spsa"), 10) == 40
    privacy = Privacy.create(Accountant(DPConfig(3.0, 1e-5), len(tiny.dataset.train), train.batch_size,
                                        private_steps(train, 3)))
    shard = tiny.dataset.train
    for r in range(3):
        rec, _ = make_record(tiny, shard, r, 0, privacy=privacy)
        assert rec.count == train.samples  # K scalars for one step of the budget
    assert privacy.accountant.steps == 3 and privacy.accountant.report()["epsilon_spent"] <= 3.0
    with pytest.raises(onebyte.errors.BudgetExhausted):
        make_record(tiny, shard, 3, 0, privacy=privacy)


def test_per_example_gradients_from_one_pass_equal_one_pass_per_example(tiny):
    from onebyte.estimator import _bias_owners, _bias_rows, per_example_gradients

    state, obj, model = tiny.state, tiny.objective, tiny.loaded.model
    batch, losses = tiny.dataset.train[:6], obj.example_rows
    owners = _bias_owners(model, state.parameters())
    assert owners is not None  # tune = bias on GPT-2: every tuned tensor is a Conv1D's or LayerNorm's bias
    fast = _bias_rows(state, owners, losses, batch)
    assert fast is not None
    loop = torch.stack([gradient(state, obj.loss_tensor, [e])[0] for e in batch])
    np.testing.assert_allclose(fast[0].numpy(), loop.numpy(), rtol=1e-4, atol=1e-6 * float(loop.abs().max()))
    assert fast[1] == pytest.approx(obj.loss(batch), rel=1e-5)
    rows, _ = per_example_gradients(state, model, losses, batch)
    assert torch.equal(rows, fast[0]) and not any(p.requires_grad for p in state.parameters())
    assert _bias_owners(model, [next(model.parameters())]) is None  # a weight, not a bias: one pass per example


def test_per_example_gradients_of_the_encoder_classifier_keep_each_examples_class_descriptions():
    """MiniLM's loss embeds the class descriptions too; its per-example rows embed them once per
    example, so one batched pass gives each example's exact gradient (against one pass each)."""
    from onebyte.estimator import _bias_owners, _bias_rows

    setup = Setup.build(RunSpec(model="minilm", task="vader", train=TrainConfig(batch_size=4)))
    state, obj = setup.state, setup.objective
    batch = setup.dataset.train[:4]
    fast = _bias_rows(state, _bias_owners(setup.loaded.model, state.parameters()), obj.example_rows, batch)
    assert fast is not None
    loop = torch.stack([gradient(state, obj.loss_tensor, [e])[0] for e in batch])
    np.testing.assert_allclose(fast[0].numpy(), loop.numpy(), rtol=1e-3, atol=1e-5 * float(loop.abs().max()))
    np.testing.assert_allclose(obj.example_rows(batch)[0].detach().numpy(), obj.losses(batch), rtol=1e-5)
