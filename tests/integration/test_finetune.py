"""A fine-tuning job on the real servers: `mova finetune` uploads a dataset and queues the job on the gateway, a
real trainer service (Celery on a real redis-server) trains it, survives a SIGKILL by resuming from its newest
checkpoint in SeaweedFS, and registers the adapter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import pytest

from movakit.api.v1 import common_pb2, training_pb2, training_pb2_grpc
from movakit.cli import main as mova
from movakit.lora.registry import AdapterRegistry
from movakit.runtime.localstack import free_port
from movakit.training.demo_data import write_demo_dataset
from tests.integration.conftest import TENANT_TOKENS, gateway_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _start_trainer(s3_config, celery_broker, log_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MOVA_TRAINER_LISTEN": f"127.0.0.1:{free_port()}",
           "MOVA_TRAINER_S3_ENDPOINT": s3_config.endpoint, "MOVA_TRAINER_S3_ACCESS_KEY": s3_config.access_key,
           "MOVA_TRAINER_S3_SECRET_KEY": s3_config.secret_key, "MOVA_TRAINER_S3_BUCKET": s3_config.bucket,
           "MOVA_TRAINER_CELERY_BROKER": celery_broker, "MOVA_TRAINER_VISIBILITY_TIMEOUT_S": "4",
           "MOVA_TRAINER_LEASE_S": "3"}
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "movakit.services.trainer.main"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait(stub, job_id, until, timeout_s=240.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = stub.Get(training_pb2.FineTuneJobRequest(job_id=job_id), timeout=10)
        if until(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not get there in {timeout_s} s: {job}")


@pytest.fixture()
def finetune_gateway(gateway_kafka, s3_config, tokens_file, celery_broker):
    from movakit.services.gateway.main import start_gateway

    running = start_gateway(gateway_settings(gateway_kafka, s3_config, tokens_file, celery_broker=celery_broker))
    yield running
    running.stop()


def test_finetune_job_survives_a_killed_trainer_and_registers_its_adapter(finetune_gateway, s3_config,
                                                                         celery_broker, tenant_channel, tmp_path,
                                                                         capsys, monkeypatch):
    monkeypatch.setenv("MOVA_TOKEN", TENANT_TOKENS["alice"])
    data = write_demo_dataset(tmp_path / "data", clips=2)
    name = f"ft-{os.getpid()}-{time.time_ns() % 10**6}"
    assert mova(["finetune", "--gateway", finetune_gateway.address, "--data", str(data), "--name", name,
                 "--rank", "4", "--steps", "8", "--grad-accum", "1", "--lr", "0.003", "--checkpoint-every", "2",
                 "--offload", "model", "--detach"]) == 0
    job_id = capsys.readouterr().out.strip().splitlines()[-1]
    channel = tenant_channel(finetune_gateway.address)
    stub = training_pb2_grpc.FineTuneServiceStub(channel)

    trainer = _start_trainer(s3_config, celery_broker, tmp_path / "trainer-1.log")
    try:
        job = _wait(stub, job_id, lambda j: j.step >= 3)  # checkpoint at step 2 is written
        os.killpg(trainer.pid, signal.SIGKILL)
        trainer.wait(10)
        killed_at = job.step
        trainer = _start_trainer(s3_config, celery_broker, tmp_path / "trainer-2.log")
        job = _wait(stub, job_id, lambda j: j.state in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED))
    finally:
        os.killpg(trainer.pid, signal.SIGKILL)
        trainer.wait(10)
        channel.close()
    logs = "".join(p.read_text(errors="replace")[-3000:] for p in tmp_path.glob("trainer-*.log"))
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, (job, logs)
    assert 2 <= job.resumed_from_step <= killed_at  # resumed from a checkpoint, not from step 0
    assert job.step == job.total_steps == 8 and job.adapter == name
    assert job.request.gradient_checkpointing and job.request.offload == training_pb2.TRAINING_OFFLOAD_MODEL
    adapter = AdapterRegistry(s3_config.store()).load("alice", name)  # the tenant that submitted the job
    assert adapter.rank == 4 and adapter.targets == "accelerate"
    assert any(float(b.abs().max()) > 0 for _a, b in adapter.layers.values())  # trained, not the zero init

    # another tenant sees nothing of it and cannot train on alice's upload; no token is UNAUTHENTICATED
    bob = training_pb2_grpc.FineTuneServiceStub(tenant_channel(finetune_gateway.address, "bob"))
    with pytest.raises(grpc.RpcError) as info:
        bob.Get(training_pb2.FineTuneJobRequest(job_id=job_id), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert not bob.List(training_pb2.ListFineTuneJobsRequest(), timeout=10).jobs
    with pytest.raises(grpc.RpcError) as info:
        bob.Submit(training_pb2.FineTuneRequest(name="b", dataset=job.request.dataset), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not one of this tenant's" in info.value.details()
    anonymous = training_pb2_grpc.FineTuneServiceStub(grpc.insecure_channel(finetune_gateway.address))
    with pytest.raises(grpc.RpcError) as info:
        anonymous.List(training_pb2.ListFineTuneJobsRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # the name is taken now; an unknown dataset prefix and a bad rank are refused naming the field
    stub2 = training_pb2_grpc.FineTuneServiceStub(tenant_channel(finetune_gateway.address))
    for request, code, field in (
        (training_pb2.FineTuneRequest(name=name, dataset=job.request.dataset), grpc.StatusCode.ALREADY_EXISTS, "name"),
        (training_pb2.FineTuneRequest(name="other", dataset="datasets/alice/none"), grpc.StatusCode.INVALID_ARGUMENT,
         "dataset"),
        (training_pb2.FineTuneRequest(name="other", dataset=job.request.dataset, rank=999),
         grpc.StatusCode.INVALID_ARGUMENT, "rank"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub2.Submit(request, timeout=10)
        assert info.value.code() == code and info.value.details().startswith(field + ":")
