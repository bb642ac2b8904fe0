"""The gateway's JobStore: monotone event folding (replay-safe), idempotency index, paging, waiting."""

from __future__ import annotations

import threading

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from movakit.api.v1 import common_pb2 as c
from movakit.api.v1 import events_pb2 as e
from movakit.services.gateway.job_store import JobStore, PageTokenError, decode_page_token, page_of


def job(job_id: str, created_s: int = 1, key: str = "", tenant: str = "t1", cost: float = 0.0) -> c.Job:
    return c.Job(job_id=job_id, state=c.JOB_STATE_QUEUED, created_at=Timestamp(seconds=created_s),
                 idempotency_key=key, total_steps=4, tenant=tenant, cost_gpu_s=cost)


def ev(job_id: str, second: int = 10, **kind) -> e.JobEvent:
    return e.JobEvent(job_id=job_id, time=Timestamp(seconds=second), source="t", **kind)


HISTORY = [
    dict(queued=e.Queued()),
    dict(stage_started=e.StageStarted(stage=c.STAGE_ENHANCE)),
    dict(prompt_enhanced=e.PromptEnhanced(prompt="better")),
    dict(stage_started=e.StageStarted(stage=c.STAGE_DENOISE)),
    dict(denoise_step=e.DenoiseStep(step=1, total=4, eta_s=3)),
    dict(denoise_step=e.DenoiseStep(step=4, total=4, eta_s=0)),
    dict(stage_finished=e.StageFinished(stage=c.STAGE_DECODE)),
    dict(succeeded=e.Succeeded(artifacts=[c.Artifact(kind="video", ref=c.ObjectRef(key="jobs/a/output/video.mp4"))])),
]


def test_a_full_history_folds_into_a_succeeded_job():
    store = JobStore()
    store.put(job("a"))
    states = []
    for second, kind in enumerate(HISTORY):
        store.apply(ev("a", second, **kind))
        states.append(store.get("a").state)
    assert states[0] == c.JOB_STATE_QUEUED and states[1] == c.JOB_STATE_RUNNING
    final = store.get("a")
    assert final.state == c.JOB_STATE_SUCCEEDED and final.stage == c.STAGE_DECODE
    assert (final.step, final.total_steps, final.effective_prompt) == (4, 4, "better")
    assert final.artifacts[0].ref.key == "jobs/a/output/video.mp4"
    assert final.updated_at.seconds == len(HISTORY) - 1


def test_replaying_old_events_never_moves_a_job_backwards():
    store = JobStore()
    store.put(job("a"))
    for kind in HISTORY:
        store.apply(ev("a", **kind))
    snapshot = store.get("a")
    for kind in HISTORY[:-1]:  # a restarted gateway reads the topic from the beginning again
        assert store.apply(ev("a", **kind)) is None
    assert store.get("a") == snapshot
    assert store.apply(ev("a", failed=e.Failed(reason="late"))) is None  # terminal is final


def test_steps_only_grow_and_cancelling_survives_progress():
    store = JobStore()
    store.put(job("a"))
    store.apply(ev("a", denoise_step=e.DenoiseStep(step=3, total=4)))
    store.apply(ev("a", denoise_step=e.DenoiseStep(step=2, total=4)))  # a redelivered task restarts counting
    assert store.get("a").step == 3
    store.mark_cancel_requested("a")
    store.apply(ev("a", stage_started=e.StageStarted(stage=c.STAGE_DECODE)))
    assert store.get("a").state == c.JOB_STATE_CANCELLING
    store.apply(ev("a", cancelled=e.Cancelled(stage=c.STAGE_DECODE)))
    assert store.get("a").state == c.JOB_STATE_CANCELLED


def test_snapshots_and_idempotency_keys():
    store = JobStore()
    store.put(job("a", key="k1"))
    assert store.by_idempotency_key("t1", "k1").job_id == "a" and store.by_idempotency_key("t1", "k2") is None
    assert store.by_idempotency_key("t2", "k1") is None  # keys are per tenant
    store.put(job("b", key="k1", tenant="t2"))
    assert store.by_idempotency_key("t2", "k1").job_id == "b" and store.by_idempotency_key("t1", "k1").job_id == "a"
    store.apply(ev("b", cancelled=e.Cancelled()))
    store.apply(ev("a", succeeded=e.Succeeded()))
    stale = e.JobRecord(job=job("a", key="k1"))  # an older record read back from the job-state topic
    store.load_record(stale)
    assert store.get("a").state == c.JOB_STATE_SUCCEEDED
    assert store.apply(ev("unknown", queued=e.Queued())) is None
    assert store.get("unknown") is None
    assert store.active_count() == 0


def test_copies_do_not_leak_internal_state():
    store = JobStore()
    store.put(job("a"))
    copy = store.get("a")
    copy.state = c.JOB_STATE_FAILED
    assert store.get("a").state == c.JOB_STATE_QUEUED


def page(store: JobStore, tenant: str, size: int, token: str, state: int):
    """One List page over the jobs in memory, as the servicer makes it (it adds the archived ones)."""
    return page_of(store.listing(tenant, decode_page_token(token) if token else None, state, size + 1), size)


