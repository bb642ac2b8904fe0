"""The gateway's durability duties on real servers: stalled jobs end with a reason (the reaper); a broker that dies
and comes back empty (memory storage: its state is lost) turns health NOT_SERVING and back, and Submit works again
without a gateway restart; finished jobs beyond the memory bound are archived and shown only to their tenant;
only sealed tombstones drop a job at replay; artifacts expire by the bucket's lifecycle rule and the retention sweep. Stage workers
are played by the test. This module's gateways use brokers of their own, so the jobs they reap or lose are no
other test's, and the sweep runs on a bucket of its own."""

from __future__ import annotations

import signal
import uuid
from datetime import datetime, timedelta, timezone

import grpc
import pytest

from movakit.api.v1 import common_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc
from movakit.runtime import kafka as mkafka
from movakit.runtime.grpc_server import check_health
from movakit.runtime.localstack import free_port, start_tansu
from movakit.runtime.object_store import ObjectStore, cancel_marker_key
from movakit.runtime.topics import TOPIC_JOB_STATE, ensure_topics
from movakit.services.gateway import retention
from movakit.services.gateway.follower import replay_job_state
from movakit.services.gateway.job_store import JobStore
from movakit.services.gateway.main import start_gateway
from tests.integration.gateway_helpers import TINY, state_of, until, worker_event

pytestmark = pytest.mark.integration


def submit(stub) -> str:
    return stub.Submit(gateway_pb2.SubmitRequest(params=common_pb2.GenerationParams(**TINY)), timeout=30).job_id


def test_stalled_jobs_fail_naming_the_stage_and_the_setting(gateway_config, producer, object_store, tenant_channel):
    working = start_gateway(gateway_config(denoise_deadline_s=1.0))  # the queue deadline stays 6 h
    try:
        with tenant_channel(working.address) as channel:
            stub = gateway_pb2_grpc.JobServiceStub(channel)
            waiting_id, running_id = submit(stub), submit(stub)
            worker_event(producer, running_id, stage_started=events_pb2.StageStarted(stage=common_pb2.STAGE_DENOISE))
            failed = until(lambda: (j := state_of(stub, running_id)).state == common_pb2.JOB_STATE_FAILED and j,
                           "the silent denoise job fails")
            assert failed.stage == common_pb2.STAGE_DENOISE
            assert failed.failure_reason.startswith("stalled in denoise: no progress for ")
            assert failed.tenant == "alice"  # the reaper's event keeps the job its tenant's
            assert "MOVA_GATEWAY_DENOISE_DEADLINE_S" in failed.failure_reason
            assert object_store.has_key(cancel_marker_key(running_id))  # a late worker stops instead of finishing
            # Waiting in an inbox is not working: the stage deadline passed for the queued job too, it still waits.
            assert state_of(stub, waiting_id).state == common_pb2.JOB_STATE_QUEUED
    finally:
        working.stop()
    queued = start_gateway(gateway_config(queue_deadline_s=1.0))  # a restarted gateway reaps replayed jobs too
    try:
        with tenant_channel(queued.address) as channel:
            stub = gateway_pb2_grpc.JobServiceStub(channel)
            failed = until(lambda: (j := state_of(stub, waiting_id)).state == common_pb2.JOB_STATE_FAILED and j,
                           "the queued job fails")
            assert failed.failure_reason.startswith("stalled in enhance: ")
            assert "MOVA_GATEWAY_QUEUE_DEADLINE_S" in failed.failure_reason
    finally:
        queued.stop()


def test_broker_that_lost_its_state_health_and_submit_recover(tmp_path, gateway_config, sealer, tenant_channel):
    port = free_port()
    broker = start_tansu(port, tmp_path / "tansu")
    ensure_topics(broker.address)
    gateway = start_gateway(gateway_config(kafka_bootstrap=broker.address))
    producer = mkafka.make_producer(broker.address, sealer)  # the rebuilt client seals too
    try:
        with tenant_channel(gateway.address) as channel:
            stub = gateway_pb2_grpc.JobServiceStub(channel)
            before = submit(stub)
            broker.process.send_signal(signal.SIGKILL)
            broker.process.wait()
            until(lambda: not check_health(gateway.address), "health NOT_SERVING while the broker is down")
            broker = start_tansu(port, tmp_path / "tansu")  # memory storage: it comes back empty
            ensure_topics(broker.address)  # what `mova stack init` does
            until(lambda: check_health(gateway.address), "health SERVING again")
            after = submit(stub)  # the gateway's producer recovers from the lost producer id on its own
            worker_event(producer, after, succeeded=events_pb2.Succeeded())
            until(lambda: state_of(stub, after).state == common_pb2.JOB_STATE_SUCCEEDED,
                  "the event follower reads the new broker's events")
            assert state_of(stub, before).job_id == before  # still known: it was in memory
    finally:
        producer.close()
        gateway.stop()
        broker.stop()


