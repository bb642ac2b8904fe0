"""Independent, deliberately plain reference of the MOVA transformer math (tests only).

Every function works on a plain ``dict[str, Tensor]`` state dict with the OFFICIAL key names
(docs/checkpoint.md#key-names for the DiTs, docs/model.md#bridge for the bridge) and a plain config dict with the
official
``config.json`` keys. Nothing from ``movakit`` is imported: this file exists to check the
production modules, so it must not share their code. All math runs in float64. The scheduler and the
sampler loop are in sampler_reference.py. Each convention and where it was confirmed in the official
code is listed in tests/reference/NOTES.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

F64 = torch.float64
ROPE_THETA = 10000.0


# ---------------------------------------------------------------------------------------------
# configs: only the numbers the math needs, read from the official config.json keys
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TowerDims:
    dim: int
    num_heads: int
    out_dim: int
    freq_dim: int
    eps: float
    patch_size: tuple[int, ...]

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @classmethod
    def from_config(cls, cfg: dict) -> "TowerDims":
        return cls(
            dim=int(cfg["dim"]),
            num_heads=int(cfg["num_heads"]),
            out_dim=int(cfg["out_dim"]),
            freq_dim=int(cfg["freq_dim"]),
            eps=float(cfg["eps"]),
            patch_size=tuple(int(p) for p in cfg["patch_size"]),
        )


@dataclass(frozen=True)
class BridgeDims:
    visual_hidden_dim: int
    audio_hidden_dim: int
    head_dim: int
    audio_fps: float
    num_layers: int  # interaction_strategy "full": min(visual_layers, audio_layers)
    eps: float = 1e-6  # the official blocks are built without an eps argument -> 1e-6

    @classmethod
    def from_config(cls, cfg: dict) -> "BridgeDims":
        if cfg["interaction_strategy"] != "full" or not cfg["apply_cross_rope"]:
            raise ValueError("reference only models interaction_strategy='full' with apply_cross_rope")
        if cfg["apply_first_frame_bias_in_rope"] or cfg["pooled_adaln"] or cfg["trainable_condition_scale"]:
            raise ValueError("reference only models the released bridge flags (all extras off)")
        return cls(
            visual_hidden_dim=int(cfg["visual_hidden_dim"]),
            audio_hidden_dim=int(cfg["audio_hidden_dim"]),
            head_dim=int(cfg["head_dim"]),
            audio_fps=float(cfg["audio_fps"]),
            num_layers=min(int(cfg["visual_layers"]), int(cfg["audio_layers"])),
        )


def num_blocks(sd: dict, prefix: str = "blocks.") -> int:
    """Number of DiT blocks present in a state dict (counted from `<prefix><i>.modulation`)."""
    return sum(1 for k in sd if k.startswith(prefix) and k.endswith(".modulation"))


# ---------------------------------------------------------------------------------------------
# primitives
# ---------------------------------------------------------------------------------------------
def _p(sd: dict, key: str) -> torch.Tensor:
    return sd[key].to(F64)


def linear(sd: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return x @ _p(sd, prefix + ".weight").T + _p(sd, prefix + ".bias")


def layer_norm(x: torch.Tensor, eps: float, weight=None, bias=None) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased variance, like nn.LayerNorm
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight + bias
    return y


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def silu(x: torch.Tensor) -> torch.Tensor:
    return x / (1.0 + torch.exp(-x))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Unmasked multi-head attention, scale 1/sqrt(head_dim). q (B,Lq,n*d), k/v (B,Lk,n*d)."""
    b, lq, width = q.shape
    d = width // num_heads
    qh = q.reshape(b, lq, num_heads, d).permute(0, 2, 1, 3)
    kh = k.reshape(b, k.shape[1], num_heads, d).permute(0, 2, 1, 3)
    vh = v.reshape(b, v.shape[1], num_heads, d).permute(0, 2, 1, 3)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(d)
    weights = torch.softmax(scores, dim=-1)
    out = weights @ vh  # (B, n, Lq, d)
    return out.permute(0, 2, 1, 3).reshape(b, lq, width)


