"""FineTuneService: fine-tuning jobs on the gateway. Records live in S3 (movakit.training.records); the work is a
Celery task the trainer service runs; Watch follows the record the trainer rewrites after every update. Every call
is authenticated as JobService's (bearer token -> tenant); a tenant sees only its own jobs and trains only on the
datasets it uploaded (datasets/<tenant>/...)."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
from minio.error import S3Error

from movakit.api.v1 import common_pb2, training_pb2, training_pb2_grpc
from movakit.lora.registry import AdapterRegistry
from movakit.runtime.auth import TokenBook
from movakit.runtime.object_store import ObjectStore
from movakit.request import InvalidArgument
from movakit.training import spec
from movakit.training.data import METADATA_FILE
from movakit.training.records import TERMINAL, JobRecords, now

log = logging.getLogger("movakit.gateway")

MAX_FILE_BYTES = 1 << 30
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_DATASET_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_WATCH_POLL_S = 0.5


def _dataset_prefix(tenant: str) -> str:
    return f"{spec.DATASET_PREFIX}{tenant}/"


def _dataset_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or len(path) > 512:
        raise InvalidArgument("path", f"{path[:80]!r} must be a relative path inside the dataset folder")
    return path


class FineTuneServicer(training_pb2_grpc.FineTuneServiceServicer):
    def __init__(self, objects: ObjectStore, dispatch: Callable[[str], None] | None, tokens: TokenBook,
                 registry: AdapterRegistry) -> None:
        self._objects = objects
        self._tokens = tokens
        self._registry = registry
        self._records = JobRecords(objects)
        self._dispatch = dispatch  # queues the Celery task of a job id; None: no trainer in this deployment
        self._submit_lock = threading.Lock()  # one Submit at a time: an idempotency key maps to one job

    def _job(self, job_id: str, tenant: str, context: grpc.ServicerContext) -> training_pb2.FineTuneJob:
        job = self._records.read(job_id) if _JOB_ID.match(job_id) else None
        if job is None or job.tenant != tenant:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job_id: no fine-tuning job {job_id[:40]!r}")
        return job

    def Submit(self, request, context):  # noqa: N802 (gRPC method name)
        tenant = self._tokens.authenticate(context)
        try:
            resolved = spec.resolved(request)
            spec.validate(resolved)
            if not resolved.dataset.startswith(_dataset_prefix(tenant)):
                raise InvalidArgument("dataset", f"{resolved.dataset[:220]!r} is not one of this tenant's uploads "
                                                 f"({_dataset_prefix(tenant)}...)")
        except InvalidArgument as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if self._dispatch is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "no trainer is configured on this gateway (MOVA_GATEWAY_CELERY_BROKER is empty)")
        try:
            with self._submit_lock:
                existing = resolved.idempotency_key and self._records.idempotent_job(tenant, resolved.idempotency_key)
                if existing:
                    return self._job(existing, tenant, context)
                job = self._create(resolved, tenant, context)
            self._queue(job)
        except (S3Error, OSError) as exc:
            log.exception("fine-tuning submit failed")
            context.abort(grpc.StatusCode.UNAVAILABLE, f"the job could not be queued: {type(exc).__name__}")
        log.info("fine-tuning job queued", extra={"fields": {"job_id": job.job_id, "name": resolved.name}})
        return job

    def _create(self, resolved: training_pb2.FineTuneRequest, tenant: str, context) -> training_pb2.FineTuneJob:
        if self._registry.exists(tenant, resolved.name):
            context.abort(grpc.StatusCode.ALREADY_EXISTS,
                          f"name: adapter {resolved.name!r} already exists (delete it or choose another name)")
        if not self._objects.has_key(f"{resolved.dataset}/{METADATA_FILE}"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"dataset: no {METADATA_FILE} under {resolved.dataset} (upload the folder first)")
        job = training_pb2.FineTuneJob(job_id=uuid.uuid4().hex, state=common_pb2.JOB_STATE_QUEUED,
                                       request=resolved, total_steps=resolved.steps, created_at=now(),
                                       tenant=tenant)
        self._records.write(job)
        if resolved.idempotency_key:
            self._records.remember_idempotency(tenant, resolved.idempotency_key, job.job_id)
        return job

    def _queue(self, job: training_pb2.FineTuneJob) -> None:
        try:
            self._dispatch(job.job_id)
        except Exception as exc:  # noqa: BLE001 - any broker failure: the job must not look queued
            job.state, job.error = common_pb2.JOB_STATE_FAILED, f"could not be queued: {type(exc).__name__}"
            self._records.write(job)
            raise OSError(str(exc)) from exc

    def Get(self, request, context):  # noqa: N802
        return self._job(request.job_id, self._tokens.authenticate(context), context)

    def Watch(self, request, context) -> Iterator[training_pb2.FineTuneJob]:  # noqa: N802
        job = self._job(request.job_id, self._tokens.authenticate(context), context)
        yield job
        last = job.SerializeToString()
        while job.state not in TERMINAL and context.is_active():
            time.sleep(_WATCH_POLL_S)
            job = self._records.read(request.job_id) or job
            current = job.SerializeToString()
            if current != last:
                last = current
                yield job

    def Cancel(self, request, context):  # noqa: N802
        job = self._job(request.job_id, self._tokens.authenticate(context), context)
        if job.state in TERMINAL:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"job_id: job {job.job_id} already ended ({common_pb2.JobState.Name(job.state)})")
        self._records.request_cancel(job.job_id)
        job.state = common_pb2.JOB_STATE_CANCELLING
        return job

    def List(self, request, context):  # noqa: N802
        tenant = self._tokens.authenticate(context)
        size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"page_size: {size} is outside 1..{MAX_PAGE_SIZE}")
        jobs = [job for job in map(self._records.read, self._records.job_ids())
                if job is not None and job.tenant == tenant]
        jobs.sort(key=lambda j: (j.created_at.ToNanoseconds(), j.job_id), reverse=True)
        start = 0
        if request.page_token:
            ids = [j.job_id for j in jobs]
            if request.page_token not in ids:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token: not from a previous List")
            start = ids.index(request.page_token) + 1
        page = jobs[start:start + size]
        more = start + size < len(jobs)
        return training_pb2.ListFineTuneJobsResponse(jobs=page, next_page_token=page[-1].job_id if more else "")

    def UploadDataset(self, request_iterator, context):  # noqa: N802
        prefix = _dataset_prefix(self._tokens.authenticate(context))
        name, files, total = None, 0, 0
        path, parts = None, []

        def flush() -> None:
            nonlocal files, total
            if path is not None:
                data = b"".join(parts)
                self._objects.put_bytes(f"{prefix}{name}/{path}", data)
                files, total = files + 1, total + len(data)

        try:
            for chunk in request_iterator:
                if name is None:
                    if not _DATASET_NAME.match(chunk.dataset):
                        raise InvalidArgument("dataset", f"{chunk.dataset[:140]!r} must be 1..128 characters of "
                                              "[A-Za-z0-9._-]")
                    name = chunk.dataset
                elif chunk.dataset != name:
                    raise InvalidArgument("dataset", "every chunk of one upload names the same dataset")
                if chunk.path != path:
                    flush()
                    path, parts = _dataset_path(chunk.path), []
                parts.append(chunk.data)
                if sum(map(len, parts)) > MAX_FILE_BYTES:
                    raise InvalidArgument("data", f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB")
            if name is None:
                raise InvalidArgument("dataset", "the upload sent no chunk")
            flush()
        except InvalidArgument as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except (S3Error, OSError) as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"the dataset could not be stored: {type(exc).__name__}")
        return training_pb2.DatasetUploaded(dataset=f"{prefix}{name}", files=files, size_bytes=total)


def add_finetune_servicer(servicer: FineTuneServicer) -> Callable[[grpc.Server], list[str]]:
    def add(server: grpc.Server) -> list[str]:
        training_pb2_grpc.add_FineTuneServiceServicer_to_server(servicer, server)
        return [training_pb2.DESCRIPTOR.services_by_name["FineTuneService"].full_name]
    return add
