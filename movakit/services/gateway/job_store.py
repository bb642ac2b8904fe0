"""The gateway's materialised job state: every unfinished job and the most recent finished ones, their event
histories and the idempotency index (per tenant), in memory (older finished jobs are archived in S3: archive.py).

It is rebuilt at startup from the compacted mova.job-state topic (the latest JobRecord per job) and then from
mova.events read from the beginning. Applying an event is monotone, so replaying old events over a newer
snapshot never moves a job backwards: a finished job stays finished, the step count only grows, the (segment,
stage) pair only advances, and CANCELLING only ends in a terminal state. A long video's progress covers all its
segments: step = segment × steps + the step within the segment, and the ETA adds to the segment's own the
remaining segments at this segment's denoise time (elapsed + eta; their encode and decode are not counted).
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from movakit.api.v1 import common_pb2, events_pb2

TERMINAL = frozenset({common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED})
TERMINAL_EVENTS = frozenset({"succeeded", "failed", "cancelled"})


class PageTokenError(ValueError):
    """A List page token this gateway did not issue."""


# After one of WAITING_EVENTS a job waits in a stage's inbox (no worker has it yet): the queue deadline applies;
# after one of WORKING_EVENTS a worker is running its stage: that stage's deadline applies (the reaper).
WAITING_EVENTS = frozenset({"queued", "dispatched", "stage_finished"})
WORKING_EVENTS = frozenset({"stage_started", "denoise_step", "prompt_enhanced"})


@dataclass
class _Entry:
    job: common_pb2.Job
    events: list[events_pb2.JobEvent]
    progress_ns: int = 0  # wall-clock time of the newest event (or snapshot update) seen for the job
    waiting: bool = True  # the newest WAITING_EVENTS / WORKING_EVENTS event was a waiting one


@dataclass(frozen=True)
class Progress:
    """Where a job not finished yet stands, for the stalled-job reaper (movakit/services/gateway/reaper.py)."""

    job: common_pb2.Job
    progress_ns: int  # wall-clock time of its newest event
    waiting: bool  # True: waiting in a stage's inbox; False: a worker announced it is working on it


def _copy(job: common_pb2.Job) -> common_pb2.Job:
    out = common_pb2.Job()
    out.CopyFrom(job)
    return out


class JobStore:
    """Thread-safe; readers get copies. `wait_events` blocks until a job has new events."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._by_key: dict[tuple[str, str], str] = {}  # (tenant, idempotency key) -> job id
        self._changed = threading.Condition()

    # ---- writing ---------------------------------------------------------------------------------------------
    def put(self, job: common_pb2.Job) -> None:
        """Adds a job, or replaces its snapshot (keeping its event history)."""
        with self._changed:
            entry = self._entries.get(job.job_id)
            if entry is None:
                entry = self._entries[job.job_id] = _Entry(_copy(job), [])
            else:
                entry.job = _copy(job)
            entry.progress_ns = max(entry.progress_ns, job.updated_at.ToNanoseconds())
            if job.idempotency_key:
                self._by_key[(job.tenant, job.idempotency_key)] = job.job_id
            self._changed.notify_all()

    def load_record(self, record: events_pb2.JobRecord) -> None:
        """Takes a snapshot from the job-state topic; a terminal snapshot is never replaced by a running one."""
        with self._changed:
            entry = self._entries.get(record.job.job_id)
            if entry is not None and entry.job.state in TERMINAL and record.job.state not in TERMINAL:
                return
        self.put(record.job)

    def apply(self, event: events_pb2.JobEvent) -> common_pb2.Job | None:
        """Records the event in the job's history and folds it into the job; returns a copy of the job when its
        snapshot changed, None when it did not. A queued event of an unknown job adds the job it carries; other
        events of unknown jobs are dropped."""
        with self._changed:
            entry = self._entries.get(event.job_id)
            if entry is None and event.WhichOneof("kind") == "queued" and event.queued.job.job_id == event.job_id:
                # A job another gateway replica accepted: its queued event carries the whole job.
                entry = self._entries[event.job_id] = _Entry(_copy(event.queued.job), [])
                if entry.job.idempotency_key:
                    self._by_key.setdefault((entry.job.tenant, entry.job.idempotency_key), event.job_id)
            if entry is None:
                return None
            entry.events.append(event)
            kind = event.WhichOneof("kind")
            if event.time.ToNanoseconds() >= entry.progress_ns:
                entry.progress_ns = event.time.ToNanoseconds()
                if kind in WAITING_EVENTS or kind in WORKING_EVENTS:
                    entry.waiting = kind in WAITING_EVENTS
            before = entry.job.SerializeToString(deterministic=True)
            _fold(entry.job, event)
            changed = entry.job.SerializeToString(deterministic=True) != before
            if changed:
                entry.job.updated_at.CopyFrom(event.time)
            self._changed.notify_all()
            return _copy(entry.job) if changed else None

    def discard(self, job_id: str) -> None:
        """Forgets a job: one whose Submit could not be completed, or a finished one that was archived."""
        with self._changed:
            entry = self._entries.pop(job_id, None)
            key = (entry.job.tenant, entry.job.idempotency_key) if entry is not None else None
            if key is not None and self._by_key.get(key) == job_id:
                del self._by_key[key]

    def mark_cancel_requested(self, job_id: str) -> common_pb2.Job:
        """Sets cancel_requested and CANCELLING on a job that is not finished; returns a copy."""
        with self._changed:
            job = self._entries[job_id].job
            job.cancel_requested = True
            if job.state not in TERMINAL:
                job.state = common_pb2.JOB_STATE_CANCELLING
            self._changed.notify_all()
            return _copy(job)

    def mark_dispatched(self, job_id: str, when: Timestamp) -> None:
        """Records that the dispatch queue sent the job's first task (dispatch.py), before its event is read back."""
        with self._changed:
            entry = self._entries.get(job_id)
            if entry is not None and not entry.job.HasField("dispatched_at"):
                entry.job.dispatched_at.CopyFrom(when)
                self._changed.notify_all()

    # ---- reading ---------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> common_pb2.Job | None:
        with self._changed:
            entry = self._entries.get(job_id)
            return None if entry is None else _copy(entry.job)

    def by_idempotency_key(self, tenant: str, key: str) -> common_pb2.Job | None:
        with self._changed:
            job_id = self._by_key.get((tenant, key))
            return None if job_id is None else _copy(self._entries[job_id].job)

    def active_count(self) -> int:
        """Jobs not finished yet (queued, running or cancelling)."""
        with self._changed:
            return sum(1 for e in self._entries.values() if e.job.state not in TERMINAL)

    def active_load(self, tenant: str) -> tuple[int, float, float]:
        """(unfinished jobs, their estimated GPU-seconds, the GPU-seconds of those of `tenant`)."""
        with self._changed:
            active = [e.job for e in self._entries.values() if e.job.state not in TERMINAL]
            return len(active), sum(j.cost_gpu_s for j in active), sum(j.cost_gpu_s for j in active if j.tenant == tenant)

    def counts_by_state(self) -> dict[str, int]:
        """Number of jobs per state, named as the JobState enum without its prefix in lower case ("queued")."""
        with self._changed:
            states = [e.job.state for e in self._entries.values()]
        names = common_pb2.JobState.Name
        return {names(state).removeprefix("JOB_STATE_").lower(): states.count(state) for state in set(states)}

    def unfinished(self) -> list[Progress]:
        """Every job that is not finished, with the time and kind of its newest event."""
        with self._changed:
            return [Progress(_copy(e.job), e.progress_ns, e.waiting)
                    for e in self._entries.values() if e.job.state not in TERMINAL]

    def dispatch_queue(self) -> tuple[list[common_pb2.Job], int]:
        """(the unfinished jobs not dispatched yet, highest priority first, then oldest; how many dispatched jobs
        are unfinished)."""
        with self._changed:
            unfinished = [e.job for e in self._entries.values() if e.job.state not in TERMINAL]
            waiting = sorted((j for j in unfinished if not j.HasField("dispatched_at")),
                             key=lambda j: (-j.params.priority, *list_position(j)))
            return [_copy(j) for j in waiting], len(unfinished) - len(waiting)

    def finished_beyond(self, keep: int) -> list[events_pb2.ArchivedJob]:
        """The finished jobs beyond the `keep` most recently updated ones, oldest first, with their events."""
        with self._changed:
            finished = sorted((e for e in self._entries.values() if e.job.state in TERMINAL),
                              key=lambda e: (e.job.updated_at.ToNanoseconds(), e.job.job_id), reverse=True)
            return [events_pb2.ArchivedJob(job=e.job, events=e.events) for e in reversed(finished[keep:])]

    def wait_changed(self, timeout_s: float) -> None:
        """Blocks until the store changes (a job added, an event applied) or timeout_s passed."""
        with self._changed:
            self._changed.wait(timeout_s)

    def wait_events(self, job_id: str, start: int, timeout_s: float) -> tuple[list[events_pb2.JobEvent], bool]:
        """Events of the job from index `start` (waiting up to timeout_s for one) and whether the job is finished
        (also when it has left memory meanwhile)."""
        with self._changed:
            entry = self._entries.get(job_id)
            if entry is None:
                return [], True
            if len(entry.events) <= start and entry.job.state not in TERMINAL:
                self._changed.wait_for(
                    lambda: len(entry.events) > start or entry.job.state in TERMINAL, timeout=timeout_s
                )
            return list(entry.events[start:]), entry.job.state in TERMINAL

    def listing(self, tenant: str, after: tuple[int, str] | None, state: int, limit: int) -> list[common_pb2.Job]:
        """Up to `limit` of the tenant's jobs in memory, newest first (list_position), older than `after` when
        given, optionally of one state."""
        with self._changed:
            jobs = [e.job for e in self._entries.values()
                    if e.job.tenant == tenant and state in (common_pb2.JOB_STATE_UNSPECIFIED, e.job.state)
                    and (after is None or list_position(e.job) < after)]
            jobs.sort(key=list_position, reverse=True)
            return [_copy(j) for j in jobs[:limit]]