# ---------------------------------------------------------------------------------------------
# embeddings
# ---------------------------------------------------------------------------------------------
def timestep_sinusoid(t: torch.Tensor, freq_dim: int) -> torch.Tensor:
    """(B,) raw timesteps in [0, 1000] -> (B, freq_dim) laid out [cos | sin]."""
    half = freq_dim // 2
    freqs = torch.tensor([ROPE_THETA ** (-i / half) for i in range(half)], dtype=F64)
    args = t.to(F64)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def time_embeddings(sd: dict, dims: TowerDims, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> t_emb (B,D) = time_embedding(sinusoid); t_mod (B,6,D) = time_projection(t_emb)."""
    e = timestep_sinusoid(t, dims.freq_dim)
    t_emb = linear(sd, "time_embedding.2", silu(linear(sd, "time_embedding.0", e)))
    t_mod = linear(sd, "time_projection.1", silu(t_emb)).reshape(t_emb.shape[0], 6, dims.dim)
    return t_emb, t_mod


def text_embedding(sd: dict, context: torch.Tensor) -> torch.Tensor:
    return linear(sd, "text_embedding.2", gelu_tanh(linear(sd, "text_embedding.0", context.to(F64))))


# ---------------------------------------------------------------------------------------------
# patchify / unpatchify
# ---------------------------------------------------------------------------------------------
def patchify_video(sd: dict, dims: TowerDims, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(B,C,F,H,W) -> tokens (B, f*h*w, D) in (f,h,w) order, grid (f,h,w). Conv3d with kernel=stride."""
    pt, ph, pw = dims.patch_size
    b, c, fr, hh, ww = x.shape
    f, h, w = fr // pt, hh // ph, ww // pw
    xx = x.to(F64).reshape(b, c, f, pt, h, ph, w, pw)
    xx = xx.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, f * h * w, c * pt * ph * pw)  # (c,pt,ph,pw) per token
    weight = _p(sd, "patch_embedding.weight").reshape(dims.dim, -1)  # (D, C, pt, ph, pw) flattened
    return xx @ weight.T + _p(sd, "patch_embedding.bias"), (f, h, w)


def unpatchify_video(dims: TowerDims, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """(B, L, pt*ph*pw*c) with channel fastest -> (B, c, f*pt, h*ph, w*pw)."""
    pt, ph, pw = dims.patch_size
    f, h, w = grid
    b = tokens.shape[0]
    c = dims.out_dim
    xx = tokens.reshape(b, f, h, w, pt, ph, pw, c)
    return xx.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, c, f * pt, h * ph, w * pw)


def patchify_audio(sd: dict, dims: TowerDims, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B,C,L) -> tokens (B, L/p, D). Conv1d with kernel=stride=p."""
    (p,) = dims.patch_size
    b, c, length = x.shape
    n = length // p
    xx = x.to(F64).reshape(b, c, n, p).permute(0, 2, 1, 3).reshape(b, n, c * p)
    weight = _p(sd, "patch_embedding.weight").reshape(dims.dim, -1)
    return xx @ weight.T + _p(sd, "patch_embedding.bias"), n


def unpatchify_audio(dims: TowerDims, tokens: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n, p*c) -> (B, c, n*p)  ('b f (p c) -> b c (f p)')."""
    (p,) = dims.patch_size
    b = tokens.shape[0]
    return tokens.reshape(b, n, p, dims.out_dim).permute(0, 3, 1, 2).reshape(b, dims.out_dim, n * p)


