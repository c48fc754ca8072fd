"""Transports: how peers exchange records, heartbeats and bulk requests.

One interface (``base.Transport``), two implementations: ``memory`` (one process; the unit tests
and in-process swarms) and ``dht`` (hivemind: DHT for discovery and record publication under
signed subkeys, P2P streams for bulk). Nothing above the transport knows which one it has.
"""

from .base import Transport
from .memory import MemoryHub, MemoryTransport

__all__ = ["Transport", "MemoryHub", "MemoryTransport"]
