"""The ranks of one denoiser replica over N devices (settings.context_parallel = N > 1; docs/parallel.md).

Two ways to start them, one process per device (gloo on the CPU, NCCL on CUDA; rank r on cuda:<local rank> when
the device setting is `cuda`):
  - launched by torchrun (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT set): every rank runs the
    service's main; rank 0 serves, the others call `run_follower`. torchrun's agent ends the group when a rank
    dies;
  - started alone: the process is rank 0 and `start_lead` spawns ranks 1..N-1 as its children, meeting them
    through a TCPStore on 127.0.0.1. A watchdog ends rank 0 (REPLICA_DOWN_EXIT) the moment a child exits, and
    each child ends itself when rank 0 is gone, so no rank outlives its replica or waits on a dead one.
Rank 0 alone is the Kafka consumer, the gRPC server, the health and metrics endpoint and the writer of
checkpoints; the followers load the same models and run `movakit.runtime.parallel_denoise.follow`.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from dataclasses import dataclass

import torch
import torch.distributed as dist

from movakit.runtime.parallel_denoise import COLLECTIVE_TIMEOUT, Lead, follow, replica_down
from movakit.services.denoiser.settings import DenoiserSettings

log = logging.getLogger("movakit.denoiser.ranks")
_STORE_HOST = "127.0.0.1"


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank_device(device: str, local_rank: int) -> str:
    """The device of a rank: cuda -> cuda:<local rank>; cpu stays cpu."""
    return f"cuda:{local_rank}" if device == "cuda" else device


def own_settings(settings: DenoiserSettings, device: str) -> DenoiserSettings:
    """What one rank loads its models with: its own device (the replica's size lives in the process group)."""
    return dataclasses.replace(settings, device=device, context_parallel=1)


def _join_group(settings: DenoiserSettings, device: str, rank: int, store: dist.Store | None) -> None:
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    else:  # the ranks share the host's cores
        torch.set_num_threads(max(1, torch.get_num_threads() // settings.context_parallel))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if store is None:  # torchrun's environment
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    else:
        dist.init_process_group(backend, store=store, rank=rank, world_size=settings.context_parallel,
                                timeout=COLLECTIVE_TIMEOUT)


@dataclass
class LeadRanks:
    """Rank 0's view of its replica: its `Lead`, its own settings (own_settings) and the ranks it spawned (none
    under torchrun)."""

    lead: Lead
    settings: DenoiserSettings
    followers: list[multiprocessing.Process]
    _stopping: threading.Event

    def stop(self) -> None:
        """Tell the followers to finish, wait for them (SIGKILL after 30 s), leave the process group."""
        self._stopping.set()
        self.lead.stop()
        for process in self.followers:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()
        dist.destroy_process_group()


def start_lead(settings: DenoiserSettings) -> LeadRanks:
    """Rank 0: join the replica's process group (spawning the other ranks unless torchrun started them)."""
    stopping = threading.Event()
    if launched_by_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        if world != settings.context_parallel:
            raise SystemExit(f"mova-denoiser: error: {settings.env_name('context_parallel')}: "
                             f"{settings.context_parallel}, but torchrun started {world} processes")
        device = rank_device(settings.device, int(os.environ.get("LOCAL_RANK", "0")))
        _join_group(settings, device, 0, None)
        return LeadRanks(Lead(device), own_settings(settings, device), [], stopping)
    store = dist.TCPStore(_STORE_HOST, 0, settings.context_parallel, is_master=True, timeout=COLLECTIVE_TIMEOUT,
                          wait_for_workers=False)
    spawn = multiprocessing.get_context("spawn")
    followers = [spawn.Process(target=_spawned_follower, args=(settings, rank, store.port, os.getpid()),
                               name=f"denoiser-rank-{rank}") for rank in range(1, settings.context_parallel)]
    for process in followers:
        process.start()
    threading.Thread(target=_watch_followers, args=(followers, stopping), name="cp-watchdog", daemon=True).start()
    device = rank_device(settings.device, 0)
    _join_group(settings, device, 0, store)
    log.info("replica ranks joined", extra={"fields": {
        "ranks": settings.context_parallel, "pids": [os.getpid(), *(p.pid for p in followers)]}})
    return LeadRanks(Lead(device), own_settings(settings, device), followers, stopping)


def _watch_followers(followers: list[multiprocessing.Process], stopping: threading.Event) -> None:
    """Rank 0: a follower that exits (killed, crashed, out of memory) takes the replica down at once."""
    ended = multiprocessing.connection.wait([p.sentinel for p in followers])
    if not stopping.is_set():
        gone = [p for p in followers if p.sentinel in ended]
        for process in gone:
            process.join(5)  # its exit code (the sentinel can be ready a moment before it can be reaped)
        replica_down(f"a rank exited: {', '.join(f'{p.name} (pid {p.pid}, exit {p.exitcode})' for p in gone)}")


def _watch_parent(parent: int) -> None:
    """A spawned follower: end when rank 0 is gone (it may have died without telling anyone)."""
    while os.getppid() == parent:
        threading.Event().wait(1.0)
    replica_down("rank 0 is gone")


def _spawned_follower(settings: DenoiserSettings, rank: int, port: int, parent: int) -> None:
    threading.Thread(target=_watch_parent, args=(parent,), name="cp-parent", daemon=True).start()
    store = dist.TCPStore(_STORE_HOST, port, settings.context_parallel, is_master=False, timeout=COLLECTIVE_TIMEOUT)
    _follow(settings, rank, rank_device(settings.device, rank), store)


def run_follower(settings: DenoiserSettings) -> int:
    """A rank > 0 started by torchrun: join the group, load the models, follow rank 0 until it stops."""
    _follow(settings, int(os.environ["RANK"]), rank_device(settings.device, int(os.environ["LOCAL_RANK"])), None)
    return 0


def _follow(settings: DenoiserSettings, rank: int, device: str, store: dist.Store | None) -> None:
    from movakit.runtime.stage_service import load_models
    from movakit.runtime.stage_settings import setup_json_logging
    from movakit.services.denoiser.servicer import COMPONENTS

    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # rank 0 stops on them and then stops this rank
        signal.signal(stop_signal, signal.SIG_IGN)
    setup_json_logging()
    _join_group(settings, device, rank, store)
    models = load_models(own_settings(settings, device), COMPONENTS)
    log.info("following rank 0", extra={"fields": {"rank": rank, "device": device, "replica": settings.replica_id}})
    follow(models)
    log.info("stopped", extra={"fields": {"rank": rank}})
    dist.destroy_process_group()
