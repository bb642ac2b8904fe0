"""Kafka plumbing shared by every service: protobuf payloads keyed by job id, trace context in headers.

At-least-once: consumers never auto-commit; a stage commits (`consumer.commit()`) only after its outputs are
in the object store and its next message is published (`publish` waits for the broker's acknowledgement).

Authenticity: every record a service produces carries an HMAC-SHA256 (header `mova-hmac`) over its topic, key,
value and other headers, keyed by the stack's shared Kafka secret (`kafka_secret` setting of every service).
`parse` refuses a record whose signature is missing or wrong (PayloadError: the worker dead-letters it, the gateway
skips it), so a process that can reach the broker but lacks the secret cannot make a service act.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterator

from google.protobuf.message import DecodeError, Message
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from movakit.runtime.telemetry import extract_context, inject_headers, tracer

SIGNATURE_HEADER = "mova-hmac"

log = logging.getLogger("movakit.kafka")


class PayloadError(ValueError):
    """A record whose value is not a valid message of the expected type, or whose signature does not verify
    (send it to the dead-letter topic)."""


class RecordSigner:
    """HMAC-SHA256 over a record's topic, key, value and headers (in order, the signature header excluded)."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the Kafka secret must not be empty")
        self._key = secret.encode("utf-8")

    def _digest(self, topic: str, key: bytes | None, value: bytes | None, headers) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (topic.encode("utf-8"), key or b"", value or b""):
            mac.update(len(part).to_bytes(8, "big") + part)
        for name, data in headers or []:
            if name != SIGNATURE_HEADER:
                for part in (name.encode("utf-8"), data or b""):
                    mac.update(len(part).to_bytes(8, "big") + part)
        return mac.digest()

    def signed_headers(self, topic: str, key: bytes | None, value: bytes | None, headers) -> list[tuple[str, bytes]]:
        headers = [(n, d) for n, d in headers or [] if n != SIGNATURE_HEADER]
        return [*headers, (SIGNATURE_HEADER, self._digest(topic, key, value, headers))]

    def verify(self, record: ConsumerRecord) -> None:
        """Raises PayloadError unless the record carries this secret's signature."""
        found = [d for n, d in record.headers or [] if n == SIGNATURE_HEADER]
        expected = self._digest(record.topic, record.key, record.value, record.headers)
        if len(found) != 1 or not hmac.compare_digest(found[0] or b"", expected):
            raise PayloadError(f"{record.topic}[{record.partition}]@{record.offset}: "
                               f"{'no' if not found else 'a wrong'} {SIGNATURE_HEADER} signature")


class Producer:
    """A KafkaProducer that survives a broker which restarted or lost its state.

    kafka-python's idempotent producer (its default) keeps one producer id for its whole life: after the broker
    forgot it (memory storage restarted, state lost) every send loops on UnknownProducerIdError and then fails
    with InitProducerId UnknownError, forever. So idempotence is off (the pipeline is at-least-once and every
    consumer tolerates a duplicate; `publish` waits for each acknowledgement, so one job's records keep their
    order), and `send_and_wait` replaces the client after a failed send and tries once more; a second failure
    is raised to the caller's retry or error path. Every record it sends is signed with its RecordSigner.
    """

    def __init__(self, bootstrap: str, signer: RecordSigner) -> None:
        self._bootstrap = bootstrap
        self._signer = signer
        self._lock = threading.Lock()
        self._client = self._new_client()

    def _new_client(self) -> KafkaProducer:
        # acks=all waits for every in-sync replica; retries cover transient errors within one client.
        return KafkaProducer(bootstrap_servers=self._bootstrap, acks="all", linger_ms=5, retries=5,
                             enable_idempotence=False, max_request_size=4 * 1024 * 1024, client_id="movakit")

    def send_and_wait(self, topic: str, key: bytes | None, value: bytes | None, headers, timeout_s: float) -> None:
        headers = self._signer.signed_headers(topic, key, value, headers)
        with self._lock:
            client = self._client
        try:
            client.send(topic, key=key, value=value, headers=headers).get(timeout=timeout_s)
            return
        except KafkaError as exc:
            log.warning("publish failed: replacing the Kafka producer and trying again",
                        extra={"fields": {"topic": topic, "error": repr(exc)}})
        self._replace(client)
        with self._lock:
            client = self._client
        client.send(topic, key=key, value=value, headers=headers).get(timeout=timeout_s)

    def _replace(self, failed: KafkaProducer) -> None:
        """Swaps in a new client unless another thread already replaced `failed`."""
        with self._lock:
            if self._client is not failed:
                return
            self._client = self._new_client()
        failed.close(timeout=1.0)

    def flush(self, timeout_s: float | None = None) -> None:
        self._client.flush(timeout=timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        self._client.close(timeout=timeout_s)


def make_producer(bootstrap: str, signer: RecordSigner) -> Producer:
    """A signing producer that waits for all in-sync replicas and recovers from a restarted broker (see Producer)."""
    return Producer(bootstrap, signer)


def publish(
    producer: Producer, topic: str, job_id: str, message: Message, *, timeout_s: float = 30.0
) -> None:
    """Sends `message` (serialised protobuf) keyed by `job_id`, with the current trace context in the headers,
    and blocks until the broker acknowledged it (raises on failure)."""
    with tracer("movakit.kafka").start_as_current_span(
        f"{topic} publish",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "kafka", "messaging.destination.name": topic, "movakit.job_id": job_id},
    ):
        producer.send_and_wait(topic, job_id.encode("utf-8"), message.SerializeToString(), inject_headers(),
                               timeout_s)


