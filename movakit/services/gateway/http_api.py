"""The OpenAI-style video API over the gateway's JobService: `/v1/videos` in the shape SGLang and vLLM-Omni serve.

Every route is a call of the gateway's own gRPC API (Submit, Get, List, Cancel) on its listen address, with the
caller's `Authorization` header forwarded unchanged as gRPC metadata, so validation, idempotency, the queue bound
and whatever authentication the gRPC server applies are the same for both front doors. gRPC status codes become
HTTP ones (INVALID_ARGUMENT -> 400 naming the field, NOT_FOUND -> 404, ...); the body of an error is OpenAI's
`{"error": {"message", "type", "param", "code"}}`. Only the MP4 download reads S3 itself: the job (fetched through
Get, so a caller only reaches the jobs it may see) names the artifact, and its bytes are checksum-verified.
The request and job shapes are described in docs/http-api.md.
"""

from __future__ import annotations

import base64
import binascii
import re

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from movakit.api.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from movakit import request as contract
from movakit.runtime.object_store import ObjectStore

MODEL_NAME = "mova"
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_RPC_TIMEOUT_S = 60.0
# HTTP status of each gRPC status code the job API answers with.
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Job API field (as its INVALID_ARGUMENT messages name it) -> the field of this API that set it.
_HTTP_FIELD = {
    "params.height": "size", "params.width": "size", "params.num_frames": "seconds",
    "params.num_inference_steps": "num_inference_steps", "params.lora.name": "lora", "params.lora.scale": "lora_scale",
    "image": "input_reference", "idempotency_key": "Idempotency-Key", "page_size": "limit",
}
_STATUS = {
    common_pb2.JOB_STATE_QUEUED: "queued", common_pb2.JOB_STATE_RUNNING: "in_progress",
    common_pb2.JOB_STATE_CANCELLING: "in_progress", common_pb2.JOB_STATE_SUCCEEDED: "completed",
    common_pb2.JOB_STATE_FAILED: "failed", common_pb2.JOB_STATE_CANCELLED: "cancelled",
}
_STATUS_FILTER = {"queued": common_pb2.JOB_STATE_QUEUED, "in_progress": common_pb2.JOB_STATE_RUNNING,
                  "completed": common_pb2.JOB_STATE_SUCCEEDED, "failed": common_pb2.JOB_STATE_FAILED,
                  "cancelled": common_pb2.JOB_STATE_CANCELLED}
# /content?variant= -> the artifact kind (common.proto Artifact.kind)
_VARIANTS = {"video": "video", "audio": "audio", "thumbnail": "preview"}
# Share of the progress bar each stage ends at; the denoise stage fills its share step by step.
_STAGE_END = {common_pb2.STAGE_UNSPECIFIED: 0, common_pb2.STAGE_ENHANCE: 5, common_pb2.STAGE_ENCODE: 10,
              common_pb2.STAGE_DENOISE: 90, common_pb2.STAGE_DECODE: 99}


