"""One denoiser spread over N processes (one per device): rank 0 leads, the other ranks follow (docs/parallel.md).

Rank 0 is the ordinary denoiser (Kafka consumer, gRPC server, checkpoints, progress); the other ranks hold the
same models and run nothing but `follow`. For each task rank 0 calls `denoise_split`, which broadcasts the
request, and every rank runs the sampler inside `sequence_parallel`, so each computes 1/N of every forward. After
each step rank 0 runs its step hook (progress, checkpoint, cancellation) and broadcasts whether the loop goes on:
a cancelled or failed task stops every rank at the same step, and no rank is left waiting in a collective.
The request travels with torch.distributed's object broadcast (pickled between the ranks of one deployment; never
over Kafka or S3).
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from movakit.parallel import sequence_parallel
from movakit.stages.denoise import DenoiseRequest, DenoiseResult, StepHook, StepInfo, denoise


class _Stopped(Exception):
    """Rank 0 ended the task early; a follower leaves its sampler loop."""


def _broadcast(value: Any = None) -> Any:
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def denoise_split(models, req: DenoiseRequest, *, on_step: StepHook | None = None, **options) -> DenoiseResult:
    """Rank 0: run `denoise` over every rank of the default group. `options` are denoise's keyword options."""
    _broadcast(("denoise", req, options))

    def step(info: StepInfo) -> None:
        stop = True
        try:
            if on_step is not None:
                on_step(info)
            stop = False
        finally:
            _broadcast(stop)

    with sequence_parallel():
        return denoise(models, req, on_step=step, **options)


def follow(models) -> None:
    """Ranks > 0: run every task rank 0 broadcasts until it calls `stop_followers`."""
    while True:
        message = _broadcast()
        if message is None:
            return
        _kind, req, options = message

        def step(_info: StepInfo) -> None:
            if _broadcast():
                raise _Stopped

        try:
            with sequence_parallel():
                denoise(models, req, on_step=step, **options)
        except _Stopped:
            pass


def stop_followers() -> None:
    """Rank 0, at shutdown: end `follow` on the other ranks."""
    _broadcast(None)
