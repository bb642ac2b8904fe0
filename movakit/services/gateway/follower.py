"""Keeps the JobStore in step with Kafka: replays mova.job-state at startup, then follows mova.events (from the
beginning, every partition, no consumer group) and writes each changed job back to mova.job-state."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


from movakit.api.v1 import events_pb2
from movakit.runtime import kafka as mkafka
from movakit.runtime.kafka_auth import NO_AUTH, ClientAuth
from movakit.runtime.topics import TOPIC_EVENTS, TOPIC_JOB_STATE
from movakit.services.gateway.job_store import TERMINAL, JobStore

log = logging.getLogger("movakit.gateway.follower")


def replay_job_state(bootstrap: str, store: JobStore, sealer: mkafka.RecordSealer, *, timeout_s: float,
                     auth: ClientAuth = NO_AUTH) -> int:
    """Loads the latest JobRecord of every job from the compacted topic, skipping archived jobs (tombstones) and
    records that do not verify; returns how many records it loaded."""
    def skip(record, error: mkafka.PayloadError) -> None:
        log.warning("skipping an undecodable or unsealed job record", extra={"fields": {"error": str(error)}})

    count = 0
    for key, record, _ in mkafka.read_to_end(
        bootstrap, TOPIC_JOB_STATE, events_pb2.JobRecord, sealer, timeout_s=timeout_s, on_invalid=skip, auth=auth
    ):
        if record is None:  # a tombstone: the job was archived (archive.py) after its earlier records
            store.discard(key)
        elif record.job.job_id:
            store.load_record(record)
            count += 1
    return count


class EventFollower:
    """A daemon thread applying every job event to the store. `caught_up` is set once it has read everything
    that was in mova.events when it started, so a restarted gateway answers with current state. `on_finished` runs
    in this thread once caught up and after every event that finished a job (the archive's eviction)."""

    def __init__(self, bootstrap: str, store: JobStore, producer: mkafka.Producer, sealer: mkafka.RecordSealer, *,
                 timeout_s: float, on_finished: Callable[[], object], auth: ClientAuth = NO_AUTH) -> None:
        self._store = store
        self._sealer = sealer
        self._producer = producer
        self._on_finished = on_finished
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        self._consumer = mkafka.make_tail_consumer(bootstrap, TOPIC_EVENTS, timeout_s=timeout_s, auth=auth)
        assigned = list(self._consumer.assignment())
        self._end = dict(self._consumer.end_offsets(assigned))
        self._thread = threading.Thread(target=self._loop, name="gateway-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()

    def _check_caught_up(self) -> None:
        if not self.caught_up.is_set() and all(self._consumer.position(tp) >= end for tp, end in self._end.items()):
            self.caught_up.set()
            self._on_finished()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._check_caught_up()
                batches = self._consumer.poll(timeout_ms=200)
            except Exception:  # noqa: BLE001 - a broker hiccup must not end state tracking
                log.exception("events poll failed")
                time.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    self._absorb(record)

    def _absorb(self, record) -> None:
        try:
            event, _ = mkafka.parse(record, events_pb2.JobEvent, self._sealer)
        except mkafka.PayloadError as exc:  # undecodable, or not sealed with the stack's secret: never applied
            log.warning("skipping an undecodable or unsealed event", extra={"fields": {"error": str(exc)}})
            return
        job = self._store.apply(event)
        if job is None:
            return
        try:
            mkafka.publish(self._producer, TOPIC_JOB_STATE, job.job_id, events_pb2.JobRecord(job=job))
        except Exception:  # noqa: BLE001 - the in-memory state is still right; the next change rewrites it
            log.exception("job-state write failed", extra={"fields": {"job_id": job.job_id}})
        if job.state in TERMINAL and self.caught_up.is_set():
            self._on_finished()
