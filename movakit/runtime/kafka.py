"""Kafka plumbing shared by every service: protobuf payloads keyed by job id, trace context in headers.

At-least-once: consumers never auto-commit; a stage commits (`consumer.commit()`) only after its outputs are
in the object store and its next message is published (`publish` waits for the broker's acknowledgement).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from google.protobuf.message import DecodeError, Message
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from movakit.runtime.telemetry import extract_context, inject_headers, tracer


class PayloadError(ValueError):
    """A record whose value is not a valid message of the expected type (send it to the dead-letter topic)."""


def make_producer(bootstrap: str) -> KafkaProducer:
    """A producer that waits for all in-sync replicas (acks=all) and retries transient errors."""
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        retries=5,
        max_request_size=4 * 1024 * 1024,
        client_id="movakit",
    )


def publish(
    producer: KafkaProducer, topic: str, job_id: str, message: Message, *, timeout_s: float = 30.0
) -> None:
    """Sends `message` (serialised protobuf) keyed by `job_id`, with the current trace context in the headers,
    and blocks until the broker acknowledged it (raises on failure)."""
    with tracer("movakit.kafka").start_as_current_span(
        f"{topic} publish",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "kafka", "messaging.destination.name": topic, "movakit.job_id": job_id},
    ):
        future = producer.send(
            topic, key=job_id.encode("utf-8"), value=message.SerializeToString(), headers=inject_headers()
        )
        future.get(timeout=timeout_s)


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


def parse(record: ConsumerRecord, message_type: type[Message]) -> tuple[Message, otel_context.Context]:
    """Decodes a record's value as `message_type`; returns it with the trace context from its headers."""
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
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
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
    on_invalid: Callable[[ConsumerRecord, PayloadError], None] | None = None,
) -> Iterator[tuple[str, Message | None, ConsumerRecord]]:
    """Every record of `topic` from the beginning up to the end offsets at call time, without a consumer group.

    Yields (key, message or None for a tombstone, record), in offset order within each partition. Used to rebuild
    state from a compacted topic at startup. A record that does not decode raises PayloadError, or is passed to
    `on_invalid` and skipped when that is given.
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
                    if record.value is not None:
                        try:
                            message, _ = parse(record, message_type)
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
