import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLING: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_ENHANCE: _ClassVar[Stage]
    STAGE_ENCODE: _ClassVar[Stage]
    STAGE_DENOISE: _ClassVar[Stage]
    STAGE_DECODE: _ClassVar[Stage]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLING: JobState
JOB_STATE_CANCELLED: JobState
STAGE_UNSPECIFIED: Stage
STAGE_ENHANCE: Stage
STAGE_ENCODE: Stage
STAGE_DENOISE: Stage
STAGE_DECODE: Stage

class LoraAdapter(_message.Message):
    __slots__ = ("name", "scale")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    name: str
    scale: float
    def __init__(self, name: _Optional[str] = ..., scale: _Optional[float] = ...) -> None: ...

class GenerationParams(_message.Message):
    __slots__ = ("prompt", "negative_prompt", "height", "width", "num_frames", "fps", "num_inference_steps", "guidance_scale", "seed", "enhance_prompt", "lora", "priority", "sync_guidance_scale", "audio_guidance_scale", "audio_sync_guidance_scale", "duration_s", "shots", "step_cache")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    NUM_INFERENCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ENHANCE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SYNC_GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SYNC_GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    SHOTS_FIELD_NUMBER: _ClassVar[int]
    STEP_CACHE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    negative_prompt: str
    height: int
    width: int
    num_frames: int
    fps: float
    num_inference_steps: int
    guidance_scale: float
    seed: int
    enhance_prompt: bool
    lora: LoraAdapter
    priority: int
    sync_guidance_scale: float
    audio_guidance_scale: float
    audio_sync_guidance_scale: float
    duration_s: float
    shots: _containers.RepeatedScalarFieldContainer[str]
    step_cache: float
    def __init__(self, prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., num_frames: _Optional[int] = ..., fps: _Optional[float] = ..., num_inference_steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., seed: _Optional[int] = ..., enhance_prompt: _Optional[bool] = ..., lora: _Optional[_Union[LoraAdapter, _Mapping]] = ..., priority: _Optional[int] = ..., sync_guidance_scale: _Optional[float] = ..., audio_guidance_scale: _Optional[float] = ..., audio_sync_guidance_scale: _Optional[float] = ..., duration_s: _Optional[float] = ..., shots: _Optional[_Iterable[str]] = ..., step_cache: _Optional[float] = ...) -> None: ...

class TensorRef(_message.Message):
    __slots__ = ("bucket", "key", "sha256", "tensors", "size_bytes")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    key: str
    sha256: str
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    size_bytes: int
    def __init__(self, bucket: _Optional[str] = ..., key: _Optional[str] = ..., sha256: _Optional[str] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "shape", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ...) -> None: ...

class ObjectRef(_message.Message):
    __slots__ = ("bucket", "key", "sha256", "size_bytes", "content_type")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    key: str
    sha256: str
    size_bytes: int
    content_type: str
    def __init__(self, bucket: _Optional[str] = ..., key: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., content_type: _Optional[str] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("kind", "ref", "url", "url_expires_in_s")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    URL_EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    kind: str
    ref: ObjectRef
    url: str
    url_expires_in_s: int
    def __init__(self, kind: _Optional[str] = ..., ref: _Optional[_Union[ObjectRef, _Mapping]] = ..., url: _Optional[str] = ..., url_expires_in_s: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "state", "params", "idempotency_key", "input_image", "created_at", "updated_at", "stage", "step", "total_steps", "eta_s", "artifacts", "failure_reason", "effective_prompt", "cancel_requested", "tenant", "request_sha256", "cost_gpu_s", "segment", "segment_count", "dispatched_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    INPUT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    COST_GPU_S_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    params: GenerationParams
    idempotency_key: str
    input_image: ObjectRef
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    stage: Stage
    step: int
    total_steps: int
    eta_s: float
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    failure_reason: str
    effective_prompt: str
    cancel_requested: bool
    tenant: str
    request_sha256: str
    cost_gpu_s: float
    segment: int
    segment_count: int
    dispatched_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., params: _Optional[_Union[GenerationParams, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., input_image: _Optional[_Union[ObjectRef, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stage: _Optional[_Union[Stage, str]] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., eta_s: _Optional[float] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., failure_reason: _Optional[str] = ..., effective_prompt: _Optional[str] = ..., cancel_requested: _Optional[bool] = ..., tenant: _Optional[str] = ..., request_sha256: _Optional[str] = ..., cost_gpu_s: _Optional[float] = ..., segment: _Optional[int] = ..., segment_count: _Optional[int] = ..., dispatched_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
