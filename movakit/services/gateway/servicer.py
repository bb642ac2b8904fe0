"""JobService: the job API. Authenticates the caller's tenant, validates, admits by estimated cost
(admission.py), stores the input image in S3, records the job on mova.job-state, publishes the queued event,
hands the job to the dispatch queue (dispatch.py: it sends the first task, by priority then age), and answers
from the JobStore the EventFollower keeps current. A tenant only ever sees its own jobs: another tenant's job
answers NOT_FOUND, exactly like an unknown id."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import grpc
import urllib3
from google.protobuf.timestamp_pb2 import Timestamp
from kafka.errors import KafkaError
from minio.error import S3Error

from movakit.api.v1 import common_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc
from movakit.runtime import kafka as mkafka
from movakit import request as contract
from movakit.long_video import segment_plan
from movakit.model_rules import ModelRules
from movakit.runtime.auth import TokenBook
from movakit.runtime.object_store import ObjectStore, cancel_marker_key, job_key
from movakit.runtime.topics import TOPIC_EVENTS, TOPIC_JOB_STATE
from movakit.runtime.tasks import make_event
from movakit.services.gateway import admission
from movakit.services.gateway.archive import JobArchive
from movakit.services.gateway.dispatch import Dispatcher
from movakit.services.gateway.job_store import (TERMINAL, TERMINAL_EVENTS, JobStore, PageTokenError,
                                               decode_page_token, page_of)

log = logging.getLogger("movakit.gateway")

SOURCE = "gateway"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_JOB_ID_CHARS = 64  # ids are 32 hex characters; longer ones are refused without echoing them whole
_WATCH_POLL_S = 0.5
_IMAGE_SUFFIX = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


class JobServicer(gateway_pb2_grpc.JobServiceServicer):
    def __init__(
        self, store: JobStore, objects: ObjectStore, producer: mkafka.Producer, *, dispatcher: Dispatcher,
        signer: ObjectStore,
        archive: JobArchive, tokens: TokenBook, rules: ModelRules, admission_limits: admission.Limits,
        gpu_s_per_mpixel_step: float, presign_expiry_s: int, adapter_exists: Callable[[str, str], bool],
    ) -> None:
        self._jobs = store
        self._archive = archive  # finished jobs that left memory
        self._objects = objects
        self._signer = signer  # presigns artifact URLs for the endpoint clients use
        self._producer = producer
        self._dispatcher = dispatcher  # sends the first task of waiting jobs, by priority then age
        self._tokens = tokens
        self._rules = rules  # the checkpoint's: preset, size step, frame rule, trained sizes
        self._admission = admission_limits
        self._gpu_s_per_mpixel_step = gpu_s_per_mpixel_step
        self._presign_s = presign_expiry_s
        self._adapter_exists = adapter_exists  # (tenant, name) -> whether the tenant has it (movakit.lora.registry)
        self._submit_lock = threading.Lock()  # one Submit at a time: idempotency and the queue bound stay exact

    # ---- Submit ----------------------------------------------------------------------------------------------
    def Submit(self, request: gateway_pb2.SubmitRequest, context: grpc.ServicerContext) -> gateway_pb2.SubmitResponse:
        tenant = self._tokens.authenticate(context)
        try:  # the same contract as `mova generate`: defaults filled (seed drawn), then every field checked
            req = contract.resolve(contract.from_proto(request.params), self._rules)
            params = contract.to_proto(contract.validate(req, self._rules))
        except contract.InvalidArgument as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"params.{exc}")
        try:
            contract.validate_idempotency_key(request.idempotency_key)
            content_type = contract.validate_image(request.image) if request.image else ""
        except contract.InvalidArgument as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if params.lora.name:
            try:
                known = self._adapter_exists(tenant, params.lora.name)
            except (S3Error, OSError) as exc:
                context.abort(grpc.StatusCode.UNAVAILABLE,
                              f"could not look up the adapter: {type(exc).__name__}: {exc}")
            if not known:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"params.lora.name: no adapter {params.lora.name!r} in the registry (mova adapters list)")

        digest = admission.request_sha256(request, params)
        plan = segment_plan(req)  # a long video: its segments run one after another (docs/stack.md#long-videos)
        segments = plan.count if plan is not None else 0
        cost = admission.cost_gpu_s(params, self._gpu_s_per_mpixel_step, segments)
        if cost > min(self._admission.tenant_max_gpu_s, self._admission.max_queued_gpu_s):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"params: the job's estimated {cost:.0f} GPU-s exceed what one tenant may queue "
                          f"({min(self._admission.tenant_max_gpu_s, self._admission.max_queued_gpu_s):.0f}); "
                          "ask for fewer frames, a smaller size or fewer steps")
        with self._submit_lock:
            if request.idempotency_key:
                existing = self._jobs.by_idempotency_key(tenant, request.idempotency_key)
                if existing is None:  # its job may have finished and left memory
                    try:
                        existing = self._archive.by_idempotency_key(tenant, request.idempotency_key)
                    except (S3Error, OSError, urllib3.exceptions.HTTPError) as exc:
                        context.abort(grpc.StatusCode.UNAVAILABLE,
                                      f"idempotency_key: the job archive is unreachable: {type(exc).__name__}")
                if existing is not None and existing.request_sha256 != digest:
                    context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                  f"idempotency_key: {request.idempotency_key!r} was used for a different request "
                                  f"(job {existing.job_id})")
                if existing is not None:
                    return gateway_pb2.SubmitResponse(
                        job_id=existing.job_id, existing=True, job=self._with_urls(existing)
                    )
            refusal = admission.check(self._admission, cost, *self._jobs.active_load(tenant))
            if refusal is not None:
                admission.abort_exhausted(context, refusal)
            with self._dispatcher.admitting():  # no dispatch round sees the job before its record is in Kafka
                try:
                    job = self._create(params, request, content_type, tenant=tenant, digest=digest, cost=cost,
                                       segments=segments)
                except (KafkaError, S3Error, OSError) as exc:
                    log.exception("submit failed")
                    context.abort(grpc.StatusCode.UNAVAILABLE,
                                  f"could not queue the job: {type(exc).__name__}: {exc}")
                self._dispatcher.submitted(job.job_id)  # it starts now if a slot is free and nothing outranks it
        log.info("job submitted", extra={"fields": {"job_id": job.job_id, "key": request.idempotency_key}})
        return gateway_pb2.SubmitResponse(job_id=job.job_id, existing=False, job=job)

    def _create(self, params: common_pb2.GenerationParams, request: gateway_pb2.SubmitRequest, content_type: str,
                *, tenant: str, digest: str, cost: float, segments: int) -> common_pb2.Job:
        job_id = uuid.uuid4().hex
        now = _now()
        job = common_pb2.Job(
            job_id=job_id, state=common_pb2.JOB_STATE_QUEUED, params=params,
            idempotency_key=request.idempotency_key, created_at=now, updated_at=now,
            stage=common_pb2.STAGE_ENHANCE, total_steps=params.num_inference_steps * max(segments, 1),
            effective_prompt=params.prompt, tenant=tenant, request_sha256=digest, cost_gpu_s=cost,
            segment_count=segments,
        )
        if request.image:
            key = job_key(job_id, "input", f"image.{_IMAGE_SUFFIX[content_type]}")
            job.input_image.CopyFrom(self._objects.put_bytes(key, request.image, content_type))
        self._jobs.put(job)
        try:
            # The record first: once it is in the compacted topic a restarted gateway knows the job (and its key).
            # The job then waits in the dispatch queue (dispatch.py), which sends its first task.
            mkafka.publish(self._producer, TOPIC_JOB_STATE, job_id, events_pb2.JobRecord(job=job))
            queued = make_event(job_id, SOURCE, queued=events_pb2.Queued(job=job))
            mkafka.publish(self._producer, TOPIC_EVENTS, job_id, queued)
        except Exception:
            self._jobs.discard(job_id)
            raise
        return job

    # ---- Get / List ------------------------------------------------------------------------------------------
    def Get(self, request: gateway_pb2.GetJobRequest, context: grpc.ServicerContext) -> common_pb2.Job:
        return self._with_urls(self._require(request.job_id, context))

    def List(self, request: gateway_pb2.ListJobsRequest, context: grpc.ServicerContext) -> gateway_pb2.ListJobsResponse:
        tenant = self._tokens.authenticate(context)
        size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"page_size: {size} is outside 1..{MAX_PAGE_SIZE}")
        if request.state not in common_pb2.JobState.values():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"state: unknown JobState {request.state}")
        try:
            after = decode_page_token(request.page_token) if request.page_token else None
        except PageTokenError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"page_token: {exc}")
        # The jobs in memory and the archived ones (archive.py), merged newest first; a job in both counts once.
        jobs = self._jobs.listing(tenant, after, request.state, size + 1)
        try:
            jobs += self._archive.listing(tenant, after, request.state, size + 1,
                                          skip=lambda job_id: self._jobs.get(job_id) is not None)
        except (S3Error, OSError, urllib3.exceptions.HTTPError) as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"the job archive is unreachable: {type(exc).__name__}")
        page, token = page_of(jobs, size)
        return gateway_pb2.ListJobsResponse(jobs=[self._with_urls(j) for j in page], next_page_token=token)

    # ---- Watch -----------------------------------------------------------------------------------------------
    def Watch(self, request: gateway_pb2.WatchJobRequest, context: grpc.ServicerContext):
        self._require(request.job_id, context)
        if self._jobs.get(request.job_id) is None:  # archived: its whole history at once
            for event in self._archived(request.job_id, context).events:
                yield self._event_with_urls(event) if event.WhichOneof("kind") == "succeeded" else event
            return
        sent = 0
        while context.is_active():
            events, finished = self._jobs.wait_events(request.job_id, sent, _WATCH_POLL_S)
            for event in events:
                sent += 1
                if event.WhichOneof("kind") == "succeeded":
                    event = self._event_with_urls(event)
                yield event
                if event.WhichOneof("kind") in TERMINAL_EVENTS:
                    return
            if finished and not events:
                # Finished without a terminal event in the history (e.g. its events left the topic's retention).
                return

    # ---- Cancel ----------------------------------------------------------------------------------------------
    def Cancel(self, request: gateway_pb2.CancelJobRequest, context: grpc.ServicerContext) -> common_pb2.Job:
        job = self._require(request.job_id, context)
        if job.state in TERMINAL:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"job_id: job {job.job_id} already finished ({common_pb2.JobState.Name(job.state)})",
            )
        # Workers see the cancel through the event / job-state topics and the marker object in S3.
        try:
            self._objects.put_bytes(cancel_marker_key(job.job_id), b"cancel\n", "text/plain")
            job = self._jobs.mark_cancel_requested(job.job_id)
            mkafka.publish(self._producer, TOPIC_JOB_STATE, job.job_id, events_pb2.JobRecord(job=job))
            mkafka.publish(self._producer, TOPIC_EVENTS, job.job_id,
                           make_event(job.job_id, SOURCE, cancel_requested=events_pb2.CancelRequested()))
        except (KafkaError, S3Error, OSError) as exc:
            log.exception("cancel failed", extra={"fields": {"job_id": job.job_id}})
            context.abort(grpc.StatusCode.UNAVAILABLE, f"could not request the cancel: {type(exc).__name__}: {exc}")
        log.info("cancel requested", extra={"fields": {"job_id": job.job_id}})
        return job

    # ---- helpers ---------------------------------------------------------------------------------------------
    def _require(self, job_id: str, context: grpc.ServicerContext) -> common_pb2.Job:
        """The caller's job `job_id`; aborts with UNAUTHENTICATED, INVALID_ARGUMENT or NOT_FOUND (also for another
        tenant's job: its existence is not revealed)."""
        tenant = self._tokens.authenticate(context)
        if not job_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id: must not be empty")
        if len(job_id) > MAX_JOB_ID_CHARS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"job_id: {len(job_id)} characters, at most {MAX_JOB_ID_CHARS}")
        job = self._jobs.get(job_id)
        if job is not None:
            if job.tenant != tenant:
                context.abort(grpc.StatusCode.NOT_FOUND, f"job_id: no job {job_id!r}")
            return job
        archived = self._archived(job_id, context)
        if archived.job.tenant != tenant:  # an archived job keeps its tenant and is shown only to it
            context.abort(grpc.StatusCode.NOT_FOUND, f"job_id: no job {job_id!r}")
        return archived.job

    def _archived(self, job_id: str, context: grpc.ServicerContext) -> events_pb2.ArchivedJob:
        """A finished job that left memory (archive.py); NOT_FOUND when there is none."""
        try:
            archived = self._archive.get(job_id)
        except (S3Error, OSError, urllib3.exceptions.HTTPError) as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"job_id: the job archive is unreachable: {type(exc).__name__}")
        if archived is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job_id: no job {job_id!r}")
        return archived

    def _sign(self, artifacts) -> None:
        for artifact in artifacts:
            artifact.url = self._signer.presigned_get_url(artifact.ref.key, self._presign_s)
            artifact.url_expires_in_s = self._presign_s

    def _with_urls(self, job: common_pb2.Job) -> common_pb2.Job:
        self._sign(job.artifacts)
        return job

    def _event_with_urls(self, event: events_pb2.JobEvent) -> events_pb2.JobEvent:
        out = events_pb2.JobEvent()
        out.CopyFrom(event)
        self._sign(out.succeeded.artifacts)
        return out


def add_servicer(servicer: JobServicer):
    """The add_servicers callable for movakit.runtime.grpc_server.serve."""

    def add(server: grpc.Server) -> list[str]:
        gateway_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
        return [gateway_pb2.DESCRIPTOR.services_by_name["JobService"].full_name]

    return add