def test_pages_are_newest_first_and_stable_when_jobs_arrive():
    store = JobStore()
    for i in range(5):
        store.put(job(f"j{i}", created_s=i))
    store.put(job("other", created_s=3, tenant="t2"))  # another tenant's job is never listed
    first, token = page(store, "t1", 2, "", c.JOB_STATE_UNSPECIFIED)
    assert [j.job_id for j in first] == ["j4", "j3"] and token
    store.put(job("j9", created_s=9))  # a new job does not shift the next page
    second, token = page(store, "t1", 2, token, c.JOB_STATE_UNSPECIFIED)
    third, last = page(store, "t1", 2, token, c.JOB_STATE_UNSPECIFIED)
    assert [j.job_id for j in second] == ["j2", "j1"] and [j.job_id for j in third] == ["j0"] and last == ""
    store.apply(ev("j1", failed=e.Failed()))
    failed, _ = page(store, "t1", 10, "", c.JOB_STATE_FAILED)
    assert [j.job_id for j in failed] == ["j1"]
    with pytest.raises(PageTokenError):
        page(store, "t1", 2, "bm9wZQ==", c.JOB_STATE_UNSPECIFIED)
    assert [j.job_id for j in page(store, "t2", 10, "", c.JOB_STATE_UNSPECIFIED)[0]] == ["other"]


def test_wait_events_wakes_on_a_new_event():
    store = JobStore()
    store.put(job("a"))
    timer = threading.Timer(0.05, lambda: store.apply(ev("a", queued=e.Queued())))
    timer.start()
    events, finished = store.wait_events("a", 0, timeout_s=10)
    timer.join()
    assert [x.WhichOneof("kind") for x in events] == ["queued"] and not finished
    store.apply(ev("a", cancelled=e.Cancelled()))
    events, finished = store.wait_events("a", 1, timeout_s=10)
    assert [x.WhichOneof("kind") for x in events] == ["cancelled"] and finished


def test_a_queued_event_introduces_a_job_from_another_replica():
    store = JobStore()
    carried = job("r", key="rk")
    store.apply(ev("r", queued=e.Queued(job=carried)))
    assert store.get("r") == carried and store.by_idempotency_key("t1", "rk").job_id == "r"
    store.apply(ev("r", stage_started=e.StageStarted(stage=c.STAGE_ENHANCE)))
    assert store.get("r").state == c.JOB_STATE_RUNNING
    store.discard("r")
    assert store.get("r") is None and store.by_idempotency_key("t1", "rk") is None


def test_active_load_sums_unfinished_costs_overall_and_per_tenant():
    store = JobStore()
    store.put(job("a", cost=10.0))
    store.put(job("b", cost=5.0, tenant="t2"))
    store.put(job("c", cost=7.0))
    store.apply(ev("c", succeeded=e.Succeeded()))  # finished work no longer counts
    assert store.active_load("t1") == (2, 15.0, 10.0)
    assert store.active_load("t2") == (2, 15.0, 5.0)



def test_unfinished_jobs_say_whether_they_wait_in_an_inbox_or_are_worked_on():
    store = JobStore()
    store.put(job("a"))
    store.apply(ev("a", 20, queued=e.Queued()))
    assert [(p.job.job_id, p.progress_ns, p.waiting) for p in store.unfinished()] == [("a", 20 * 10**9, True)]
    store.apply(ev("a", 30, stage_started=e.StageStarted(stage=c.STAGE_ENCODE)))
    assert [(p.progress_ns, p.waiting) for p in store.unfinished()] == [(30 * 10**9, False)]
    store.apply(ev("a", 25, stage_finished=e.StageFinished(stage=c.STAGE_ENCODE)))  # older: changes nothing
    store.apply(ev("a", 40, cancel_requested=e.CancelRequested()))  # neither waiting nor working: kept
    assert [(p.progress_ns, p.waiting) for p in store.unfinished()] == [(40 * 10**9, False)]
    store.apply(ev("a", 50, stage_finished=e.StageFinished(stage=c.STAGE_ENCODE)))
    assert [p.waiting for p in store.unfinished()] == [True]
    store.apply(ev("a", 60, failed=e.Failed(reason="x")))
    assert store.unfinished() == []


def test_dispatch_queue_is_priority_then_age_and_counts_dispatched_unfinished_jobs():
    store = JobStore()
    for job_id, created_s, priority in [("old-low", 1, 0), ("new-low", 3, 0), ("new-high", 4, 9), ("mid", 2, 5),
                                        ("running", 0, 0), ("done", 0, 9)]:
        store.put(c.Job(job_id=job_id, state=c.JOB_STATE_QUEUED, created_at=Timestamp(seconds=created_s),
                        params=c.GenerationParams(priority=priority)))
    store.apply(ev("running", dispatched=e.Dispatched()))
    store.mark_dispatched("done", Timestamp(seconds=5))
    store.apply(ev("done", succeeded=e.Succeeded()))
    waiting, in_flight = store.dispatch_queue()
    assert [j.job_id for j in waiting] == ["new-high", "mid", "old-low", "new-low"]
    assert in_flight == 1  # "running"; the finished one frees its slot
    assert store.get("running").dispatched_at == Timestamp(seconds=10)  # the event's time
    store.apply(ev("done", second=20, dispatched=e.Dispatched()))  # a replayed event changes nothing
    assert store.get("done").dispatched_at == Timestamp(seconds=5)
