"""The HTTP API passes the caller's Authorization header to the gRPC JobService unchanged, and turns the gRPC
answer (including an UNAUTHENTICATED one) into HTTP. A real gRPC server and a real HTTP server on 127.0.0.1; the
JobService behind them is a recording one, since the credentials check belongs to the gRPC server."""

from __future__ import annotations

import grpc
import pytest
import requests

from movakit.api.v1 import common_pb2, gateway_pb2_grpc
from movakit.runtime.grpc_server import serve
from movakit.runtime.http_server import HttpServer
from movakit.runtime.localstack import free_port
from movakit.services.gateway.http_api import create_app, progress


class RecordingJobs(gateway_pb2_grpc.JobServiceServicer):
    """Answers Get for the token "Bearer good" and UNAUTHENTICATED otherwise; records the metadata it saw."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    def Get(self, request, context):  # noqa: N802 (gRPC method name)
        metadata = dict(context.invocation_metadata())
        self.seen.append(metadata)
        if metadata.get("authorization") != "Bearer good":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "authorization: missing or unknown bearer token")
        return common_pb2.Job(job_id=request.job_id, state=common_pb2.JOB_STATE_RUNNING,
                              params=common_pb2.GenerationParams(width=32, height=32, num_frames=5, fps=8),
                              stage=common_pb2.STAGE_DENOISE, step=3, total_steps=4)


@pytest.fixture(scope="module")
def http_over_recording_jobs():
    jobs = RecordingJobs()

    def add(server):
        gateway_pb2_grpc.add_JobServiceServicer_to_server(jobs, server)
        return ["movakit.api.v1.JobService"]

    address = f"127.0.0.1:{free_port()}"
    grpc_server = serve("test-jobs", add, address, handle_signals=False)
    listen = f"127.0.0.1:{free_port()}"
    http = HttpServer(create_app(address, objects=None), listen, name="test")
    http.start()
    yield f"http://{listen}", jobs
    http.stop()
    grpc_server.stop(0)


def test_authorization_reaches_the_grpc_api_unchanged(http_over_recording_jobs):
    base, jobs = http_over_recording_jobs
    ok = requests.get(f"{base}/v1/videos/j1", headers={"Authorization": "Bearer good"}, timeout=10)
    assert ok.status_code == 200, ok.text
    assert (ok.json()["id"], ok.json()["status"], ok.json()["step"]) == ("j1", "in_progress", 3)
    assert jobs.seen[-1]["authorization"] == "Bearer good"

    refused = requests.get(f"{base}/v1/videos/j1", headers={"Authorization": "Bearer bad"}, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "authorization: missing or unknown bearer token"
    assert jobs.seen[-1]["authorization"] == "Bearer bad"

    assert requests.get(f"{base}/v1/videos/j1", timeout=10).status_code == 401
    assert "authorization" not in jobs.seen[-1]


def test_progress_counts_stages_and_denoise_steps():
    def job(state, stage, step=0, total=0):
        return common_pb2.Job(state=state, stage=stage, step=step, total_steps=total)

    running = common_pb2.JOB_STATE_RUNNING
    assert progress(job(common_pb2.JOB_STATE_QUEUED, common_pb2.STAGE_ENHANCE)) == 0
    assert progress(job(running, common_pb2.STAGE_ENCODE)) == 5
    assert progress(job(running, common_pb2.STAGE_DENOISE, 0, 4)) == 10
    assert progress(job(running, common_pb2.STAGE_DENOISE, 2, 4)) == 50
    assert progress(job(running, common_pb2.STAGE_DECODE, 4, 4)) == 90
    assert progress(job(common_pb2.JOB_STATE_SUCCEEDED, common_pb2.STAGE_DECODE, 4, 4)) == 100
