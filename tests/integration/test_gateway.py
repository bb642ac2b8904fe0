"""The gateway against a real Tansu broker and a real SeaweedFS: validation, idempotency, cancel, Watch,
List paging, queue bound, NOT_FOUND, health and reflection. Stage workers are played by the test, publishing
the events a worker would. The gateway's broker is its own (module scope), so the tasks it queues never reach
another test's stage workers."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from movakit.api.v1 import common_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc
from movakit.loading.release_configs import release_config
from movakit.request import OFFICIAL_NEGATIVE_PROMPT, TINY_PRESET
from movakit.runtime import kafka as mkafka
from movakit.runtime.grpc_server import BindError
from movakit.runtime.object_store import cancel_marker_key, job_key
from movakit.runtime.topics import TOPIC_ENHANCE, TOPIC_EVENTS, TOPIC_JOB_STATE
from movakit.services.gateway.main import start_gateway

pytestmark = pytest.mark.integration

TINY = dict(prompt="a red ball bounces", height=32, width=48, num_frames=5, fps=24, num_inference_steps=2)


@pytest.fixture(scope="module")
def channel(gateway, tenant_channel):
    with tenant_channel(gateway.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def jobs(channel) -> gateway_pb2_grpc.JobServiceStub:
    return gateway_pb2_grpc.JobServiceStub(channel)


def submit(jobs, image: bytes = b"", key: str = "", **params) -> gateway_pb2.SubmitResponse:
    request = gateway_pb2.SubmitRequest(
        params=common_pb2.GenerationParams(**{**TINY, **params}), image=image, idempotency_key=key
    )
    return jobs.Submit(request, timeout=10)


def png(width: int = 48, height: int = 32, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color=1 if mode == "1" else (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def worker_event(producer, job_id: str, **kind) -> None:
    """Publish what a stage worker would publish on mova.events."""
    ts = Timestamp()
    ts.GetCurrentTime()
    mkafka.publish(producer, TOPIC_EVENTS, job_id, events_pb2.JobEvent(job_id=job_id, time=ts, source="test", **kind))


def wait_state(jobs, job_id: str, state: int, attempts: int = 100) -> common_pb2.Job:
    job = None
    for _ in range(attempts):
        try:
            job = jobs.Get(gateway_pb2.GetJobRequest(job_id=job_id), timeout=5)
        except grpc.RpcError as exc:  # another replica's job may not have reached this gateway yet
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
        if job is not None and job.state == state:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {common_pb2.JobState.Name(state)}: {job}")


@pytest.mark.parametrize(
    ("params", "image", "key", "field"),
    [
        ({"num_frames": 10}, b"", "", "params.num_frames"),
        ({"num_frames": 197}, b"", "", "params.num_frames"),
        ({"height": 100}, b"", "", "params.height"),
        ({"width": 2048}, b"", "", "params.width"),
        ({"num_inference_steps": 101}, b"", "", "params.num_inference_steps"),
        ({"guidance_scale": 25.0}, b"", "", "params.guidance_scale"),
        ({"fps": 500.0}, b"", "", "params.fps"),
        ({"prompt": "   "}, b"", "", "params.prompt"),
        ({"prompt": "\u200b\u200b"}, b"", "", "params.prompt"),
        ({"prompt": "\x00\x01"}, b"", "", "params.prompt"),
        ({"prompt": "x" * 2001}, b"", "", "params.prompt"),
        ({"negative_prompt": "y" * 2001}, b"", "", "params.negative_prompt"),
        ({"priority": 10}, b"", "", "params.priority"),
        ({"duration_s": 61.0}, b"", "", "params.duration_s"),
        ({"shots": ["the ball stops"]}, b"", "", "params.shots"),  # one clip: no segment for a shot
        ({"duration_s": 0.5, "shots": ["\u200b"]}, b"", "", "params.shots"),
        ({"duration_s": 0.5, "shots": ["a", "b", "c"]}, b"", "", "params.shots"),  # 3 segments: at most 2 shots
        ({}, b"not an image at all", "", "image"),
        ({}, png()[:40], "", "image"),
        ({}, png(fmt="GIF"), "", "image"),
        ({}, png(fmt="BMP"), "", "image"),
        ({}, b"", "k" * 129, "idempotency_key"),
        ({}, b"", "has space", "idempotency_key"),
    ],
)
def test_invalid_requests_name_the_field(jobs, params, image, key, field):
    with pytest.raises(grpc.RpcError) as err:
        submit(jobs, image=image, key=key, **params)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":"), err.value.details()


def test_absurd_image_dimensions_are_refused(jobs):
    with pytest.raises(grpc.RpcError) as err:
        submit(jobs, image=png(8000, 6000, mode="1"))  # 48 megapixels in a few kB of PNG
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("image:")


def test_a_released_checkpoint_takes_its_trained_sizes_only(gateway_config, tmp_path, tenant_channel):
    for folder in ("video_vae", "video_dit", "audio_vae"):  # the configs the gateway reads; no weights needed
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "config.json").write_text(json.dumps(release_config(folder)))
    strict = start_gateway(gateway_config(checkpoint=str(tmp_path)))
    try:
        with tenant_channel(strict.address) as ch:
            stub = gateway_pb2_grpc.JobServiceStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                submit(stub)  # 32x48
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "params.height" in err.value.details() and "352x640" in err.value.details()
            ok = submit(stub, height=352, width=640, num_frames=0, num_inference_steps=0)
            assert (ok.job.params.height, ok.job.params.num_frames, ok.job.params.num_inference_steps) == (352, 193, 50)
    finally:
        strict.stop()


def test_submit_stores_image_queues_task_and_fills_defaults(jobs, object_store, gateway_kafka, sealer):
    image = png()
    response = submit(jobs, image=image, num_inference_steps=0, guidance_scale=0.0)
    job = response.job
    assert not response.existing and job.job_id == response.job_id
    assert job.state == common_pb2.JOB_STATE_QUEUED
    # defaults filled in: the tiny demo checkpoint's preset, the official negative prompt
    assert job.params.num_inference_steps == TINY_PRESET.num_inference_steps and job.params.guidance_scale == 5.0
    assert job.params.negative_prompt == OFFICIAL_NEGATIVE_PROMPT
    assert job.params.HasField("seed")  # drawn by the gateway
    assert job.input_image.key == job_key(job.job_id, "input", "image.png")
    assert object_store.get_bytes(job.input_image) == image

    tasks = [m for k, m, _ in mkafka.read_to_end(gateway_kafka, TOPIC_ENHANCE, events_pb2.EnhanceTask, sealer)
             if k == job.job_id]
    assert len(tasks) == 1
    assert tasks[0].params == job.params and tasks[0].image == job.input_image

    first = next(iter(jobs.Watch(gateway_pb2.WatchJobRequest(job_id=job.job_id), timeout=10)))
    assert first.WhichOneof("kind") == "queued"


def test_idempotency_key_returns_the_same_job(jobs):
    key = f"idem-{uuid.uuid4().hex}"
    first = submit(jobs, key=key, guidance_scale=0.0)
    again = submit(jobs, key=key, guidance_scale=5.0)  # the same request: 5.0 is the default 0 stands for
    assert again.existing and again.job_id == first.job_id
    assert again.job.params.seed == first.job.params.seed  # the seed drawn for the first call
    other = submit(jobs, key=f"idem-{uuid.uuid4().hex}")
    assert other.job_id != first.job_id


def test_watch_streams_progress_to_success_with_download_urls(jobs, producer, object_store):
    job_id = submit(jobs).job_id
    video_ref = object_store.put_bytes(job_key(job_id, "output", "video.mp4"), b"\x00\x00\x00\x18ftypmp42", "video/mp4")
    stream = jobs.Watch(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=30)
    S = common_pb2
    worker_event(producer, job_id, stage_started=events_pb2.StageStarted(stage=S.STAGE_ENHANCE, worker="w1"))
    worker_event(producer, job_id, prompt_enhanced=events_pb2.PromptEnhanced(prompt="enhanced!", original_prompt="x"))
    worker_event(producer, job_id, stage_finished=events_pb2.StageFinished(stage=S.STAGE_ENHANCE))
    worker_event(producer, job_id, stage_started=events_pb2.StageStarted(stage=S.STAGE_DENOISE))
    for step in (1, 2):
        worker_event(producer, job_id, denoise_step=events_pb2.DenoiseStep(step=step, total=2, eta_s=2.0 - step))
    worker_event(producer, job_id, stage_finished=events_pb2.StageFinished(stage=S.STAGE_DENOISE))
    worker_event(producer, job_id, succeeded=events_pb2.Succeeded(
        artifacts=[common_pb2.Artifact(kind="video", ref=video_ref)]))

    events = list(stream)  # the stream ends by itself after the terminal event
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds == ["queued", "dispatched", "stage_started", "prompt_enhanced", "stage_finished", "stage_started",
                     "denoise_step", "denoise_step", "stage_finished", "succeeded"]
    assert [e.denoise_step.step for e in events if e.HasField("denoise_step")] == [1, 2]
    url = events[-1].succeeded.artifacts[0].url
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback test server
        assert response.read() == b"\x00\x00\x00\x18ftypmp42"

    job = jobs.Get(gateway_pb2.GetJobRequest(job_id=job_id), timeout=5)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED
    assert job.effective_prompt == "enhanced!" and job.step == 2 and job.total_steps == 2
    assert job.artifacts[0].url.startswith(f"http://{object_store.endpoint}/")


def test_a_long_jobs_progress_covers_all_its_segments(jobs, producer):
    job = submit(jobs, duration_s=0.5, shots=["the ball stops"]).job  # 12 frames in clips of 5: 3 segments
    assert (job.segment_count, job.total_steps, list(job.params.shots)) == (3, 6, ["the ball stops"])
    S = common_pb2
    worker_event(producer, job.job_id, stage_started=events_pb2.StageStarted(stage=S.STAGE_DENOISE, segment=1))
    worker_event(producer, job.job_id, denoise_step=events_pb2.DenoiseStep(
        step=1, total=2, eta_s=1.5, elapsed_s=0.5, segment=1, segment_count=3))
    # a late event of segment 0 does not move the job back
    worker_event(producer, job.job_id, stage_finished=events_pb2.StageFinished(stage=S.STAGE_DECODE, segment=0))
    worker_event(producer, job.job_id, stage_started=events_pb2.StageStarted(stage=S.STAGE_ENCODE, segment=2))
    for _ in range(100):
        job = jobs.Get(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=5)
        if job.stage == S.STAGE_ENCODE:
            break
        time.sleep(0.1)
    # 2 steps of segment 0 + 1 of segment 1; eta: 1.5 s left in segment 1, then segment 2 at 0.5 + 1.5 s
    assert (job.segment, job.stage, job.step, job.total_steps, job.eta_s) == (2, S.STAGE_ENCODE, 3, 6, 3.5)


def test_failed_job_reports_its_reason(jobs, producer):
    job_id = submit(jobs).job_id
    worker_event(producer, job_id, failed=events_pb2.Failed(stage=common_pb2.STAGE_ENCODE, reason="encode failed: boom"))
    events = list(jobs.Watch(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=30))
    assert events[-1].failed.reason == "encode failed: boom"
    job = wait_state(jobs, job_id, common_pb2.JOB_STATE_FAILED)
    assert job.failure_reason == "encode failed: boom" and job.stage == common_pb2.STAGE_ENCODE


def test_cancel_is_recorded_for_workers_and_finished_by_them(jobs, producer, object_store):
    job_id = submit(jobs).job_id
    job = jobs.Cancel(gateway_pb2.CancelJobRequest(job_id=job_id), timeout=5)
    assert job.cancel_requested and job.state == common_pb2.JOB_STATE_CANCELLING
    assert object_store.has_key(cancel_marker_key(job_id))
    # A late progress event does not undo the cancelling state; the worker's cancelled event ends the job.
    worker_event(producer, job_id, stage_started=events_pb2.StageStarted(stage=common_pb2.STAGE_ENCODE))
    worker_event(producer, job_id, cancelled=events_pb2.Cancelled(stage=common_pb2.STAGE_ENCODE))
    kinds = [e.WhichOneof("kind") for e in jobs.Watch(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=30)]
    assert kinds == ["queued", "dispatched", "cancel_requested", "stage_started", "cancelled"]
    wait_state(jobs, job_id, common_pb2.JOB_STATE_CANCELLED)
    with pytest.raises(grpc.RpcError) as err:
        jobs.Cancel(gateway_pb2.CancelJobRequest(job_id=job_id), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_unknown_job_is_not_found(jobs):
    for call, request in ((jobs.Get, gateway_pb2.GetJobRequest(job_id="nope")),
                          (jobs.Cancel, gateway_pb2.CancelJobRequest(job_id="nope"))):
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        list(jobs.Watch(gateway_pb2.WatchJobRequest(job_id="nope"), timeout=5))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_pages_newest_first_without_gaps(jobs):
    mine = [submit(jobs, prompt=f"paging {i}").job_id for i in range(5)]
    seen, token = [], ""
    while True:
        page = jobs.List(gateway_pb2.ListJobsRequest(page_size=2, page_token=token), timeout=5)
        assert len(page.jobs) <= 2
        seen.extend(j.job_id for j in page.jobs)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert [j for j in seen if j in mine] == list(reversed(mine))
    with pytest.raises(grpc.RpcError) as err:
        jobs.List(gateway_pb2.ListJobsRequest(page_token="garbage!"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("page_token:")
    with pytest.raises(grpc.RpcError) as err:
        jobs.List(gateway_pb2.ListJobsRequest(page_size=101), timeout=5)
    assert err.value.details().startswith("page_size:")


def test_queue_bound_answers_resource_exhausted(gateway_config, tenant_channel):
    bounded = start_gateway(gateway_config(max_active_jobs=1))
    try:
        with tenant_channel(bounded.address) as ch:
            stub = gateway_pb2_grpc.JobServiceStub(ch)
            # Earlier tests in this module left queued jobs in the broker: this gateway replayed them.
            assert bounded.store.active_count() >= 1
            with pytest.raises(grpc.RpcError) as err:
                submit(stub)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit 1" in err.value.details()
    finally:
        bounded.stop()


def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "movakit.api.v1.JobService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in answer.list_services_response.service}
    assert {"movakit.api.v1.JobService", "grpc.health.v1.Health"} <= names


def test_two_gateway_replicas_share_jobs(gateway, jobs, gateway_config, tenant_channel):
    other = start_gateway(gateway_config())
    try:
        with tenant_channel(other.address) as ch:
            second = gateway_pb2_grpc.JobServiceStub(ch)
            job_id = submit(second, key=f"replica-{uuid.uuid4().hex}").job_id  # accepted by the second replica
            seen = wait_state(jobs, job_id, common_pb2.JOB_STATE_QUEUED)  # ...known to the first one
            assert seen.params.prompt == TINY["prompt"] and seen.idempotency_key.startswith("replica-")
            jobs.Cancel(gateway_pb2.CancelJobRequest(job_id=job_id), timeout=5)  # cancelled through the first
            wait_state(second, job_id, common_pb2.JOB_STATE_CANCELLING)
    finally:
        other.stop()


def test_artifact_urls_use_the_public_endpoint(gateway_config, tenant_channel, producer, object_store):
    port = object_store.endpoint.rsplit(":", 1)[1]
    public = start_gateway(gateway_config(s3_public_endpoint=f"localhost:{port}"))
    try:
        with tenant_channel(public.address) as ch:
            stub = gateway_pb2_grpc.JobServiceStub(ch)
            job_id = submit(stub).job_id
            ref = object_store.put_bytes(job_key(job_id, "output", "preview.png"), png(), "image/png")
            worker_event(producer, job_id, succeeded=events_pb2.Succeeded(
                artifacts=[common_pb2.Artifact(kind="preview", ref=ref)]))
            url = wait_state(stub, job_id, common_pb2.JOB_STATE_SUCCEEDED).artifacts[0].url
            assert url.startswith(f"http://localhost:{port}/")
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback test server
                assert response.read() == png()
    finally:
        public.stop()


def test_poison_records_do_not_stop_a_gateway(gateway_config, gateway_kafka, jobs, sealer):
    raw = mkafka.make_producer(gateway_kafka, sealer)  # sealed, but no protobuf
    for topic in (TOPIC_JOB_STATE, TOPIC_EVENTS):
        raw.send_and_wait(topic, b"poison", b"\xff\xfe not a protobuf", [], timeout_s=10)
    raw.close()
    job_id = submit(jobs).job_id  # the running gateway skipped the bad event and still works
    restarted = start_gateway(gateway_config())  # a new one replays both topics past the bad records
    try:
        assert restarted.store.get(job_id) is not None
    finally:
        restarted.stop()


def test_a_gateway_that_cannot_listen_stops_what_it_started(gateway, gateway_config):
    def followers() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "gateway-events")

    before = followers()
    with pytest.raises(BindError, match=gateway.address):
        start_gateway(gateway_config(listen=gateway.address))  # the running gateway holds that port
    assert followers() == before
