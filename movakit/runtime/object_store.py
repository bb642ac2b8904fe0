"""Tensors and files in S3 (SeaweedFS locally, MinIO or any S3 in deployments), every read checksum-verified.

Layout (ARCHITECTURE.md): jobs/<job>/input/..., jobs/<job>/encode/..., jobs/<job>/denoise/...,
jobs/<job>/output/video.mp4|audio.wav|preview.png, jobs/<job>/control/cancel (the cancel marker).

Tensors: one safetensors file per `put_tensors` call; its TensorRef describes the whole file (sha256 of the
file bytes plus name, shape and dtype of every tensor in it). The sha256 is also stored as object metadata, so
the ref of an existing object can be rebuilt and verified from its key alone (`tensor_ref_at`, `object_ref_at`).
(A worker that meets a redelivered task checks the refs recorded in its stage's result manifest instead:
movakit.runtime.tasks.)
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from opentelemetry.trace import SpanKind

from movakit.api.v1 import common_pb2
from movakit.runtime.telemetry import tracer

if TYPE_CHECKING:  # torch is imported on first tensor use: the gateway never needs it
    import torch

_SHA_META = "sha256"  # user metadata key; S3 returns it as x-amz-meta-sha256
_TRACER_NAME = "movakit.object_store"


class ChecksumError(IOError):
    """An object's bytes do not match the sha256 its reference (or its metadata) promises."""


class ObjectMissingError(FileNotFoundError):
    """The referenced object does not exist."""


def job_key(job_id: str, *parts: str) -> str:
    """The key of an object belonging to a job: jobs/<job_id>/<parts...>."""
    return "/".join(("jobs", job_id, *parts))


