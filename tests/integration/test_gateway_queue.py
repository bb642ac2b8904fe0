"""The gateway's dispatch queue on real servers (Tansu, SeaweedFS): with one slot, a high-priority job starts before
the low-priority jobs queued ahead of it, jobs of one priority start in submission order, a job cancelled while it
waits never starts, and the jobs still waiting survive a gateway restart. Stage workers are played by the test: it
finishes the dispatched job, which frees the slot. The module's gateways use a broker of their own."""

from __future__ import annotations

import pytest

from movakit.api.v1 import common_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc
from movakit.runtime import kafka as mkafka
from movakit.runtime.topics import TOPIC_ENHANCE
from movakit.services.gateway.main import start_gateway
from tests.integration.gateway_helpers import TINY, state_of, until, worker_event

pytestmark = pytest.mark.integration


def test_one_slot_dispatches_by_priority_then_age_across_a_restart(gateway_kafka, gateway_config, producer, sealer,
                                                                    tenant_channel):
    settings = gateway_config(dispatch_slots=1)
    gateway = start_gateway(settings)

    def submit(stub, priority: int) -> str:
        params = common_pb2.GenerationParams(**TINY, priority=priority)
        return stub.Submit(gateway_pb2.SubmitRequest(params=params), timeout=30).job_id

    def dispatched(stub, job_ids) -> set[str]:
        return {j for j in job_ids if state_of(stub, j).HasField("dispatched_at")}

    def finish_and_expect_next(stub, running: str, expected: str, waiting: list[str]) -> None:
        """Finishes `running` as a worker would; then exactly `expected`, of the jobs in `waiting`, starts."""
        assert dispatched(stub, waiting) == set()
        worker_event(producer, running, succeeded=events_pb2.Succeeded())
        until(lambda: dispatched(stub, waiting), f"a waiting job starts after {running} finished")
        assert dispatched(stub, waiting) == {expected}
        waiting.remove(expected)

    try:
        with tenant_channel(gateway.address) as channel:
            stub = gateway_pb2_grpc.JobServiceStub(channel)
            first = submit(stub, 0)  # takes the only slot at once
            assert state_of(stub, first).HasField("dispatched_at")
            low = [submit(stub, 0) for _ in range(3)]
            cancelled = submit(stub, 5)
            high = submit(stub, 9)
            stub.Cancel(gateway_pb2.CancelJobRequest(job_id=cancelled), timeout=10)
            until(lambda: state_of(stub, cancelled).state == common_pb2.JOB_STATE_CANCELLED,
                  "a job cancelled while it waits ends without a worker")
            assert state_of(stub, high).state == common_pb2.JOB_STATE_QUEUED
            waiting = [*low, high]
            finish_and_expect_next(stub, first, high, waiting)  # submitted last, but it outranks the others
            finish_and_expect_next(stub, high, low[0], waiting)  # then the oldest of one priority
    finally:
        gateway.stop()

    restarted = start_gateway(settings)  # low[1] and low[2] still wait: the queue is rebuilt from Kafka
    try:
        with tenant_channel(restarted.address) as channel:
            stub = gateway_pb2_grpc.JobServiceStub(channel)
            assert dispatched(stub, waiting) == set()  # low[0] holds the slot, also after the restart
            finish_and_expect_next(stub, low[0], low[1], waiting)
            finish_and_expect_next(stub, low[1], low[2], waiting)
            worker_event(producer, low[2], succeeded=events_pb2.Succeeded())
            until(lambda: state_of(stub, low[2]).state == common_pb2.JOB_STATE_SUCCEEDED, "the last job finishes")
    finally:
        restarted.stop()
    tasks = [key for key, _, _ in mkafka.read_to_end(gateway_kafka, TOPIC_ENHANCE, events_pb2.EnhanceTask, sealer)]
    assert sorted(tasks) == sorted([first, high, *low])  # one task per job; none for the cancelled one
