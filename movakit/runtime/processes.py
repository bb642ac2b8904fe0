"""The processes `mova stack up` starts, as recorded in its state file: who they are, whether each is still the
same process, and stopping them in order (movakit/runtime/stack.py)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ProcessEntry:
    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat start time: guards against a recycled pid
    address: str
    log: str
    kind: str  # "infra" | "service"
    argv: tuple[str, ...] = ()  # a service's command line and its own variables, run again by `restart`
    env: dict[str, str] = field(default_factory=dict)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process from /proc/<pid>/stat; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the fields after "(comm)": state is the 3rd field, starttime the 22nd
    return fields[0], int(fields[19])


def start_ticks(pid: int) -> int:
    """The process's start time in clock ticks (-1 when it is gone): with the pid, what identifies it."""
    stat = _proc_stat(pid)
    return -1 if stat is None else stat[1]


def is_alive(entry: ProcessEntry) -> bool:
    """True while the recorded process (same pid AND same start time) is running and not a zombie."""
    stat = _proc_stat(entry.pid)
    return stat is not None and stat[0] != "Z" and stat[1] == entry.start_ticks


def stop_all(entries: list[ProcessEntry], timeout_s: float = 15.0) -> None:
    """SIGTERM services first (they finish their task and flush), then the infra servers one by one, newest first
    (Tansu before the SeaweedFS holding its storage); SIGKILL what is left."""
    infra = [e for e in entries if e.kind == "infra"]
    for group in [[e for e in entries if e.kind == "service"], *([e] for e in reversed(infra))]:
        targets = [e for e in group if is_alive(e)]
        for e in targets:
            os.kill(e.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(is_alive(e) for e in targets) and time.monotonic() < deadline:
            reap(targets)
            time.sleep(0.1)
        for e in targets:
            if is_alive(e):
                os.kill(e.pid, signal.SIGKILL)
        reap(targets)


def reap(entries: list[ProcessEntry]) -> None:
    """Collect these processes if they are children of this process (`up` and `down` in one process, e.g. tests);
    a zombie would otherwise look alive."""
    for e in entries:
        try:
            os.waitpid(e.pid, os.WNOHANG)
        except ChildProcessError:
            pass
