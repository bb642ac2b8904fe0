"""The whole local stack, as `mova stack up` runs it: real Tansu, real SeaweedFS, every service its own process,
on the tiny random-weight checkpoint and on private ports (a user's stack on the default ports is untouched).

One module-scoped stack (two denoiser replicas, every service exporting OTLP to a collector this test runs on
127.0.0.1) serves all tests: a job end to end with its MP4 checked by ffprobe, its trace spanning every service,
the same request through the stack and through `mova generate` giving the same latents, WAV and preview bytes,
two denoiser replicas sharing jobs, a redelivered task skipped, LoRA jobs interleaved equal to each run alone,
one service restarted, the broker and then the object store SIGKILLed mid-job and restarted on their storage
(nothing lost, nothing stuck, health NOT_SERVING meanwhile), and `status` / `down`.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import torch
from PIL import Image
from kafka.partitioner.default import murmur2
from lora_helpers import random_adapter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from movakit.api.v1 import common_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc
from movakit.cli import main
from movakit.lora.store import write_folder
from movakit.media import probe
from movakit.runtime import kafka as mkafka
from movakit.runtime import stack
from movakit.runtime.auth import with_token
from movakit.runtime.grpc_server import check_health
from movakit.runtime.localstack import free_ports, port_open
from movakit.runtime.object_store import ObjectStore
from movakit.runtime.topics import TOPIC_DENOISE, TOPICS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVICES = {"gateway", "prompt-enhancer", "encoder", "denoiser", "decoder"}
TINY_PARAMS = dict(prompt="A cat plays a tiny piano. The audio has soft piano notes.", height=32, width=32,
                   num_frames=5, fps=8.0, num_inference_steps=2, guidance_scale=2.0)


class SpanCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP/gRPC trace receiver: keeps (service, trace_id, span name, attributes) of every span."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, dict[str, str]]] = []
        self._lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (OTLP method name)
        with self._lock:
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                service = attrs.get("service.name", "")
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        span_attrs = {a.key: a.value.string_value for a in span.attributes}
                        self.spans.append((service, span.trace_id.hex(), span.name, span_attrs))
        return trace_service_pb2.ExportTraceServiceResponse()

    def snapshot(self):
        with self._lock:
            return list(self.spans)


@pytest.fixture(scope="module")
def collector():
    spans = SpanCollector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(spans, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield spans, f"127.0.0.1:{port}"
    server.stop(1)


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory, collector):
    _, otlp = collector
    ports = free_ports(10)
    cfg = stack.StackConfig(
        state_dir=tmp_path_factory.mktemp("stack"), kafka_port=ports[0], s3_port=ports[1], gateway_port=ports[2],
        http_port=ports[7], stage_ports=tuple(ports[3:7]),  # no S3 keys: `up` generates them
        redis_port=ports[8], trainer_port=ports[9],
        denoiser_replicas=2, otel_exporter="otlp", otel_endpoint=otlp, metrics_ports=False,
        extra_env={"MOVA_DENOISER_LATENT_CHECKPOINT_EVERY": "1"})  # no --checkpoint: tiny sizes accepted
    addresses = stack.up(cfg, log=lambda *_: None)
    token = cfg.state_dir / stack.TOKEN_FILE
    assert token.stat().st_mode & 0o777 == 0o600 and (cfg.state_dir / stack.TOKENS_FILE).stat().st_mode & 0o777 == 0o600
    channel = with_token(grpc.insecure_channel(addresses["gateway"]), token.read_text().strip())
    yield cfg, addresses, gateway_pb2_grpc.JobServiceStub(channel)
    channel.close()
    if (cfg.state_dir / stack.STATE_FILE).exists():
        stack.down(cfg.state_dir)


def _store(cfg: stack.StackConfig, addresses) -> ObjectStore:
    return ObjectStore(addresses["s3"], *stack.read_s3_credentials(cfg.state_dir), cfg.bucket)


def _submit(stub, **overrides) -> str:
    params = common_pb2.GenerationParams(**{**TINY_PARAMS, **overrides})
    return stub.Submit(gateway_pb2.SubmitRequest(params=params), timeout=30).job_id


def _watch(stub, job_id: str, timeout_s: float = 150.0) -> list[events_pb2.JobEvent]:
    events = []
    for event in stub.Watch(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=timeout_s):
        events.append(event)
        if event.WhichOneof("kind") in ("succeeded", "failed", "cancelled"):
            break
    return events


def _partition(job_id: str) -> int:
    return (murmur2(job_id.encode()) & 0x7FFFFFFF) % TOPICS[TOPIC_DENOISE].partitions


def _latest_assignment(log_path: str) -> list[int]:
    latest: list[int] = []
    for line in Path(log_path).read_text(errors="replace").splitlines():
        if '"partitions assigned"' in line:
            latest = json.loads(line)["partitions"]
    return latest


def test_job_end_to_end_mp4_and_trace(local_stack, collector):
    cfg, addresses, stub = local_stack
    job_id = _submit(stub, seed=11)
    events = _watch(stub, job_id)
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds[0] == "queued" and kinds[-1] == "succeeded", kinds
    started = [e.stage_started.stage for e in events if e.WhichOneof("kind") == "stage_started"]
    finished = [e.stage_finished.stage for e in events if e.WhichOneof("kind") == "stage_finished"]
    order = [common_pb2.STAGE_ENHANCE, common_pb2.STAGE_ENCODE, common_pb2.STAGE_DENOISE, common_pb2.STAGE_DECODE]
    assert started == order and finished == order
    steps = [e.denoise_step for e in events if e.WhichOneof("kind") == "denoise_step"]
    assert [(s.step, s.total) for s in steps] == [(1, 2), (2, 2)]
    assert steps[0].eta_s > 0 and steps[-1].eta_s == 0

    artifacts = {a.kind: a for a in events[-1].succeeded.artifacts}
    assert set(artifacts) == {"video", "audio", "preview"}
    assert artifacts["video"].ref.key == f"jobs/{job_id}/output/video.mp4"
    assert artifacts["video"].url.startswith("http://")
    mp4 = _store(cfg, addresses).get_bytes(artifacts["video"].ref)  # checksum-verified download
    path = cfg.state_dir / f"{job_id}.mp4"
    path.write_bytes(mp4)
    info = probe(path)
    assert (info.video_codec, info.audio_codec, info.sample_rate) == ("h264", "aac", 48000)
    assert (info.width, info.height) == (32, 32)
    assert stub.Get(gateway_pb2.GetJobRequest(job_id=job_id)).state == common_pb2.JOB_STATE_SUCCEEDED

    spans, _ = collector
    stage_spans = {"prompt-enhancer.enhance", "encoder.encode", "denoiser.denoise", "decoder.decode"}
    deadline = time.monotonic() + 40
    services_in_trace: set[str] = set()
    names: set[str] = set()
    while time.monotonic() < deadline:
        snapshot = spans.snapshot()
        # the stage spans of this job (one per stage) must all sit in one trace ...
        trace_ids = {t for _, t, name, attrs in snapshot if name in stage_spans and attrs.get("movakit.job_id") == job_id}
        assert len(trace_ids) <= 1, {t[:6]: sorted({n for _, tt, n, _ in snapshot if tt == t}) for t in trace_ids}
        # ... which the gateway's Submit started and which holds every service and the S3 / Kafka calls
        services_in_trace = {svc for svc, t, _, _ in snapshot if t in trace_ids}
        names = {name for _, t, name, _ in snapshot if t in trace_ids}
        if services_in_trace >= SERVICES and {"s3.get_object", "s3.put_object"} <= names \
                and stage_spans <= names:
            break
        time.sleep(1.0)
    assert services_in_trace >= SERVICES
    assert "/movakit.api.v1.JobService/Submit" in names
    assert stage_spans <= names  # enhance, encode, denoise, decode
    assert {"s3.get_object", "s3.put_object"} <= names  # the object store calls are inside the job's trace
    assert {"mova.enhance publish", "mova.encode publish", "mova.denoise publish", "mova.decode publish"} <= names


# Every field of a request set (the image too); the defaults case leaves all but the prompt to the defaults; the
# long case is a 2-segment video (clips of 5 frames at 8 fps, 1 s = 9 frames) with a shot list.
EVERY_FIELD = dict(negative_prompt="blurry, static", height=32, width=48, num_frames=9, fps=12.0,
                   num_inference_steps=3, guidance_scale=3.5, seed=1234, sync_guidance_scale=2.0,
                   audio_guidance_scale=2.5, audio_sync_guidance_scale=1.0, step_cache=0.5)
LONG = dict(height=32, width=32, num_frames=5, fps=8.0, num_inference_steps=2, duration_s=1.0,
            shots=["The lighthouse goes dark. Only the waves are heard."])
_OPTION = {"negative_prompt": "--negative-prompt", "height": "--height", "width": "--width",
           "num_frames": "--num-frames", "fps": "--fps", "num_inference_steps": "--steps",
           "guidance_scale": "--guidance-scale", "seed": "--seed", "sync_guidance_scale": "--sync-guidance-scale",
           "audio_guidance_scale": "--audio-guidance-scale", "audio_sync_guidance_scale": "--audio-sync-guidance-scale",
           "step_cache": "--step-cache", "duration_s": "--duration"}


@pytest.mark.parametrize("case", ["defaults", "every-field", "long-with-shots"])
def test_stack_and_generate_give_the_same_bytes(local_stack, tmp_path, capsys, case):
    from safetensors.torch import load_file

    from movakit.cli import main as mova

    cfg, addresses, stub = local_stack
    every_field, long = case == "every-field", case == "long-with-shots"
    fields, image = LONG if long else {}, b""
    if every_field:
        fields = EVERY_FIELD
        frame = tmp_path / "frame.png"
        Image.effect_mandelbrot((80, 40), (-2.0, -1.0, 1.0, 1.0), 64).convert("RGB").save(frame)
        image = frame.read_bytes()
    prompt = "A lighthouse blinks at dusk. Waves crash softly."
    options = [x for name, value in fields.items() if name not in ("seed", "shots") for x in (_OPTION[name], str(value))]
    options += [x for shot in fields.get("shots", ()) for x in ("--shot", shot)]
    if long:  # `mova submit --duration --shot`, as docs/long-videos.md shows it
        capsys.readouterr()
        assert mova(["submit", "--prompt", prompt, *options, "--gateway", addresses["gateway"],
                     "--state-dir", str(cfg.state_dir), "--detach"]) == 0
        job_id = capsys.readouterr().out.split()[0]
    else:
        job_id = stub.Submit(gateway_pb2.SubmitRequest(params=common_pb2.GenerationParams(prompt=prompt, **fields),
                                                       image=image), timeout=30).job_id
    events = _watch(stub, job_id, timeout_s=300.0)
    assert events[-1].WhichOneof("kind") == "succeeded", events[-1]
    seed = stub.Get(gateway_pb2.GetJobRequest(job_id=job_id)).params.seed  # drawn by the gateway by default

    argv = ["generate", "--prompt", prompt, "--checkpoint", addresses["checkpoint"], "--device", "cpu",
            "--dtype", "float32", "--output", str(tmp_path / "clip.mp4"), "--seed", str(seed), *options]
    if every_field:
        argv += ["--image", str(tmp_path / "frame.png")]
    if not long:  # (one clip's latents: `--save-latents` refuses a long video)
        argv += ["--save-latents", str(tmp_path / "latents.safetensors")]
    assert mova(argv) == 0

    store = _store(cfg, addresses)
    artifacts = {a.kind: a for a in events[-1].succeeded.artifacts}
    assert store.get_bytes(artifacts["audio"].ref) == (tmp_path / "clip.wav").read_bytes()
    assert store.get_bytes(artifacts["preview"].ref) == (tmp_path / "clip.png").read_bytes()
    if long:  # two segments, each under its own key; the joined MP4 as `mova generate --duration` writes it
        assert {k.split("/")[2] for k in store.list_keys(f"jobs/{job_id}/seg-")} == {"seg-0", "seg-1"}
        mp4 = store.get_bytes(artifacts["video"].ref)
        assert mp4 == (tmp_path / "clip.mp4").read_bytes()
        (tmp_path / "stack.mp4").write_bytes(mp4)
        info = probe(tmp_path / "stack.mp4")
        assert info.num_frames == 9 and info.duration_s >= LONG["duration_s"]
        return
    for kind in ("video", "audio"):  # the denoiser keeps the final latents of every job in S3
        ref = store.tensor_ref_at(f"jobs/{job_id}/denoise/{kind}_latents.safetensors")
        stack_latents = store.get_tensors(ref)[f"{kind}_latents"]
        local = load_file(str(tmp_path / "latents.safetensors"))[kind]
        assert torch.equal(stack_latents, local), f"{kind} latents differ: {(stack_latents - local).abs().max()}"


def _settled_assignment(logs: dict[str, str], timeout_s: float = 60.0) -> dict[str, set[int]]:
    """Each replica's latest partitions once they are disjoint and none is empty (the group has settled)."""
    deadline = time.monotonic() + timeout_s
    while True:
        owned = {name: set(_latest_assignment(path)) for name, path in logs.items()}
        settled = all(owned.values()) and not set.intersection(*owned.values())
        if settled or time.monotonic() > deadline:
            assert settled, owned
            return owned
        time.sleep(0.5)


