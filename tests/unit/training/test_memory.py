"""The memory options of a fine-tuning job (movakit.training.memory) on the tiny checkpoint: gradient checkpointing
and offload change where tensors live, never the loss or the gradients; offload keeps the video expert that is not
training in host RAM and the encoders off the device during the steps."""

from __future__ import annotations

import pytest
import torch

from movakit.api.v1 import training_pb2
from movakit.lora.adapter import applied
from movakit.training.loop import TrainConfig, train
from movakit.training.memory import ENCODERS, MemoryPlan, Placement
from movakit.training.objective import HIGH_NOISE, LOW_NOISE, TrainingTimesteps, encode_clip, flow_matching_loss
from movakit.training.data import ClipGeometry, load_clip, validate_dataset
from movakit.training.runner import trainable_adapter

# on CPU the device is host RAM (what is measured there: the same values, and the plan's bookkeeping); the device
# placement itself is checked on CUDA
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                                   reason="needs a CUDA device")])]


@pytest.fixture(scope="module")
def clip(tiny_models, demo_dataset):
    geometry = ClipGeometry(17, 64, 96, 24.0, tiny_models.audio_vae.sample_rate)
    entry = validate_dataset(demo_dataset, geometry)[0]
    return encode_clip(tiny_models, load_clip(entry, geometry), 24.0)


def _adapter(models, device):
    request = training_pb2.FineTuneRequest(name="t", rank=4, alpha=4.0, seed=7, components=[
        "video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"])
    adapter = trainable_adapter(models, request, torch.device(device))
    with torch.no_grad():  # B = 0 would leave every A without a gradient
        generator = torch.Generator().manual_seed(3)
        for _a, b in adapter.layers.values():
            b.copy_(torch.randn(b.shape, generator=generator) * 0.05)
    return adapter


def _loss_and_grads(models, adapter, clip, plan: MemoryPlan, placement: Placement):
    """Losses and gradients of micro-batches 0 and 1 (both experts), and the bytes the forwards kept for backward
    on the device (None when they go to host RAM)."""
    timesteps = TrainingTimesteps(models.scheduler, models.boundary_ratio)
    losses, grads, kept = [], {}, [0]

    def count(tensor: torch.Tensor) -> torch.Tensor:
        kept[0] += tensor.numel() * tensor.element_size()
        return tensor

    with applied(models, adapter):
        for micro_step in (0, 1):
            placement.place(plan.step(timesteps.expert(micro_step)), stream=plan.streams_blocks)
            device = getattr(models, timesteps.expert(micro_step)).device
            with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t), plan.saved_tensors(device):
                out = flow_matching_loss(models, clip, timesteps, micro_step, seed=5,
                                         run_block=plan.block_runner(placement))
            out.loss.backward()
            losses.append(float(out.loss.detach()))
    for key, (a, b) in adapter.layers.items():
        grads[key] = (a.grad.detach().cpu().clone(), b.grad.detach().cpu().clone())
    return losses, grads, None if plan.offload in ("model-and-activations", "blocks") else kept[0]


@pytest.mark.parametrize("device", DEVICES)
def test_checkpointing_and_offload_keep_the_loss_and_the_gradients(tiny_models, clip, device):
    placement = Placement(tiny_models, device)
    plans = [MemoryPlan(False, "none"), MemoryPlan(True, "none"), MemoryPlan(True, "model"),
             MemoryPlan(True, "model-and-activations"), MemoryPlan(True, "blocks")]
    results = []
    for plan in plans:
        results.append(_loss_and_grads(tiny_models, _adapter(tiny_models, device), clip, plan, placement))
    placement.place(())
    reference_losses, reference_grads, kept_without = results[0]
    assert all(float(g.abs().max()) > 0 for pair in reference_grads.values() for g in pair)
    assert results[1][2] < kept_without / 2  # checkpointing keeps the block inputs only
    assert results[3][2] is None and results[4][2] is None
    for plan, (losses, grads, _kept) in zip(plans[1:], results[1:]):
        assert losses == pytest.approx(reference_losses, rel=1e-6, abs=0), plan
        for key, (ga, gb) in grads.items():
            torch.testing.assert_close(ga, reference_grads[key][0], rtol=1e-5, atol=1e-7, msg=f"{plan} {key}")
            torch.testing.assert_close(gb, reference_grads[key][1], rtol=1e-5, atol=1e-7, msg=f"{plan} {key}")


def _two_updates(models, adapter, clip, plan: MemoryPlan, placement: Placement, look) -> None:
    """Two updates of one micro-batch each (one per expert) under `plan`; look(progress) after each."""
    params = [p for pair in adapter.layers.values() for p in pair]
    config = TrainConfig(steps=2, lr=1e-3, warmup_steps=0, grad_accum=1, checkpoint_every=0, memory=plan)
    with applied(models, adapter):
        train(models, params, [clip], config, TrainingTimesteps(models.scheduler, models.boundary_ratio),
              on_progress=look, placement=placement)


