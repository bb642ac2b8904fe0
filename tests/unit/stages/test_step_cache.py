"""Step caching (movakit/models/step_cache.py) in the sampler over the real tiny dual-tower model: off is the plain
sampler, on runs the blocks less often; and the request field that turns it on."""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest
import torch

from movakit import request as contract
from movakit.cli import request_options
from movakit.models.step_cache import StepCache
from movakit.stages.denoise import denoise

from test_denoise_tiny_model import _req, models  # noqa: F401 - the module-scoped tiny model fixture

STEPS = 8


def _count_block_runs(m) -> tuple[list[int], list]:
    """A counter of first-block forwards over both video experts and the audio tower."""
    runs = [0]

    def hook(*_):
        runs[0] += 1

    handles = [tower.blocks[0].register_forward_pre_hook(hook) for tower in (m.video_dit, m.video_dit_2, m.audio_dit)]
    return runs, handles


def _run(m, step_cache, cfg_batch):
    runs, handles = _count_block_runs(m)
    try:
        out = denoise(m, _req(m, num_inference_steps=STEPS, step_cache=step_cache), cfg_batch=cfg_batch)
    finally:
        for h in handles:
            h.remove()
    return out, runs[0]


@pytest.mark.parametrize("cfg_batch", [False, True], ids=["two_forwards", "batched"])
def test_off_and_a_threshold_never_reached_are_the_plain_sampler_bit_for_bit(models, cfg_batch):  # noqa: F811
    forwards = STEPS * (1 if cfg_batch else 2)  # CFG: two branches
    off, runs_off = _run(models, None, cfg_batch)
    assert runs_off == 2 * forwards and off.reused_forwards == 0  # every forward runs a video and an audio block 0
    tight, runs_tight = _run(models, 1e-9, cfg_batch)
    assert runs_tight == runs_off and tight.reused_forwards == 0
    assert torch.equal(tight.video_latents, off.video_latents)
    assert torch.equal(tight.audio_latents, off.audio_latents)


@pytest.mark.parametrize("cfg_batch", [False, True], ids=["two_forwards", "batched"])
def test_on_runs_the_blocks_less_often_and_changes_the_latents(models, cfg_batch):  # noqa: F811
    forwards = STEPS * (1 if cfg_batch else 2)
    off, _ = _run(models, None, cfg_batch)
    on, runs_on = _run(models, 1.0, cfg_batch)
    assert on.reused_forwards > 0
    assert runs_on == 2 * (forwards - on.reused_forwards) < 2 * forwards
    assert not torch.equal(on.video_latents, off.video_latents)
    assert torch.isfinite(on.video_latents).all() and torch.isfinite(on.audio_latents).all()


def test_the_first_forward_and_an_expert_change_always_run_the_blocks():
    cache = StepCache(1.0)
    expert, other = object(), object()
    signal = torch.ones(1, 4, 8)
    assert not cache.reusable(signal, expert)  # nothing stored yet
    cache.store(expert, torch.zeros(1, 4, 8), torch.zeros(1, 2, 8))
    assert cache.reusable(signal * 1.01, expert)  # 1 % change accumulated, below 1.0
    assert not cache.reusable(signal * 1.02, other)  # the other expert's blocks never ran
    with pytest.raises(ValueError, match="threshold must be > 0"):
        StepCache(0.0)


def test_request_field_is_checked_named_and_carried_through_proto():
    req = contract.GenerationRequest(prompt="a cat", step_cache=0.2)
    assert contract.from_proto(contract.to_proto(req)).step_cache == pytest.approx(0.2)
    assert contract.from_proto(contract.to_proto(replace(req, step_cache=None))).step_cache is None
    for bad in (0.0, 1.5):
        with pytest.raises(contract.InvalidArgument) as err:
            contract.check_field(replace(req, step_cache=bad), "step_cache")
        assert err.value.field == "step_cache" and "outside (0, 1]" in err.value.reason
    parser = argparse.ArgumentParser()
    request_options.add_options(parser)
    assert request_options.from_options(parser.parse_args(["--prompt", "x", "--step-cache", "0.1"])).step_cache == 0.1
    with pytest.raises(contract.InvalidArgument, match="--step-cache"):
        request_options.from_options(parser.parse_args(["--prompt", "x", "--step-cache", "2"]))


def test_compile_denoiser_wraps_every_block_in_place_and_keeps_the_keys(models):  # noqa: F811
    from movakit.execution import compile_denoiser

    blocks = lambda m: [*m.video_dit.blocks, *m.video_dit_2.blocks, *m.audio_dit.blocks,  # noqa: E731
                        *m.bridge.audio_to_video_conditioners.values(), *m.bridge.video_to_audio_conditioners.values()]
    keys = list(models.video_dit.state_dict())
    try:
        compile_denoiser(models)  # compiles lazily: nothing runs here (the first forward would take minutes)
        assert all(block._compiled_call_impl is not None for block in blocks(models))
        assert list(models.video_dit.state_dict()) == keys
    finally:
        for block in blocks(models):
            block._compiled_call_impl = None  # the module-scoped models stay eager for the other tests
