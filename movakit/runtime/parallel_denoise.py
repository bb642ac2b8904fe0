"""One denoiser spread over N processes (one per device): rank 0 leads, the other ranks follow (docs/parallel.md).

Rank 0 is the ordinary denoiser (Kafka consumer, gRPC server, checkpoints, progress) and owns a `Lead`; the other
ranks hold the same models and run nothing but `follow`. For each task `Lead.denoise` broadcasts the request (and
the task's LoRA adapter, already read and checked by rank 0), and every rank runs the sampler inside
`sequence_parallel`, so each computes 1/N of every forward. After each step rank 0 runs its step hook (progress,
checkpoint, cancellation) and broadcasts whether the loop goes on: a cancelled or failed task stops every rank at
the same step, and no rank is left waiting in a collective. While idle, rank 0 broadcasts a heartbeat every
`heartbeat_s`, so an idle follower's wait never reaches the collective timeout and a dead rank is noticed.

A replica whose ranks may have left lockstep is not repaired: a collective that fails or times out, or a sampler
error raised after the first forward began (only the step hook's errors are agreed on by all ranks), ends the
process with REPLICA_DOWN_EXIT (`replica_down`); the orchestrator restarts the replica and the uncommitted task is
redelivered. An error raised before any forward (the sampler's checks of the request) is raised alike on every
rank: rank 0 fails the task as a single-process denoiser would, the followers wait for the next one.
The messages travel with torch.distributed's object broadcast (pickled between the ranks of one deployment; never
over Kafka or S3).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from movakit.lora.adapter import LoraAdapter, applied
from movakit.models.dual_tower import dual_tower_forward
from movakit.parallel import sequence_parallel
from movakit.stages.denoise import DenoiseRequest, DenoiseResult, StepHook, StepInfo, denoise

log = logging.getLogger("movakit.parallel_denoise")

COLLECTIVE_TIMEOUT = timedelta(minutes=10)  # the process group's timeout for every collective of the replica
HEARTBEAT_S = 30.0  # rank 0's idle heartbeat: well under COLLECTIVE_TIMEOUT
REPLICA_DOWN_EXIT = 3  # exit status of a rank that takes its replica down
_IDLE = "idle"


@dataclass(frozen=True)
class _Task:
    req: DenoiseRequest
    adapter: LoraAdapter | None
    lora_scale: float
    label: str  # names the task in the followers' logs (the job id)
    options: dict[str, Any]  # denoise's keyword options (cfg_batch, offload)


class _Stopped(Exception):
    """Rank 0 ended the task early; a follower leaves its sampler loop."""


def replica_down(reason: str) -> NoReturn:
    """End this rank now, non-zero: the replica's ranks are no longer in step (or one is gone)."""
    log.critical("replica down", extra={"fields": {"rank": dist.get_rank() if dist.is_initialized() else -1,
                                                   "reason": reason}})
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(REPLICA_DOWN_EXIT)


def _broadcast(what: str, value: Any = None) -> Any:
    """Rank 0's `value` on every rank; a failed or timed-out broadcast takes the replica down."""
    box = [value]
    try:
        dist.broadcast_object_list(box, src=0)
    except Exception as exc:  # noqa: BLE001 - gloo/NCCL errors have no common type
        replica_down(f"{what}: broadcast failed: {type(exc).__name__}: {exc}")
    return box[0]


def _marking_forward(started: list[bool]) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The dual-tower forward, noting that a forward (and so the first collective) began."""

    def forward(*args, **kwargs):
        started[0] = True
        return dual_tower_forward(*args, **kwargs)

    return forward


class Lead:
    """Rank 0's side: `denoise` runs a task on every rank; `stop` ends the followers. Thread-safe: the Kafka loop,
    the direct RPC and the heartbeat take turns (one lock around every sequence of collectives)."""

    def __init__(self, device: torch.device | str = "cpu", heartbeat_s: float = HEARTBEAT_S) -> None:
        self.device = torch.device(device)
        self.heartbeat_s = heartbeat_s
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._heart = threading.Thread(target=self._beat, name="cp-heartbeat", daemon=True)
        self._heart.start()

    def _on_device(self) -> None:
        if self.device.type == "cuda":  # NCCL's object broadcast uses the calling thread's current device
            torch.cuda.set_device(self.device)

    def _beat(self) -> None:
        self._on_device()
        while not self._stopped.wait(self.heartbeat_s):
            with self._lock:
                if not self._stopped.is_set():
                    _broadcast("heartbeat", _IDLE)

    def denoise(self, models, req: DenoiseRequest, *, on_step: StepHook | None = None,
                adapter: LoraAdapter | None = None, lora_scale: float = 1.0, label: str = "",
                **options) -> DenoiseResult:
        """`movakit.stages.denoise.denoise` over every rank; `adapter` (with `lora_scale`) must already be applied
        to rank 0's models (movakit.lora.cache.AdapterCache.use): the followers apply it to theirs. `label` names
        the task in the followers' logs."""
        started = [False]
        hook_failed = False

        def step(info: StepInfo) -> None:
            nonlocal hook_failed
            stop = True
            try:
                if on_step is not None:
                    on_step(info)
                stop = False
            except BaseException:
                hook_failed = True
                raise
            finally:
                _broadcast("step", stop)

        with self._lock:
            if self._stopped.is_set():
                raise RuntimeError("the replica's followers were stopped")
            self._on_device()
            _broadcast("task", _Task(req, adapter, lora_scale, label, options))
            try:
                with sequence_parallel():
                    return denoise(models, req, on_step=step, forward=_marking_forward(started), **options)
            except Exception as exc:
                if hook_failed or not started[0]:
                    raise
                replica_down(f"the split sampler failed on rank 0: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """At shutdown: end `follow` on the other ranks (a follower already gone is only logged)."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
            box: list[Any] = [None]
            try:
                dist.broadcast_object_list(box, src=0)
            except Exception as exc:  # noqa: BLE001 - stopping anyway
                log.warning("followers not told to stop", extra={"fields": {"error": str(exc)}})


def follow(models) -> None:
    """Ranks > 0: run every task rank 0 broadcasts until `Lead.stop`."""
    while True:
        message = _broadcast("waiting for a task")
        if message is None:
            return
        if isinstance(message, str):  # _IDLE
            continue
        started = [False]
        fields = {"rank": dist.get_rank(), "task": message.label}

        def step(_info: StepInfo) -> None:
            if _broadcast("step"):
                raise _Stopped

        try:
            with applied(models, message.adapter, message.lora_scale), sequence_parallel():
                denoise(models, message.req, on_step=step, forward=_marking_forward(started), **message.options)
            log.info("split denoise done", extra={"fields": fields})
        except _Stopped:
            log.info("split denoise stopped by rank 0", extra={"fields": fields})
        except Exception as exc:  # noqa: BLE001
            if started[0]:
                replica_down(f"the split sampler failed: {type(exc).__name__}: {exc}")
            log.info("task refused before the first forward, as on rank 0",
                     extra={"fields": {**fields, "error": str(exc)}})
