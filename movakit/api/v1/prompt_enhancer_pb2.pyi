from movakit.api.v1 import events_pb2 as _events_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EnhanceOutput(_message.Message):
    __slots__ = ("prompt", "original_prompt", "backend", "fallback_reason")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_PROMPT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    original_prompt: str
    backend: str
    fallback_reason: str
    def __init__(self, prompt: _Optional[str] = ..., original_prompt: _Optional[str] = ..., backend: _Optional[str] = ..., fallback_reason: _Optional[str] = ...) -> None: ...
