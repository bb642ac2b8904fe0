from movakit.api.v1 import common_pb2 as _common_pb2
from movakit.api.v1 import events_pb2 as _events_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncodeOutput(_message.Message):
    __slots__ = ("context", "negative_context", "y")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.TensorRef
    negative_context: _common_pb2.TensorRef
    y: _common_pb2.TensorRef
    def __init__(self, context: _Optional[_Union[_common_pb2.TensorRef, _Mapping]] = ..., negative_context: _Optional[_Union[_common_pb2.TensorRef, _Mapping]] = ..., y: _Optional[_Union[_common_pb2.TensorRef, _Mapping]] = ...) -> None: ...
