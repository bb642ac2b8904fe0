"""movakit.runtime.periodic: rounds repeat, a failing round does not end the thread, stop ends it."""

from __future__ import annotations

import threading

from movakit.runtime.periodic import Periodic


def test_a_failing_round_is_logged_and_the_next_one_runs(caplog):
    calls = []
    third = threading.Event()

    def work():
        calls.append(len(calls))
        if len(calls) == 1:
            raise ConnectionError("S3 unreachable")
        if len(calls) == 3:
            third.set()

    periodic = Periodic("test-periodic", 0.01, work, first_now=True)
    periodic.start()
    assert third.wait(10)
    periodic.stop()
    assert not periodic._thread.is_alive()
    assert "periodic work failed" in caplog.text and "S3 unreachable" in caplog.text
    done = len(calls)
    assert not threading.Event().wait(0.05) and len(calls) == done  # no round after stop
