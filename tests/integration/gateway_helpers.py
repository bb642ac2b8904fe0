"""What the gateway tests that play the stage workers share: a tiny request, worker events, polling, Get."""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp

from movakit.api.v1 import common_pb2, events_pb2, gateway_pb2
from movakit.runtime import kafka as mkafka
from movakit.runtime.topics import TOPIC_EVENTS

TINY = dict(prompt="a red ball bounces", height=32, width=48, num_frames=5, fps=24, num_inference_steps=2)


def worker_event(producer, job_id: str, **kind) -> None:
    """Publish the event a stage worker would (e.g. `succeeded=events_pb2.Succeeded()`) for `job_id`."""
    ts = Timestamp()
    ts.GetCurrentTime()
    mkafka.publish(producer, TOPIC_EVENTS, job_id, events_pb2.JobEvent(job_id=job_id, time=ts, source="test", **kind))


def until(condition, what: str, attempts: int = 600):
    """Polls `condition` every 0.1 s until it returns something truthy; returns that."""
    for _ in range(attempts):
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def state_of(stub, job_id: str) -> common_pb2.Job:
    return stub.Get(gateway_pb2.GetJobRequest(job_id=job_id), timeout=10)
