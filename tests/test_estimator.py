import numpy as np
import torch

from onebyte.codec import Codec
from onebyte.config import TrainConfig
from onebyte.estimator import measure, projected_gradient
from onebyte.record import Record
from onebyte.state import FixedPointState
from onebyte.update import apply_records, record_seeds


class Vec(torch.nn.Module):
    def __init__(self, theta):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(theta, dtype=torch.float32))


def test_mean_of_g_z_is_the_true_gradient_on_a_quadratic():
    theta0 = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5, 0.0, 1.0]
    c = torch.tensor([1.0, 0.5, -1.0, 0.0, 0.3, 2.0, -2.0, 1.0])
    m = Vec(theta0)
    state = FixedPointState(m.named_parameters())
    loss = lambda _: float(0.5 * ((m.theta.detach().double() - c.double()) ** 2).sum())  # noqa: E731
    true_grad = (m.theta.detach().double() - c.double()).numpy()
    n, acc = 20_000, np.zeros(8)
    seg = lambda z: state.layout.segment(z, 0).double().numpy()  # noqa: E731
    for seed in range(n):
        g, _, _ = projected_gradient(state, loss, None, seed, 1e-2)
        acc += g * seg(state.layout.rademacher(seed))
    est = acc / n
    assert np.linalg.norm(est - true_grad) <= 0.05 * np.linalg.norm(true_grad), (est, true_grad)


def test_perturbation_is_undone_exactly():
    m = Vec([0.1 * i for i in range(300)])
    state = FixedPointState(m.named_parameters())
    before = m.theta.detach().clone()
    seen = []

    def loss(_):
        seen.append(m.theta.detach().clone())
        return float(m.theta.sum())

    projected_gradient(state, loss, None, 3, 0.5)
    assert torch.equal(m.theta.detach(), before)
    z = state.layout.segment(state.layout.rademacher(3), 0).float()
    assert torch.allclose(seen[0], before + 0.5 * z) and torch.allclose(seen[1], before - 0.5 * z)


def test_one_peer_one_sample_float32_step_equals_direct_spsa_step():
    """The simulator's update equals a MeZO-style in-place SPSA step with the same z."""
    import copy

    from onebyte.record import build_record

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    state = FixedPointState(sorted(model.named_parameters()))
    mezo = copy.deepcopy(model)  # plain float32 copy of the weights the state's view holds
    for p in mezo.parameters():
        p.data = p.data.clone()
    loss_of = lambda net: float(((net(x) - y) ** 2).mean())  # noqa: E731
    run, lr, eps = b"t" * 16, 1e-2, 1e-3
    train = TrainConfig.for_estimator("spsa", codec=Codec.FLOAT32, lr=lr, eps=eps, samples=1)
    seed = record_seeds(Record(Codec.FLOAT32, run, 0, 0, 0, 1, 0, b""), False)[0]
    z_all = state.layout.rademacher(seed).float()
    z = {n: state.layout.segment(z_all, i).view(state.shapes[n]) for i, n in enumerate(state.names)}

    # MeZO: theta += eps z; L+; theta -= 2 eps z; L-; theta += eps z; theta -= lr g z.
    with torch.no_grad():
        params = dict(mezo.named_parameters())
        for n in z:
            params[n].add_(z[n], alpha=eps)
        lp = loss_of(mezo)
        for n in z:
            params[n].add_(z[n], alpha=-2 * eps)
        lm = loss_of(mezo)
        for n in z:
            params[n].add_(z[n], alpha=eps)
        g = (lp - lm) / (2 * eps)
        for n in z:
            params[n].add_(z[n], alpha=-lr * float(np.float32(g)))

    meas = measure(state, lambda _: loss_of(model), [None], [seed], eps)
    assert meas.ghat[0] == g  # same weights, same z, same float32 arithmetic: the same estimate
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    apply_records(state, [build_record(Codec.FLOAT32, run, 0, 0, 0, meas.ghat, 0)], train)
    for n, p in model.named_parameters():
        step = 2.0 ** -state.frac_bits[n]
        assert torch.allclose(p.detach(), params[n].detach(), atol=step + 2e-7, rtol=0), n
        assert not torch.equal(p.detach(), before[n])  # the step really moved every tensor
