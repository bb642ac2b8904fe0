from movakit.api.v1 import common_pb2 as _common_pb2
from movakit.api.v1 import events_pb2 as _events_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DenoiseOutput(_message.Message):
    __slots__ = ("video_latents", "audio_latents")
    VIDEO_LATENTS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_LATENTS_FIELD_NUMBER: _ClassVar[int]
    video_latents: _common_pb2.TensorRef
    audio_latents: _common_pb2.TensorRef
    def __init__(self, video_latents: _Optional[_Union[_common_pb2.TensorRef, _Mapping]] = ..., audio_latents: _Optional[_Union[_common_pb2.TensorRef, _Mapping]] = ...) -> None: ...
