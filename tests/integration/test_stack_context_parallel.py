"""A stack whose denoiser is one replica over 2 ranks (`mova stack up --denoiser-context-parallel 2`: gloo on the
CPU, rank 1 spawned by rank 0), on the tiny random-weight checkpoint and private ports.

A job's latents equal the single-process denoiser's on the job's own encoder outputs within float32 noise (the
context-parallel tests' tolerance); SIGKILL of rank 1 in the middle of a denoise takes the replica down (rank 0
exits with REPLICA_DOWN_EXIT instead of hanging), and once the replica is restarted the redelivered task resumes
from its newest checkpoint and the job succeeds.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import grpc
import pytest

from movakit.api.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from movakit.execution import cfg_batch_for
from movakit.loading import MovaCheckpoint
from movakit.model_rules import ModelRules
from movakit.request import from_proto
from movakit.runtime import stack
from movakit.runtime.auth import with_token
from movakit.runtime.localstack import free_ports
from movakit.runtime.object_store import ObjectStore
from movakit.runtime.parallel_denoise import REPLICA_DOWN_EXIT
from movakit.services.denoiser.servicer import COMPONENTS
from movakit.stages.denoise import denoise, denoise_request
from movakit.stages.encode import EncodeResult

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARAMS = dict(prompt="A bell rings twice.", height=32, width=32, num_frames=5, fps=8.0, num_inference_steps=3,
              guidance_scale=2.0, seed=17)
TOLERANCE = 1e-5  # tests/e2e/test_generate_context_parallel.py
STEPS = 16  # of the job whose rank 1 is killed (enough that the kill lands mid-denoise)


@pytest.fixture(scope="module")
def cp_stack(tmp_path_factory):
    kafka, s3, gateway, http, *stages = free_ports(8)
    cfg = stack.StackConfig(
        state_dir=tmp_path_factory.mktemp("cp-stack"), kafka_port=kafka, s3_port=s3, gateway_port=gateway,
        http_port=http, stage_ports=tuple(stages), trainer=False, metrics_ports=False, denoiser_context_parallel=2,
        extra_env={"MOVA_DENOISER_LATENT_CHECKPOINT_EVERY": "1"})
    addresses = stack.up(cfg, log=lambda *_: None)
    token = (cfg.state_dir / stack.TOKEN_FILE).read_text().strip()
    channel = with_token(grpc.insecure_channel(addresses["gateway"]), token)
    yield cfg, addresses, gateway_pb2_grpc.JobServiceStub(channel)
    channel.close()
    if (cfg.state_dir / stack.STATE_FILE).exists():
        stack.down(cfg.state_dir)


def _submit(stub, **overrides) -> str:
    params = common_pb2.GenerationParams(**{**PARAMS, **overrides})
    return stub.Submit(gateway_pb2.SubmitRequest(params=params), timeout=30).job_id


def _store(cfg, addresses) -> ObjectStore:
    return ObjectStore(addresses["s3"], *stack.read_s3_credentials(cfg.state_dir), cfg.bucket)


def _tensor(store: ObjectStore, key: str, name: str):
    return store.get_tensors(store.tensor_ref_at(key))[name]


def _ranks(cfg) -> list[int]:
    """The pids of the denoiser's ranks, from its newest "replica ranks joined" log line."""
    pids: list[int] = []
    for line in (cfg.state_dir / "logs" / "denoiser.log").read_text(errors="replace").splitlines():
        if '"replica ranks joined"' in line:
            entry = json.loads(line)
            assert entry["ranks"] == 2
            pids = entry["pids"]
    return pids


def test_two_ranks_give_the_single_process_latents(cp_stack):
    cfg, addresses, stub = cp_stack
    rank0, rank1 = _ranks(cfg)
    assert rank0 == next(e.pid for e in stack.read_state(cfg.state_dir)[1] if e.name == "denoiser")
    assert Path(f"/proc/{rank1}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(rank0)  # rank 0's child
    job_id = _submit(stub)
    events = list(stub.Watch(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=150))
    assert events[-1].WhichOneof("kind") == "succeeded", events[-1]
    done = [json.loads(line) for line in (cfg.state_dir / "logs" / "denoiser.log").read_text().splitlines()
            if '"split denoise done"' in line]
    assert [e["rank"] for e in done if e["task"] == job_id] == [1]  # rank 1 ran the job's denoise with rank 0

    # the single-process denoiser on the job's own encoder outputs (as the service runs it on the CPU)
    store = _store(cfg, addresses)
    encoded = EncodeResult(**{name: _tensor(store, f"jobs/{job_id}/encode/{name}.safetensors", name)
                              for name in ("context", "negative_context", "y")})
    request = from_proto(stub.Get(gateway_pb2.GetJobRequest(job_id=job_id)).params)
    checkpoint = MovaCheckpoint(addresses["checkpoint"])
    rules = ModelRules.from_checkpoint(checkpoint.path)
    one = denoise(checkpoint.load(COMPONENTS), denoise_request(request, encoded, rules), cfg_batch=cfg_batch_for("cpu"))
    for kind in ("video", "audio"):
        two = _tensor(store, f"jobs/{job_id}/denoise/{kind}_latents.safetensors", f"{kind}_latents")
        difference = (two - getattr(one, f"{kind}_latents")).abs().max().item()
        assert difference < TOLERANCE, f"{kind}: {difference}"


def test_sigkill_of_rank_1_mid_task_restarts_the_replica_and_the_job_finishes(cp_stack):
    cfg, addresses, stub = cp_stack
    rank0, rank1 = _ranks(cfg)
    job_id = _submit(stub, seed=23, num_inference_steps=STEPS)
    watch = stub.Watch(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=300)
    events = []
    for event in watch:
        events.append(event)
        if event.WhichOneof("kind") == "denoise_step":  # the first step is done: the task is under way
            os.kill(rank1, signal.SIGKILL)
            break
    _, status = os.waitpid(rank0, 0)  # `up` ran here: the denoiser is this process's child
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == REPLICA_DOWN_EXIT
    # rank 0 went down on purpose: either its watchdog saw rank 1 exit, or its collective with rank 1 broke first
    log = (cfg.state_dir / "logs" / "denoiser.log").read_text(errors="replace").splitlines()
    down = [json.loads(line) for line in log if '"replica down"' in line]
    assert any(entry["rank"] == 0 for entry in down), down

    stack.restart(cfg.state_dir, "denoiser")
    assert _ranks(cfg) != [rank0, rank1]  # a new replica, both ranks new
    events += list(watch)
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds[-1] == "succeeded", events[-1]
    denoise_starts = [i for i, e in enumerate(events) if e.WhichOneof("kind") == "stage_started"
                      and e.stage_started.stage == common_pb2.STAGE_DENOISE]
    assert len(denoise_starts) == 2  # the task ran again on the restarted replica
    resumed = [e.denoise_step.step for e in events[denoise_starts[1]:] if e.WhichOneof("kind") == "denoise_step"]
    assert resumed[0] > 1 and resumed[-1] == STEPS  # from a checkpoint the first run wrote, to the end
    assert _store(cfg, addresses).exists(events[-1].succeeded.artifacts[0].ref)
