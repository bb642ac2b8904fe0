from movakit.api.v1 import common_pb2 as _common_pb2
from movakit.api.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnhanceOutput(_message.Message):
    __slots__ = ("prompt", "original_prompt", "backend", "fallback_reason", "notes", "first_frame")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_PROMPT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    original_prompt: str
    backend: str
    fallback_reason: str
    notes: _containers.RepeatedScalarFieldContainer[str]
    first_frame: _common_pb2.ObjectRef
    def __init__(self, prompt: _Optional[str] = ..., original_prompt: _Optional[str] = ..., backend: _Optional[str] = ..., fallback_reason: _Optional[str] = ..., notes: _Optional[_Iterable[str]] = ..., first_frame: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ...) -> None: ...
