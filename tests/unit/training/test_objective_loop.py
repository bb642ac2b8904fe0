"""The fine-tuning objective and loop on the tiny checkpoint: timesteps and experts as the official recipe, the
learning-rate schedule, a falling loss, and a resumed run identical to an uninterrupted one."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from movakit.api.v1 import training_pb2
from movakit.lora.adapter import applied
from movakit.training.data import ClipGeometry, load_clip, validate_dataset
from movakit.training.loop import TrainConfig, TrainState, lr_at, train
from movakit.training.objective import HIGH_NOISE, LOW_NOISE, TrainingTimesteps, encode_clip, flow_matching_loss
from movakit.training.runner import trainable_adapter


@pytest.fixture(scope="module")
def clips(tiny_models, demo_dataset):
    geometry = ClipGeometry(17, 64, 96, 24.0, tiny_models.audio_vae.sample_rate)
    return [encode_clip(tiny_models, load_clip(e, geometry), 24.0) for e in validate_dataset(demo_dataset, geometry)]


@pytest.fixture(scope="module")
def timesteps(tiny_models):
    return TrainingTimesteps(tiny_models.scheduler, tiny_models.boundary_ratio)


def test_grid_boundary_and_experts_follow_the_official_recipe(timesteps):
    grid = timesteps.grid
    assert len(grid) == 1000 and float(grid[0]) == 1000.0 and abs(float(grid[-1]) - 19.6415) < 1e-3
    assert timesteps.boundary_index == 359  # count(t >= 900) on the release's shift-5 grid
    assert float(grid[358]) >= 900.0 > float(grid[359])
    for micro in range(40):
        index, t = timesteps.draw(micro, torch.Generator().manual_seed(micro))
        if micro % 2 == 0:
            assert timesteps.expert(micro) == HIGH_NOISE and 0 <= index < 359 and float(t) >= 900
        else:
            assert timesteps.expert(micro) == LOW_NOISE and 359 <= index < 1000 and float(t) < 900


def test_learning_rate_warms_up_then_decays_to_min_lr():
    config = TrainConfig(steps=100, lr=1e-3, min_lr=1e-5, warmup_steps=10)
    assert lr_at(config, 0) == pytest.approx(1e-5)
    assert lr_at(config, 10) == pytest.approx(1e-3)
    assert lr_at(config, 55) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(config, 100) == pytest.approx(1e-5)
    assert all(lr_at(config, s) >= lr_at(config, s + 1) for s in range(10, 100))


def _request(**fields) -> training_pb2.FineTuneRequest:
    values = dict(name="t", rank=4, alpha=4.0, seed=7, components=["video_dit", "video_dit_2", "audio_dit",
                                                                    "dual_tower_bridge"])
    values.update(fields)
    return training_pb2.FineTuneRequest(**values)


def _eval_loss(models, clips, timesteps, adapter) -> float:
    with torch.no_grad(), applied(models, adapter):
        return sum(float(flow_matching_loss(models, clips[m % len(clips)], timesteps, m, seed=999).loss)
                   for m in range(16)) / 16


def test_training_the_adapter_lowers_the_loss_and_touches_no_base_weight(tiny_models, clips, timesteps):
    for module in (tiny_models.video_dit, tiny_models.video_dit_2, tiny_models.audio_dit, tiny_models.bridge):
        module.requires_grad_(False)
    base = {k: v.clone() for k, v in tiny_models.video_dit.state_dict().items()}
    adapter = trainable_adapter(tiny_models, _request(), torch.device("cpu"))
    before = _eval_loss(tiny_models, clips, timesteps, adapter)
    params = [p for pair in adapter.layers.values() for p in pair]
    with applied(tiny_models, adapter):
        state = train(tiny_models, params, clips, TrainConfig(steps=30, lr=3e-3, warmup_steps=2, grad_accum=2,
                                                              checkpoint_every=0), timesteps)
    after = _eval_loss(tiny_models, clips, timesteps, adapter)
    assert state.step == 30 and state.micro_step == 60
    assert after < before * 0.97, (before, after)
    assert all(torch.equal(v, tiny_models.video_dit.state_dict()[k]) for k, v in base.items())
    assert any(float(b.detach().abs().max()) > 0 for _a, b in adapter.layers.values())


def test_a_resumed_run_equals_an_uninterrupted_one(tiny_models, clips, timesteps):
    config = TrainConfig(steps=4, lr=1e-3, warmup_steps=1, grad_accum=2, checkpoint_every=2)
    straight = trainable_adapter(tiny_models, _request(), torch.device("cpu"))
    with applied(tiny_models, straight):
        train(tiny_models, [p for pair in straight.layers.values() for p in pair], clips, config, timesteps)

    resumed = trainable_adapter(tiny_models, _request(), torch.device("cpu"))
    saved = {}

    def keep(state: TrainState) -> None:  # a checkpoint: the adapter's values and the state, through bytes
        if state.step == 2:
            buffer = io.BytesIO()
            torch.save(state.to_dict(), buffer)
            saved["state"] = buffer.getvalue()
            saved["adapter"] = {k: (a.detach().clone(), b.detach().clone()) for k, (a, b) in resumed.layers.items()}

    stops = iter([False, True])  # "killed" right after the checkpoint at step 2
    with applied(tiny_models, resumed):
        train(tiny_models, [p for pair in resumed.layers.values() for p in pair], clips, config, timesteps,
              on_checkpoint=keep, should_stop=lambda: next(stops))
    restarted = trainable_adapter(tiny_models, _request(), torch.device("cpu"))
    with torch.no_grad():
        for key, (a, b) in restarted.layers.items():
            a.copy_(saved["adapter"][key][0])
            b.copy_(saved["adapter"][key][1])
    state = TrainState.from_dict(torch.load(io.BytesIO(saved["state"]), weights_only=True))
    assert state.step == 2
    with applied(tiny_models, restarted):
        train(tiny_models, [p for pair in restarted.layers.values() for p in pair], clips, config, timesteps,
              state=copy.deepcopy(state))
    for key, (a, b) in straight.layers.items():
        assert torch.equal(a, restarted.layers[key][0]) and torch.equal(b, restarted.layers[key][1]), key
