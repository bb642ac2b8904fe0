"""The joint MOVA forward: video DiT + audio DiT + bridge, one velocity prediction for each modality.

Order of work (official ``inference_single_step`` / ``forward_dual_tower_dit``, docs/model.md#bridge,
step 5.2 of docs/sampler.md#steps):
1. time embeddings of t_video / t_audio in float32, then cast to the model dtype;
2. text context embedded by each tower's own text MLP, and every block's cross-attention keys and values from it
   (memoised: the steps of a job pass the same context, so only the first step computes them); latents cast to the
   model dtype and patchified;
3. RoPE tables: 3-D interleaved (video), 1-D interleaved (audio), aligned rotate-half (bridge, from video_fps),
   computed once while the token grid repeats (the steps of a job);
4. for i < min(video layers, audio layers): bridge update i (both directions from pre-update states), video block i,
   audio block i; then the remaining video blocks without bridge;
5. heads (time_embedding output, not t_mod), unpatchify, float32.
With a step cache (models/step_cache.py, off by default) step 4 may be replaced by adding the residuals it made at
an earlier step.
Under movakit.parallel.sequence_parallel the token streams are split over the ranks after step 3 and gathered
after the heads (docs/parallel.md).
Every sample of the batch is independent (with cfg_batch the sampler runs the CFG branches as one B=2 batch).
Fine-tuning passes a block runner: each bridge update, video block and audio block of step 4 (and each block's
text keys and values of step 2) is then called through it. `checkpointed` runs them in non-reentrant
torch.utils.checkpoint (activations recomputed in the backward pass), as the official trainer;
movakit.training.streaming's runner also copies each block's weights in from host RAM for the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from movakit.models.audio_dit import AudioDiT
from movakit.models.bridge import DualTowerBridge
from movakit.models.layers.dit_block import call_directly
from movakit.models.step_cache import StepCache
from movakit.models.video_dit import VideoDiT
from movakit.parallel import active_sequence_parallel


def check_compatible(video_dit: VideoDiT, audio_dit: AudioDiT, bridge: DualTowerBridge) -> None:
    """ValueError naming the mismatch when the three modules cannot run together."""
    vc, ac, bc = video_dit.config, audio_dit.config, bridge.config
    pairs = (("visual_hidden_dim", bc.visual_hidden_dim, "video_dit dim", vc.dim),
             ("audio_hidden_dim", bc.audio_hidden_dim, "audio_dit dim", ac.dim),
             ("visual_layers", bc.visual_layers, "video_dit num_layers", vc.num_layers),
             ("audio_layers", bc.audio_layers, "audio_dit num_layers", ac.num_layers))
    for bridge_name, bridge_value, tower_name, tower_value in pairs:
        if bridge_value != tower_value:
            raise ValueError(f"dual_tower_bridge {bridge_name}={bridge_value} does not match {tower_name}={tower_value}")
    if ac.num_layers > vc.num_layers:
        raise ValueError(f"audio_dit num_layers={ac.num_layers} > video_dit num_layers={vc.num_layers} is not supported "
                         "(the official loop would never run the extra audio blocks)")
    if vc.text_dim != ac.text_dim:
        raise ValueError(f"video_dit text_dim={vc.text_dim} differs from audio_dit text_dim={ac.text_dim}")
    params = {"video_dit": video_dit.patch_embedding.weight, "audio_dit": audio_dit.patch_embedding.weight,
              "dual_tower_bridge": bridge.audio_to_video_conditioners["0"].inner.q.weight}
    dtypes = {name: p.dtype for name, p in params.items()}
    devices = {name: p.device for name, p in params.items()}
    if len(set(dtypes.values())) != 1:
        raise ValueError(f"the three modules must share one dtype, got {dtypes}")
    if len(set(devices.values())) != 1:
        raise ValueError(f"the three modules must be on one device, got {devices}")


def named_blocks(name: str, module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Every block of one component of the joint forward, named under `name` (its MovaModels field): a tower's DiT
    blocks ("<name>.blocks.<i>"), or the bridge's blocks of both directions ("<name>.<direction>.<i>")."""
    if isinstance(module, DualTowerBridge):
        return [(f"{name}.{side}.{key}", block) for side in ("audio_to_video_conditioners",
                                                             "video_to_audio_conditioners")
                for key, block in getattr(module, side).items()]
    return [(f"{name}.blocks.{i}", block) for i, block in enumerate(module.blocks)]


# run(fn, *args, **kwargs) -> fn(*args, **kwargs), however it chooses to run it
BlockRunner = Callable[..., Any]


def checkpointed(fn: Callable, *args, **kwargs):
    """A BlockRunner: fn in non-reentrant torch.utils.checkpoint (gradient checkpointing)."""
    return checkpoint(fn, *args, use_reentrant=False, **kwargs)


