"""An ASGI app served by uvicorn on a background thread of a service process (the gateway's HTTP API)."""

from __future__ import annotations

import asyncio
import logging
import threading

import uvicorn

log = logging.getLogger("movakit.http")


class HttpServer:
    """Serves `app` on `listen` (host:port). `start()` returns once the socket accepts connections and raises
    OSError when it cannot bind; `stop()` ends the server and waits for its thread."""

    def __init__(self, app, listen: str, *, name: str) -> None:
        host, _, port = listen.rpartition(":")
        config = uvicorn.Config(app, host=host.strip("[]"), port=int(port), log_config=None, access_log=False,
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._listen = listen
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"{name}-http", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve())
        except BaseException as exc:  # noqa: BLE001 - uvicorn ends a failed bind with SystemExit
            self._error = exc

    def start(self, timeout_s: float = 30.0) -> None:
        self._thread.start()
        while not self._server.started:
            self._thread.join(0.05)
            if not self._thread.is_alive():
                raise OSError(f"cannot serve HTTP on {self._listen} ({self._error!r}; see the log above)")
            timeout_s -= 0.05
            if timeout_s <= 0:
                self.stop()
                raise OSError(f"HTTP server on {self._listen} did not start")
        log.info("http serving", extra={"fields": {"address": self._listen}})

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
