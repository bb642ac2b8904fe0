"""The runtime plumbing against the real local servers: topics, Kafka round trip with trace headers,
replay of a topic, and the checksummed object store."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest
import torch
from kafka import KafkaConsumer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from movakit.api.v1 import events_pb2
from movakit.runtime import kafka as mkafka
from movakit.runtime.object_store import ChecksumError, ObjectStore, job_key
from movakit.runtime.topics import TOPIC_DEAD_LETTER, TOPIC_JOB_STATE, TOPICS

pytestmark = pytest.mark.integration


def test_every_topic_exists_with_its_partitions(kafka_bootstrap):
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        described = {name: len(consumer.partitions_for_topic(name) or ()) for name in TOPICS}
    finally:
        consumer.close()
    assert described == {name: spec.partitions for name, spec in TOPICS.items()}


def test_publish_then_group_consume_carries_key_payload_and_trace(kafka_bootstrap, sealer):
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    producer = mkafka.make_producer(kafka_bootstrap, sealer)
    tracer = TracerProvider().get_tracer("test")  # a real SDK tracer, independent of the global provider
    with tracer.start_as_current_span("submit") as span:
        sent_trace = span.get_span_context().trace_id
        letter = events_pb2.DeadLetter(job_id=job_id, reason="probe", payload=b"\x00\x01")
        mkafka.publish(producer, TOPIC_DEAD_LETTER, job_id, letter)
    producer.close()

    consumer = mkafka.make_consumer(kafka_bootstrap, TOPIC_DEAD_LETTER, f"test-{uuid.uuid4().hex[:6]}")
    found = None
    for _ in range(100):
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                if record.key == job_id.encode():
                    found = record
        if found:
            break
    assert found is not None, "the published record never arrived"
    message, context = mkafka.parse(found, events_pb2.DeadLetter, sealer)  # it opens with the secret
    assert message == letter
    assert letter.SerializeToString() not in found.value  # in Kafka the value is ciphertext
    with pytest.raises(mkafka.PayloadError, match="does not open"):
        mkafka.parse(found, events_pb2.DeadLetter, mkafka.RecordSealer("another-secret"))
    for tampered in (found._replace(value=found.value[:-1] + bytes([found.value[-1] ^ 1])),  # a flipped bit
                     found._replace(topic="mova.enhance"),  # moved to another topic
                     found._replace(headers=[h for h in found.headers if h[0] != "traceparent"])):  # header dropped
        with pytest.raises(mkafka.PayloadError, match="does not open"):
            mkafka.parse(tampered, events_pb2.DeadLetter, sealer)
    with pytest.raises(mkafka.PayloadError, match="not sealed"):
        mkafka.parse(found._replace(headers=[]), events_pb2.DeadLetter, sealer)
    assert sent_trace != 0
    assert trace.get_current_span(context).get_span_context().trace_id == sent_trace
    consumer.commit()
    consumer.close()


def test_read_to_end_sees_latest_record_per_key(kafka_bootstrap, sealer):
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    producer = mkafka.make_producer(kafka_bootstrap, sealer)
    for step in (1, 2, 3):
        record = events_pb2.JobRecord()
        record.job.job_id = job_id
        record.job.step = step
        mkafka.publish(producer, TOPIC_JOB_STATE, job_id, record)
    producer.close()
    latest = {}
    for key, message, _ in mkafka.read_to_end(kafka_bootstrap, TOPIC_JOB_STATE, events_pb2.JobRecord, sealer):
        latest[key] = message
    assert latest[job_id].job.step == 3


def test_parse_rejects_garbage(kafka_bootstrap, sealer):
    class FakeRecord:  # a stand-in for kafka-python's ConsumerRecord: only the fields parse reads
        topic, partition, offset, key = "t", 0, 7, b"k"
        value, headers = sealer.seal("t", b"k", b"\xff\xff\xff", [])  # sealed, but no protobuf

    with pytest.raises(mkafka.PayloadError, match="t\\[0\\]@7: not a movakit.api.v1.JobEvent"):
        mkafka.parse(FakeRecord(), events_pb2.JobEvent, sealer)


def test_tensors_round_trip_with_checksum(object_store: ObjectStore, s3_config):
    key = job_key(uuid.uuid4().hex, "encode", "context.safetensors")
    tensors = {"context": torch.randn(1, 8, 4), "mask": torch.arange(6, dtype=torch.int64).reshape(2, 3)}
    ref = object_store.put_tensors(key, tensors)
    assert ref.bucket == s3_config.bucket and ref.key == key and len(ref.sha256) == 64
    assert sorted((s.name, list(s.shape), s.dtype) for s in ref.tensors) == [
        ("context", [1, 8, 4], "float32"), ("mask", [2, 3], "int64")
    ]
    back = object_store.get_tensors(ref)
    assert torch.equal(back["context"], tensors["context"]) and torch.equal(back["mask"], tensors["mask"])
    assert object_store.exists(ref)
    rebuilt = object_store.tensor_ref_at(key)
    assert rebuilt == ref


def test_corrupted_object_fails_checksum(object_store: ObjectStore):
    key = job_key(uuid.uuid4().hex, "denoise", "latents.safetensors")
    ref = object_store.put_tensors(key, {"video_latents": torch.zeros(2, 2)})
    # Overwrite the bytes behind the reference's back.
    object_store.put_tensors(key, {"video_latents": torch.ones(2, 2)})
    with pytest.raises(ChecksumError, match=key):
        object_store.get_tensors(ref)
    assert not object_store.exists(ref)


def test_missing_object_is_not_there(object_store: ObjectStore):
    key = job_key(uuid.uuid4().hex, "output", "video.mp4")
    assert object_store.object_ref_at(key) is None
    assert object_store.tensor_ref_at(key) is None
    assert object_store.get_raw(key) is None
    assert not object_store.has_key(key)


def test_bytes_and_presigned_url(object_store: ObjectStore):
    key = job_key(uuid.uuid4().hex, "output", "audio.wav")
    ref = object_store.put_bytes(key, b"RIFF....WAVE", "audio/wav")
    assert object_store.get_bytes(ref) == b"RIFF....WAVE"
    assert object_store.object_ref_at(key) == ref
    url = object_store.presigned_get_url(key, 600)
    assert url.startswith(f"http://{object_store.endpoint}/")
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback test server
        assert response.read() == b"RIFF....WAVE"


def test_wrong_keys_are_refused(s3_config):
    intruder = ObjectStore(s3_config.endpoint, "nobody", "wrong-secret", s3_config.bucket)
    with pytest.raises(Exception, match="(?i)access|denied|signature"):
        intruder.put_bytes(job_key("x", "input", "a.bin"), b"x")


def test_seaweedfs_serves_no_data_without_credentials(seaweedfs, object_store: ObjectStore):
    key = job_key(uuid.uuid4().hex, "output", "secret.bin")
    object_store.put_bytes(key, b"private bytes", "application/octet-stream")
    bucket = object_store.bucket
    urls = [f"http://127.0.0.1:{seaweedfs.ports['s3']}/{bucket}/{key}",  # S3 without a signature
            f"http://127.0.0.1:{seaweedfs.ports['s3']}/{bucket}/",
            f"http://127.0.0.1:{seaweedfs.ports['filer']}/buckets/{bucket}/{key}",  # the filer's own HTTP port
            f"http://127.0.0.1:{seaweedfs.ports['filer']}/buckets/{bucket}/",
            f"http://127.0.0.1:{seaweedfs.ports['filer']}/buckets/"]
    for url in urls:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=5)  # noqa: S310 - loopback test server
        assert err.value.code in (401, 403), url
        err.value.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{seaweedfs.ports['master']}/dir/lookup?volumeId=1", timeout=5) as r:
        location = json.loads(r.read())["locations"][0]["url"]  # the master tells where volume 1 lives...
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://{location}/1,01", timeout=5)  # noqa: S310 - ...which wants a JWT
    assert err.value.code in (401, 403)
    err.value.close()
    assert object_store.get_raw(key) == b"private bytes"  # S3 with the keys still works
