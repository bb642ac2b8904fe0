"""The task framework of the stage services, apart from any transport.

A stage is a `StageHandler`: it reads its inputs from S3, computes, stores its outputs under deterministic keys
and returns an output message; `follow_up` names the next stage's task and the events that announce the result.
`run_or_reuse` runs a handler at most once per job: when the stage's result manifest `jobs/<job>/<stage>/result.pb`
exists and every object it references is present with its recorded sha256 (a redelivered task, a repeated direct
call), the stored output is returned and nothing is recomputed. A long video's segment k keeps its stages' objects
and manifests under jobs/<job>/seg-<k>/<stage>/ (`stage_key`), so each segment is run, checkpointed and reused on
its own. `TaskContext` lets a handler publish progress events and check for cancellation. Two transports run
handlers: the Kafka loop (movakit.runtime.worker) and the direct RPC of `direct_rpc`, one generic gRPC servicer
for any stage.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from movakit.api.v1 import events_pb2
from movakit.runtime.object_store import ChecksumError, ObjectMissingError, ObjectStore, job_key

log = logging.getLogger("movakit.tasks")

_BLOB_MAGIC = b"MOVA-BLOB-1\n"


class JobCancelled(Exception):
    """Raised between steps or stages when the job's cancel was requested."""


@dataclass
class TaskContext:
    """What a stage handler may do besides computing: emit progress events and check for cancellation."""

    job_id: str
    emit: Callable[[events_pb2.JobEvent], None]  # publishes an event (a no-op for direct gRPC calls)
    is_cancelled: Callable[[str], bool]
    source: str

    def check_cancel(self) -> None:
        if self.is_cancelled(self.job_id):
            raise JobCancelled(self.job_id)

    def event(self, **kind: Message) -> events_pb2.JobEvent:
        return make_event(self.job_id, self.source, **kind)


class StageHandler(Protocol):
    """One stage, as the worker and the direct gRPC servicer see it."""

    rpc_service: ServiceDescriptor  # the stage's gRPC service: one method, task_type -> output_type
    store: ObjectStore
    stage: int  # common_pb2.Stage value
    stage_name: str  # "enhance" | "encode" | "denoise" | "decode": the jobs/<job>/<stage_name>/ folder
    inbox: str  # topic of the tasks
    next_topic: str | None  # topic of the follow-up task (follow_up may give none); None: the stage never has one
    task_type: type[Message]
    output_type: type[Message]

    def run(self, task: Message, ctx: TaskContext) -> Message:
        """Read the inputs, run the stage, store the outputs; return the stage's output message."""

    def outputs_valid(self, store: ObjectStore, output: Message) -> bool:
        """True when every object `output` references exists with its recorded checksum."""

    def follow_up(self, task: Message, output: Message, source: str) -> tuple[Message | None, list[events_pb2.JobEvent]]:
        """The next stage's task (None when there is none: the last stage, a long video's last segment) and the
        events that announce the result."""


def make_event(job_id: str, source: str, **kind: Message) -> events_pb2.JobEvent:
    """A JobEvent stamped now, with exactly one oneof member given as keyword, e.g. `failed=Failed(...)`."""
    (name, value), = kind.items()
    ts = Timestamp()
    ts.GetCurrentTime()
    event = events_pb2.JobEvent(job_id=job_id, time=ts, source=source)
    getattr(event, name).CopyFrom(value)
    return event


def task_segment(task: Message) -> events_pb2.Segment | None:
    """The long-video segment a task makes (the `segment` field of EncodeTask, DenoiseTask, DecodeTask); None for
    a one-clip job's tasks and for EnhanceTask (the enhancer runs once per job)."""
    if "segment" in task.DESCRIPTOR.fields_by_name and task.HasField("segment"):
        return task.segment
    return None


def with_segment(next_task: Message, task: Message) -> Message:
    """`next_task` carrying `task`'s long-video segment (when it has one): a segment's stages hand it on."""
    segment = task_segment(task)
    if segment is not None:
        next_task.segment.CopyFrom(segment)
    return next_task


def stage_key(task: Message, stage_name: str, *parts: str) -> str:
    """Key of an object of `task`'s stage: jobs/<job>/<stage>/<parts> for a one-clip job, jobs/<job>/seg-<k>/<stage>/
    <parts> for segment k of a long video."""
    segment = task_segment(task)
    folder = (f"seg-{segment.index}",) if segment is not None else ()
    return job_key(task.job_id, *folder, stage_name, *parts)