def test_two_denoiser_replicas_share_jobs(local_stack):
    cfg, addresses, stub = local_stack
    logs = {name: str(cfg.state_dir / "logs" / f"{name}.log") for name in ("denoiser-1", "denoiser-2")}
    workers: set[str] = set()
    for _round in range(3):  # a rebalance under load can move partitions after we looked: then try again
        owned = _settled_assignment(logs)
        jobs: list[str] = []
        while len(jobs) < 8 and not all(any(_partition(j) in part for j in jobs) for part in owned.values()):
            jobs.append(_submit(stub, seed=100 + len(jobs)))
        for job_id in jobs:
            events = _watch(stub, job_id)
            assert events[-1].WhichOneof("kind") == "succeeded", events[-1]
            workers |= {e.stage_started.worker for e in events if e.WhichOneof("kind") == "stage_started"
                        and e.stage_started.stage == common_pb2.STAGE_DENOISE}
        if workers == set(logs):
            break
    assert workers == set(logs), {name: _latest_assignment(path) for name, path in logs.items()}


def test_redelivered_denoise_task_is_skipped(local_stack):
    cfg, addresses, stub = local_stack
    job_id = _submit(stub, seed=5)
    assert _watch(stub, job_id)[-1].WhichOneof("kind") == "succeeded"
    store = _store(cfg, addresses)
    latents_key = f"jobs/{job_id}/denoise/video_latents.safetensors"
    before = store._client.stat_object(cfg.bucket, latents_key).last_modified
    checkpoints = store.get_raw(f"jobs/{job_id}/denoise/checkpoints.json")
    assert checkpoints is not None and b'"step": 1' in checkpoints  # K=1: a checkpoint after step 1 of 2

    # deliver the job's DenoiseTask again, exactly as the encoder published it
    tail = mkafka.make_tail_consumer(addresses["kafka"], TOPIC_DENOISE)
    sealer = mkafka.RecordSealer((cfg.state_dir / stack.KAFKA_SECRET_FILE).read_text().strip())
    producer = mkafka.make_producer(addresses["kafka"], sealer)
    events_tail = mkafka.make_tail_consumer(addresses["kafka"], "mova.events")
    try:
        task = None
        deadline = time.monotonic() + 20
        while task is None and time.monotonic() < deadline:
            for records in tail.poll(timeout_ms=300).values():
                for record in records:
                    if record.key == job_id.encode():
                        task = mkafka.parse(record, events_pb2.DenoiseTask, sealer)[0]
        assert task is not None
        marks = events_tail.end_offsets(sorted(events_tail.assignment()))
        for tp, offset in marks.items():  # read only what comes after the redelivery, not the whole topic again
            events_tail.seek(tp, offset)
        # Tansu on S3 storage can report end offsets that lag the records just written: the first run's last
        # events may still come after the marks, so events are also told apart by their time
        redelivered_ns = time.time_ns()
        mkafka.publish(producer, TOPIC_DENOISE, job_id, task)
        after: list[events_pb2.JobEvent] = []  # this job's events published after the redelivery
        skipped: dict[int, bool] = {}
        deadline = time.monotonic() + 60
        while len(skipped) < 2 and time.monotonic() < deadline:
            for tp, records in events_tail.poll(timeout_ms=300).items():
                for record in records:
                    event = mkafka.parse(record, events_pb2.JobEvent, sealer)[0]
                    late = record.offset < marks[tp] or event.time.ToNanoseconds() < redelivered_ns
                    if event.job_id != job_id or late:
                        continue
                    after.append(event)
                    if event.WhichOneof("kind") == "stage_finished":
                        skipped[event.stage_finished.stage] = event.stage_finished.skipped
        assert not [e for e in after if e.WhichOneof("kind") in ("denoise_step", "stage_started")]
        assert skipped == {common_pb2.STAGE_DENOISE: True, common_pb2.STAGE_DECODE: True}
    finally:
        for c in (tail, events_tail):
            c.close()
        producer.close()
    assert store._client.stat_object(cfg.bucket, latents_key).last_modified == before