def _devices(module) -> set[str]:
    return {t.device.type for t in (*module.parameters(), *module.buffers())}


@pytest.mark.parametrize("device", DEVICES)
def test_offload_keeps_the_idle_expert_and_the_encoders_in_host_ram(tiny_models, clip, device):
    """During each update (one micro-batch) of a model-offload run: the micro-batch's expert, the audio DiT and
    the bridge are on the device, the other expert and the encoders at their host masters (pinned on CUDA)."""
    placement = Placement(tiny_models, device)
    plan = MemoryPlan(True, "model")
    placement.place(plan.encoding())
    assert placement.resident == set(ENCODERS)
    assert all(_devices(getattr(tiny_models, name)) == {torch.device(device).type} for name in ENCODERS)
    assert _devices(tiny_models.video_dit) == {"cpu"}

    adapter = _adapter(tiny_models, device)
    seen = []

    def look(progress) -> None:
        active, idle = (tiny_models.video_dit, tiny_models.video_dit_2) if progress.step % 2 == 1 else \
            (tiny_models.video_dit_2, tiny_models.video_dit)
        seen.append((set(placement.resident), _devices(active), _devices(idle),
                     {n for n in ENCODERS if _devices(getattr(tiny_models, n)) != {"cpu"}}))
        if device == "cuda":
            assert all(t.is_pinned() for t in idle.parameters())

    _two_updates(tiny_models, adapter, clip, plan, placement, look)
    placement.place(())
    kind = torch.device(device).type
    assert seen == [({HIGH_NOISE, "audio_dit", "bridge"}, {kind}, {"cpu"}, set()),
                    ({LOW_NOISE, "audio_dit", "bridge"}, {kind}, {"cpu"}, set())]
    assert placement.resident == set()


def test_a_request_checkpoints_by_default_and_names_a_bad_offload():
    from movakit.request import InvalidArgument
    from movakit.training import spec

    request = spec.resolved(training_pb2.FineTuneRequest(name="n", dataset="datasets/t/d"))
    assert MemoryPlan.of(request) == MemoryPlan(gradient_checkpointing=True, offload="none")
    request = spec.resolved(training_pb2.FineTuneRequest(name="n", dataset="datasets/t/d", gradient_checkpointing=False,
                                                         offload=training_pb2.TRAINING_OFFLOAD_MODEL_AND_ACTIVATIONS))
    assert MemoryPlan.of(request) == MemoryPlan(gradient_checkpointing=False, offload="model-and-activations")
    spec.validate(request)
    with pytest.raises(InvalidArgument) as info:
        spec.validate(spec.resolved(training_pb2.FineTuneRequest(name="n", dataset="datasets/t/d", offload=7)))
    assert info.value.field == "offload"


@pytest.mark.parametrize("device", DEVICES)
def test_block_streaming_holds_one_call_of_block_weights_at_a_time(tiny_models, clip, device):
    """offload "blocks": between calls every DiT and bridge block holds an empty placeholder; each streamed call
    copies in the blocks it runs (one DiT block, or one layer's two bridge blocks) and drops them after, once in
    the forward and once for the backward's recompute; outside a streamed call a block refuses to run."""
    placement = Placement(tiny_models, device)
    plan = MemoryPlan(True, "blocks")
    adapter = _adapter(tiny_models, device)
    units = [unit for name in ("video_dit", "video_dit_2", "audio_dit", "bridge")
             for unit in placement.units(name)]
    parked = []

    def look(progress) -> None:  # after update k (micro-batch k-1): its expert streamed, the other at its master
        streamed = {unit.name.split(".")[0] for unit in placement.streamer.units}
        idle = LOW_NOISE if progress.step % 2 == 1 else HIGH_NOISE
        parked.append((streamed, all(t.numel() == 0 for unit in placement.streamer.units for t, _m in unit.pairs),
                       all(t.data_ptr() == m.data_ptr() for unit in placement.units(idle) for t, m in unit.pairs)))

    _two_updates(tiny_models, adapter, clip, plan, placement, look)
    assert parked == [({HIGH_NOISE, "audio_dit", "bridge"}, True, True),
                      ({LOW_NOISE, "audio_dit", "bridge"}, True, True)]
    video, audio = tiny_models.video_dit.config.num_layers, tiny_models.audio_dit.config.num_layers
    shared = min(video, audio)
    # per micro-batch: text keys and values + block per DiT block, two bridge blocks per shared layer; twice
    assert placement.streamer.stats.uploads == 2 * 2 * (2 * video + 2 * audio + 2 * shared)
    assert placement.streamer.stats.peak_units == 2
    biggest = max(unit.nbytes for unit in units)
    assert 0 < placement.streamer.stats.peak_bytes <= 2 * biggest
    with pytest.raises(RuntimeError, match=r"video_dit_2\.blocks\.0 ran outside a streamed call"):
        block = tiny_models.video_dit_2.blocks[0]
        block(torch.zeros(1, 4, tiny_models.video_dit_2.dim), None, None, None)
    placement.place(())
    assert all(t.numel() > 0 and t.data_ptr() == master.data_ptr() for unit in units for t, master in unit.pairs)


