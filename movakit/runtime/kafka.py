"""Kafka plumbing shared by every service: protobuf payloads keyed by job id, trace context in headers.

At-least-once: consumers never auto-commit; a stage commits (`consumer.commit()`) only after its outputs are
in the object store and its next message is published (`publish` waits for the broker's acknowledgement).

Confidentiality and authenticity: every record a service produces is sealed (RecordSealer: AES-256-GCM keyed by
the stack's shared Kafka secret, the `kafka_secret` setting of every service). Its value is ciphertext, so a process
that can reach the broker but lacks the secret reads no prompt; `parse` refuses a record that is not sealed with
the secret or was altered (PayloadError: the worker dead-letters it, the gateway skips it), so such a process
cannot make a service act either.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.message import DecodeError, Message
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from movakit.runtime.kafka_auth import NO_AUTH, ClientAuth
from movakit.runtime.telemetry import extract_context, inject_headers, tracer

SEAL_HEADER = "mova-seal"
_NONCE_BYTES = 12
_KEY_INFO = b"movakit kafka records v1"  # HKDF info: the record key is used for nothing else

log = logging.getLogger("movakit.kafka")


class PayloadError(ValueError):
    """A record whose value is not a valid message of the expected type, or that does not open with the stack's
    secret: unsealed, sealed with another secret, or altered (send it to the dead-letter topic)."""


class RecordSealer:
    """Authenticated encryption of Kafka records: AES-256-GCM, keyed by HKDF-SHA256 of the stack's Kafka secret.

    A record with a value carries `nonce || ciphertext || tag` as its value and `mova-seal: <nonce>` among its
    headers. A tombstone keeps no value (so compaction still drops its key) and carries `mova-seal:
    <nonce || tag>`, the tag of an empty plaintext. Either way the associated data binds the topic, the key, every
    other header and whether the record is a tombstone, so a sealed record cannot be moved, re-keyed or altered.
    """

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the Kafka secret must not be empty")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(secret.encode("utf-8"))
        self._aead = AESGCM(key)

    @staticmethod
    def _associated(topic: str, key: bytes | None, tombstone: bool, headers) -> bytes:
        parts = [topic.encode("utf-8"), key or b"", b"tombstone" if tombstone else b"value"]
        for name, data in headers or []:
            if name != SEAL_HEADER:
                parts += [name.encode("utf-8"), data or b""]
        return b"".join(len(part).to_bytes(8, "big") + part for part in parts)

    def seal(self, topic: str, key: bytes | None, value: bytes | None,
             headers) -> tuple[bytes | None, list[tuple[str, bytes]]]:
        """(the value to send, the headers to send) for a record of plaintext `value` (None: a tombstone)."""
        headers = [(n, d) for n, d in headers or [] if n != SEAL_HEADER]
        nonce = os.urandom(_NONCE_BYTES)
        aad = self._associated(topic, key, value is None, headers)
        if value is None:
            return None, [*headers, (SEAL_HEADER, nonce + self._aead.encrypt(nonce, b"", aad))]
        return nonce + self._aead.encrypt(nonce, value, aad), [*headers, (SEAL_HEADER, nonce)]

    def open(self, record: ConsumerRecord) -> bytes | None:
        """The plaintext value of a sealed record (None for a tombstone); raises PayloadError unless it was sealed
        with this secret and not altered since."""
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        found = [d or b"" for n, d in record.headers or [] if n == SEAL_HEADER]
        if len(found) != 1:
            raise PayloadError(f"{where}: {'no' if not found else 'more than one'} {SEAL_HEADER} header (not sealed)")
        aad = self._associated(record.topic, record.key, record.value is None, record.headers)
        if record.value is None:
            nonce, sealed = found[0][:_NONCE_BYTES], found[0][_NONCE_BYTES:]
        else:
            nonce, sealed = found[0], record.value[len(found[0]):]
            if record.value[:len(nonce)] != nonce:
                raise PayloadError(f"{where}: the value does not start with the {SEAL_HEADER} nonce")
        if len(nonce) != _NONCE_BYTES:
            raise PayloadError(f"{where}: a {SEAL_HEADER} header of the wrong length")
        try:
            plain = self._aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise PayloadError(f"{where}: does not open with the stack's Kafka secret (another secret, or altered)") \
                from None
        return None if record.value is None else plain


class Producer:
    """A KafkaProducer that survives a broker which restarted or lost its state.

    kafka-python's idempotent producer (its default) keeps one producer id for its whole life: after the broker
    forgot it (memory storage restarted, state lost) every send loops on UnknownProducerIdError and then fails
    with InitProducerId UnknownError, forever. So idempotence is off (the pipeline is at-least-once and every
    consumer tolerates a duplicate; `publish` waits for each acknowledgement, so one job's records keep their
    order), and `send_and_wait` replaces the client after a failed send and tries once more; a second failure
    is raised to the caller's retry or error path. Every record it sends is sealed with its RecordSealer.
    """

    def __init__(self, bootstrap: str, sealer: RecordSealer, auth: ClientAuth = NO_AUTH) -> None:
        self._bootstrap = bootstrap
        self._sealer = sealer
        self._auth = auth
        self._lock = threading.Lock()
        self._client = self._new_client()

    def _new_client(self) -> KafkaProducer:
        # acks=all waits for every in-sync replica; retries cover transient errors within one client.
        return KafkaProducer(bootstrap_servers=self._bootstrap, acks="all", linger_ms=5, retries=5,
                             enable_idempotence=False, max_request_size=4 * 1024 * 1024, client_id="movakit",
                             **self._auth.options())

    def send_and_wait(self, topic: str, key: bytes | None, value: bytes | None, headers, timeout_s: float) -> None:
        value, headers = self._sealer.seal(topic, key, value, headers)
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


def make_producer(bootstrap: str, sealer: RecordSealer, auth: ClientAuth = NO_AUTH) -> Producer:
    """A sealing producer that waits for all in-sync replicas and recovers from a restarted broker (see Producer)."""
    return Producer(bootstrap, sealer, auth)


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
    bootstrap: str, topic: str, group_id: str, *, max_poll_interval_ms: int = 3_600_000, auth: ClientAuth = NO_AUTH
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
        **auth.options(),
    )


def parse(
    record: ConsumerRecord, message_type: type[Message], sealer: RecordSealer
) -> tuple[Message, otel_context.Context]:
    """Opens the sealed record (RecordSealer.open), decodes its value as `message_type`; returns it with the trace
    context from its headers. Raises PayloadError for a record that does not open or decode."""
    message = message_type()
    try:
        message.ParseFromString(sealer.open(record) or b"")
    except DecodeError as exc:
        raise PayloadError(
            f"{record.topic}[{record.partition}]@{record.offset}: not a {message_type.DESCRIPTOR.full_name}: {exc}"
        ) from exc
    return message, extract_context(record.headers)


def make_tail_consumer(bootstrap: str, topic: str, *, timeout_s: float = 30.0,
                       auth: ClientAuth = NO_AUTH) -> KafkaConsumer:
    """A consumer without a group, assigned every partition of `topic` from the beginning.

    For readers that need every record (the gateway follows all job events) rather than a share of them.
    """
    # earliest: a broker that lost its state restarts its offsets at 0, and the reader must not skip the new records.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest", **auth.options())
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
    bootstrap: str, topic: str, message_type: type[Message], sealer: RecordSealer, *, timeout_s: float = 30.0,
    on_invalid: Callable[[ConsumerRecord, PayloadError], None] | None = None, auth: ClientAuth = NO_AUTH,
) -> Iterator[tuple[str, Message | None, ConsumerRecord]]:
    """Every record of `topic` from the beginning up to the end offsets at call time, without a consumer group.

    Yields (key, message or None for a tombstone, record), in offset order within each partition. Used to rebuild
    state from a compacted topic at startup. A record that does not open with `sealer` or does not decode raises
    PayloadError, or is passed to `on_invalid` and skipped when that is given; a tombstone must open too.
    """
    consumer = make_tail_consumer(bootstrap, topic, timeout_s=timeout_s, auth=auth)
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
                            message, _ = parse(record, message_type, sealer)
                        else:  # a tombstone drops a job's state: it must be sealed too
                            sealer.open(record)
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
