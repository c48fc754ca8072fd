"""The network lab: one namespace per peer, plain veth links (``Lab``) or emulated thin ones
(``ThinLab``), real onebyte peers inside it (``peers``) and measurement windows over lab
processes (``control``). Building namespaces needs root; ``available()`` says whether we can."""

from bench.lab.linkemu import ThinLab
from bench.lab.netns import Lab, available

__all__ = ["Lab", "ThinLab", "available"]
