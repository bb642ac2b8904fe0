"""Context parallel on the CPU: the joint forward split over 2 and 4 gloo processes equals the single-process
forward within float32 noise, for token counts that do not divide by the world size, through both attention paths
(Ulysses all-to-all when the heads divide by N, gathered keys and values when they do not)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from movakit.loading.demo import build_component, tiny_config
from movakit.models.dual_tower import dual_tower_forward
from movakit.parallel import sequence_parallel
from movakit.runtime.localstack import free_port

# (video/audio heads, bridge head_dim): 2 heads (tiny demo) and 4 heads
HEAD_CONFIGS = {"heads2": (2, 24), "heads4": (4, 12)}


def _models(heads: int, head_dim: int):
    torch.manual_seed(0)
    video = build_component("video_dit", {**tiny_config("video_dit"), "num_heads": heads})
    audio = build_component("audio_dit", {**tiny_config("audio_dit"), "num_heads": heads})
    bridge = build_component("dual_tower_bridge", {**tiny_config("dual_tower_bridge"), "head_dim": head_dim})
    return video.eval(), audio.eval(), bridge.eval()


def _inputs(video, audio):
    g = torch.Generator().manual_seed(1)
    # 5 x 6 x 10 latent -> 5 * 3 * 5 = 75 video tokens; 37 audio tokens: neither divides by 2 or 4
    video_x = torch.randn(1, video.config.in_dim, 5, 6, 10, generator=g)
    audio_x = torch.randn(1, audio.config.in_dim, 37, generator=g)
    context = torch.randn(1, 9, video.config.text_dim, generator=g)
    return dict(video_x=video_x, audio_x=audio_x, context=context, t_video=torch.tensor([871.0]),
                t_audio=torch.tensor([871.0]), video_fps=24.0)


@torch.no_grad()
def _forward(name: str):
    video, audio, bridge = _models(*HEAD_CONFIGS[name])
    return dual_tower_forward(video, audio, bridge, **_inputs(video, audio))


def _rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for name in HEAD_CONFIGS:
            with sequence_parallel():
                v, a = _forward(name)
            torch.save({"video": v, "audio": a}, os.path.join(out_dir, f"{name}-rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
def test_split_forward_equals_the_single_process_forward(world, tmp_path):
    mp.spawn(_rank_main, args=(world, free_port(), str(tmp_path)), nprocs=world)
    for name in HEAD_CONFIGS:
        v_ref, a_ref = _forward(name)
        assert v_ref.shape == (1, 16, 5, 6, 10) and a_ref.shape[-1] == 37
        for rank in range(world):
            got = torch.load(tmp_path / f"{name}-rank{rank}.pt")
            for key, ref in (("video", v_ref), ("audio", a_ref)):
                assert got[key].shape == ref.shape
                torch.testing.assert_close(got[key], ref, rtol=0, atol=2e-6, msg=f"{name} {key} rank {rank}")
