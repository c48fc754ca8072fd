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