def test_a_long_video_resumes_the_segment_whose_denoiser_was_killed(local_stack):
    """SIGKILL the denoiser while it runs segment 2 of a long video: the task is redelivered, resumes from segment
    2's checkpoint, the job succeeds, and nothing of segment 1 runs again (its stages started once and its result
    manifests were not rewritten)."""
    cfg, addresses, stub = local_stack
    job_id = _submit(stub, seed=13, num_inference_steps=12, duration_s=1.0)  # 2 segments of 5 frames at 8 fps
    store = _store(cfg, addresses)
    manifests = [f"jobs/{job_id}/seg-0/{stage}/result.pb" for stage in ("encode", "denoise", "decode")]
    events, killed, written = [], None, {}
    for event in stub.Watch(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=300):
        events.append(event)
        kind = event.WhichOneof("kind")
        step = event.denoise_step
        if kind == "denoise_step" and step.segment == 1 and step.step >= 2 and killed is None:
            # step 1's checkpoint is written before step 2 begins
            killed = next(e.stage_started.worker for e in reversed(events) if e.WhichOneof("kind") == "stage_started")
            os.kill(next(e.pid for e in stack.read_state(cfg.state_dir)[1] if e.name == killed), signal.SIGKILL)
            written = {key: store._client.stat_object(cfg.bucket, key).last_modified for key in manifests}
        if kind in ("succeeded", "failed", "cancelled"):
            break
    assert killed is not None and events[-1].WhichOneof("kind") == "succeeded", events[-1]
    stack.restart(cfg.state_dir, killed)  # back for the tests after this one

    started = [(e.stage_started.segment, e.stage_started.stage) for e in events if e.WhichOneof("kind") == "stage_started"]
    assert sorted(s for s in started if s[0] == 0) == [(0, common_pb2.STAGE_ENHANCE), (0, common_pb2.STAGE_ENCODE),
                                                       (0, common_pb2.STAGE_DENOISE), (0, common_pb2.STAGE_DECODE)]
    assert started.count((1, common_pb2.STAGE_DENOISE)) == 2, started  # the killed run and the redelivered one
    again = [i for i, e in enumerate(events) if e.WhichOneof("kind") == "stage_started"
             and (e.stage_started.segment, e.stage_started.stage) == (1, common_pb2.STAGE_DENOISE)][1]
    steps = [e.denoise_step.step for e in events[again:] if e.WhichOneof("kind") == "denoise_step"]
    assert steps[0] > 1 and steps[-1] == 12  # the redelivered run resumed from a checkpoint of segment 2
    assert {key: store._client.stat_object(cfg.bucket, key).last_modified for key in manifests} == written
    job = stub.Get(gateway_pb2.GetJobRequest(job_id=job_id))
    assert (job.segment, job.segment_count, job.step, job.total_steps) == (1, 2, 24, 24)