class HttpError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class VideoCreate(BaseModel):
    """The body of POST /v1/videos (JSON, or multipart form fields with the image as the file `input_reference`)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    model: str = MODEL_NAME  # accepted for OpenAI clients; this gateway serves one model
    negative_prompt: str = ""
    size: str | None = None  # "WIDTHxHEIGHT" as OpenAI writes it, e.g. "640x352"
    seconds: float | None = None  # clip length; num_frames = seconds * fps + 1
    duration_s: float | None = None  # a long video: clips of `seconds` made one after another (docs/long-videos.md)
    shots: list[str] | None = None  # a long video's prompts of segments 1, 2, ... (multipart: the field repeated)
    fps: float | None = None
    seed: int | None = None
    guidance_scale: float | None = None
    sync_guidance_scale: float | None = None  # dual guidance (docs/dual-guidance.md); unset = single text CFG
    audio_guidance_scale: float | None = None  # per-modality: the audio's text scale; unset = guidance_scale
    audio_sync_guidance_scale: float | None = None  # per-modality: the audio's bridge scale; unset = sync's
    step_cache: float | None = None  # step caching (docs/performance.md#step-caching); unset = off
    num_inference_steps: int | None = None
    enhance_prompt: bool = False
    lora: str | None = None  # adapter name
    lora_scale: float | None = None
    priority: int | None = None
    image: str | None = None  # JSON only: base64 (or a data: URL) of the first-frame image


def _params(body: VideoCreate) -> common_pb2.GenerationParams:
    """GenerationParams for Submit; a value the message cannot hold (e.g. a negative count) is a 400 naming it."""
    params = common_pb2.GenerationParams()
    values: dict[str, object] = {
        "prompt": body.prompt, "negative_prompt": body.negative_prompt, "fps": body.fps, "seed": body.seed,
        "guidance_scale": body.guidance_scale, "sync_guidance_scale": body.sync_guidance_scale,
        "audio_guidance_scale": body.audio_guidance_scale, "audio_sync_guidance_scale": body.audio_sync_guidance_scale,
        "num_inference_steps": body.num_inference_steps, "step_cache": body.step_cache,
        "enhance_prompt": body.enhance_prompt, "priority": body.priority, "duration_s": body.duration_s,
    }
    if body.size is not None:
        match = _SIZE.match(body.size)
        if match is None:
            raise HttpError(400, f"size: expected WIDTHxHEIGHT such as 640x352, got {body.size!r}", param="size")
        values["width"], values["height"] = int(match.group(1)), int(match.group(2))
    if body.seconds is not None:
        fps = body.fps or contract.DEFAULT_FPS
        frames = body.seconds * fps
        if body.seconds <= 0 or abs(frames - round(frames)) > 1e-6:
            raise HttpError(400, f"seconds: {body.seconds:g} s at {fps:g} fps is not a whole number of frames "
                                 f"(use a multiple of 1/{fps:g} s)", param="seconds")
        values["num_frames"] = round(frames) + 1
    for name, value in values.items():
        if value is None:
            continue
        try:
            setattr(params, name, value)
        except (ValueError, TypeError) as exc:
            field = {"width": "size", "height": "size", "num_frames": "seconds"}.get(name, name)
            raise HttpError(400, f"{field}: {value!r} is out of range ({exc})", param=field) from None
    params.shots.extend(body.shots or ())
    if body.lora is not None:
        params.lora.name = body.lora
        if body.lora_scale is not None:
            params.lora.scale = body.lora_scale
    elif body.lora_scale is not None:
        raise HttpError(400, "lora_scale: given without lora", param="lora_scale")
    return params


def _image(data: str) -> bytes:
    payload = data.split(",", 1)[1] if data.startswith("data:") else data
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, "image: not base64 (or a base64 data: URL)", param="image") from None


def video_object(job: common_pb2.Job) -> dict[str, object]:
    """The job as the API's video object (docs/http-api.md)."""
    p = job.params
    done = job.state in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED)
    return {
        "id": job.job_id, "object": "video", "model": MODEL_NAME, "status": _STATUS.get(job.state, "queued"),
        "progress": progress(job), "created_at": job.created_at.seconds,
        "completed_at": job.updated_at.seconds if done else None,
        "size": f"{p.width}x{p.height}", "seconds": f"{(p.num_frames - 1) / p.fps:g}" if p.fps else None,
        "prompt": p.prompt, "effective_prompt": job.effective_prompt, "seed": p.seed, "fps": p.fps,
        "num_frames": p.num_frames, "num_inference_steps": p.num_inference_steps, "guidance_scale": p.guidance_scale,
        **contract.optional_fields(p),
        "stage": common_pb2.Stage.Name(job.stage).removeprefix("STAGE_").lower(), "step": job.step,
        "total_steps": job.total_steps, "eta_s": job.eta_s, "cancel_requested": job.cancel_requested,
        "duration_s": p.duration_s, "shots": list(p.shots), "segment": job.segment, "segment_count": job.segment_count,
        "error": {"code": "generation_failed", "message": job.failure_reason}
        if job.state == common_pb2.JOB_STATE_FAILED else None,
    }


def progress(job: common_pb2.Job) -> int:
    """0..100: the share of the stages done, the denoise stage counted step by step; 100 only once succeeded.
    A long video: from the end of enhance to the end of decode, filled by the steps of all its segments."""
    if job.state == common_pb2.JOB_STATE_SUCCEEDED:
        return 100
    if job.state == common_pb2.JOB_STATE_QUEUED:
        return 0
    if job.segment_count and job.total_steps and job.stage >= common_pb2.STAGE_ENCODE:
        start, end = _STAGE_END[common_pb2.STAGE_ENHANCE], _STAGE_END[common_pb2.STAGE_DECODE]
        return start + (end - start) * job.step // job.total_steps
    if job.stage == common_pb2.STAGE_DENOISE and job.total_steps:
        start, end = _STAGE_END[common_pb2.STAGE_ENCODE], _STAGE_END[common_pb2.STAGE_DENOISE]
        return start + (end - start) * job.step // job.total_steps
    return _STAGE_END.get(job.stage - 1, 0) if job.stage else 0


def _error(exc: HttpError) -> JSONResponse:
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    body = {"error": {"message": exc.message, "type": kind, "param": exc.param, "code": exc.code}}
    return JSONResponse(body, status_code=exc.status)


def _from_rpc(exc: grpc.RpcError) -> HttpError:
    code, message = exc.code(), exc.details() or ""
    param = None
    if code == grpc.StatusCode.INVALID_ARGUMENT and ":" in message:
        field = message.split(":", 1)[0]
        param = _HTTP_FIELD.get(field, field.removeprefix("params."))
    return HttpError(_HTTP_STATUS.get(code, 500), message, param=param, code=code.name.lower())


