"""Kafka topic names and their layout (the same data as infra/kafka/topics.yaml)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from movakit.runtime.kafka_auth import NO_AUTH, ClientAuth

TOPIC_ENHANCE = "mova.enhance"  # EnhanceTask, from the gateway to the prompt enhancer
TOPIC_ENCODE = "mova.encode"  # EncodeTask, to the encoder
TOPIC_DENOISE = "mova.denoise"  # DenoiseTask, to the denoiser
TOPIC_DECODE = "mova.decode"  # DecodeTask, to the decoder
TOPIC_EVENTS = "mova.events"  # JobEvent, from every service
TOPIC_JOB_STATE = "mova.job-state"  # JobRecord, compacted, written by the gateway
TOPIC_DEAD_LETTER = "mova.dead-letter"  # DeadLetter


@dataclass(frozen=True)
class TopicSpec:
    partitions: int  # replicas of a consumer group scale up to this count
    compacted: bool  # cleanup.policy=compact (latest record per key kept)


TOPICS: dict[str, TopicSpec] = {
    TOPIC_ENHANCE: TopicSpec(partitions=4, compacted=False),
    TOPIC_ENCODE: TopicSpec(partitions=4, compacted=False),
    TOPIC_DENOISE: TopicSpec(partitions=4, compacted=False),
    TOPIC_DECODE: TopicSpec(partitions=4, compacted=False),
    TOPIC_EVENTS: TopicSpec(partitions=4, compacted=False),
    TOPIC_JOB_STATE: TopicSpec(partitions=4, compacted=True),
    TOPIC_DEAD_LETTER: TopicSpec(partitions=1, compacted=False),
}


def ensure_topics(bootstrap: str, *, timeout_s: float = 30.0, auth: ClientAuth = NO_AUTH) -> list[str]:
    """Creates every topic in TOPICS that does not exist yet; returns the names it created.

    Retries the broker connection until `timeout_s` so it can run right after the broker starts.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="movakit-admin", **auth.options())
            break
        except (KafkaConnectionError, KafkaError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(
                name=name,
                num_partitions=spec.partitions,
                replication_factor=1,
                topic_configs={"cleanup.policy": "compact" if spec.compacted else "delete"},
            )
            for name, spec in TOPICS.items()
            if name not in existing
        ]
        created = []
        for topic in missing:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()
