"""The stalled-job reaper: a gateway thread that ends every job which stopped making progress.

A job is stalled when its newest event is older than its deadline: `queue_deadline_s` while it waits in a stage's
inbox (after `queued` or a `stage_finished`), else the deadline of the stage a worker announced it is running
(`<stage>_deadline_s`; the denoiser reports every step, so its deadline bounds one step). The reaper then writes
the job's cancel marker (a worker that still holds the task stops at its next check instead of finishing a job
that was given up) and publishes a `failed` event whose reason names the stage and the setting, or `cancelled`
for a job whose cancel was requested. The event follower folds that event like any other, so the job leaves
RUNNING only once the event is in Kafka; a publish that fails is tried again on the next round. Every gateway
replica runs a reaper; two of them ending one job publish two final events, and the first one wins.
"""

from __future__ import annotations

import logging
import time

from movakit.api.v1 import common_pb2, events_pb2
from movakit.runtime import kafka as mkafka
from movakit.runtime.object_store import ObjectStore, cancel_marker_key
from movakit.runtime.periodic import Periodic
from movakit.runtime.topics import TOPIC_EVENTS
from movakit.runtime.tasks import make_event
from movakit.services.gateway.job_store import JobStore, Progress
from movakit.services.gateway.settings import GatewaySettings

log = logging.getLogger("movakit.gateway.reaper")

SOURCE = "gateway"
_STAGE_FIELDS = {common_pb2.STAGE_ENHANCE: "enhance_deadline_s", common_pb2.STAGE_ENCODE: "encode_deadline_s",
                 common_pb2.STAGE_DENOISE: "denoise_deadline_s", common_pb2.STAGE_DECODE: "decode_deadline_s"}


def deadline_of(settings: GatewaySettings, progress: Progress) -> tuple[float, str]:
    """(seconds without an event before the job counts as stalled, the setting that says so)."""
    field = "queue_deadline_s" if progress.waiting else _STAGE_FIELDS.get(progress.job.stage, "queue_deadline_s")
    return getattr(settings, field), GatewaySettings.env_name(field)


class Reaper(Periodic):
    """A daemon thread checking every unfinished job every `interval_s` (a quarter of the shortest deadline,
    between 0.5 and 30 s)."""

    def __init__(self, settings: GatewaySettings, store: JobStore, objects: ObjectStore,
                 producer: mkafka.Producer) -> None:
        self._settings = settings
        self._store = store
        self._objects = objects
        self._producer = producer
        shortest = min(getattr(settings, f) for f in ("queue_deadline_s", *_STAGE_FIELDS.values()))
        super().__init__("gateway-reaper", min(30.0, max(0.5, shortest / 4)), lambda: self.reap(time.time_ns()))

    def reap(self, now_ns: int) -> list[str]:
        """Ends every job stalled at `now_ns`; returns their ids."""
        ended = []
        for progress in self._store.unfinished():
            deadline_s, setting = deadline_of(self._settings, progress)
            idle_s = (now_ns - progress.progress_ns) / 1e9
            if idle_s > deadline_s:
                if self._end(progress.job, f"no progress for {idle_s:.0f} s, over the {deadline_s:g} s of {setting}"):
                    ended.append(progress.job.job_id)
        return ended

    def _end(self, job: common_pb2.Job, why: str) -> bool:
        stage = common_pb2.Stage.Name(job.stage).removeprefix("STAGE_").lower()
        if job.cancel_requested:
            event = make_event(job.job_id, SOURCE, cancelled=events_pb2.Cancelled(stage=job.stage))
        else:
            reason = f"stalled in {stage}: {why}"
            event = make_event(job.job_id, SOURCE, failed=events_pb2.Failed(stage=job.stage, reason=reason))
        try:
            self._objects.put_bytes(cancel_marker_key(job.job_id), b"stalled\n", "text/plain")
            mkafka.publish(self._producer, TOPIC_EVENTS, job.job_id, event)
        except Exception:  # noqa: BLE001 - Kafka or S3 down: the job stays as it is and is tried next round
            log.exception("could not end a stalled job", extra={"fields": {"job_id": job.job_id}})
            return False
        log.warning("stalled job ended", extra={"fields": {"job_id": job.job_id, "stage": stage, "why": why}})
        return True