def publish_tombstone(producer: Producer, topic: str, key: str, *, timeout_s: float = 30.0) -> None:
    """Sends a record with no value for `key` (a compacted topic then drops the key) and waits for the ack."""
    producer.send_and_wait(topic, key.encode("utf-8"), None, [], timeout_s)


def make_consumer(
    bootstrap: str, topic: str, group_id: str, *, max_poll_interval_ms: int = 3_600_000
) -> KafkaConsumer:
    """A consumer-group member on `topic`: manual commits, earliest offset for new groups, one record per poll.

    session_timeout_ms=6000 / heartbeat 1000 keep group joins short (Tansu holds a JoinGroup for about half the
    session timeout). max_poll_interval_ms bounds how long one task may run between polls (default 1 h).
    """
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_records=1,
        max_poll_interval_ms=max_poll_interval_ms,
    )


def parse(
    record: ConsumerRecord, message_type: type[Message], signer: RecordSigner | None
) -> tuple[Message, otel_context.Context]:
    """Verifies the record's signature (services always pass their signer; None, for inspecting a topic in tests,
    skips the check), decodes its value as `message_type`; returns it with the trace context from its headers."""
    if signer is not None:
        signer.verify(record)
    message = message_type()
    try:
        message.ParseFromString(record.value or b"")
    except DecodeError as exc:
        raise PayloadError(
            f"{record.topic}[{record.partition}]@{record.offset}: not a {message_type.DESCRIPTOR.full_name}: {exc}"
        ) from exc
    return message, extract_context(record.headers)


def make_tail_consumer(bootstrap: str, topic: str, *, timeout_s: float = 30.0) -> KafkaConsumer:
    """A consumer without a group, assigned every partition of `topic` from the beginning.

    For readers that need every record (the gateway follows all job events) rather than a share of them.
    """
    # earliest: a broker that lost its state restarts its offsets at 0, and the reader must not skip the new records.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest")
    deadline = time.monotonic() + timeout_s
    partitions = consumer.partitions_for_topic(topic)
    while not partitions:
        if time.monotonic() > deadline:
            consumer.close()
            raise TimeoutError(f"{topic}: no partition metadata after {timeout_s} s (does the topic exist?)")
        time.sleep(0.1)
        partitions = consumer.partitions_for_topic(topic)
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    return consumer


def read_to_end(
    bootstrap: str, topic: str, message_type: type[Message], *, timeout_s: float = 30.0,
    on_invalid: Callable[[ConsumerRecord, PayloadError], None] | None = None, signer: RecordSigner | None = None,
) -> Iterator[tuple[str, Message | None, ConsumerRecord]]:
    """Every record of `topic` from the beginning up to the end offsets at call time, without a consumer group.

    Yields (key, message or None for a tombstone, record), in offset order within each partition. Used to rebuild
    state from a compacted topic at startup. A record that does not decode (or verify, with `signer`) raises
    PayloadError, or is passed to `on_invalid` and skipped when that is given; with `signer`, a tombstone must
    verify too.
    """
    consumer = make_tail_consumer(bootstrap, topic, timeout_s=timeout_s)
    deadline = time.monotonic() + timeout_s
    try:
        assigned = sorted(consumer.assignment())
        end = consumer.end_offsets(assigned)
        remaining = {tp for tp in assigned if end[tp] > consumer.position(tp)}
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: could not read to the end within {timeout_s} s")
            batch = consumer.poll(timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= end[tp]:
                        continue
                    key = (record.key or b"").decode("utf-8")
                    message = None
                    try:
                        if record.value is not None:
                            message, _ = parse(record, message_type, signer)
                        elif signer is not None:  # a tombstone drops a job's state: it must be signed too
                            signer.verify(record)
                    except PayloadError as exc:
                        if on_invalid is None:
                            raise
                        on_invalid(record, exc)
                        continue
                    yield key, message, record
            # Checked for every partition, not only those that returned records: compaction leaves offset gaps.
            remaining = {tp for tp in remaining if consumer.position(tp) < end[tp]}
    finally:
        consumer.close()
