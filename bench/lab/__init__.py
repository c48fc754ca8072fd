"""The network lab: one namespace per peer, plain veth links (``Lab``) or emulated thin ones
(``ThinLab``), real onebyte peers inside it (``peers``) and measurement windows over lab
processes (``control``). Building namespaces needs root; ``available()`` says whether we can.

Runs of real peers, each ``python -m bench.lab.NAME --out DIR``: ``churn`` (a crash, a newcomer and
a restart on loopback), ``partition`` (two groups apart, then reconnected), ``natlab`` (sites
behind NAT through a relay; root), all on ``loopback``'s helpers."""

from bench.lab.linkemu import ThinLab
from bench.lab.netns import Lab, available

__all__ = ["Lab", "ThinLab", "available"]
