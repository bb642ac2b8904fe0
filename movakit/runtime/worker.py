"""The Kafka loop of the stage services: it runs the handlers of movakit.runtime.tasks from a topic.

One `StageWorker` consumes its inbox topic as a member of a Kafka consumer group and, for each task:

  1. opens the sealed record and parses it (a record that does not open or parse goes to the dead-letter topic,
     unacted on; the process keeps running);
  2. checks the job was not cancelled (the gateway's cancel marker jobs/<job>/control/cancel in S3; checked again
     between denoise steps);
  3. skips the work when the stage's result manifest `jobs/<job>/<stage>/result.pb` (a long video's segment k:
     `jobs/<job>/seg-<k>/<stage>/result.pb`) exists and every object it references is present with the recorded
     sha256 (a redelivered task): it re-publishes the follow-up only;
  4. otherwise runs the stage (`StageHandler.run`: read inputs from S3 with checksum checks, compute, write outputs
     under deterministic keys) and writes the result manifest;
  5. publishes the events (stage_finished, succeeded, ...) and then the next stage's task, each acknowledged
     by the broker,
  6. and only then commits the record's offset (at-least-once; redelivery is harmless because of 3).

A transient error (a connection to S3 or Kafka failed or timed out, S3 answered 5xx) does not commit: the record
is read again after a backoff, up to `max_attempts` times. Any other stage error, or the last transient one,
publishes a `failed` event plus a DeadLetter record and commits, so one bad job never blocks the partition or
kills the process. An error outside the stage (Kafka failing while dead-lettering or committing) rewinds to the
record, which is read again after a pause. Every task runs in a span whose parent is the trace context of the
Kafka headers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from minio.error import S3Error
from opentelemetry import trace
from urllib3.exceptions import HTTPError as Urllib3Error

from movakit.api.v1 import events_pb2
from movakit.runtime import kafka as mkafka
from movakit.runtime.kafka_auth import NO_AUTH, ClientAuth
from movakit.runtime.metrics import STAGE_DURATION, set_queue_lag
from movakit.runtime.object_store import ObjectStore, cancel_marker_key
from movakit.runtime.tasks import JobCancelled, StageHandler, TaskContext, run_or_reuse, task_segment
from movakit.runtime.topics import TOPIC_DEAD_LETTER, TOPIC_EVENTS

log = logging.getLogger("movakit.worker")
_tracer = trace.get_tracer("movakit.worker")

_TRANSIENT_S3_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})


def is_transient(exc: BaseException) -> bool:
    """True for errors of the infrastructure that a later attempt may not meet (not for bad data)."""
    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_S3_CODES
    return isinstance(exc, (ConnectionError, TimeoutError, Urllib3Error, KafkaError))


@dataclass
class WorkerStats:
    """Counters of one replica since it started (logged on stop; read by tests)."""

    processed: int = 0
    skipped: int = 0
    failed: int = 0
    cancelled: int = 0
    dead_letters: int = 0
    retried: int = 0


class StageWorker:
    """The consume → check cancel → skip or run → publish → commit loop of one stage replica."""

    def __init__(self, handler: StageHandler, store: ObjectStore, *, bootstrap: str, group_id: str,
                 sealer: mkafka.RecordSealer, service: str, replica_id: str, max_attempts: int = 3,
                 retry_backoff_s: float = 2.0, auth: ClientAuth = NO_AUTH) -> None:
        self.handler = handler
        self.max_attempts = max_attempts  # tries of one record on transient errors before it fails the job
        self.retry_backoff_s = retry_backoff_s  # doubled after every transient failure of the same record
        self._attempts: dict[tuple[str, int, int], int] = {}
        self.store = store
        self.service = service
        self.replica_id = replica_id
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._sealer = sealer  # opens every task read and seals every record sent
        self._producer = mkafka.make_producer(bootstrap, sealer, auth)
        self._consumer = mkafka.make_consumer(bootstrap, handler.inbox, group_id, auth=auth)
        self._assignment: frozenset[tuple[str, int]] = frozenset()
        self.group_id = group_id
        self._lag_measured = 0.0  # time.monotonic() of the last queue lag reading

    def is_cancelled(self, job_id: str) -> bool:
        """True once the gateway wrote the job's cancel marker (jobs/<job>/control/cancel)."""
        return self.store.has_key(cancel_marker_key(job_id))

    def stop(self) -> None:
        self._stop.set()

    def run_forever(self) -> None:
        log.info("worker started", extra={"fields": {"topic": self.handler.inbox, "replica": self.replica_id}})
        try:
            while not self._stop.is_set():
                try:
                    batches = self._consumer.poll(timeout_ms=300, max_records=1)
                except Exception:  # noqa: BLE001 - a broker hiccup: retry, never exit
                    log.exception("poll failed", extra={"fields": {"replica": self.replica_id}})
                    self._stop.wait(1.0)
                    continue
                self._log_assignment()
                self._measure_lag()
                for records in batches.values():
                    for record in records:
                        try:
                            self.handle_record(record)
                        except Exception:  # noqa: BLE001 - e.g. Kafka failed while dead-lettering or committing
                            log.exception("record not handled: it will be read again", extra={"fields": {
                                "replica": self.replica_id, "partition": record.partition, "offset": record.offset}})
                            self._rewind(record)
                            self._stop.wait(1.0)
        finally:
            self._consumer.close()
            self._producer.flush()
            self._producer.close()
            log.info("worker stopped", extra={"fields": {"replica": self.replica_id, **asdict(self.stats)}})

    def _rewind(self, record) -> None:
        """Seek back to `record`, so the next poll returns it again (uncommitted, it is not lost)."""
        try:
            self._consumer.seek(TopicPartition(record.topic, record.partition), record.offset)
        except Exception:  # noqa: BLE001 - no longer assigned here: its new owner reads it from the committed offset
            log.warning("could not rewind: the partition moved to another replica", extra={"fields": {
                "replica": self.replica_id, "partition": record.partition, "offset": record.offset}})

    def _log_assignment(self) -> None:
        now = frozenset((tp.topic, tp.partition) for tp in self._consumer.assignment())
        if now != self._assignment:
            self._assignment = now
            log.info("partitions assigned", extra={"fields": {
                "replica": self.replica_id, "partitions": sorted(p for _, p in now)}})

    def _measure_lag(self) -> None:
        """mova_queue_lag of the inbox: end offset minus position, summed over the partitions assigned here (both
        known locally after a poll: no broker round trip). At most once a second."""
        now = time.monotonic()
        if now - self._lag_measured < 1.0:
            return
        self._lag_measured = now
        lag, known = 0, False
        try:
            for tp in self._consumer.assignment():
                end = self._consumer.highwater(tp)  # known once a fetch answered: the position is known too
                if end is not None:
                    lag, known = lag + max(0, end - self._consumer.position(tp)), True
        except KafkaError:  # e.g. the partition was revoked meanwhile: the next reading will do
            return
        if known:
            set_queue_lag(self.group_id, {self.handler.inbox: lag})

    # --- one record ----------------------------------------------------------------------------------------------
    def handle_record(self, record) -> None:
        h = self.handler
        try:
            task, parent = mkafka.parse(record, h.task_type, self._sealer)
        except Exception as exc:  # noqa: BLE001 - any undecodable or unsealed record is dead-lettered
            self._dead_letter(record, "", f"unparsable {h.task_type.__name__}: {exc}")
            self._commit(record)
            return
        job_id = task.job_id
        fields = {"job_id": job_id, "stage": h.stage_name, "replica": self.replica_id,
                  "partition": record.partition, "offset": record.offset}
        with _tracer.start_as_current_span(f"{self.service}.{h.stage_name}", context=parent) as span:
            span.set_attribute("movakit.job_id", job_id)
            span.set_attribute("movakit.replica", self.replica_id)
            ctx = TaskContext(job_id=job_id, emit=self._emit, is_cancelled=self.is_cancelled,
                              source=self.service)
            started = time.monotonic()
            segment = task_segment(task)
            index = segment.index if segment is not None else 0  # the segment of a long video, else 0
            try:
                def announce() -> None:
                    self._emit(ctx.event(stage_started=events_pb2.StageStarted(stage=h.stage, worker=self.replica_id,
                                                                               segment=index)))
                    log.info("stage started", extra={"fields": fields})

                output, skipped = run_or_reuse(h, self.store, task, ctx, on_start=announce)
                outcome = "skipped" if skipped else "ok"
                if skipped:
                    self.stats.skipped += 1
                    log.info("outputs exist: skipped", extra={"fields": fields})
                else:
                    self.stats.processed += 1
                span.set_attribute("movakit.skipped", skipped)
                next_task, events = h.follow_up(task, output, self.service)
                finished = events_pb2.StageFinished(stage=h.stage, duration_s=time.monotonic() - started,
                                                    skipped=skipped, segment=index)
                for event in [ctx.event(stage_finished=finished), *events]:
                    self._emit(event)
                if next_task is not None and h.next_topic is not None:
                    mkafka.publish(self._producer, h.next_topic, job_id, next_task)
                log.info("stage finished", extra={"fields": {**fields, "skipped": skipped,
                                                             "duration_s": round(time.monotonic() - started, 3)}})
            except JobCancelled:
                outcome = "cancelled"
                self.stats.cancelled += 1
                log.info("job cancelled", extra={"fields": fields})
                self._report(lambda: self._emit(ctx.event(cancelled=events_pb2.Cancelled(stage=h.stage))))
            except Exception as exc:  # noqa: BLE001 - the job fails, the worker keeps going
                where = (record.topic, record.partition, record.offset)
                attempt = self._attempts.get(where, 0) + 1
                if is_transient(exc) and attempt < self.max_attempts:
                    self._attempts[where] = attempt
                    self.stats.retried += 1
                    log.warning("transient error: the task will be retried", exc_info=True,
                                extra={"fields": {**fields, "attempt": attempt}})
                    self._rewind(record)
                    self._stop.wait(self.retry_backoff_s * 2 ** (attempt - 1))
                    return  # not committed: the same record comes back on the next poll
                self._attempts.pop(where, None)
                outcome = "failed"
                self.stats.failed += 1
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
                reason = f"{h.stage_name} failed: {type(exc).__name__}: {exc}"
                log.exception("stage failed", extra={"fields": fields})
                self._report(lambda: self._emit(ctx.event(failed=events_pb2.Failed(stage=h.stage, reason=reason))))
                self._report(lambda: self._dead_letter(record, job_id, reason))
        STAGE_DURATION.record(time.monotonic() - started, {"stage": h.stage_name, "outcome": outcome})
        self._attempts.pop((record.topic, record.partition, record.offset), None)
        self._commit(record)

    @staticmethod
    def _report(send: Callable[[], None]) -> None:
        """Publish a failure/cancel report; if Kafka itself fails, log it and keep the worker alive."""
        try:
            send()
        except Exception:  # noqa: BLE001
            log.exception("could not publish the report")

    def _emit(self, event: events_pb2.JobEvent) -> None:
        mkafka.publish(self._producer, TOPIC_EVENTS, event.job_id, event)

    def _dead_letter(self, record, job_id: str, reason: str) -> None:
        self.stats.dead_letters += 1
        try:  # the plaintext when the record opens (the letter is sealed again), else the value as it was read
            payload = self._sealer.open(record) or b""
        except mkafka.PayloadError:
            payload = record.value or b""
        letter = events_pb2.DeadLetter(job_id=job_id, topic=record.topic, partition=record.partition,
                                       offset=record.offset, payload=payload, reason=reason, service=self.service)
        log.error("dead letter", extra={"fields": {"job_id": job_id, "reason": reason, "offset": record.offset}})
        mkafka.publish(self._producer, TOPIC_DEAD_LETTER, job_id or f"offset-{record.offset}", letter)

    def _commit(self, record) -> None:
        tp = TopicPartition(record.topic, record.partition)
        try:
            self._consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
        except CommitFailedError as exc:  # the partition moved to another replica: it will redeliver (harmless)
            log.warning("commit failed", extra={"fields": {"offset": record.offset, "error": str(exc)}})