def manifest_key(task: Message, stage_name: str) -> str:
    return stage_key(task, stage_name, "result.pb")


def write_blob(store: ObjectStore, key: str, payload: bytes, content_type: str) -> None:
    """Store `payload` prefixed by its own sha256, so a reader can verify it without knowing the digest."""
    digest = hashlib.sha256(payload).hexdigest().encode()
    store.put_bytes(key, _BLOB_MAGIC + digest + b"\n" + payload, content_type)


def read_blob(store: ObjectStore, key: str) -> bytes | None:
    """The payload written by `write_blob`, or None when absent, torn or corrupt."""
    data = store.get_raw(key)
    if data is None or not data.startswith(_BLOB_MAGIC):
        return None
    digest, _, payload = data[len(_BLOB_MAGIC):].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None
    return payload


def write_manifest(store: ObjectStore, task: Message, stage_name: str, output: Message) -> None:
    """Record the stage's output message at manifest_key (written after the outputs)."""
    write_blob(store, manifest_key(task, stage_name), output.SerializeToString(deterministic=True),
               "application/x-protobuf")


def read_manifest(store: ObjectStore, task: Message, stage_name: str, output_type: type[Message]) -> Message | None:
    """The output message recorded for `task`'s stage, or None when absent, torn or unparsable."""
    payload = read_blob(store, manifest_key(task, stage_name))
    if payload is None:
        return None
    message = output_type()
    try:
        message.ParseFromString(payload)
    except DecodeError:
        return None
    return message


def run_or_reuse(handler: StageHandler, store: ObjectStore, task: Message, ctx: TaskContext,
                 on_start: Callable[[], None] | None = None) -> tuple[Message, bool]:
    """The stage's output for `task`: the stored one when its manifest and every referenced object are valid
    (returns skipped=True, nothing recomputed), else computed now by `handler.run` and recorded."""
    ctx.check_cancel()
    output = read_manifest(store, task, handler.stage_name, handler.output_type)
    if output is not None and handler.outputs_valid(store, output):
        return output, True
    if on_start is not None:
        on_start()
    output = handler.run(task, ctx)
    write_manifest(store, task, handler.stage_name, output)
    return output, False


def direct_context(job_id: str, source: str) -> TaskContext:
    """Context of a direct gRPC call: no events are published and nothing cancels it."""
    return TaskContext(job_id=job_id, emit=lambda event: None, is_cancelled=lambda job: False, source=source)


def serve_direct(handler: StageHandler, store: ObjectStore, request: Message, context: grpc.ServicerContext,
                 source: str) -> Message:
    """The body of a stage's direct RPC: the same run-or-reuse as the worker, without Kafka or events.

    Bad request fields -> INVALID_ARGUMENT; an input missing or failing its checksum -> FAILED_PRECONDITION;
    anything else -> INTERNAL. The message names the field or the object.
    """
    try:
        output, _ = run_or_reuse(handler, store, request, direct_context(request.job_id, source))
        return output
    except ValueError as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except (ChecksumError, ObjectMissingError) as exc:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    except Exception as exc:  # noqa: BLE001 - reported to the caller, the server keeps serving
        log.exception("direct call failed", extra={"fields": {"job_id": request.job_id, "stage": handler.stage_name}})
        context.abort(grpc.StatusCode.INTERNAL, f"{handler.stage_name} failed: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable: context.abort raises")


def direct_rpc(handler: StageHandler, source: str) -> Callable[[grpc.Server], list[str]]:
    """The stage as a direct RPC: `handler.rpc_service`'s one method answers with `serve_direct` (same handler,
    same keys, stored outputs reused; no Kafka, no events). Returns the `add_servicers` of grpc_server.serve."""
    service = handler.rpc_service
    (method,) = service.methods
    if (method.input_type.full_name, method.output_type.full_name) != (
            handler.task_type.DESCRIPTOR.full_name, handler.output_type.DESCRIPTOR.full_name):
        raise TypeError(f"{service.full_name}.{method.name} does not take {handler.task_type.__name__} "
                        f"and answer {handler.output_type.__name__}")

    def call(request: Message, context: grpc.ServicerContext) -> Message:
        return serve_direct(handler, handler.store, request, context, source)

    def add(server: grpc.Server) -> list[str]:
        rpc = grpc.unary_unary_rpc_method_handler(call, request_deserializer=handler.task_type.FromString,
                                                  response_serializer=handler.output_type.SerializeToString)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, {method.name: rpc}),))
        return [service.full_name]

    return add
