"""Admission of new jobs: estimated cost, the queue and per-tenant limits, and the retry delay of a refusal.

A job's cost is frames x height x width x steps (its pixel-steps; a long video's: times its segments), scaled to
GPU-seconds by the deployment's `gpu_s_per_mpixel_step` setting (GPU-seconds per million pixel-steps). Submit is refused with RESOURCE_EXHAUSTED
when, counting the new job, the unfinished jobs would exceed `max_active_jobs`, or their estimated GPU-seconds
would exceed `max_queued_gpu_s` overall or `tenant_max_gpu_s` for the caller's tenant. The refusal carries a
google.rpc.RetryInfo: the GPU-seconds of work that must finish before the job fits (for the job-count limit:
the mean cost of an unfinished job), divided by the deployment's `gpus`, within 1..600 s.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from movakit.api.v1 import common_pb2, gateway_pb2

MIN_RETRY_S = 1.0
MAX_RETRY_S = 600.0


def cost_gpu_s(params: common_pb2.GenerationParams, gpu_s_per_mpixel_step: float, segments: int = 0) -> float:
    """Estimated GPU-seconds of a job whose params have their defaults filled in; `segments` those of a long
    video (movakit.long_video.segment_plan), 0 for one clip."""
    pixel_steps = params.num_frames * params.height * params.width * params.num_inference_steps
    pixel_steps *= max(segments, 1)
    return pixel_steps / 1e6 * gpu_s_per_mpixel_step


def request_sha256(request: gateway_pb2.SubmitRequest, resolved: common_pb2.GenerationParams) -> str:
    """Digest of what a Submit asks for: its params with defaults filled in (`resolved`; the seed only when the
    request set one), then the image bytes. Two requests with one idempotency key must have the same digest."""
    params = common_pb2.GenerationParams()
    params.CopyFrom(resolved)
    if not request.params.HasField("seed"):
        params.ClearField("seed")
    digest = hashlib.sha256(params.SerializeToString(deterministic=True))
    digest.update(b"\0image\0")
    digest.update(request.image)
    return digest.hexdigest()


@dataclass(frozen=True)
class Limits:
    max_active_jobs: int
    max_queued_gpu_s: float
    tenant_max_gpu_s: float
    gpus: int


@dataclass(frozen=True)
class Refusal:
    message: str
    retry_after_s: float


def check(limits: Limits, cost: float, active: int, active_gpu_s: float, tenant_gpu_s: float) -> Refusal | None:
    """None when a job of `cost` GPU-seconds fits next to the unfinished work; otherwise why not and when to
    retry. `active` / `active_gpu_s` count every unfinished job, `tenant_gpu_s` those of the caller's tenant."""
    def refusal(message: str, wait_gpu_s: float) -> Refusal:
        delay = min(MAX_RETRY_S, max(MIN_RETRY_S, wait_gpu_s / limits.gpus))
        return Refusal(message, round(delay, 1))

    if active >= limits.max_active_jobs:
        return refusal(f"{active} jobs are queued or running (limit {limits.max_active_jobs})",
                       active_gpu_s / max(active, 1))
    if tenant_gpu_s + cost > limits.tenant_max_gpu_s:
        return refusal(f"the tenant's unfinished jobs hold {tenant_gpu_s:.0f} GPU-s; this one needs {cost:.0f} "
                       f"(tenant quota {limits.tenant_max_gpu_s:.0f})", tenant_gpu_s + cost - limits.tenant_max_gpu_s)
    if active_gpu_s + cost > limits.max_queued_gpu_s:
        return refusal(f"unfinished jobs hold {active_gpu_s:.0f} GPU-s; this one needs {cost:.0f} "
                       f"(limit {limits.max_queued_gpu_s:.0f})", active_gpu_s + cost - limits.max_queued_gpu_s)
    return None


def abort_exhausted(context: grpc.ServicerContext, refusal: Refusal) -> None:
    """Ends the call with RESOURCE_EXHAUSTED and a google.rpc.RetryInfo detail holding the retry delay."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(refusal.retry_after_s * 1e9))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED,
                               message=f"{refusal.message}; retry in {refusal.retry_after_s:g} s")
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    context.abort_with_status(rpc_status.to_status(status))

