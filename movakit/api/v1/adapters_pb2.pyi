from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AdapterInfo(_message.Message):
    __slots__ = ("name", "rank", "alpha", "targets", "layers", "parameters", "base", "sha256", "notes", "size_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    rank: int
    alpha: float
    targets: str
    layers: int
    parameters: int
    base: str
    sha256: str
    notes: _containers.RepeatedScalarFieldContainer[str]
    size_bytes: int
    def __init__(self, name: _Optional[str] = ..., rank: _Optional[int] = ..., alpha: _Optional[float] = ..., targets: _Optional[str] = ..., layers: _Optional[int] = ..., parameters: _Optional[int] = ..., base: _Optional[str] = ..., sha256: _Optional[str] = ..., notes: _Optional[_Iterable[str]] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class UploadAdapterChunk(_message.Message):
    __slots__ = ("name", "manifest", "replace", "weights")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    manifest: bytes
    replace: bool
    weights: bytes
    def __init__(self, name: _Optional[str] = ..., manifest: _Optional[bytes] = ..., replace: _Optional[bool] = ..., weights: _Optional[bytes] = ...) -> None: ...

class ListAdaptersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAdaptersResponse(_message.Message):
    __slots__ = ("adapters",)
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    adapters: _containers.RepeatedCompositeFieldContainer[AdapterInfo]
    def __init__(self, adapters: _Optional[_Iterable[_Union[AdapterInfo, _Mapping]]] = ...) -> None: ...

class GetAdapterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetAdapterResponse(_message.Message):
    __slots__ = ("info", "manifest", "weights_url", "url_expires_in_s")
    INFO_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_URL_FIELD_NUMBER: _ClassVar[int]
    URL_EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    info: AdapterInfo
    manifest: bytes
    weights_url: str
    url_expires_in_s: int
    def __init__(self, info: _Optional[_Union[AdapterInfo, _Mapping]] = ..., manifest: _Optional[bytes] = ..., weights_url: _Optional[str] = ..., url_expires_in_s: _Optional[int] = ...) -> None: ...

class DeleteAdapterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteAdapterResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