def test_cancel_stops_the_denoiser_at_the_next_step(local_stack):
    cfg, addresses, stub = local_stack
    job_id = _submit(stub, seed=9, num_inference_steps=60)
    events = []
    cancelled_at = None
    for event in stub.Watch(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=150):
        events.append(event)
        kind = event.WhichOneof("kind")
        if kind == "denoise_step" and cancelled_at is None:
            cancelled_at = event.denoise_step.step
            stub.Cancel(gateway_pb2.CancelJobRequest(job_id=job_id), timeout=10)
        if kind in ("succeeded", "failed", "cancelled"):
            break
    assert events[-1].WhichOneof("kind") == "cancelled", [e.WhichOneof("kind") for e in events]
    assert events[-1].cancelled.stage == common_pb2.STAGE_DENOISE
    steps = [e.denoise_step.step for e in events if e.WhichOneof("kind") == "denoise_step"]
    assert cancelled_at is not None and max(steps) < 60
    assert not [e for e in events if e.WhichOneof("kind") == "stage_started"
                and e.stage_started.stage == common_pb2.STAGE_DECODE]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if stub.Get(gateway_pb2.GetJobRequest(job_id=job_id)).state == common_pb2.JOB_STATE_CANCELLED:
            break
        time.sleep(0.2)
    assert stub.Get(gateway_pb2.GetJobRequest(job_id=job_id)).state == common_pb2.JOB_STATE_CANCELLED
    store = _store(cfg, addresses)
    assert store.get_raw(f"jobs/{job_id}/denoise/result.pb") is None  # no outputs recorded


