import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from movakit.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingOffload(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_OFFLOAD_UNSPECIFIED: _ClassVar[TrainingOffload]
    TRAINING_OFFLOAD_NONE: _ClassVar[TrainingOffload]
    TRAINING_OFFLOAD_MODEL: _ClassVar[TrainingOffload]
    TRAINING_OFFLOAD_MODEL_AND_ACTIVATIONS: _ClassVar[TrainingOffload]
    TRAINING_OFFLOAD_BLOCKS: _ClassVar[TrainingOffload]
TRAINING_OFFLOAD_UNSPECIFIED: TrainingOffload
TRAINING_OFFLOAD_NONE: TrainingOffload
TRAINING_OFFLOAD_MODEL: TrainingOffload
TRAINING_OFFLOAD_MODEL_AND_ACTIVATIONS: TrainingOffload
TRAINING_OFFLOAD_BLOCKS: TrainingOffload

class DatasetChunk(_message.Message):
    __slots__ = ("dataset", "path", "data")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    path: str
    data: bytes
    def __init__(self, dataset: _Optional[str] = ..., path: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class DatasetUploaded(_message.Message):
    __slots__ = ("dataset", "files", "size_bytes")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    files: int
    size_bytes: int
    def __init__(self, dataset: _Optional[str] = ..., files: _Optional[int] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class FineTuneRequest(_message.Message):
    __slots__ = ("name", "dataset", "rank", "alpha", "steps", "learning_rate", "warmup_steps", "grad_accum", "components", "checkpoint_every", "seed", "idempotency_key", "gradient_checkpointing", "offload")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    GRAD_ACCUM_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    OFFLOAD_FIELD_NUMBER: _ClassVar[int]
    name: str
    dataset: str
    rank: int
    alpha: float
    steps: int
    learning_rate: float
    warmup_steps: int
    grad_accum: int
    components: _containers.RepeatedScalarFieldContainer[str]
    checkpoint_every: int
    seed: int
    idempotency_key: str
    gradient_checkpointing: bool
    offload: TrainingOffload
    def __init__(self, name: _Optional[str] = ..., dataset: _Optional[str] = ..., rank: _Optional[int] = ..., alpha: _Optional[float] = ..., steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., warmup_steps: _Optional[int] = ..., grad_accum: _Optional[int] = ..., components: _Optional[_Iterable[str]] = ..., checkpoint_every: _Optional[int] = ..., seed: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., gradient_checkpointing: _Optional[bool] = ..., offload: _Optional[_Union[TrainingOffload, str]] = ...) -> None: ...

class FineTuneJob(_message.Message):
    __slots__ = ("job_id", "state", "request", "step", "total_steps", "loss", "video_loss", "audio_loss", "learning_rate", "eta_s", "error", "adapter", "resumed_from_step", "created_at", "updated_at", "tenant")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    VIDEO_LOSS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: _common_pb2.JobState
    request: FineTuneRequest
    step: int
    total_steps: int
    loss: float
    video_loss: float
    audio_loss: float
    learning_rate: float
    eta_s: float
    error: str
    adapter: str
    resumed_from_step: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    tenant: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., request: _Optional[_Union[FineTuneRequest, _Mapping]] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., video_loss: _Optional[float] = ..., audio_loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., eta_s: _Optional[float] = ..., error: _Optional[str] = ..., adapter: _Optional[str] = ..., resumed_from_step: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tenant: _Optional[str] = ...) -> None: ...

class FineTuneJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListFineTuneJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFineTuneJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[FineTuneJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[FineTuneJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