def dual_tower_forward(video_dit: VideoDiT, audio_dit: AudioDiT, bridge: DualTowerBridge, *,
                       video_x: torch.Tensor, audio_x: torch.Tensor, context: torch.Tensor,
                       t_video: torch.Tensor, t_audio: torch.Tensor, video_fps: float,
                       a2v_condition_scale: float = 1.0, v2a_condition_scale: float = 1.0,
                       run_block: BlockRunner | None = None,
                       step_cache: StepCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One joint prediction.

    video_x (B, 36, F, H, W) = noisy latent + mask + image latent; audio_x (B, 128, L); context (B, 512, text_dim);
    t_video, t_audio (B,) raw timesteps in [0, 1000]; video_fps the real output frame rate (it sets the bridge's time
    alignment). a2v/v2a_condition_scale multiply the bridge residuals (1.0 in the released sampler; 0 turns a
    direction off). run_block (training only; None = call directly) calls each block, e.g. `checkpointed`, which
    recomputes its activations in the backward pass instead of keeping them; the values are the same.
    step_cache: this guidance branch's StepCache, None (default) = the blocks always run.
    Returns (video_velocity (B, out_dim, F, H, W), audio_velocity (B, out_dim, L)), float32.
    """
    check_compatible(video_dit, audio_dit, bridge)
    b = video_x.shape[0]
    if audio_x.ndim != 3 or audio_x.shape[0] != b:
        raise ValueError(f"audio_x must have shape ({b}, C, L) to match video_x's batch, got {tuple(audio_x.shape)}")
    if context.ndim != 3 or context.shape[0] != b or context.shape[2] != video_dit.config.text_dim:
        raise ValueError(f"context must have shape ({b}, L_text, {video_dit.config.text_dim}), got {tuple(context.shape)}")
    for name, t in (("t_video", t_video), ("t_audio", t_audio)):
        if t.shape != (b,):
            raise ValueError(f"{name} must have shape ({b},), got {tuple(t.shape)}")
    dtype, device = video_dit.dtype, video_dit.device

    # 1. time embeddings: float32 math, then the model dtype
    v_emb, v_mod = video_dit.time_embedding_fp32(t_video)
    a_emb, a_mod = audio_dit.time_embedding_fp32(t_audio)
    v_emb, v_mod, a_emb, a_mod = (t.to(dtype) for t in (v_emb, v_mod, a_emb, a_mod))

    # 2. text context per tower (every block's cross-attention k, v); patches
    run = run_block or call_directly
    v_kv = video_dit.text_kv(context, run)  # per block ((B, L_text, Dv), (B, L_text, Dv))
    a_kv = audio_dit.text_kv(context, run)
    v, grid = video_dit.patchify(video_x.to(device))  # (B, f*h*w, Dv)
    a, a_grid = audio_dit.patchify(audio_x.to(device))  # (B, L, Da)

    # 3. RoPE tables
    v_freqs = video_dit.rope_table(grid)  # complex (f*h*w, 1, head_dim/2), once per job (DiTTower.rope_table)
    a_freqs = audio_dit.rope_table(a_grid)  # complex (L, 1, head_dim/2)
    v_rope, a_rope = bridge.aligned_rope(grid, a_grid[0], video_fps=video_fps, device=device, dtype=dtype)
    # the step cache's signal from the whole token stream (every rank computes the same, so all decide alike)
    reuse = step_cache is not None and step_cache.reusable(video_dit.blocks[0].modulated_input(v, v_mod), video_dit)
    split = active_sequence_parallel()
    if split is not None:  # context parallel: this rank's tokens and their rows of every per-token table
        v, a = split.shard(v, "video"), split.shard(a, "audio")
        v_freqs, a_freqs = split.shard_table(v_freqs, "video"), split.shard_table(a_freqs, "audio")
        v_rope = tuple(split.shard_table(t, "video") for t in v_rope)
        a_rope = tuple(split.shard_table(t, "audio") for t in a_rope)

    # 4. interleaved towers with the bridge before each shared layer, then the remaining video blocks
    if reuse:
        v_res, a_res = step_cache.residual()
        v, a = v + v_res, a + a_res
    else:
        v_in, a_in = v, a
        shared = min(len(video_dit.blocks), len(audio_dit.blocks))
        for i in range(shared):
            v, a = run(bridge, i, v, a, video_rope=v_rope, audio_rope=a_rope,
                       a2v_condition_scale=a2v_condition_scale, v2a_condition_scale=v2a_condition_scale)
            v = run(video_dit.blocks[i], v, v_kv[i], v_mod, v_freqs)
            a = run(audio_dit.blocks[i], a, a_kv[i], a_mod, a_freqs)
        for i in range(shared, len(video_dit.blocks)):
            v = run(video_dit.blocks[i], v, v_kv[i], v_mod, v_freqs)
        if step_cache is not None:
            step_cache.store(video_dit, v - v_in, a - a_in)

    # 5. heads (per token), then every rank's tokens back together, and unpatchify
    v, a = video_dit.head(v, v_emb), audio_dit.head(a, a_emb)
    if split is not None:
        v, a = split.gather(v, "video"), split.gather(a, "audio")
    video_velocity = video_dit.unpatchify(v, grid)
    audio_velocity = audio_dit.unpatchify(a, a_grid)
    return video_velocity.float(), audio_velocity.float()