def test_stage_services_answer_direct_rpcs_health_and_reflection(local_stack):
    cfg, addresses, _ = local_stack
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from movakit.api.v1 import denoiser_pb2_grpc, encoder_pb2_grpc, prompt_enhancer_pb2_grpc

    with grpc.insecure_channel(addresses["prompt-enhancer"]) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="movakit.api.v1.PromptEnhancer"), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                    timeout=5)
        names = {svc.name for svc in answer.list_services_response.service}
        assert {"movakit.api.v1.PromptEnhancer", "grpc.health.v1.Health"} <= names
        params = common_pb2.GenerationParams(**TINY_PARAMS)
        out = prompt_enhancer_pb2_grpc.PromptEnhancerStub(channel).Enhance(
            events_pb2.EnhanceTask(job_id="direct-enhance", params=params), timeout=30)
        assert out.prompt == TINY_PARAMS["prompt"]  # enhance_prompt is false: used verbatim

    with grpc.insecure_channel(addresses["encoder"]) as channel:
        with pytest.raises(grpc.RpcError) as err:
            encoder_pb2_grpc.EncoderStub(channel).Encode(events_pb2.EncodeTask(prompt="x"), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "job_id" in err.value.details()

    missing = common_pb2.TensorRef(bucket=cfg.bucket, key="jobs/nope/encode/context.safetensors", sha256="0" * 64)
    with grpc.insecure_channel(addresses["denoiser-1"]) as channel:
        with pytest.raises(grpc.RpcError) as err:
            denoiser_pb2_grpc.DenoiserStub(channel).Denoise(
                events_pb2.DenoiseTask(job_id="direct-missing", params=common_pb2.GenerationParams(**TINY_PARAMS),
                                       context=missing, negative_context=missing, y=missing), timeout=30)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "jobs/nope/encode/context.safetensors" in err.value.details()


def test_restart_one_service_stays_in_the_stack(local_stack, capsys):
    cfg, addresses, stub = local_stack
    from movakit.cli import main as mova

    _, before = stack.read_state(cfg.state_dir)
    old = next(e for e in before if e.name == "encoder")
    deadline = time.monotonic() + 60  # a consumer stopped in the middle of its first group join is not restarted
    while not _latest_assignment(old.log) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert mova(["stack", "restart", "encoder", "--state-dir", str(cfg.state_dir)]) == 0
    assert "restarted encoder" in capsys.readouterr().out
    _, after = stack.read_state(cfg.state_dir)
    new = next(e for e in after if e.name == "encoder")
    assert [e.name for e in after] == [e.name for e in before]
    assert new.pid != old.pid and stack.is_alive(new) and not stack.is_alive(old)
    assert (new.address, new.argv, new.env) == (old.address, old.argv, old.env)
    assert _watch(stub, _submit(stub, seed=21))[-1].WhichOneof("kind") == "succeeded"  # the new encoder serves

    assert mova(["stack", "restart", "tansu", "--state-dir", str(cfg.state_dir)]) == 1
    assert mova(["stack", "restart", "nope", "--state-dir", str(cfg.state_dir)]) == 1
    printed = capsys.readouterr().out
    assert "'tansu' is not a service of this stack" in printed and "denoiser-2" in printed


def _until(condition, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def test_broker_and_object_store_crashes_lose_nothing(local_stack):
    cfg, _, stub = local_stack
    # the Kafka stages and the gateway; the trainer takes its work from Redis, so its health does not follow Kafka
    services = [e for e in stack.read_state(cfg.state_dir)[1] if e.kind == "service" and e.name != "trainer"]
    jobs: list[str] = []
    for name in ("tansu", "seaweedfs"):  # Tansu's storage is in SeaweedFS; SeaweedFS's in its data folder
        jobs.append(_submit(stub, seed=40 + len(jobs), num_inference_steps=3))
        next(e for e in stub.Watch(gateway_pb2.WatchJobRequest(job_id=jobs[-1]), timeout=60)
             if e.WhichOneof("kind") == "stage_started")  # the job runs: kill mid-job
        os.kill(next(e.pid for e in stack.read_state(cfg.state_dir)[1] if e.name == name), signal.SIGKILL)
        _until(lambda: not any(check_health(e.address, timeout_s=1.0) for e in services), f"NOT_SERVING ({name})")
        stack.restart_infra(cfg, name)
        _until(lambda: all(check_health(e.address, timeout_s=1.0) for e in services), "every service SERVING")
    assert [_watch(stub, job_id)[-1].WhichOneof("kind") for job_id in jobs] == ["succeeded", "succeeded"]
    assert all(stack.is_alive(e) for e in services)  # no service was restarted


def test_lora_jobs_interleaved_equal_each_run_alone(local_stack, tmp_path, capsys):
    """Adapters A and B uploaded with `mova adapters upload`; jobs with A, B and none run one at a time, then all
    three at once on the two denoiser replicas: every job's latents equal those of the same job run alone. Every
    call is the stack's local tenant's (its token in the state folder: the CLI reads it there, `stub` sends it)."""
    cfg, addresses, stub = local_stack
    gateway = ["--gateway", addresses["gateway"], "--state-dir", str(cfg.state_dir)]
    for name, kind, rank in (("style-a", "accelerate", 4), ("style-b", "attention", 2)):
        folder = write_folder(random_adapter(kind, rank, seed=rank), tmp_path / name)
        assert main(["adapters", "upload", str(folder), "--name", name, *gateway]) == 0
    store = _store(cfg, addresses)

    def latents(job_id: str):
        events = _watch(stub, job_id)
        assert events[-1].WhichOneof("kind") == "succeeded", events[-1]
        ref = store.tensor_ref_at(f"jobs/{job_id}/denoise/video_latents.safetensors")
        return store.get_tensors(ref)["video_latents"]

    def submit(lora: str) -> str:
        return _submit(stub, seed=21, **({"lora": common_pb2.LoraAdapter(name=lora, scale=0.8)} if lora else {}))

    # job A alone with `mova submit --lora` (same parameters as _submit), then B and none alone
    capsys.readouterr()
    p = TINY_PARAMS
    options = ["--height", "32", "--width", "32", "--num-frames", "5", "--fps", str(p["fps"]), "--steps", "2",
               "--guidance-scale", str(p["guidance_scale"]), "--seed", "21", *gateway]
    assert main(["submit", "--prompt", p["prompt"], *options, "--lora", "style-a", "--lora-scale", "0.8",
                 "--wait"]) == 0
    out = capsys.readouterr().out
    assert "video: http" in out
    alone = {"style-a": latents(out.splitlines()[0].strip())}
    alone.update({lora: latents(submit(lora)) for lora in ("style-b", "")})
    assert len({tuple(t.flatten()[:8].tolist()) for t in alone.values()}) == 3  # each adapter changes the output
    together = {lora: submit(lora) for lora in ("style-b", "", "style-a")}
    for lora, job_id in together.items():
        assert torch.equal(latents(job_id), alone[lora]), lora
    # an adapter the registry does not hold is refused at Submit
    assert main(["submit", "--prompt", p["prompt"], *options, "--lora", "missing"]) == 2
    assert "INVALID_ARGUMENT: params.lora.name: no adapter 'missing'" in capsys.readouterr().err


def test_finetuned_adapter_serves_the_next_submit(local_stack, tmp_path, capsys):
    """The issue's chain on the stack `mova stack up` runs: `mova finetune --offload blocks --wait` trains on a
    dataset the test writes (test patterns with tones) with every block's weights streamed, the trainer registers
    the adapter, and the next `mova submit --lora NAME` succeeds with latents other than the base job's with the
    same seed (random weights: a different noise)."""
    from movakit.training.demo_data import write_demo_dataset

    cfg, addresses, stub = local_stack
    gateway = ["--gateway", addresses["gateway"], "--state-dir", str(cfg.state_dir)]
    data = write_demo_dataset(tmp_path / "data", clips=2)
    assert main(["finetune", "--data", str(data), "--name", "tuned", "--rank", "4", "--steps", "2",
                 "--grad-accum", "1", "--lr", "0.003", "--offload", "blocks", "--wait", *gateway]) == 0
    assert "adapter 'tuned' registered" in capsys.readouterr().err
    p = TINY_PARAMS
    options = ["--height", "32", "--width", "32", "--num-frames", "5", "--fps", str(p["fps"]), "--steps", "2",
               "--guidance-scale", str(p["guidance_scale"]), "--seed", "33", *gateway]
    assert main(["submit", "--prompt", p["prompt"], *options, "--lora", "tuned", "--wait"]) == 0
    tuned_job = capsys.readouterr().out.splitlines()[0].strip()
    base_job = _submit(stub, seed=33)
    store = _store(cfg, addresses)
    latents = {}
    for job_id in (tuned_job, base_job):
        assert _watch(stub, job_id)[-1].WhichOneof("kind") == "succeeded"
        latents[job_id] = store.get_tensors(store.tensor_ref_at(f"jobs/{job_id}/denoise/video_latents.safetensors"))
    tuned, base = (latents[j]["video_latents"] for j in (tuned_job, base_job))
    assert tuned.shape == base.shape and not torch.equal(tuned, base)


def test_status_then_down_stops_everything(local_stack, capsys):
    cfg, addresses, _ = local_stack
    from movakit.cli import main as mova

    assert mova(["stack", "status", "--state-dir", str(cfg.state_dir)]) == 0
    printed = capsys.readouterr().out
    names = {"tansu", "seaweedfs", "redis", "gateway", "prompt-enhancer", "encoder", "denoiser-1", "denoiser-2",
             "decoder", "trainer"}
    for name in names:
        assert name in printed
    assert printed.count("alive, serving") == 7 and "DEAD" not in printed  # the gateway, five stage replicas, trainer
    _, processes = stack.status(cfg.state_dir)
    assert {p.name for p in processes} == names
    assert all(p.alive for p in processes)
    assert all(p.serving for p in processes if p.serving is not None)
    assert mova(["jobs", "list", "--gateway", addresses["gateway"], "--state-dir", str(cfg.state_dir)]) == 0  # its token
    assert mova(["stack", "down", "--state-dir", str(cfg.state_dir)]) == 0
    assert not any((cfg.state_dir / name).exists()
                   for name in (stack.TOKEN_FILE, stack.S3_CREDENTIALS_FILE, stack.KAFKA_SECRET_FILE))
    ports = [cfg.kafka_port, cfg.s3_port, cfg.gateway_port, *cfg.stage_ports, cfg.redis_port, cfg.trainer_port]
    assert not any(port_open(p) for p in ports)
    with pytest.raises(stack.StackError):
        stack.status(cfg.state_dir)
    assert mova(["stack", "status", "--state-dir", str(cfg.state_dir)]) == 1
    assert (cfg.state_dir / "logs" / "gateway.log").is_file()  # logs are kept
    assert not (cfg.state_dir / "data").exists()

