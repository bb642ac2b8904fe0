"""The gateway's dispatch queue: accepted jobs enter the pipeline highest priority first, then oldest.

Submit records a job (mova.job-state) and publishes its `queued` event, nothing more: the job waits here. The
queue sends a job's first task (EnhanceTask on mova.enhance) only while fewer than `dispatch_slots` dispatched
jobs are unfinished, picking by (priority desc, created_at, job id). Once a task is sent it publishes a
`dispatched` event and the job record with `dispatched_at` set, so the queue is as durable as the job records: a
restarted gateway rebuilds it from mova.job-state and mova.events (the jobs not finished whose `dispatched_at` is
unset). A crash between the task and the `dispatched` event sends the task again after the restart; the pipeline
is at-least-once and tolerates that.

A job whose cancel was requested while it waited is never dispatched: the queue publishes its `cancelled` event.
Submit runs one dispatch round in its own thread (so a job that fits starts at once, in the Submit's trace); a
daemon thread runs another whenever the job store changes (an event finished a job, a job arrived) and at least
every `_ROUND_S`, which also retries a round that failed because Kafka was unreachable.

Why here and not in the stages: the stages already chain each other (each publishes the next stage's task), and
Kafka keeps a topic in partition order; the gateway is the one place that sees every waiting job.
"""

from __future__ import annotations

import logging
import threading

from opentelemetry import context as otel_context

from movakit.api.v1 import common_pb2, events_pb2
from movakit.runtime import kafka as mkafka
from movakit.runtime.tasks import make_event
from movakit.runtime.topics import TOPIC_ENHANCE, TOPIC_EVENTS, TOPIC_JOB_STATE
from movakit.services.gateway.job_store import JobStore

log = logging.getLogger("movakit.gateway.dispatch")

SOURCE = "gateway"
_ROUND_S = 0.5  # longest wait between two dispatch rounds


class Dispatcher:
    def __init__(self, store: JobStore, producer: mkafka.Producer, slots: int) -> None:
        self._store = store
        self._producer = producer
        self._slots = slots  # dispatched jobs that may be unfinished at once
        # One round at a time (the slot count stays exact), and none while Submit records a job (`admitting`).
        self._lock = threading.RLock()
        self._contexts: dict[str, otel_context.Context] = {}  # job id -> the trace context of its Submit
        self._ended: set[str] = set()  # waiting jobs whose `cancelled` event was published, not yet read back
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gateway-dispatch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def admitting(self) -> threading.RLock:
        """Held by Submit while it records a job and until `submitted`: a job is only dispatched once its record
        and its `queued` event are in Kafka."""
        return self._lock

    def submitted(self, job_id: str) -> None:
        """Called by Submit once the job is recorded: runs a round in the caller's trace context."""
        with self._lock:
            self._contexts[job_id] = otel_context.get_current()
        self.run_round()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_round()
            self._store.wait_changed(_ROUND_S)

    def run_round(self) -> list[str]:
        """Ends the waiting jobs whose cancel was requested and dispatches the next ones while a slot is free;
        returns the ids it dispatched. A Kafka error ends the round early (the next round tries again)."""
        dispatched = []
        with self._lock:
            waiting, in_flight = self._store.dispatch_queue()
            waiting_ids = {job.job_id for job in waiting}
            self._ended &= waiting_ids
            self._contexts = {k: v for k, v in self._contexts.items() if k in waiting_ids}
            try:
                for job in waiting:
                    if job.cancel_requested:
                        self._end_cancelled(job)
                    elif in_flight < self._slots:
                        self._dispatch(job)
                        dispatched.append(job.job_id)
                        in_flight += 1
            except Exception:  # noqa: BLE001 - Kafka unreachable: the jobs wait; the next round tries again
                log.exception("dispatch round failed")
        return dispatched

    def _dispatch(self, job: common_pb2.Job) -> None:
        task = events_pb2.EnhanceTask(job_id=job.job_id, params=job.params, tenant=job.tenant)
        if job.HasField("input_image"):
            task.image.CopyFrom(job.input_image)
        token = otel_context.attach(self._contexts.get(job.job_id, otel_context.Context()))
        try:
            mkafka.publish(self._producer, TOPIC_ENHANCE, job.job_id, task)
            event = make_event(job.job_id, SOURCE, dispatched=events_pb2.Dispatched())
            self._store.mark_dispatched(job.job_id, event.time)  # the slot is taken from now on
            mkafka.publish(self._producer, TOPIC_EVENTS, job.job_id, event)
            record = self._store.get(job.job_id)
            if record is not None:
                mkafka.publish(self._producer, TOPIC_JOB_STATE, job.job_id, events_pb2.JobRecord(job=record))
        finally:
            otel_context.detach(token)
        self._contexts.pop(job.job_id, None)
        log.info("job dispatched", extra={"fields": {"job_id": job.job_id, "priority": job.params.priority}})

    def _end_cancelled(self, job: common_pb2.Job) -> None:
        if job.job_id in self._ended:
            return
        event = make_event(job.job_id, SOURCE, cancelled=events_pb2.Cancelled(stage=job.stage))
        mkafka.publish(self._producer, TOPIC_EVENTS, job.job_id, event)
        self._ended.add(job.job_id)
        log.info("waiting job cancelled", extra={"fields": {"job_id": job.job_id}})