def test_artifacts_expire_by_lifecycle_rule_and_sweep(gateway_config, s3_config):
    settings = gateway_config(s3_bucket="mova-retention-test", artifact_retention_days=3)
    objects = ObjectStore(s3_config.endpoint, s3_config.access_key, s3_config.secret_key, settings.s3_bucket)
    gateway = start_gateway(settings)  # creates the bucket and sets its lifecycle
    gateway.stop()
    assert objects.expiry_days(retention.JOBS_PREFIX) == 3  # the server stored the rule
    objects.put_bytes("jobs/old-job/output/video.mp4", b"video")
    objects.put_bytes("elsewhere/keep.txt", b"not a job's")
    now = datetime.now(timezone.utc)
    assert retention.sweep(objects, 3, now + timedelta(days=2)) == 0  # younger than 3 days: kept
    assert objects.has_key("jobs/old-job/output/video.mp4")
    assert retention.sweep(objects, 3, now + timedelta(days=4)) == 1
    assert not objects.has_key("jobs/old-job/output/video.mp4")
    assert objects.has_key("elsewhere/keep.txt")  # only jobs/ is swept


def test_finished_jobs_beyond_the_bound_leave_memory_and_stay_readable(gateway_config, producer, tenant_channel):
    bounded = start_gateway(gateway_config(max_finished_jobs=1))
    try:
        with tenant_channel(bounded.address) as channel, tenant_channel(bounded.address, "bob") as bob_channel:
            stub = gateway_pb2_grpc.JobServiceStub(channel)
            ids = [submit(stub) for _ in range(3)]
            for job_id in ids:
                worker_event(producer, job_id, succeeded=events_pb2.Succeeded(artifacts=[common_pb2.Artifact(
                    kind="video", ref=common_pb2.ObjectRef(key=f"jobs/{job_id}/output/video.mp4"))]))
            until(lambda: bounded.store.get(ids[0]) is None and bounded.store.get(ids[1]) is None,
                  "the two oldest finished jobs leave memory")
            assert bounded.store.get(ids[2]) is not None  # the newest finished one stays
            archived = state_of(stub, ids[0])  # read from S3
            assert archived.state == common_pb2.JOB_STATE_SUCCEEDED and archived.artifacts[0].url.startswith("http")
            assert archived.tenant == "alice"  # the archive keeps the job's tenant
            events = list(stub.Watch(gateway_pb2.WatchJobRequest(job_id=ids[0]), timeout=10))
            assert [e.WhichOneof("kind") for e in events] == ["queued", "dispatched", "succeeded"]
            assert events[-1].succeeded.artifacts[0].url.startswith("http")
            with pytest.raises(grpc.RpcError) as err:
                stub.Cancel(gateway_pb2.CancelJobRequest(job_id=ids[0]), timeout=10)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.RpcError) as err:
                state_of(stub, "0" * 32)  # never existed
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            bob = gateway_pb2_grpc.JobServiceStub(bob_channel)  # another tenant: the archived job does not exist
            for call in (lambda: state_of(bob, ids[0]),
                         lambda: list(bob.Watch(gateway_pb2.WatchJobRequest(job_id=ids[0]), timeout=10)),
                         lambda: bob.Cancel(gateway_pb2.CancelJobRequest(job_id=ids[0]), timeout=10)):
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        bounded.stop()
    restarted = start_gateway(gateway_config(max_finished_jobs=1))  # replays the topics, then holds the bound
    try:
        until(lambda: restarted.store.get(ids[0]) is None and restarted.store.get(ids[1]) is None,
              "the restarted gateway keeps the bound")
        with tenant_channel(restarted.address) as channel:
            assert state_of(gateway_pb2_grpc.JobServiceStub(channel), ids[1]).state == common_pb2.JOB_STATE_SUCCEEDED
    finally:
        restarted.stop()


