import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from movakit.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnhanceTask(_message.Message):
    __slots__ = ("job_id", "params", "image", "tenant")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    params: _common_pb2.GenerationParams
    image: _common_pb2.ObjectRef
    tenant: str
    def __init__(self, job_id: _Optional[str] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ..., image: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., tenant: _Optional[str] = ...) -> None: ...

class EncodeTask(_message.Message):
    __slots__ = ("job_id", "params", "image", "prompt", "tenant", "segment")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    params: _common_pb2.GenerationParams
    image: _common_pb2.ObjectRef
    prompt: str
    tenant: str
    segment: Segment
    def __init__(self, job_id: _Optional[str] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ..., image: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., prompt: _Optional[str] = ..., tenant: _Optional[str] = ..., segment: _Optional[_Union[Segment, _Mapping]] = ...) -> None: ...

class DenoiseTask(_message.Message):
    __slots__ = ("job_id", "params", "context", "negative_context", "y", "tenant", "segment")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    params: _common_pb2.GenerationParams
    context: _common_pb2.TensorRef
    negative_context: _common_pb2.TensorRef
    y: _common_pb2.TensorRef
    tenant: str
    segment: Segment
    def __init__(self, job_id: _Optional[str] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ..., context: _Optional[_Union[_common_pb2.TensorRef, _Mapping]] = ..., negative_context: _Optional[_Union[_common_pb2.TensorRef, _Mapping]] = ..., y: _Optional[_Union[_common_pb2.TensorRef, _Mapping]] = ..., tenant: _Optional[str] = ..., segment: _Optional[_Union[Segment, _Mapping]] = ...) -> None: ...

class DecodeTask(_message.Message):
    __slots__ = ("job_id", "params", "video_latents", "audio_latents", "segment", "tenant")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    VIDEO_LATENTS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_LATENTS_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    params: _common_pb2.GenerationParams
    video_latents: _common_pb2.TensorRef
    audio_latents: _common_pb2.TensorRef
    segment: Segment
    tenant: str
    def __init__(self, job_id: _Optional[str] = ..., params: _Optional[_Union[_common_pb2.GenerationParams, _Mapping]] = ..., video_latents: _Optional[_Union[_common_pb2.TensorRef, _Mapping]] = ..., audio_latents: _Optional[_Union[_common_pb2.TensorRef, _Mapping]] = ..., segment: _Optional[_Union[Segment, _Mapping]] = ..., tenant: _Optional[str] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("index", "count", "first_prompt")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_PROMPT_FIELD_NUMBER: _ClassVar[int]
    index: int
    count: int
    first_prompt: str
    def __init__(self, index: _Optional[int] = ..., count: _Optional[int] = ..., first_prompt: _Optional[str] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ...) -> None: ...

class StageStarted(_message.Message):
    __slots__ = ("stage", "worker", "segment")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    stage: _common_pb2.Stage
    worker: str
    segment: int
    def __init__(self, stage: _Optional[_Union[_common_pb2.Stage, str]] = ..., worker: _Optional[str] = ..., segment: _Optional[int] = ...) -> None: ...

class StageFinished(_message.Message):
    __slots__ = ("stage", "duration_s", "skipped", "segment")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    stage: _common_pb2.Stage
    duration_s: float
    skipped: bool
    segment: int
    def __init__(self, stage: _Optional[_Union[_common_pb2.Stage, str]] = ..., duration_s: _Optional[float] = ..., skipped: _Optional[bool] = ..., segment: _Optional[int] = ...) -> None: ...

class DenoiseStep(_message.Message):
    __slots__ = ("step", "total", "eta_s", "elapsed_s", "expert", "segment", "segment_count")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    EXPERT_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    step: int
    total: int
    eta_s: float
    elapsed_s: float
    expert: str
    segment: int
    segment_count: int
    def __init__(self, step: _Optional[int] = ..., total: _Optional[int] = ..., eta_s: _Optional[float] = ..., elapsed_s: _Optional[float] = ..., expert: _Optional[str] = ..., segment: _Optional[int] = ..., segment_count: _Optional[int] = ...) -> None: ...

class PromptEnhanced(_message.Message):
    __slots__ = ("prompt", "original_prompt", "backend", "fallback_reason", "notes")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_PROMPT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    original_prompt: str
    backend: str
    fallback_reason: str
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, prompt: _Optional[str] = ..., original_prompt: _Optional[str] = ..., backend: _Optional[str] = ..., fallback_reason: _Optional[str] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class Succeeded(_message.Message):
    __slots__ = ("artifacts",)
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Artifact]
    def __init__(self, artifacts: _Optional[_Iterable[_Union[_common_pb2.Artifact, _Mapping]]] = ...) -> None: ...

class Failed(_message.Message):
    __slots__ = ("stage", "reason")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    stage: _common_pb2.Stage
    reason: str
    def __init__(self, stage: _Optional[_Union[_common_pb2.Stage, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelRequested(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Cancelled(_message.Message):
    __slots__ = ("stage",)
    STAGE_FIELD_NUMBER: _ClassVar[int]
    stage: _common_pb2.Stage
    def __init__(self, stage: _Optional[_Union[_common_pb2.Stage, str]] = ...) -> None: ...

class Dispatched(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "time", "source", "queued", "stage_started", "stage_finished", "denoise_step", "succeeded", "failed", "cancelled", "prompt_enhanced", "cancel_requested", "dispatched")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STAGE_STARTED_FIELD_NUMBER: _ClassVar[int]
    STAGE_FINISHED_FIELD_NUMBER: _ClassVar[int]
    DENOISE_STEP_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_ENHANCED_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    time: _timestamp_pb2.Timestamp
    source: str
    queued: Queued
    stage_started: StageStarted
    stage_finished: StageFinished
    denoise_step: DenoiseStep
    succeeded: Succeeded
    failed: Failed
    cancelled: Cancelled
    prompt_enhanced: PromptEnhanced
    cancel_requested: CancelRequested
    dispatched: Dispatched
    def __init__(self, job_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., queued: _Optional[_Union[Queued, _Mapping]] = ..., stage_started: _Optional[_Union[StageStarted, _Mapping]] = ..., stage_finished: _Optional[_Union[StageFinished, _Mapping]] = ..., denoise_step: _Optional[_Union[DenoiseStep, _Mapping]] = ..., succeeded: _Optional[_Union[Succeeded, _Mapping]] = ..., failed: _Optional[_Union[Failed, _Mapping]] = ..., cancelled: _Optional[_Union[Cancelled, _Mapping]] = ..., prompt_enhanced: _Optional[_Union[PromptEnhanced, _Mapping]] = ..., cancel_requested: _Optional[_Union[CancelRequested, _Mapping]] = ..., dispatched: _Optional[_Union[Dispatched, _Mapping]] = ...) -> None: ...

class JobRecord(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ...) -> None: ...

class ArchivedJob(_message.Message):
    __slots__ = ("job", "events")
    JOB_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    events: _containers.RepeatedCompositeFieldContainer[JobEvent]
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ..., events: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("job_id", "topic", "partition", "offset", "payload", "reason", "service")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    topic: str
    partition: int
    offset: int
    payload: bytes
    reason: str
    service: str
    def __init__(self, job_id: _Optional[str] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., payload: _Optional[bytes] = ..., reason: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...