def create_app(target: str, objects: ObjectStore) -> FastAPI:
    """The FastAPI app; `target` is the gateway's gRPC address, `objects` the S3 store holding the artifacts."""
    app = FastAPI(title="MOVA video API", version="1", docs_url=None, redoc_url=None)
    channel = grpc.insecure_channel(target)
    stub = gateway_pb2_grpc.JobServiceStub(channel)
    app.state.channel = channel

    def call(method, message, request: Request):
        """One job API call with the caller's Authorization header (if any) as metadata."""
        auth = request.headers.get("authorization")
        try:
            return method(message, timeout=_RPC_TIMEOUT_S, metadata=[("authorization", auth)] if auth else None)
        except grpc.RpcError as exc:
            raise _from_rpc(exc) from None

    @app.exception_handler(HttpError)
    async def _http_error(_request: Request, exc: HttpError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _bad_query(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        name = str(first["loc"][-1])
        return _error(HttpError(400, f"{name}: {first['msg']}", param=name))

    @app.post("/v1/videos")
    async def create(request: Request) -> JSONResponse:
        submit = gateway_pb2.SubmitRequest(idempotency_key=request.headers.get("idempotency-key", ""))
        fields, image = await _read_body(request)
        try:
            body = VideoCreate.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(part) for part in first["loc"]) or "body"
            raise HttpError(400, f"{name}: {first['msg']}", param=name) from None
        submit.params.CopyFrom(_params(body))
        if body.image is not None:
            image = _image(body.image)
        if image is not None:
            submit.image = image
        response = await run_in_threadpool(call, stub.Submit, submit, request)
        return JSONResponse(video_object(response.job), status_code=200 if response.existing else 201)

    @app.get("/v1/videos")
    async def list_videos(request: Request, limit: int = 20, page_token: str = "", status: str = "") -> JSONResponse:
        if status and status not in _STATUS_FILTER:
            raise HttpError(400, f"status: one of {', '.join(_STATUS_FILTER)}, got {status!r}", param="status")
        if not 0 < limit < 2**32:  # the job API checks the page size itself; this only keeps it a uint32
            raise HttpError(400, f"limit: {limit} must be a positive page size", param="limit")
        message = gateway_pb2.ListJobsRequest(page_size=limit, page_token=page_token,
                                              state=_STATUS_FILTER.get(status, common_pb2.JOB_STATE_UNSPECIFIED))
        response = await run_in_threadpool(call, stub.List, message, request)
        data = [video_object(job) for job in response.jobs]
        return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None,
                             "has_more": bool(response.next_page_token), "next_page_token": response.next_page_token})

    @app.get("/v1/videos/{video_id}")
    async def retrieve(video_id: str, request: Request) -> JSONResponse:
        job = await run_in_threadpool(call, stub.Get, gateway_pb2.GetJobRequest(job_id=video_id), request)
        return JSONResponse(video_object(job))

    @app.delete("/v1/videos/{video_id}")
    async def cancel(video_id: str, request: Request) -> JSONResponse:
        job = await run_in_threadpool(call, stub.Cancel, gateway_pb2.CancelJobRequest(job_id=video_id), request)
        return JSONResponse(video_object(job))

    @app.get("/v1/videos/{video_id}/content")
    async def content(video_id: str, request: Request, variant: str = "video") -> Response:
        if variant not in _VARIANTS:
            raise HttpError(400, f"variant: one of {', '.join(_VARIANTS)}, got {variant!r}", param="variant")
        job = await run_in_threadpool(call, stub.Get, gateway_pb2.GetJobRequest(job_id=video_id), request)
        if job.state != common_pb2.JOB_STATE_SUCCEEDED:
            state = _STATUS.get(job.state, "queued")
            raise HttpError(409, f"video_id: job {video_id} is {state}; its content exists once it completed",
                            param="video_id", code="not_ready")
        ref = next((a.ref for a in job.artifacts if a.kind == _VARIANTS[variant]), None)
        if ref is None:
            raise HttpError(404, f"variant: job {video_id} has no {variant}", param="variant")
        data = await run_in_threadpool(objects.get_bytes, ref)
        return Response(data, media_type=ref.content_type or "application/octet-stream")

    return app


async def _read_body(request: Request) -> tuple[dict[str, object], bytes | None]:
    """The request's fields and its uploaded image: a JSON object, or a multipart / urlencoded form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        fields: dict[str, object] = {}
        image = None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != "input_reference":
                    raise HttpError(400, f"{name}: only input_reference may be a file", param=name)
                image = await value.read()
            elif name == "shots":  # the repeated field: one form field per shot
                fields.setdefault(name, []).append(value)
            else:
                fields[name] = value
        return fields, image
    if kind != "application/json":
        raise HttpError(400, f"body: send application/json or multipart/form-data, not {kind or 'nothing'!r}",
                        param="body")
    try:
        fields = await request.json()
    except ValueError as exc:
        raise HttpError(400, f"body: not JSON ({exc})", param="body") from None
    if not isinstance(fields, dict):
        raise HttpError(400, "body: must be a JSON object", param="body")
    return fields, None