def test_offload_blocks_needs_gradient_checkpointing():
    from movakit.request import InvalidArgument
    from movakit.training import spec

    with pytest.raises(ValueError, match="gradient_checkpointing"):
        MemoryPlan(False, "blocks")
    request = spec.resolved(training_pb2.FineTuneRequest(name="n", dataset="datasets/t/d", gradient_checkpointing=False,
                                                         offload=training_pb2.TRAINING_OFFLOAD_BLOCKS))
    with pytest.raises(InvalidArgument) as info:
        spec.validate(request)
    assert info.value.field == "gradient_checkpointing"


def test_float8_master_is_the_official_fp8_round_trip():
    """scale = absmax / 448 in float32; the matrix divided by it, clamped to ±448, rounded to float8_e4m3fn;
    the device copy (float8 -> float32) * scale, cast to the model dtype. e4m3 keeps 3 mantissa bits: every
    element within 1/16 of its magnitude (or of the smallest normal step, for the tiny ones)."""
    from movakit.training.streaming import Float8Master

    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(64, 48, generator=generator) * torch.logspace(-3, 1, 48)).to(torch.bfloat16)
    master = Float8Master.of(weight)
    assert master.data.dtype == torch.float8_e4m3fn and master.dtype == torch.bfloat16
    scale = torch.tensor(float(weight.float().abs().max()) / 448.0, dtype=torch.float32)
    assert master.scale == float(scale)
    expected = ((weight.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn).float() * scale).to(torch.bfloat16)
    copy = master.to(torch.device("cpu"))
    assert copy.dtype == torch.bfloat16 and torch.equal(copy, expected)
    assert float((copy.float() - weight.float()).abs().max()) > 0  # it is a rounding, not the weight
    bound = weight.float().abs() / 16 + float(scale) * 2.0 ** -6
    assert bool(((copy.float() - weight.float()).abs() <= bound).all())
    zero = Float8Master.of(torch.zeros(3, 3))
    assert zero.scale == 1.0 and torch.equal(zero.to(torch.device("cpu")), torch.zeros(3, 3))


def test_float8_host_weights_keep_block_matrices_in_float8_and_train(tiny_models, clip):
    """host_weights "float8": every DiT and bridge block matrix is held as float8 (a quarter of its float32 bytes),
    1-D tensors and everything outside the blocks keep the model dtype, a streamed step sees the dequantised
    weights and trains (finite loss near the full-precision one, gradients on every LoRA tensor)."""
    import copy

    from movakit.training.streaming import Float8Master

    models = copy.deepcopy(tiny_models)  # float8 masters release the originals for good
    original = {name: p.detach().clone() for name, p in models.video_dit.named_parameters()}
    placement = Placement(models, "cpu", host_weights="float8")
    units = [u for name in ("video_dit", "video_dit_2", "audio_dit", "bridge") for u in placement.units(name)]
    masters = [m for unit in units for _t, m in unit.pairs]
    assert all(isinstance(m, Float8Master) == (m.ndim >= 2 if isinstance(m, torch.Tensor) else True)
               for m in masters)
    float8_bytes = sum(m.data.numel() for m in masters if isinstance(m, Float8Master))
    assert float8_bytes * 4 == sum(unit.nbytes for unit in units) - sum(
        m.numel() * 4 for m in masters if isinstance(m, torch.Tensor))
    assert all(p.numel() == 0 for unit in placement.units("video_dit") for p, m in unit.pairs
               if isinstance(m, Float8Master))  # the float32 originals are gone

    placement.place(MemoryPlan(True, "none").step(HIGH_NOISE))  # whole: the device copies are dequantised
    for name, p in models.video_dit.named_parameters():
        if name.startswith("blocks.") and p.ndim >= 2:
            assert not torch.equal(p, original[name]), name
            assert bool(((p - original[name]).abs() <= original[name].abs() / 16 + 1e-4).all()), name
        else:
            assert torch.equal(p, original[name]), name

    plan = MemoryPlan(True, "blocks")
    losses, grads, _kept = _loss_and_grads(models, _adapter(models, "cpu"), clip, plan, placement)
    reference, _g, _k = _loss_and_grads(tiny_models, _adapter(tiny_models, "cpu"), clip, MemoryPlan(True, "none"),
                                        Placement(tiny_models, "cpu"))
    assert losses == pytest.approx(reference, rel=0.05) and losses != reference
    assert all(float(g.abs().max()) > 0 for pair in grads.values() for g in pair)
