"""Bounded gateway memory: finished jobs beyond the newest `max_finished_jobs` leave memory for S3.

`JobArchive.evict` (run by the event follower after a job finishes, and once the replay is caught up) takes the
finished jobs beyond the bound, oldest first, and for each: writes the job with its event history as an
ArchivedJob to `job-records/<job_id>.pb` (checksummed like every manifest), publishes a tombstone for the job on
mova.job-state (so compaction drops it and a restarted gateway's replay skips it), and only then drops it from
memory. A write that fails leaves the job in memory; the next eviction tries again. A restarted gateway still
re-reads mova.events (as far back as the topic's retention keeps it), so the finished jobs found there come back
into memory and are archived again once it has caught up. Get and Watch read an archived job from S3 (`get`);
Cancel of one answers FAILED_PRECONDITION like any finished job.

Two indexes, written with the record (before the tombstone), keep List and idempotency keys working for archived
jobs, per tenant (the tenant's name hex-encoded in the key):
- `job-index/<tenant>/<position>-<flipped job id>-<state>`, empty objects whose names sort newest first
  (`position` is 2^63-1 minus created_at in nanoseconds, 19 digits; each hex digit d of the id is written as
  15-d), so List pages through them with `start_after`, in the same order as the jobs in memory;
- `job-keys/<tenant>/<sha256 of the idempotency key>` holding the job id.
The job-records/, job-index/ and job-keys/ prefixes are outside jobs/, so the artifact retention (retention.py)
never deletes them. Jobs archived before the indexes existed are not listed and their keys are not remembered.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable

from movakit.api.v1 import common_pb2, events_pb2
from movakit.runtime import kafka as mkafka
from movakit.runtime.object_store import ObjectStore
from movakit.runtime.topics import TOPIC_JOB_STATE
from movakit.runtime.tasks import read_blob, write_blob
from movakit.services.gateway.job_store import JobStore, list_position

log = logging.getLogger("movakit.gateway.archive")

ARCHIVE_PREFIX = "job-records/"
INDEX_PREFIX = "job-index/"
KEYS_PREFIX = "job-keys/"
_JOB_ID = re.compile(r"[0-9a-f]{32}")  # the gateway's job ids (uuid4 hex); anything else was never archived
_NEWEST_FIRST = 2**63 - 1
_INDEX_NAME = re.compile(r"(\d{19})-([0-9a-f]{32})-(\d+)")
_FLIP = str.maketrans("0123456789abcdef", "fedcba9876543210")


def archive_key(job_id: str) -> str:
    return f"{ARCHIVE_PREFIX}{job_id}.pb"


def _tenant_dir(prefix: str, tenant: str) -> str:
    return f"{prefix}{tenant.encode('utf-8').hex()}/"


def _flip(job_id: str) -> str:
    """Each hex digit d as 15-d: ids then sort in reverse, as List orders jobs created in the same nanosecond."""
    return job_id.translate(_FLIP)


def _index_name(position: tuple[int, str]) -> str:
    """The index key part that sorts newest first for a list position (created_at ns, job id)."""
    return f"{_NEWEST_FIRST - position[0]:019d}-{_flip(position[1])}"


def index_key(job: common_pb2.Job) -> str:
    return f"{_tenant_dir(INDEX_PREFIX, job.tenant)}{_index_name(list_position(job))}-{job.state}"


def idempotency_key_key(tenant: str, key: str) -> str:
    return f"{_tenant_dir(KEYS_PREFIX, tenant)}{hashlib.sha256(key.encode('utf-8')).hexdigest()}"


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

    def listing(self, tenant: str, after: tuple[int, str] | None, state: int, limit: int,
                skip: Callable[[str], bool]) -> list[common_pb2.Job]:
        """Up to `limit` of the tenant's archived jobs, newest first, older than the list position `after` when
        given, optionally of one state; a job whose id `skip` accepts (one still in memory) is left out."""
        directory = _tenant_dir(INDEX_PREFIX, tenant)
        start = f"{directory}{_index_name(after)}" if after is not None else ""
        # A position's own entry is "<start>-<state>", after `start`: skip the keys that merely extend it.
        jobs = []
        for key in self._objects.iter_keys(directory, start_after=start):
            match = _INDEX_NAME.fullmatch(key[len(directory):])
            if match is None or (start and key.startswith(start + "-")):
                continue
            job_id, job_state = _flip(match.group(2)), int(match.group(3))
            if state not in (common_pb2.JOB_STATE_UNSPECIFIED, job_state) or skip(job_id):
                continue
            archived = self.get(job_id)
            if archived is not None and archived.job.tenant == tenant:
                jobs.append(archived.job)
                if len(jobs) >= limit:
                    break
        return jobs

    def by_idempotency_key(self, tenant: str, key: str) -> common_pb2.Job | None:
        """The tenant's archived job made with this idempotency key, or None."""
        job_id = self._objects.get_raw(idempotency_key_key(tenant, key))
        archived = self.get(job_id.decode("ascii", "replace")) if job_id is not None else None
        if archived is None or archived.job.tenant != tenant or archived.job.idempotency_key != key:
            return None
        return archived.job

    def evict(self) -> int:
        """Moves the finished jobs beyond the bound to S3; returns how many left memory."""
        moved = 0
        for archived in self._store.finished_beyond(self._max_finished):
            job_id = archived.job.job_id
            try:
                write_blob(self._objects, archive_key(job_id), archived.SerializeToString(deterministic=True),
                           "application/x-protobuf")
                self._objects.put_bytes(index_key(archived.job), b"", "application/octet-stream")
                if archived.job.idempotency_key:
                    self._objects.put_bytes(idempotency_key_key(archived.job.tenant, archived.job.idempotency_key),
                                            job_id.encode("ascii"), "text/plain")
                mkafka.publish_tombstone(self._producer, TOPIC_JOB_STATE, job_id)
            except Exception:  # noqa: BLE001 - S3 or Kafka down: it stays in memory until the next eviction
                log.exception("could not archive a finished job", extra={"fields": {"job_id": job_id}})
                break
            self._store.discard(job_id)
            moved += 1
        return moved