# ---------------------------------------------------------------------------------------------
# RoPE
# ---------------------------------------------------------------------------------------------
def rope_inv_freq(d_part: int) -> torch.Tensor:
    """1/theta^(2j/d_part) for j < d_part/2 (float64)."""
    return torch.tensor([1.0 / ROPE_THETA ** (j / d_part) for j in range(0, d_part, 2)][: d_part // 2], dtype=F64)


def video_rope_split(head_dim: int) -> tuple[int, int, int]:
    """Real dims of the (t, h, w) parts: 128 -> (44, 42, 42), 24 -> (8, 8, 8), 20 -> (8, 6, 6)."""
    return head_dim - 2 * (head_dim // 3), head_dim // 3, head_dim // 3


def video_rope_angles(head_dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """(f*h*w, head_dim/2) rotation angles, token order (f,h,w), part order [t | h | w]."""
    f, h, w = grid
    d_t, d_h, d_w = video_rope_split(head_dim)
    a_t = torch.arange(f, dtype=F64)[:, None] * rope_inv_freq(d_t)[None]
    a_h = torch.arange(h, dtype=F64)[:, None] * rope_inv_freq(d_h)[None]
    a_w = torch.arange(w, dtype=F64)[:, None] * rope_inv_freq(d_w)[None]
    rows = []
    for i in range(f):
        for j in range(h):
            for k in range(w):
                rows.append(torch.cat([a_t[i], a_h[j], a_w[k]]))
    out = torch.stack(rows)
    if out.shape[1] * 2 != head_dim:
        raise ValueError(f"head_dim {head_dim}: the t/h/w split does not tile the head")
    return out


def audio_rope_angles(head_dim: int, length: int) -> torch.Tensor:
    """(length, head_dim/2): plain 1-D RoPE over the whole head, positions 0..length-1."""
    return torch.arange(length, dtype=F64)[:, None] * rope_inv_freq(head_dim)[None]


def apply_interleaved_rope(x: torch.Tensor, angles: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Rotate pairs (2j, 2j+1) of every head by angles[token, j]. x (B,L,n*d)."""
    b, length, width = x.shape
    xh = x.reshape(b, length, num_heads, width // num_heads // 2, 2)
    a, c = xh[..., 0], xh[..., 1]
    cos = torch.cos(angles)[None, :, None, :]
    sin = torch.sin(angles)[None, :, None, :]
    out = torch.stack([a * cos - c * sin, a * sin + c * cos], dim=-1)
    return out.reshape(b, length, width)


def bridge_cos_sin(head_dim: int, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HF-style table: freqs = pos * inv_freq (head_dim/2), emb = [freqs, freqs] -> cos, sin (L, head_dim)."""
    freqs = positions.to(F64)[:, None] * rope_inv_freq(head_dim)[None]
    emb = torch.cat([freqs, freqs], dim=-1)
    return torch.cos(emb), torch.sin(emb)


def bridge_positions(grid: tuple[int, int, int], audio_len: int, video_fps: float, audio_fps: float):
    """Shared time axis in audio-latent frames: audio j -> j; every token of video latent frame f
    -> f * audio_fps / (video_fps / 4)."""
    f, h, w = grid
    scale = audio_fps / (video_fps / 4.0)
    video = torch.tensor([fi * scale for fi in range(f) for _ in range(h * w)], dtype=F64)
    audio = torch.arange(audio_len, dtype=F64)
    return video, audio


def apply_rotate_half_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int) -> torch.Tensor:
    """x*cos + rotate_half(x)*sin per head, rotate_half(x) = [-x2, x1]. x (B,L,n*d), cos/sin (L,d)."""
    b, length, width = x.shape
    d = width // num_heads
    xh = x.reshape(b, length, num_heads, d)
    x1, x2 = xh[..., : d // 2], xh[..., d // 2 :]
    rotated = torch.cat([-x2, x1], dim=-1)
    out = xh * cos[None, :, None, :] + rotated * sin[None, :, None, :]
    return out.reshape(b, length, width)


# ---------------------------------------------------------------------------------------------
# DiT block and head
# ---------------------------------------------------------------------------------------------
def dit_block(sd: dict, prefix: str, dims: TowerDims, x, context_emb, t_mod, angles) -> torch.Tensor:
    """One Wan DiT block. x (B,L,D), context_emb (B,Lc,D), t_mod (B,6,D), angles (L, head_dim/2)."""
    eps, n = dims.eps, dims.num_heads
    mod = _p(sd, prefix + ".modulation") + t_mod.to(F64)  # (B,6,D)
    shift_msa, scale_msa, gate_msa = mod[:, 0:1], mod[:, 1:2], mod[:, 2:3]
    shift_mlp, scale_mlp, gate_mlp = mod[:, 3:4], mod[:, 4:5], mod[:, 5:6]
    x = x.to(F64)
    context_emb = context_emb.to(F64)

    # self-attention
    h = layer_norm(x, eps) * (1.0 + scale_msa) + shift_msa
    sa = prefix + ".self_attn"
    q = rms_norm(linear(sd, sa + ".q", h), _p(sd, sa + ".norm_q.weight"), eps)
    k = rms_norm(linear(sd, sa + ".k", h), _p(sd, sa + ".norm_k.weight"), eps)
    v = linear(sd, sa + ".v", h)
    q = apply_interleaved_rope(q, angles, n)
    k = apply_interleaved_rope(k, angles, n)
    x = x + gate_msa * linear(sd, sa + ".o", attention(q, k, v, n))

    # text cross-attention: norm3 has affine, no modulation, no gate
    ca = prefix + ".cross_attn"
    h = layer_norm(x, eps, _p(sd, prefix + ".norm3.weight"), _p(sd, prefix + ".norm3.bias"))
    q = rms_norm(linear(sd, ca + ".q", h), _p(sd, ca + ".norm_q.weight"), eps)
    k = rms_norm(linear(sd, ca + ".k", context_emb), _p(sd, ca + ".norm_k.weight"), eps)
    v = linear(sd, ca + ".v", context_emb)
    x = x + linear(sd, ca + ".o", attention(q, k, v, n))

    # feed-forward
    h = layer_norm(x, eps) * (1.0 + scale_mlp) + shift_mlp
    x = x + gate_mlp * linear(sd, prefix + ".ffn.2", gelu_tanh(linear(sd, prefix + ".ffn.0", h)))
    return x


def head(sd: dict, dims: TowerDims, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
    """(shift, scale) = head.modulation (1,2,D) + t_emb per sample; Linear(LN(x)*(1+scale)+shift)."""
    mod = _p(sd, "head.modulation") + t_emb.to(F64)[:, None, :]  # (B,2,D)
    shift, scale = mod[:, 0:1], mod[:, 1:2]
    return linear(sd, "head.head", layer_norm(x.to(F64), dims.eps) * (1.0 + scale) + shift)


def video_tower_forward(sd: dict, cfg: dict, x, t, context) -> torch.Tensor:
    """VideoDiT alone: x (B,in_dim,F,H,W), t (B,), context (B,Lc,text_dim) -> (B,out_dim,F,H,W)."""
    dims = TowerDims.from_config(cfg)
    t_emb, t_mod = time_embeddings(sd, dims, t)
    ctx = text_embedding(sd, context)
    tokens, grid = patchify_video(sd, dims, x)
    angles = video_rope_angles(dims.head_dim, grid)
    for i in range(num_blocks(sd)):
        tokens = dit_block(sd, f"blocks.{i}", dims, tokens, ctx, t_mod, angles)
    return unpatchify_video(dims, head(sd, dims, tokens, t_emb), grid)


def audio_tower_forward(sd: dict, cfg: dict, x, t, context) -> torch.Tensor:
    """AudioDiT alone: x (B,in_dim,L), t (B,), context (B,Lc,text_dim) -> (B,out_dim,L)."""
    dims = TowerDims.from_config(cfg)
    t_emb, t_mod = time_embeddings(sd, dims, t)
    ctx = text_embedding(sd, context)
    tokens, n = patchify_audio(sd, dims, x)
    angles = audio_rope_angles(dims.head_dim, n)
    for i in range(num_blocks(sd)):
        tokens = dit_block(sd, f"blocks.{i}", dims, tokens, ctx, t_mod, angles)
    return unpatchify_audio(dims, head(sd, dims, tokens, t_emb), n)


# ---------------------------------------------------------------------------------------------
# bridge
# ---------------------------------------------------------------------------------------------
def bridge_conditioner(sd: dict, prefix: str, bdims: BridgeDims, x, y, x_cos_sin, y_cos_sin) -> torch.Tensor:
    """One conditioner: query from the raw stream x, key/value from LayerNorm(y) (affine)."""
    eps = bdims.eps
    num_heads = x.shape[-1] // bdims.head_dim
    yn = layer_norm(y.to(F64), eps, _p(sd, prefix + ".y_norm.weight"), _p(sd, prefix + ".y_norm.bias"))
    inner = prefix + ".inner"
    q = rms_norm(linear(sd, inner + ".q", x.to(F64)), _p(sd, inner + ".norm_q.weight"), eps)
    k = rms_norm(linear(sd, inner + ".k", yn), _p(sd, inner + ".norm_k.weight"), eps)
    v = linear(sd, inner + ".v", yn)
    q = apply_rotate_half_rope(q, *x_cos_sin, num_heads)
    k = apply_rotate_half_rope(k, *y_cos_sin, num_heads)
    return linear(sd, inner + ".o", attention(q, k, v, num_heads))


def bridge_layer(sd: dict, i: int, bdims: BridgeDims, video, audio, video_cos_sin, audio_cos_sin,
                 a2v_scale: float = 1.0, v2a_scale: float = 1.0):
    """Parallel update: both directions read the pre-update states."""
    v_new = video.to(F64) + a2v_scale * bridge_conditioner(
        sd, f"audio_to_video_conditioners.{i}", bdims, video, audio, video_cos_sin, audio_cos_sin
    )
    a_new = audio.to(F64) + v2a_scale * bridge_conditioner(
        sd, f"video_to_audio_conditioners.{i}", bdims, audio, video, audio_cos_sin, video_cos_sin
    )
    return v_new, a_new


def bridge_tables(bdims: BridgeDims, grid, audio_len: int, video_fps: float):
    vpos, apos = bridge_positions(grid, audio_len, video_fps, bdims.audio_fps)
    return bridge_cos_sin(bdims.head_dim, vpos), bridge_cos_sin(bdims.head_dim, apos)


# ---------------------------------------------------------------------------------------------
# joint forward
# ---------------------------------------------------------------------------------------------
def dual_tower_forward(
    video_sd: dict, video_cfg: dict, audio_sd: dict, audio_cfg: dict, bridge_sd: dict, bridge_cfg: dict,
    *, video_x, audio_x, context, t_video, t_audio, video_fps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop order of the official forward: for i < min(layers): bridge i, video block i, audio block i;
    then the remaining video blocks; then heads. Returns float64 (video_velocity, audio_velocity)."""
    vd, ad = TowerDims.from_config(video_cfg), TowerDims.from_config(audio_cfg)
    bd = BridgeDims.from_config(bridge_cfg)
    vt_emb, vt_mod = time_embeddings(video_sd, vd, t_video)
    at_emb, at_mod = time_embeddings(audio_sd, ad, t_audio)
    vctx = text_embedding(video_sd, context)
    actx = text_embedding(audio_sd, context)
    v, grid = patchify_video(video_sd, vd, video_x)
    a, n = patchify_audio(audio_sd, ad, audio_x)
    v_angles = video_rope_angles(vd.head_dim, grid)
    a_angles = audio_rope_angles(ad.head_dim, n)
    v_cs, a_cs = bridge_tables(bd, grid, n, video_fps)

    n_video, n_audio = num_blocks(video_sd), num_blocks(audio_sd)
    shared = min(n_video, n_audio)
    if shared != bd.num_layers:
        raise ValueError(f"bridge has {bd.num_layers} layers, towers share {shared}")
    for i in range(shared):
        v, a = bridge_layer(bridge_sd, i, bd, v, a, v_cs, a_cs)
        v = dit_block(video_sd, f"blocks.{i}", vd, v, vctx, vt_mod, v_angles)
        a = dit_block(audio_sd, f"blocks.{i}", ad, a, actx, at_mod, a_angles)
    for i in range(shared, n_video):
        v = dit_block(video_sd, f"blocks.{i}", vd, v, vctx, vt_mod, v_angles)
    video_out = unpatchify_video(vd, head(video_sd, vd, v, vt_emb), grid)
    audio_out = unpatchify_audio(ad, head(audio_sd, ad, a, at_emb), n)
    return video_out, audio_out
