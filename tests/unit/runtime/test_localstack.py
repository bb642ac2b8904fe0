"""ManagedProcess and the startup checks of the local servers (no server needs to come up here)."""

from __future__ import annotations

import socket
import sys

import pytest

from movakit.runtime.localstack import LocalStackError, ManagedProcess, _wait, spawn, free_port, start_tansu


def test_stop_ends_a_process_and_reports_its_code(tmp_path):
    log = tmp_path / "sleep.log"
    process = spawn([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], log, None,
                    tmp_path)
    managed = ManagedProcess("sleeper", process, "127.0.0.1:0", log)
    assert managed.running()
    assert managed.stop(timeout_s=10) == -15  # SIGTERM
    assert not managed.running()


def test_a_server_that_dies_at_startup_is_reported_with_its_log(tmp_path):
    log = tmp_path / "crash.log"
    process = spawn([sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"], log, None, tmp_path)
    managed = ManagedProcess("crash", process, "127.0.0.1:0", log)
    with pytest.raises(LocalStackError, match="crash: exited with 3 during startup; log:\nbad config"):
        _wait(managed, lambda: False, timeout_s=30)


def test_tansu_on_a_taken_port_fails_clearly(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused and Tansu cannot bind
        port = taken.getsockname()[1]
        with pytest.raises(LocalStackError, match="tansu: exited"):
            start_tansu(port, tmp_path, timeout_s=10)


def test_free_ports_are_free():
    port = free_port()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


def test_stack_up_reports_a_broker_that_cannot_start(tmp_path, capsys):
    from movakit.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: `up` finds it closed, Tansu cannot bind it
        port = taken.getsockname()[1]
        others = [free_port() for _ in range(7)]
        argv = ["stack", "up", "--state-dir", str(tmp_path), "--kafka-port", str(port), "--s3-port", str(others[0]),
                "--gateway-port", str(others[1]), "--http-port", str(others[6]),
                "--stage-ports", ",".join(map(str, others[2:6])), "--no-trainer"]
        assert main(argv) == 1
    assert "mova stack up: tansu: exited" in capsys.readouterr().out
    assert not (tmp_path / "stack.json").exists()


def test_stack_up_refuses_a_port_out_of_range(tmp_path, capsys):
    from movakit.cli import main

    assert main(["stack", "up", "--state-dir", str(tmp_path), "--kafka-port", "70000"]) == 1
    assert "mova stack up: ports must lie in 1..65535" in capsys.readouterr().out


def test_stack_up_triton_port_is_checked_with_the_others(tmp_path, capsys):
    from movakit.cli import main

    argv = ["stack", "up", "--state-dir", str(tmp_path), "--triton", "--triton-port", "50051"]  # the gateway's
    assert main(argv) == 1
    assert "mova stack up: ports must differ" in capsys.readouterr().out