def cancel_marker_key(job_id: str) -> str:
    """The object the gateway writes on Cancel; workers check `has_key` on it between steps and stages."""
    return job_key(job_id, "control", "cancel")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ObjectStore:
    """One bucket of an S3 endpoint. Thread-safe (the minio client is)."""

    def __init__(
        self, endpoint: str, access_key: str, secret_key: str, bucket: str, secure: bool = False,
        region: str = "us-east-1",
    ):
        self.endpoint = endpoint
        self.bucket = bucket
        self.secure = secure
        self._client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)

    def _span(self, operation: str, key: str):
        return tracer(_TRACER_NAME).start_as_current_span(
            f"s3.{operation}",
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "s3", "s3.bucket": self.bucket, "s3.key": key, "server.address": self.endpoint},
        )

    # ---- bucket ----------------------------------------------------------------------------------------------
    def ensure_bucket(self) -> bool:
        """Creates the bucket when missing; returns True when it created it."""
        with self._span("ensure_bucket", ""):
            if self._client.bucket_exists(self.bucket):
                return False
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    return False
                raise
            return True

    # ---- retention ---------------------------------------------------------------------------------------------
    def set_expiry(self, prefix: str, days: int) -> None:
        """Sets the bucket's lifecycle to one rule: objects under `prefix` expire `days` days after their last
        write (replaces any other rule of the bucket)."""
        rule = Rule(ENABLED, rule_filter=Filter(prefix=prefix), rule_id=f"expire-{prefix.strip('/')}",
                    expiration=Expiration(days=days))
        with self._span("set_bucket_lifecycle", prefix):
            self._client.set_bucket_lifecycle(self.bucket, LifecycleConfig([rule]))

    def expiry_days(self, prefix: str) -> int | None:
        """The expiration in days of the lifecycle rule for exactly `prefix`, None when there is none."""
        with self._span("get_bucket_lifecycle", prefix):
            config = self._client.get_bucket_lifecycle(self.bucket)
        for rule in config.rules if config is not None else []:
            if rule.status == ENABLED and rule.rule_filter and rule.rule_filter.prefix == prefix and rule.expiration:
                return rule.expiration.days
        return None

    def delete_older_than(self, prefix: str, cutoff: datetime) -> int:
        """Deletes every object under `prefix` last written before `cutoff` (timezone-aware); returns how many."""
        with self._span("delete_older_than", prefix):
            old = [DeleteObject(o.object_name) for o in self._client.list_objects(self.bucket, prefix, recursive=True)
                   if o.last_modified is not None and o.last_modified < cutoff]
            errors = list(self._client.remove_objects(self.bucket, old)) if old else []
        if errors:
            first = errors[0]
            raise OSError(f"s3://{self.bucket}/{prefix}: {len(errors)} objects not deleted, first "
                          f"{first.name}: {first.code} {first.message}")
        return len(old)

    # ---- raw bytes -------------------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> common_pb2.ObjectRef:
        """Uploads `data` under `key` (overwriting) and returns its reference."""
        digest = sha256_hex(data)
        with self._span("put_object", key) as span:
            span.set_attribute("s3.size_bytes", len(data))
            self._client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                metadata={_SHA_META: digest},
            )
        return common_pb2.ObjectRef(
            bucket=self.bucket, key=key, sha256=digest, size_bytes=len(data), content_type=content_type
        )

    def _get(self, bucket: str, key: str) -> bytes:
        with self._span("get_object", key) as span:
            try:
                response = self._client.get_object(bucket, key)
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    raise ObjectMissingError(f"s3://{bucket}/{key}: no such object") from exc
                raise
            try:
                data = response.read()
            finally:
                response.close()
                response.release_conn()
            span.set_attribute("s3.size_bytes", len(data))
            return data

    def get_bytes(self, ref: common_pb2.ObjectRef) -> bytes:
        """The object's bytes; ChecksumError when they do not match ref.sha256."""
        data = self._get(ref.bucket or self.bucket, ref.key)
        _verify(ref.bucket or self.bucket, ref.key, data, ref.sha256)
        return data

    def get_raw(self, key: str) -> bytes | None:
        """The object's bytes without any checksum check (the caller verifies them); None when absent."""
        try:
            return self._get(self.bucket, key)
        except ObjectMissingError:
            return None

    def has_key(self, key: str) -> bool:
        """True when an object exists under `key` (no checksum check; for markers)."""
        return self._stat(key) is not None

    def exists(self, ref: common_pb2.ObjectRef | common_pb2.TensorRef) -> bool:
        """True when the referenced object is present AND its bytes hash to ref.sha256 (downloads it)."""
        try:
            data = self._get(ref.bucket or self.bucket, ref.key)
        except ObjectMissingError:
            return False
        return sha256_hex(data) == ref.sha256

    def object_ref_at(self, key: str) -> common_pb2.ObjectRef | None:
        """The reference of an existing object, verified against the sha256 stored at upload; None when absent,
        unverifiable (no stored digest) or corrupt."""
        found = self._fetch_verified(key)
        if found is None:
            return None
        data, digest, content_type = found
        return common_pb2.ObjectRef(
            bucket=self.bucket, key=key, sha256=digest, size_bytes=len(data), content_type=content_type
        )

    def _fetch_verified(self, key: str) -> tuple[bytes, str, str] | None:
        stat = self._stat(key)
        if stat is None:
            return None
        expected = _stored_sha(stat)
        try:
            data = self._get(self.bucket, key)
        except ObjectMissingError:
            return None
        if not expected or sha256_hex(data) != expected:
            return None
        return data, expected, stat.content_type or "application/octet-stream"

    def list_keys(self, prefix: str) -> list[str]:
        """Keys of every object under `prefix`, sorted."""
        return sorted(self.iter_keys(prefix))

    def iter_keys(self, prefix: str, start_after: str = "") -> Iterator[str]:
        """Keys under `prefix` in ascending order, after `start_after` when given, fetched page by page as read."""
        with self._span("list_objects", prefix):
            objects = self._client.list_objects(self.bucket, prefix=prefix, recursive=True,
                                                start_after=start_after or None)
            for o in objects:
                yield o.object_name

    def delete(self, key: str) -> None:
        """Removes the object under `key` (nothing happens when there is none)."""
        with self._span("remove_object", key):
            self._client.remove_object(self.bucket, key)

    def _stat(self, key: str):
        """The object's stat, or None when there is no object under `key`."""
        with self._span("stat_object", key):
            try:
                return self._client.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    return None
                raise

    # ---- tensors ---------------------------------------------------------------------------------------------
    def put_tensors(self, key: str, tensors: dict[str, torch.Tensor]) -> common_pb2.TensorRef:
        """Writes `tensors` as one safetensors file under `key`; the ref lists every tensor's name, shape and dtype
        in the file's storage order."""
        if not tensors:
            raise ValueError(f"{key}: put_tensors needs at least one tensor")
        from safetensors.torch import save as save_safetensors

        cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        data = save_safetensors(cpu)
        obj = self.put_bytes(key, data, "application/x-safetensors")
        return common_pb2.TensorRef(
            bucket=obj.bucket, key=key, sha256=obj.sha256, size_bytes=obj.size_bytes,
            tensors=_header_specs(data),
        )

    def get_tensors(self, ref: common_pb2.TensorRef) -> dict[str, torch.Tensor]:
        """Reads the file, verifies its sha256 (ChecksumError) and that it holds exactly the tensors, shapes and
        dtypes the ref lists (ValueError naming the tensor)."""
        bucket = ref.bucket or self.bucket
        data = self._get(bucket, ref.key)
        _verify(bucket, ref.key, data, ref.sha256)
        from safetensors.torch import load as load_safetensors

        tensors = load_safetensors(data)
        listed = {spec.name: spec for spec in ref.tensors}
        if set(listed) != set(tensors):
            raise ValueError(
                f"s3://{bucket}/{ref.key}: holds tensors {sorted(tensors)}, the reference lists {sorted(listed)}"
            )
        for name, spec in listed.items():
            t = tensors[name]
            dtype = str(t.dtype).removeprefix("torch.")
            if list(t.shape) != list(spec.shape) or dtype != spec.dtype:
                raise ValueError(
                    f"s3://{bucket}/{ref.key}: tensor {name!r} is {list(t.shape)} {dtype}, "
                    f"the reference says {list(spec.shape)} {spec.dtype}"
                )
        return tensors

    def tensor_ref_at(self, key: str) -> common_pb2.TensorRef | None:
        """The reference of an existing safetensors file, verified against the sha256 stored at upload; None when
        absent, unverifiable or corrupt. Lets a worker skip a redelivered task whose outputs already exist."""
        found = self._fetch_verified(key)
        if found is None:
            return None
        data, digest, _ = found
        return common_pb2.TensorRef(
            bucket=self.bucket, key=key, sha256=digest, size_bytes=len(data), tensors=_header_specs(data)
        )

    # ---- URLs ------------------------------------------------------------------------------------------------
    def presigned_get_url(self, key: str, expires: int | timedelta = 3600) -> str:
        """A presigned HTTP GET URL for `key`, valid for `expires` seconds (1 s .. 7 days)."""
        seconds = expires if isinstance(expires, timedelta) else timedelta(seconds=int(expires))
        with self._span("presign", key):
            return self._client.presigned_get_object(self.bucket, key, expires=seconds)


def _stored_sha(stat) -> str:
    for name, value in (stat.metadata or {}).items():
        if name.lower() in (f"x-amz-meta-{_SHA_META}", _SHA_META):
            return value
    return ""


def _verify(bucket: str, key: str, data: bytes, expected: str) -> None:
    actual = sha256_hex(data)
    if actual != expected:
        raise ChecksumError(f"s3://{bucket}/{key}: sha256 {actual} does not match the reference's {expected!r}")


def _header_specs(data: bytes) -> list[common_pb2.TensorSpec]:
    """Tensor specs from a safetensors header, in file order of the data offsets."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    entries = [(name, info) for name, info in header.items() if name != "__metadata__"]
    entries.sort(key=lambda item: item[1]["data_offsets"][0])
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64",
             "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
    return [
        common_pb2.TensorSpec(name=name, shape=info["shape"], dtype=names.get(info["dtype"], info["dtype"].lower()))
        for name, info in entries
    ]
