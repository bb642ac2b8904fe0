"""A daemon thread that runs one piece of work every so many seconds until it is stopped.

The gateway's stalled-job reaper and artifact retention sweep run on it. A round that raises is logged and the
next round tries again, so a broker or object store that is down for a while never ends the thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("movakit.periodic")


class Periodic:
    """Calls `work()` every `interval_s` seconds on a daemon thread named `name` (the first call at once when
    `first_now`, else after one interval) until `stop()`."""

    def __init__(self, name: str, interval_s: float, work: Callable[[], object], *, first_now: bool = False) -> None:
        self.interval_s = interval_s
        self._work = work
        self._first_now = first_now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        if self._first_now:
            self._round()
        while not self._stop.wait(self.interval_s):
            self._round()

    def _round(self) -> None:
        try:
            self._work()
        except Exception:  # noqa: BLE001 - e.g. S3 or Kafka unreachable: the next round tries again
            log.exception("periodic work failed", extra={"fields": {"thread": self._thread.name}})
