import pytest
import torch
from hypothesis import settings

from onebyte.state import FixedPointState

# Timing varies on shared CI machines; property tests check behaviour, not speed.
settings.register_profile("onebyte", deadline=None)
settings.load_profile("onebyte")


class Toy(torch.nn.Module):
    """Three tensors of different magnitudes (so different fixed-point steps), odd sizes."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(37, 11, generator=g) * 0.1)
        self.b = torch.nn.Parameter(torch.randn(11, generator=g) * 0.01)
        self.big = torch.nn.Parameter(torch.randn(300, generator=g) * 7.0)


@pytest.fixture
def toy_state() -> tuple[Toy, FixedPointState]:
    m = Toy()
    return m, FixedPointState(sorted(m.named_parameters()))


def run_peers(peers, stop=None) -> list[dict]:
    """Run peers (each ``Peer.run``) on threads to the end; raise what any raised; their summaries."""
    import threading

    errors = []

    def go(p):
        try:
            p.run(stop)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(p,)) for p in peers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return [p.summary() for p in peers]
