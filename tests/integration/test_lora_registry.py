"""LoRA adapters in the platform, on real SeaweedFS (and a real gateway on Tansu): the registry and its gRPC
service with `mova adapters`, Submit refusing an unknown adapter, and the denoiser applying each task's adapter to
that task only, in any order, through its bounded cache and across an interrupted-and-resumed task. Adapters belong
to a tenant: the tests upload as "alice", and "bob" can neither see nor use hers."""

from __future__ import annotations

import uuid

import grpc
import pytest
import torch
from lora_helpers import random_adapter

from movakit.api.v1 import adapters_pb2, adapters_pb2_grpc, events_pb2, gateway_pb2, gateway_pb2_grpc
from movakit.cli import main
from movakit.loading import MovaCheckpoint
from movakit.loading.demo import default_demo_checkpoint
from movakit.lora.cache import AdapterCache
from movakit.lora.registry import AdapterRegistry
from movakit.lora.store import encode, read_folder, write_folder
from movakit.lora.targets import identity_of
from movakit.model_rules import ModelRules
from movakit.runtime.tasks import JobCancelled, TaskContext
from movakit.services.denoiser.servicer import COMPONENTS, DenoiseHandler

pytestmark = pytest.mark.integration

PARAMS = dict(prompt="p", negative_prompt="n", height=32, width=32, num_frames=5, fps=8.0, num_inference_steps=3,
              guidance_scale=2.0, seed=4)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny forwards on a shared 2-core machine: intra-op threads only add contention (20x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    return MovaCheckpoint(default_demo_checkpoint()).load(COMPONENTS)


@pytest.fixture(scope="module")
def names(s3_config, models):
    """Two adapters in tenant alice's registry (test bucket): (accelerate targets, attention targets)."""
    registry = AdapterRegistry(s3_config.store())
    out = (f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}")
    for name, kind, rank, seed in ((out[0], "accelerate", 4, 1), (out[1], "attention", 2, 2)):
        registry.put("alice", name, *encode(random_adapter(kind, rank, seed)))
    return out


def _handler(models, store, capacity: int, every: int = 0) -> DenoiseHandler:
    return DenoiseHandler(models, store, rules=ModelRules.from_checkpoint(default_demo_checkpoint()),
                          checkpoint_every=every, cfg_batch=False,
                          adapters=AdapterCache(models, AdapterRegistry(store), capacity))


def _task(store, lora: str, scale: float = 1.0, tenant: str = "alice") -> events_pb2.DenoiseTask:
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    g = torch.Generator().manual_seed(0)  # every task has the same inputs: only the adapter differs
    base = f"jobs/{job_id}/encode"
    task = events_pb2.DenoiseTask(
        job_id=job_id, params=PARAMS, tenant=tenant,
        context=store.put_tensors(f"{base}/context.safetensors", {"context": torch.randn(1, 512, 32, generator=g)}),
        negative_context=store.put_tensors(f"{base}/negative_context.safetensors",
                                           {"negative_context": torch.randn(1, 512, 32, generator=g)}),
        y=store.put_tensors(f"{base}/y.safetensors", {"y": torch.randn(1, 20, 2, 4, 4, generator=g)}))
    if lora:
        task.params.lora.name = lora
        task.params.lora.scale = scale
    return task


def _ctx(job_id: str, cancel_after: int | None = None) -> TaskContext:
    steps = []

    def emit(event):
        if event.WhichOneof("kind") == "denoise_step":
            steps.append(event.denoise_step.step)

    return TaskContext(job_id=job_id, emit=emit, source="test",
                       is_cancelled=lambda _job: cancel_after is not None and len(steps) >= cancel_after)


def _video(handler, store, task, cancel_after=None) -> torch.Tensor:
    out = handler.run(task, _ctx(task.job_id, cancel_after))
    return store.get_tensors(out.video_latents)["video_latents"]


def test_each_task_gets_its_own_adapter_in_any_order_and_after_a_resume(object_store, models, names):
    a, b = names
    alone = {lora: _video(_handler(models, object_store, 2), object_store, _task(object_store, lora))
             for lora in (a, b, "")}
    assert not torch.equal(alone[a], alone[""]) and not torch.equal(alone[b], alone[""])
    assert not torch.equal(alone[a], alone[b])
    handler = _handler(models, object_store, capacity=1, every=1)  # a cache of one: every switch evicts
    for lora in (a, "", b, b, a):
        assert torch.equal(_video(handler, object_store, _task(object_store, lora)), alone[lora]), lora
    assert handler.adapters.loads == 3  # a, b, a: the second b is a hit
    # a task with adapter b stops after step 1 (checkpoint written); a base task and an adapter-a task run;
    # then b resumes from its checkpoint with its own adapter again
    interrupted = _task(object_store, b)
    with pytest.raises(JobCancelled):
        _video(handler, object_store, interrupted, cancel_after=1)
    assert handler.newest_valid_checkpoint(interrupted, PARAMS["num_inference_steps"])[0] == 1
    assert torch.equal(_video(handler, object_store, _task(object_store, "")), alone[""])
    assert torch.equal(_video(handler, object_store, _task(object_store, a)), alone[a])
    assert torch.equal(_video(handler, object_store, interrupted), alone[b])
    assert not any(m._forward_hooks for m in models.video_dit.modules())


def test_a_task_of_another_tenant_does_not_find_the_adapter(object_store, models, names):
    handler = _handler(models, object_store, 2)
    with pytest.raises(ValueError, match=rf"params\.lora\.name: no adapter '{names[0]}'"):
        _video(handler, object_store, _task(object_store, names[0], tenant="bob"))
    with pytest.raises(ValueError, match=r"^tenant: "):
        _video(handler, object_store, _task(object_store, names[0], tenant=""))
    assert handler.adapters.loads == 0 and not any(m._forward_hooks for m in models.video_dit.modules())


def test_an_adapter_for_another_model_fails_the_task_naming_the_field(object_store, models):
    bad = random_adapter("attention", 2, 3)
    name = f"other-{uuid.uuid4().hex[:6]}"
    from dataclasses import replace

    AdapterRegistry(object_store).put("alice", name, *encode(replace(bad, base="sha256:" + "1" * 64)))
    with pytest.raises(ValueError, match=r"params\.lora\.name: base: the adapter was made for base model"):
        _video(_handler(models, object_store, 2), object_store, _task(object_store, name))


def test_adapters_cli_and_submit(gateway, models, tmp_path, capsys, monkeypatch, tenant_token, tenant_channel):
    monkeypatch.setenv("MOVA_TOKEN", tenant_token("alice"))  # `mova adapters` sends it, as the job commands do
    folder = write_folder(random_adapter("attention", 2, 5), tmp_path / "mine")
    name = f"style-{uuid.uuid4().hex[:6]}"
    at = ["--gateway", gateway.address]
    assert main(["adapters", "upload", str(folder), "--name", name, *at]) == 0
    assert f"{name}: rank 2, alpha 2" in capsys.readouterr().out
    assert main(["adapters", "upload", str(folder), "--name", name, *at]) == 1  # taken, without --replace
    assert "ALREADY_EXISTS" in capsys.readouterr().err
    assert main(["adapters", "upload", str(folder), "--name", "../up", *at]) == 2
    assert "INVALID_ARGUMENT: name: '../up' must be" in capsys.readouterr().err
    assert main(["adapters", "list", *at]) == 0
    assert name in capsys.readouterr().out
    assert main(["adapters", "get", name, "--output", str(tmp_path / "back"), *at]) == 0
    back, sent = read_folder(tmp_path / "back"), read_folder(folder)
    key = "video_dit.blocks.0.self_attn.q"
    assert back.base == identity_of(models) and torch.equal(back.layers[key][1], sent.layers[key][1])
    assert main(["adapters", "export", name, "--format", "official", "--output", str(tmp_path / "off"), *at]) == 0
    assert (tmp_path / "off" / "lora_weights.pt").is_file() and (tmp_path / "off" / "lora_config.pt").is_file()

    stub = gateway_pb2_grpc.JobServiceStub(tenant_channel(gateway.address))
    params = dict(prompt="a dog barks", height=32, width=32, num_frames=5, num_inference_steps=2)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Submit(gateway_pb2.SubmitRequest(params={**params, "lora": {"name": "no-such-adapter"}}), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "params.lora.name" in refused.value.details() and "no-such-adapter" in refused.value.details()
    job = stub.Submit(gateway_pb2.SubmitRequest(params={**params, "lora": {"name": name, "scale": 0.5}}), timeout=30)
    assert job.job.params.lora.name == name and job.job.params.lora.scale == 0.5

    # bob can neither see nor use alice's adapter; without a token nothing is answered
    bob = adapters_pb2_grpc.AdapterServiceStub(tenant_channel(gateway.address, "bob"))
    assert name not in [a.name for a in bob.ListAdapters(adapters_pb2.ListAdaptersRequest(), timeout=30).adapters]
    for call, request in ((bob.GetAdapter, adapters_pb2.GetAdapterRequest(name=name)),
                          (bob.DeleteAdapter, adapters_pb2.DeleteAdapterRequest(name=name))):
        with pytest.raises(grpc.RpcError) as hidden:
            call(request, timeout=30)
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as refused:
        gateway_pb2_grpc.JobServiceStub(tenant_channel(gateway.address, "bob")).Submit(
            gateway_pb2.SubmitRequest(params={**params, "lora": {"name": name}}), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "params.lora.name" in refused.value.details()
    anonymous = adapters_pb2_grpc.AdapterServiceStub(grpc.insecure_channel(gateway.address))
    with pytest.raises(grpc.RpcError) as unauthenticated:
        anonymous.ListAdapters(adapters_pb2.ListAdaptersRequest(), timeout=30)
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED

    assert main(["adapters", "delete", name, *at]) == 0
    assert main(["adapters", "get", name, *at]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
