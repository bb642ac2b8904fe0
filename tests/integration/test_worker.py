"""The stage worker loop against the real Tansu and SeaweedFS: run, redelivery skipped, dead letters, failures,
cancellation and offset commits.

The stage here is a small real one (reads a tensor from S3, writes 2x it back), on private inbox/next topics so
no other test's tasks are consumed; its events go to the shared mova.events topic and are found by job id.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import torch
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError

from movakit.api.v1 import common_pb2, denoiser_pb2, events_pb2
from movakit.runtime import kafka as mkafka
from movakit.runtime.object_store import cancel_marker_key
from movakit.runtime.topics import TOPIC_DEAD_LETTER, TOPIC_EVENTS
from movakit.runtime.tasks import TaskContext, manifest_key, read_blob, write_blob
from movakit.runtime.worker import StageWorker

pytestmark = pytest.mark.integration


class DoubleHandler:
    """A real stage: video_latents = 2 * context, stored under jobs/<job>/double/."""

    stage = common_pb2.STAGE_DENOISE
    stage_name = "double"
    task_type = events_pb2.DenoiseTask
    output_type = denoiser_pb2.DenoiseOutput

    def __init__(self, store, inbox: str, next_topic: str) -> None:
        self.store = store
        self.inbox = inbox
        self.next_topic = next_topic
        self.runs: list[str] = []
        self.unreachable: dict[str, int] = {}  # job id -> how many more runs meet a dropped S3 connection

    def run(self, task, ctx: TaskContext):
        self.runs.append(task.job_id)
        if self.unreachable.get(task.job_id, 0) > 0:
            self.unreachable[task.job_id] -= 1
            raise ConnectionResetError(f"jobs/{task.job_id}: connection reset while reading the input")
        x = self.store.get_tensors(task.context)["context"]
        ctx.check_cancel()
        ref = self.store.put_tensors(f"jobs/{task.job_id}/double/out.safetensors", {"video_latents": 2 * x})
        return denoiser_pb2.DenoiseOutput(video_latents=ref, audio_latents=ref)

    def outputs_valid(self, store, output) -> bool:
        return store.exists(output.video_latents)

    def follow_up(self, task, output, source):  # noqa: ARG002
        return events_pb2.DecodeTask(job_id=task.job_id, video_latents=output.video_latents), []


@pytest.fixture()
def worker_env(kafka_bootstrap, object_store, sealer):
    suffix = uuid.uuid4().hex[:8]
    inbox, next_topic = f"test.worker.in.{suffix}", f"test.worker.next.{suffix}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(inbox, 2, 1), NewTopic(next_topic, 1, 1)])
    admin.close()
    handler = DoubleHandler(object_store, inbox, next_topic)
    group = f"test-worker-{suffix}"
    worker = StageWorker(handler, object_store, bootstrap=kafka_bootstrap, group_id=group, sealer=sealer,
                         service="test-worker",
                         replica_id=f"r-{suffix}", max_attempts=3, retry_backoff_s=0.1)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    producer = mkafka.make_producer(kafka_bootstrap, sealer)
    events = Tail(mkafka.make_tail_consumer(kafka_bootstrap, TOPIC_EVENTS), events_pb2.JobEvent, sealer)
    outputs = Tail(mkafka.make_tail_consumer(kafka_bootstrap, next_topic), events_pb2.DecodeTask, sealer)
    yield {"handler": handler, "worker": worker, "producer": producer, "events": events, "outputs": outputs,
           "store": object_store, "group": group, "inbox": inbox, "bootstrap": kafka_bootstrap,
           "sealer": sealer}
    worker.stop()
    thread.join(timeout=15)
    assert not thread.is_alive(), "worker did not stop"
    for tail in (events, outputs):
        tail.consumer.close()
    producer.close()


def _task(store, job_id: str, value: float) -> events_pb2.DenoiseTask:
    ref = store.put_tensors(f"jobs/{job_id}/input/x.safetensors", {"context": torch.full((2, 3), value)})
    return events_pb2.DenoiseTask(job_id=job_id, context=ref)


class Tail:
    """Every message of a topic read so far (from the beginning); `wait` looks through all of them."""

    def __init__(self, consumer, message_type, sealer) -> None:
        self.consumer = consumer
        self.message_type = message_type
        self.sealer = sealer  # the test stack's: records are sealed
        self.seen: list = []

    def wait(self, predicate, *, count: int = 1, timeout_s: float = 40.0) -> list:
        deadline = time.monotonic() + timeout_s
        while True:
            found = [m for m in self.seen if predicate(m)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            for records in self.consumer.poll(timeout_ms=200).values():
                for record in records:
                    self.seen.append(mkafka.parse(record, self.message_type, self.sealer)[0])


def _job_events(env, job_id: str, kind: str, *, count: int = 1):
    return env["events"].wait(lambda e: e.job_id == job_id and e.WhichOneof("kind") == kind, count=count)


def test_runs_stage_publishes_next_task_and_skips_a_redelivered_task(worker_env):
    env = worker_env
    job = f"job-{uuid.uuid4().hex[:8]}"
    task = _task(env["store"], job, 1.5)
    mkafka.publish(env["producer"], env["inbox"], job, task)

    (decode_task,) = env["outputs"].wait(lambda m: m.job_id == job)
    out = env["store"].get_tensors(decode_task.video_latents)["video_latents"]
    assert torch.equal(out, torch.full((2, 3), 3.0))
    assert _job_events(env, job, "stage_started")[0].stage_started.worker.startswith("r-")
    (first,) = _job_events(env, job, "stage_finished")
    assert first.stage_finished.skipped is False

    mtime_key = f"jobs/{job}/double/out.safetensors"
    before = env["store"].get_raw(mtime_key)
    mkafka.publish(env["producer"], env["inbox"], job, task)  # the same task delivered again
    _, second = _job_events(env, job, "stage_finished", count=2)
    assert second.stage_finished.skipped is True
    _, again = env["outputs"].wait(lambda m: m.job_id == job, count=2)
    assert again == decode_task  # the follow-up is re-published from the stored manifest
    assert env["handler"].runs == [job]  # computed exactly once
    assert env["store"].get_raw(mtime_key) == before


def test_torn_manifest_is_not_trusted_and_the_stage_recomputes(worker_env):
    env = worker_env
    store = env["store"]
    job = f"job-{uuid.uuid4().hex[:8]}"
    write_blob(store, "probe/blob", b"payload", "application/octet-stream")
    assert read_blob(store, "probe/blob") == b"payload"
    task = _task(store, job, 2.0)
    store.put_bytes(manifest_key(task, "double"), b"MOVA-BLOB-1\n" + b"0" * 64 + b"\nxx", "application/x-protobuf")
    mkafka.publish(env["producer"], env["inbox"], job, task)
    (finished,) = _job_events(env, job, "stage_finished")
    assert finished.stage_finished.skipped is False
    assert env["handler"].runs == [job]


def test_bad_record_goes_to_dead_letter_and_worker_keeps_going(worker_env):
    env = worker_env
    dead = Tail(mkafka.make_tail_consumer(env["bootstrap"], TOPIC_DEAD_LETTER), events_pb2.DeadLetter, env["sealer"])
    try:
        env["producer"].send_and_wait(env["inbox"], b"garbage", b"\xff\xff\xff not a protobuf", [], timeout_s=10)
        (letter,) = dead.wait(lambda m: m.topic == env["inbox"] and not m.job_id)
        assert letter.payload == b"\xff\xff\xff not a protobuf"
        assert "DenoiseTask" in letter.reason and letter.service == "test-worker"

        job = f"job-{uuid.uuid4().hex[:8]}"
        bad = _task(env["store"], job, 1.0)
        bad.context.sha256 = "0" * 64  # the stored file no longer matches its reference
        mkafka.publish(env["producer"], env["inbox"], job, bad)
        (failed,) = _job_events(env, job, "failed")
        assert "ChecksumError" in failed.failed.reason and failed.failed.stage == common_pb2.STAGE_DENOISE
        (letter2,) = dead.wait(lambda m: m.job_id == job)
        assert letter2.topic == env["inbox"]

        # A well-formed task from a producer without the stack's secret is dead-lettered and never run.
        forged_job = f"job-{uuid.uuid4().hex[:8]}"
        forger = mkafka.make_producer(env["bootstrap"], mkafka.RecordSealer("not-the-secret"))
        mkafka.publish(forger, env["inbox"], forged_job, _task(env["store"], forged_job, 2.0))
        forger.close()
        (letter3,) = dead.wait(lambda m: "does not open" in m.reason)
        assert letter3.topic == env["inbox"] and not letter3.job_id
        assert forged_job.encode() not in letter3.payload  # sealed with another secret: it stays unread
    finally:
        dead.consumer.close()

    job2 = f"job-{uuid.uuid4().hex[:8]}"  # still alive: the next good task is processed
    mkafka.publish(env["producer"], env["inbox"], job2, _task(env["store"], job2, 4.0))
    assert env["outputs"].wait(lambda m: m.job_id == job2)
    assert env["worker"].stats.dead_letters == 3
    assert not [m for m in env["outputs"].seen if m.job_id == forged_job]  # the forged task was not acted on
    assert not [e for e in env["events"].seen if e.job_id == forged_job]


def test_a_kafka_error_outside_the_stage_does_not_end_the_worker(worker_env):
    env = worker_env
    worker = env["worker"]
    deliver = worker._dead_letter
    failures = []

    def broker_down_once(record, job_id, reason):  # the first dead-letter publish meets a broker error
        if not failures:
            failures.append(record.offset)
            raise KafkaTimeoutError("injected: dead-letter publish timed out")
        deliver(record, job_id, reason)

    worker._dead_letter = broker_down_once
    dead = Tail(mkafka.make_tail_consumer(env["bootstrap"], TOPIC_DEAD_LETTER), events_pb2.DeadLetter, env["sealer"])
    try:
        env["producer"].send_and_wait(env["inbox"], b"garbage", b"\xfe not a protobuf either", [], timeout_s=10)
        (letter,) = dead.wait(lambda m: m.topic == env["inbox"] and m.payload == b"\xfe not a protobuf either")
        assert failures == [letter.offset]  # the same record, read again after the failure
    finally:
        dead.consumer.close()
    job = f"job-{uuid.uuid4().hex[:8]}"  # and the worker still runs tasks
    mkafka.publish(env["producer"], env["inbox"], job, _task(env["store"], job, 3.0))
    assert env["outputs"].wait(lambda m: m.job_id == job)


def test_cancelled_job_is_not_run_and_offsets_are_committed(worker_env):
    env = worker_env
    job = f"job-{uuid.uuid4().hex[:8]}"
    env["store"].put_bytes(cancel_marker_key(job), b"", "text/plain")
    mkafka.publish(env["producer"], env["inbox"], job, _task(env["store"], job, 1.0))
    (cancelled,) = _job_events(env, job, "cancelled")
    assert cancelled.cancelled.stage == common_pb2.STAGE_DENOISE
    assert env["handler"].runs == []

    # the group's committed offsets reach the end of the inbox (read without joining the group)
    probe = KafkaConsumer(bootstrap_servers=env["bootstrap"], group_id=env["group"], enable_auto_commit=False)
    try:
        parts = [TopicPartition(env["inbox"], p) for p in (0, 1)]
        ends = probe.end_offsets(parts)
        deadline = time.monotonic() + 20
        committed = {}
        while time.monotonic() < deadline:
            committed = {tp: probe.committed(tp) or 0 for tp in parts}
            if committed == ends:
                break
            time.sleep(0.2)
        assert committed == ends and sum(ends.values()) == 1
    finally:
        probe.close()


def test_transient_errors_are_retried_then_fail_the_job(worker_env):
    env = worker_env
    healed, broken = (f"job-{uuid.uuid4().hex[:8]}" for _ in range(2))
    env["handler"].unreachable.update({healed: 2, broken: 5})
    for job in (healed, broken):
        mkafka.publish(env["producer"], env["inbox"], job, _task(env["store"], job, 1.0))

    assert env["outputs"].wait(lambda m: m.job_id == healed)  # third attempt succeeded
    (failed,) = _job_events(env, broken, "failed")
    assert "ConnectionResetError" in failed.failed.reason
    assert env["handler"].runs.count(healed) == 3 and env["handler"].runs.count(broken) == 3  # max_attempts
    assert [e for e in env["events"].seen if e.job_id == healed and e.WhichOneof("kind") == "failed"] == []
    assert env["worker"].stats.retried == 4