def test_an_unsealed_tombstone_does_not_drop_a_job(gateway_config, gateway_kafka, sealer, tenant_channel):
    """Archiving publishes sealed tombstones on mova.job-state; the replay skips one that does not open."""
    first = start_gateway(gateway_config())
    try:
        with tenant_channel(first.address) as channel:
            job_id = submit(gateway_pb2_grpc.JobServiceStub(channel))
    finally:
        first.stop()

    def replayed() -> JobStore:
        store = JobStore()
        replay_job_state(gateway_kafka, store, sealer, timeout_s=30)
        return store

    forger = mkafka.make_producer(gateway_kafka, mkafka.RecordSealer("guessed-secret"))
    try:
        mkafka.publish_tombstone(forger, TOPIC_JOB_STATE, job_id)
    finally:
        forger.close()
    assert replayed().get(job_id) is not None  # the forged tombstone was skipped
    genuine = mkafka.make_producer(gateway_kafka, sealer)
    try:
        mkafka.publish_tombstone(genuine, TOPIC_JOB_STATE, job_id)
    finally:
        genuine.close()
    assert replayed().get(job_id) is None  # a sealed one drops the job (what archive.py relies on)


def test_archived_jobs_are_listed_by_page_and_keep_their_idempotency_keys(gateway_config, producer, tenant_channel):
    archiving = start_gateway(gateway_config(max_finished_jobs=0))  # every finished job leaves memory
    run = uuid.uuid4().hex[:8]

    def submit_keyed(stub, key: str, prompt: str = TINY["prompt"]):
        params = common_pb2.GenerationParams(**{**TINY, "prompt": prompt})
        return stub.Submit(gateway_pb2.SubmitRequest(params=params, idempotency_key=key), timeout=30)

    try:
        with tenant_channel(archiving.address) as channel, tenant_channel(archiving.address, "bob") as bob_channel:
            stub, bob = gateway_pb2_grpc.JobServiceStub(channel), gateway_pb2_grpc.JobServiceStub(bob_channel)
            done = [submit_keyed(stub, f"{run}-{i}").job_id for i in range(3)]
            waiting = submit(stub)  # unfinished: stays in memory, newest of all
            bobs = submit_keyed(bob, f"{run}-0").job_id  # the same key, another tenant: another job
            for job_id in (*done, bobs):
                kind = dict(failed=events_pb2.Failed(reason="x")) if job_id == done[1] else dict(
                    succeeded=events_pb2.Succeeded())
                worker_event(producer, job_id, **kind)
            until(lambda: all(archiving.store.get(j) is None for j in (*done, bobs)), "the finished jobs leave memory")

            def page(client, token="", **kw):
                return client.List(gateway_pb2.ListJobsRequest(page_size=2, page_token=token, **kw), timeout=10)

            first = page(stub)
            second = page(stub, first.next_page_token)
            assert [j.job_id for j in first.jobs] == [waiting, done[2]]  # memory and archive, merged newest first
            assert [j.job_id for j in second.jobs] == [done[1], done[0]]
            assert second.jobs[0].state == common_pb2.JOB_STATE_FAILED and second.jobs[1].artifacts == []
            seen, token = [], ""
            while True:  # every page to the end: no job twice, none of bob's
                listed = page(stub, token)
                seen += [j.job_id for j in listed.jobs]
                token = listed.next_page_token
                if not token:
                    break
            assert len(seen) == len(set(seen)) and bobs not in seen and set(done) <= set(seen)
            assert page(stub, state=common_pb2.JOB_STATE_FAILED).jobs[0].job_id == done[1]
            assert [j.job_id for j in page(bob).jobs][:1] == [bobs]
            # Idempotency keys of archived jobs: the same request returns the job, another one is refused.
            again = submit_keyed(stub, f"{run}-0")
            assert again.existing and again.job_id == done[0] and again.job.state == common_pb2.JOB_STATE_SUCCEEDED
            with pytest.raises(grpc.RpcError) as err:
                submit_keyed(stub, f"{run}-0", prompt="another prompt")
            assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS and done[0] in err.value.details()
            assert submit_keyed(bob, f"{run}-0").job_id == bobs  # bob's key is bob's
    finally:
        archiving.stop()