def page_of(jobs: list[common_pb2.Job], page_size: int) -> tuple[list[common_pb2.Job], str]:
    """The newest `page_size` of `jobs` (created_at, then job id) and the token of the next page ("" on the last
    one). The token is the position of the page's last job, so tokens stay valid while new jobs arrive."""
    jobs = sorted(jobs, key=list_position, reverse=True)
    more = len(jobs) > page_size
    return jobs[:page_size], encode_page_token(list_position(jobs[page_size - 1])) if more else ""


def list_position(job: common_pb2.Job) -> tuple[int, str]:
    """Where a job stands in List (newest first: larger positions come first)."""
    return job.created_at.ToNanoseconds(), job.job_id


def encode_page_token(position: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"v1:{position[0]}:{position[1]}".encode()).decode()


def decode_page_token(token: str) -> tuple[int, str]:
    try:
        version, nanos, job_id = base64.urlsafe_b64decode(token.encode()).decode().split(":", 2)
        if version != "v1":
            raise ValueError(version)
        return int(nanos), job_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise PageTokenError(f"not a page token of this API: {token[:40]!r}") from exc


def _fold(job: common_pb2.Job, event: events_pb2.JobEvent) -> None:
    """Applies one event to a job, monotonically (see the module docstring)."""
    kind = event.WhichOneof("kind")
    if job.state in TERMINAL:
        return
    if kind == "succeeded":
        job.state = common_pb2.JOB_STATE_SUCCEEDED
        del job.artifacts[:]
        job.artifacts.extend(event.succeeded.artifacts)
        if job.total_steps:
            job.step = job.total_steps
        job.eta_s = 0.0
    elif kind == "failed":
        job.state = common_pb2.JOB_STATE_FAILED
        job.failure_reason = event.failed.reason
        if event.failed.stage:
            job.stage = event.failed.stage
    elif kind == "cancelled":
        job.state = common_pb2.JOB_STATE_CANCELLED
    elif kind == "cancel_requested":
        job.cancel_requested = True
        job.state = common_pb2.JOB_STATE_CANCELLING
    elif kind == "queued":
        if job.state == common_pb2.JOB_STATE_UNSPECIFIED:
            job.state = common_pb2.JOB_STATE_QUEUED
    elif kind in ("stage_started", "stage_finished"):
        info = getattr(event, kind)
        _advance(job, info.segment, info.stage)
        if job.state in (common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_UNSPECIFIED):
            job.state = common_pb2.JOB_STATE_RUNNING
    elif kind == "denoise_step":
        step = event.denoise_step
        count = max(step.segment_count, 1)
        done = step.segment * step.total + step.step  # steps of all segments so far
        if done >= job.step:
            job.step = done
            job.total_steps = count * step.total
            job.eta_s = step.eta_s + (count - 1 - step.segment) * (step.elapsed_s + step.eta_s)
        _advance(job, step.segment, common_pb2.STAGE_DENOISE)
        if job.state in (common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_UNSPECIFIED):
            job.state = common_pb2.JOB_STATE_RUNNING
    elif kind == "dispatched":
        if not job.HasField("dispatched_at"):
            job.dispatched_at.CopyFrom(event.time)
    elif kind == "prompt_enhanced":
        job.effective_prompt = event.prompt_enhanced.prompt


def _advance(job: common_pb2.Job, segment: int, stage: int) -> None:
    """Moves the job to (segment, stage) unless it is already further (segments first, then stages)."""
    if (segment, stage) >= (job.segment, job.stage):
        job.segment, job.stage = segment, stage
