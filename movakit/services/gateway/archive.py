"""Bounded gateway memory: finished jobs beyond the newest `max_finished_jobs` leave memory for S3.

`JobArchive.evict` (run by the event follower after a job finishes, and once the replay is caught up) takes the
finished jobs beyond the bound, oldest first, and for each: writes the job with its event history as an
ArchivedJob to `job-records/<job_id>.pb` (checksummed like every manifest), publishes a tombstone for the job on
mova.job-state (so compaction drops it and a restarted gateway's replay skips it), and only then drops it from
memory. A write that fails leaves the job in memory; the next eviction tries again. A restarted gateway still
re-reads mova.events (as far back as the topic's retention keeps it), so the finished jobs found there come back
into memory and are archived again once it has caught up. Get and Watch read an archived job from S3 (`get`);
Cancel of one answers FAILED_PRECONDITION like any finished job. List pages over the jobs in memory only. The
job-records/ prefix is outside jobs/, so the artifact retention (retention.py) never deletes a record.
"""

from __future__ import annotations

import logging
import re

from movakit.api.v1 import events_pb2
from movakit.runtime import kafka as mkafka
from movakit.runtime.object_store import ObjectStore
from movakit.runtime.topics import TOPIC_JOB_STATE
from movakit.runtime.tasks import read_blob, write_blob
from movakit.services.gateway.job_store import JobStore

log = logging.getLogger("movakit.gateway.archive")

ARCHIVE_PREFIX = "job-records/"
_JOB_ID = re.compile(r"[0-9a-f]{32}")  # the gateway's job ids (uuid4 hex); anything else was never archived


def archive_key(job_id: str) -> str:
    return f"{ARCHIVE_PREFIX}{job_id}.pb"


class JobArchive:
    def __init__(self, objects: ObjectStore, producer: mkafka.Producer, store: JobStore, max_finished: int) -> None:
        self._objects = objects
        self._producer = producer
        self._store = store
        self._max_finished = max_finished

    def get(self, job_id: str) -> events_pb2.ArchivedJob | None:
        """The archived job, or None when there is none (or its record does not verify)."""
        if not _JOB_ID.fullmatch(job_id):
            return None
        payload = read_blob(self._objects, archive_key(job_id))
        if payload is None:
            return None
        archived = events_pb2.ArchivedJob()
        archived.ParseFromString(payload)
        return archived

    def evict(self) -> int:
        """Moves the finished jobs beyond the bound to S3; returns how many left memory."""
        moved = 0
        for archived in self._store.finished_beyond(self._max_finished):
            job_id = archived.job.job_id
            try:
                write_blob(self._objects, archive_key(job_id), archived.SerializeToString(deterministic=True),
                           "application/x-protobuf")
                mkafka.publish_tombstone(self._producer, TOPIC_JOB_STATE, job_id)
            except Exception:  # noqa: BLE001 - S3 or Kafka down: it stays in memory until the next eviction
                log.exception("could not archive a finished job", extra={"fields": {"job_id": job_id}})
                break
            self._store.discard(job_id)
            moved += 1
        return moved
