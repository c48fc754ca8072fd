"""What a test starts, it owns, and it waits on conditions, never on time.

``wait_until`` polls a condition with a deadline (a bare ``sleep`` guesses how long something takes,
and fails on a busy machine or hides a hang on a quiet one). ``Owned`` stops and closes whatever a
test registered (peers, transports, threads, processes), pass or fail, so a failing assert leaves no
thread running, process alive or port open behind it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: How often ``wait_until`` checks its condition: a local check, cheap.
POLL_S = 0.02
#: How long ``Owned`` waits for each of its threads to end once told to stop.
JOIN_S = 120.0
#: ``PeerOptions`` for in-memory peers in tests: short deadlines, heartbeats and polls, no evaluation.
FAST_PEER: dict[str, Any] = dict(eval_size=0, min_deadline=0.5, max_deadline=3.0, heartbeat_interval=0.2,
                                 heartbeat_ttl=3.0, dht_poll=0.1, join_timeout=3.0, drain_timeout=20.0,
                                 sync_interval=0.2, poll=0.01)


def wait_until(cond: Callable[[], Any], timeout: float, what: str, poll: float = POLL_S) -> Any:
    """Check ``cond`` until it returns something true (returned), for at most ``timeout`` seconds;
    then fail, naming ``what`` was waited for."""
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


class Owned:
    """Everything a test started. At the end (``close``, or the ``with`` block's): ``stop`` is set,
    every thread joined (bounded by JOIN_S), then every registered closer run, last first, each even
    if an earlier one raised."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self._closers: list[Callable[[], Any]] = []

    def __call__(self, thing: T) -> T:
        """Own ``thing`` (a peer, a transport: anything with ``close()``); returns it."""
        self._closers.append(thing.close)  # type: ignore[attr-defined]
        return thing

    def defer(self, closer: Callable[[], Any]) -> None:
        """Run ``closer`` at the end (stopping a process, say)."""
        self._closers.append(closer)

    def thread(self, target: Callable[..., Any], *args: Any, name: str | None = None) -> threading.Thread:
        """Start ``target(*args)`` on a thread joined at the end (pass ``self.stop`` to let it stop)."""
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def join(self, timeout: float = JOIN_S) -> None:
        """Wait (bounded) for every thread started so far; fail if one is still running."""
        for t in self.threads:
            t.join(timeout=timeout)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"threads still running after {timeout:g}s: {alive}"

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=JOIN_S)
        errors = []
        while self._closers:
            try:
                self._closers.pop()()
            except Exception as exc:  # the others are still closed; the first error is raised below
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Owned:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
