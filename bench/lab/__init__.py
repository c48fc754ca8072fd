"""The network lab: one namespace per peer, plain veth links (``Lab``) or emulated thin ones
(``ThinLab``), real onebyte peers inside it (``peers``) and measurement windows over lab
processes (``control``). Building namespaces needs root; ``available()`` says whether we can.

Runs of real peers, each ``python -m bench.lab.NAME --out DIR``: ``churn`` (a crash, a newcomer and
a restart on loopback), ``partition`` (two groups apart, then reconnected), ``natlab`` (sites
behind NAT through a relay; root), all on ``loopback``'s helpers."""

import signal

from bench.lab.linkemu import ThinLab
from bench.lab.netns import Lab, available

__all__ = ["Lab", "ThinLab", "available", "unwind_on_sigterm"]


def unwind_on_sigterm() -> None:
    """Make SIGTERM (``make bench`` stopping a step) unwind through the ``finally`` blocks that stop
    peers and remove devices and namespaces, as Ctrl-C does."""

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
