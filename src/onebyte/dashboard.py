"""``onebyte dashboard RUN_DIR…``: a local web page that follows run directories as they grow.

The page (``assets/dashboard.html``) polls ``/api/state`` once a second and draws four panels with
plotly.js, served from the ``plotly`` wheel itself (``/plotly.min.js``): nothing is fetched from
the internet. The server is the standard library's threading HTTP server, bound to 127.0.0.1
unless told otherwise; every request re-reads the directories (``board``), so a swarm's new
``peer-*`` directory or a half-written file shows up as it is.

Routes: ``/`` the page, ``/plotly.min.js``, ``/api/state`` (``board.state``), ``/api/runs`` (the
directories followed and what cannot be read in each).
"""

from __future__ import annotations

import errno
import json
import math
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from .board import find_runs, read_all, state
from .errors import ConfigError, MissingDependency

__all__ = ["Dashboard", "plotly_js", "to_json"]


def plotly_js() -> bytes:
    """plotly.js as the ``plotly`` wheel ships it."""
    try:
        import plotly
    except ImportError:
        raise MissingDependency("plotly", "board", "the dashboard") from None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    try:
        return path.read_bytes()
    except OSError:
        raise MissingDependency("plotly", "board", f"the dashboard (plotly.js, {path})") from None


def _clean(x: Any) -> Any:
    """JSON without NaN/Infinity (browsers' JSON.parse refuses them): non-finite numbers become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def to_json(x: Any) -> bytes:
    return json.dumps(_clean(x), allow_nan=False).encode()


class Dashboard:
    """The server over ``paths`` (run or swarm directories, checked now: one-line errors)."""

    def __init__(self, paths: Sequence[Path | str], host: str = "127.0.0.1", port: int = 8050):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ConfigError("name at least one run directory")
        find_runs(self.paths)  # a path that is no run fails here, before the server starts
        self.page = resources.files("onebyte").joinpath("assets/dashboard.html").read_bytes()
        self.plotly = plotly_js()
        handler = self._handler()
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError.of("port", f"{port} on {host} is in use; choose another with --port") from None
            raise ConfigError.of("host", f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def state(self) -> dict[str, Any]:
        return state(read_all(find_runs(self.paths)))

    def runs(self) -> dict[str, Any]:
        views = read_all(find_runs(self.paths))
        return {"runs": [{"name": v.name, "path": str(v.path), "kind": v.kind, "problems": v.problems} for v in views]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        board = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:  # quiet: the terminal belongs to the user
                pass

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                path = self.path.split("?", 1)[0]
                try:
                    if path in ("/", "/index.html"):
                        self._send(200, board.page, "text/html; charset=utf-8")
                    elif path == "/plotly.min.js":
                        self._send(200, board.plotly, "application/javascript")
                    elif path == "/api/state":
                        self._send(200, to_json(board.state()), "application/json")
                    elif path == "/api/runs":
                        self._send(200, to_json(board.runs()), "application/json")
                    else:
                        self._send(404, b'{"error": "not found"}', "application/json")
                except ConfigError as exc:  # a directory removed while followed
                    self._send(410, to_json({"error": str(exc)}), "application/json")
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler

    def start(self) -> Dashboard:
        """Serve in a background thread (tests, notebooks); ``close`` stops it."""
        self.thread = threading.Thread(target=self.server.serve_forever, name="onebyte-dashboard", daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def close(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
