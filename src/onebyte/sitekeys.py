"""Identity mode across peers: the same revocations in force everywhere, the same site keys listed.

A signed revocation new to this peer (from the operator's ``revocations.txt`` or from a peer) goes
to every live peer at once (REVK), which answers with every revocation it holds in force; each
peer met is greeted so once. Site keys are not in the run tag, so once per peer met this one asks
for its run file's key list (CONF) and warns when it differs: such sites would count different
records, silently apart. Every revocation received is checked by the ``Intake`` like a record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .client import Client
from .config import differing_keys
from .errors import NetworkError, ProtocolError
from .intake import Intake
from .membership import Heartbeat

__all__ = ["SiteKeys"]

log = logging.getLogger(__name__)


class SiteKeys:
    """Revocations and key lists exchanged with the live peers (``others()``); ``shared()`` is what
    this peer's run file shares (``Run.shared``); ``background`` runs the exchanges a request starts."""

    def __init__(self, client: Client, intake: Intake, others: Callable[[], dict[int, Heartbeat]],
                 shared: Callable[[], dict[str, Any]], background: ThreadPoolExecutor):
        self.client, self.intake, self._others, self._shared = client, intake, others, shared
        self._background = background
        self.keys_diff: dict[int, str] = {}  # peers whose run file lists other site keys
        self._keys_compared: set[int] = set()
        self._told: set[int] = set()  # peers we have exchanged revocations with
        self.closed = False

    def spread(self, revocations: list[bytes]) -> None:
        """Send revocations new to us to every live peer, taking whatever each holds in return."""
        for other in self._others().values():
            self.exchange(other, revocations)

    def greet(self) -> None:
        """Exchange every revocation in force with each live peer not yet exchanged with (once per
        peer: a newcomer, a restarted peer, an operator's revocation written while this peer was
        stopped or alone), and compare key lists with each peer met."""
        if self.intake.roster is None:
            return
        for other in self._others().values():
            if other.peer_id not in self._told:
                self.exchange(other, self.intake.revocations_in_force())
            if other.peer_id not in self._keys_compared:
                self.compare_keys(other)

    def compare_keys(self, other: Heartbeat) -> None:
        """Once per peer met: ask its run file's site keys (CONF) and warn when they differ from ours.
        Keys are not in the run tag, so a site whose run file lists another key, another ``until`` or
        another admin would otherwise count other records, silently apart."""
        try:
            theirs = self.client.conf(other.contact)
        except (ProtocolError, NetworkError) as exc:
            log.info("could not compare site keys with peer %x: %s", other.peer_id, exc)
            return
        self._keys_compared.add(other.peer_id)
        if "keys" not in theirs:  # a peer older than this comparison
            return
        diff = "; ".join(differing_keys(self._shared()["keys"], theirs["keys"]))
        if diff and other.peer_id not in self.keys_diff:
            log.warning("peer %x's run file lists other site keys than ours (the replicas will count different "
                        "records): %s", other.peer_id, diff)
        if diff:
            self.keys_diff[other.peer_id] = diff
        else:
            self.keys_diff.pop(other.peer_id, None)

    def exchange(self, other: Heartbeat, revocations: list[bytes]) -> None:
        """REVK with ``other``: ours there, theirs here."""
        try:
            self.intake.revoke_all(self.client.revk(other.contact, revocations))
            self._told.add(other.peer_id)
        except (ProtocolError, NetworkError) as exc:
            log.info("could not exchange revocations with peer %x: %s", other.peer_id, exc)

    def answer(self, revocations: list[bytes]) -> list[bytes]:
        """REVK, answered: take each (checked like any other), pass the new ones on, and return
        every revocation in force here."""
        new = self.intake.revoke_all(revocations)
        if new and not self.closed:
            self._background.submit(self.spread, new)
        return self.intake.revocations_in_force()
