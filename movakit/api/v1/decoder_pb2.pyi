from movakit.api.v1 import common_pb2 as _common_pb2
from movakit.api.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecodeOutput(_message.Message):
    __slots__ = ("artifacts", "clip", "last_frame")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    LAST_FRAME_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Artifact]
    clip: _common_pb2.TensorRef
    last_frame: _common_pb2.ObjectRef
    def __init__(self, artifacts: _Optional[_Iterable[_Union[_common_pb2.Artifact, _Mapping]]] = ..., clip: _Optional[_Union[_common_pb2.TensorRef, _Mapping]] = ..., last_frame: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ...) -> None: ...
