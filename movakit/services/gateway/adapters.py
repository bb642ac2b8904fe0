"""AdapterService: the LoRA adapter registry over gRPC (adapters/<tenant>/<name>/ in S3, movakit.lora.registry).

Every call is authenticated with the job API's TokenBook (UNAUTHENTICATED without a valid bearer token) and acts
on the caller's tenant only: another tenant's adapter answers NOT_FOUND, as one that does not exist.

Uploads arrive in chunks (an adapter of the release size is hundreds of MB) and are checked whole (manifest
fields, the weights' sha256, tensor pairs and rank) before anything is written. Whether an adapter fits the
served model (base identity, layer names and shapes) is checked by `mova adapters upload` against a checkpoint,
and again by the denoiser before it runs a job with it.
"""

from __future__ import annotations

import logging

import grpc
from minio.error import S3Error

from movakit.api.v1 import adapters_pb2, adapters_pb2_grpc
from movakit.lora.adapter import AdapterError
from movakit.lora.registry import AdapterExists, AdapterNotFound, AdapterRegistry
from movakit.lora.store import parse_manifest
from movakit.runtime.auth import TokenBook

log = logging.getLogger("movakit.gateway")

MAX_ADAPTER_BYTES = 2 << 30  # an upload larger than this is refused (the release-size rank-16 adapter is ~0.4 GB)


def info_from(name: str, manifest: dict, size_bytes: int) -> adapters_pb2.AdapterInfo:
    return adapters_pb2.AdapterInfo(
        name=name, rank=manifest["rank"], alpha=manifest["alpha"], targets=manifest["targets"],
        layers=manifest["layers"], parameters=manifest["parameters"], base=manifest["base"],
        sha256=manifest["sha256"], notes=manifest["notes"], size_bytes=size_bytes)


class AdapterServicer(adapters_pb2_grpc.AdapterServiceServicer):
    def __init__(self, registry: AdapterRegistry, *, tokens: TokenBook, signer, presign_expiry_s: int) -> None:
        self._registry = registry
        self._tokens = tokens  # the job API's: a token names the same tenant here
        self._signer = signer  # presigns weight URLs for the endpoint clients use
        self._presign_s = presign_expiry_s

    def UploadAdapter(self, request_iterator, context: grpc.ServicerContext) -> adapters_pb2.AdapterInfo:  # noqa: N802
        tenant = self._tokens.authenticate(context)  # before a byte of the upload is read
        first = None
        pieces: list[bytes] = []
        size = 0
        for chunk in request_iterator:
            if first is None:
                first = chunk
            size += len(chunk.weights)
            if size > MAX_ADAPTER_BYTES:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"weights: more than {MAX_ADAPTER_BYTES} bytes")
            pieces.append(chunk.weights)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name: the upload sent no chunk")
        try:
            manifest = self._registry.put(tenant, first.name, first.manifest, b"".join(pieces), replace=first.replace)
        except AdapterError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except AdapterExists as exc:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except (S3Error, OSError) as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"could not store the adapter: {type(exc).__name__}: {exc}")
        log.info("adapter stored",
                 extra={"fields": {"tenant": tenant, "name": first.name, "sha256": manifest["sha256"]}})
        return info_from(first.name, manifest, size)

    def ListAdapters(self, request, context: grpc.ServicerContext) -> adapters_pb2.ListAdaptersResponse:  # noqa: N802
        tenant = self._tokens.authenticate(context)
        out = adapters_pb2.ListAdaptersResponse()
        for name in self._registry.names(tenant):
            try:
                out.adapters.append(info_from(name, self._registry.manifest(tenant, name), 0))
            except (AdapterNotFound, AdapterError):  # deleted meanwhile, or a damaged manifest: not listed
                continue
        return out

    def GetAdapter(self, request, context: grpc.ServicerContext) -> adapters_pb2.GetAdapterResponse:  # noqa: N802
        tenant = self._tokens.authenticate(context)
        raw = self._manifest(tenant, request.name, context)
        key = self._registry.weights_key(tenant, request.name)
        return adapters_pb2.GetAdapterResponse(
            info=info_from(request.name, parse_manifest(raw, request.name), 0), manifest=raw,
            weights_url=self._signer.presigned_get_url(key, self._presign_s), url_expires_in_s=self._presign_s)

    def DeleteAdapter(self, request, context: grpc.ServicerContext) -> adapters_pb2.DeleteAdapterResponse:  # noqa: N802
        tenant = self._tokens.authenticate(context)
        self._manifest(tenant, request.name, context)
        try:
            self._registry.delete(tenant, request.name)
        except AdapterNotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, f"name: {exc}")
        log.info("adapter deleted", extra={"fields": {"tenant": tenant, "name": request.name}})
        return adapters_pb2.DeleteAdapterResponse()

    def _manifest(self, tenant: str, name: str, context: grpc.ServicerContext) -> bytes:
        """The stored manifest of the caller's adapter `name` (checked), or the call aborted naming the field."""
        try:
            raw = self._registry.manifest_bytes(tenant, name)
            parse_manifest(raw, name)
            return raw
        except AdapterError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except AdapterNotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, f"name: {exc}")
        raise AssertionError("unreachable: context.abort raises")


def add_adapter_servicer(servicer: AdapterServicer):
    """The add_servicers callable for movakit.runtime.grpc_server.serve."""

    def add(server: grpc.Server) -> list[str]:
        adapters_pb2_grpc.add_AdapterServiceServicer_to_server(servicer, server)
        return [adapters_pb2.DESCRIPTOR.services_by_name["AdapterService"].full_name]

    return add
