"""Rotary position embeddings. MOVA uses two different conventions; do not mix them up (docs/model.md#dit-block,
docs/model.md#bridge).

1. DiT self-attention (both towers): Wan's *interleaved complex-pair* RoPE. Channel pairs (2j, 2j+1) of each head are
   one complex number, multiplied by exp(i * pos * 10000^(-2j/d)). Tables are float64 complex (complex128); the official
   code takes the product in float64, then casts back. Video: the head is split into temporal / height / width parts
   (h = w = head_dim // 3, t = the rest: 44/42/42 for head_dim 128), each with its own frequencies, integer latent-grid
   positions, concatenated [t, h, w]. Audio: one 1-D table over the whole head. The forward passes the table
   rounded to complex64 (interleaved_table) for float32/bf16 models: the product is then formed in float32, within
   float32 rounding of the float64 one and without a float64 copy of q and k.
2. Bridge cross-attention: HF-style *rotate-half* RoPE (first half / second half of the head), cos/sin built in
   float32 from fractional positions on a shared time axis (audio latent frames), then cast to the model dtype.
"""

from __future__ import annotations

import torch

from movakit.models.layers.pointwise import map_token_chunks, opmath_dtype

ROPE_THETA = 10000.0
VIDEO_ROPE_MAX_POSITIONS = 1024  # length of the official video tables (per axis)
AUDIO_ROPE_MAX_POSITIONS = 16384  # length of the official audio table
VAE_TEMPORAL_STRIDE = 4.0  # the bridge's video position scale hard-codes the Wan VAE's temporal stride


# ---------------------------------------------------------------- 1. interleaved complex RoPE (DiT self-attention)

def video_rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels of one head given to (time, height, width): h = w = head_dim // 3, time gets the rest."""
    hw = head_dim // 3
    parts = (head_dim - 2 * hw, hw, hw)
    if hw == 0 or any(p % 2 for p in parts):
        raise ValueError(f"head_dim {head_dim} does not split into even RoPE parts {parts} (t = head_dim - 2*(head_dim//3), "
                         f"h = w = head_dim//3; e.g. 128 -> 44/42/42, 24 -> 8/8/8, 12 -> 4/4/4)")
    return parts


def rope_table_1d(dim: int, num_positions: int) -> torch.Tensor:
    """exp(i * p * 10000^(-2j/dim)) for p < num_positions, j < dim // 2: complex128 (num_positions, dim // 2), on CPU."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, dim, 2)[: dim // 2].double() / dim))
    angles = torch.outer(torch.arange(num_positions, dtype=torch.float64), inv_freq)
    return torch.polar(torch.ones_like(angles), angles)


def video_rope_freqs(head_dim: int, grid: tuple[int, int, int], device: torch.device | str | None = None) -> torch.Tensor:
    """3-D table for a (f, h, w) token grid flattened in (f, h, w) order: complex128 (f*h*w, 1, head_dim // 2)."""
    f, h, w = grid
    if max(f, h, w) > VIDEO_ROPE_MAX_POSITIONS:
        raise ValueError(f"video token grid {grid} exceeds the RoPE table length {VIDEO_ROPE_MAX_POSITIONS} per axis")
    d_t, d_h, d_w = video_rope_split(head_dim)
    t_tab = rope_table_1d(d_t, f).to(device)
    h_tab = rope_table_1d(d_h, h).to(device)
    w_tab = rope_table_1d(d_w, w).to(device)
    freqs = torch.cat([
        t_tab.view(f, 1, 1, -1).expand(f, h, w, -1),
        h_tab.view(1, h, 1, -1).expand(f, h, w, -1),
        w_tab.view(1, 1, w, -1).expand(f, h, w, -1),
    ], dim=-1)  # (f, h, w, head_dim // 2)
    return freqs.reshape(f * h * w, 1, -1)


def audio_rope_freqs(head_dim: int, length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """1-D table over the whole head for positions 0..length-1: complex128 (length, 1, head_dim // 2)."""
    if length > AUDIO_ROPE_MAX_POSITIONS:
        raise ValueError(f"audio token count {length} exceeds the RoPE table length {AUDIO_ROPE_MAX_POSITIONS}")
    if head_dim % 2:
        raise ValueError(f"head_dim {head_dim} must be even for RoPE")
    return rope_table_1d(head_dim, length).to(device).reshape(length, 1, -1)


def interleaved_table(freqs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A complex128 table (video_rope_freqs / audio_rope_freqs) in the complex type that the rotation of ``dtype``
    activations is formed in: complex64 (the float64 table rounded to float32) unless ``dtype`` is float64."""
    return freqs.to(torch.complex128 if dtype == torch.float64 else torch.complex64)


def apply_rope_interleaved(x: torch.Tensor, freqs: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Rotate interleaved channel pairs of x (B, L, heads*head_dim) by freqs (L, 1, head_dim//2), in the precision of
    the table: a complex128 table forms the official float64 product; a complex64 one (interleaved_table) forms it in
    float32 in one pass over x, within float32 rounding of the float64 product (no float64 copy of x)."""
    b, n, d = x.shape
    if freqs.shape[0] != n:
        raise ValueError(f"RoPE table has {freqs.shape[0]} positions for {n} tokens")
    wide = torch.float64 if freqs.dtype == torch.complex128 else torch.float32

    def rotate(xs: torch.Tensor, start: int, end: int) -> torch.Tensor:
        pairs = xs.to(wide).reshape(b, end - start, num_heads, d // num_heads // 2, 2)
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * freqs[start:end])  # broadcast over B, heads
        return rotated.flatten(2).to(x.dtype)  # (B, n, D)

    return map_token_chunks(x, rotate)


class LastTable:
    """The table computed for the last key, reused while the key repeats: the steps of a job share one token grid,
    so its RoPE tables are computed once per job. The key should name everything the table depends on (grid,
    device, dtype); whether inference mode is on is added here (an inference tensor cannot serve autograd)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value = None

    def get(self, key: tuple, compute):
        key = (*key, torch.is_inference_mode_enabled())
        if key != self._key:
            self._key, self._value = key, compute()
        return self._value


# ---------------------------------------------------------------- 2. rotate-half RoPE (bridge cross-attention)

def bridge_positions(grid: tuple[int, int, int], audio_len: int, *, video_fps: float, audio_fps: float,
                     device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared-time positions in audio latent frames, float32: (video (f*h*w,), audio (audio_len,)).

    Audio token j sits at j; every token of video latent frame k sits at k * audio_fps / (video_fps / 4)
    (8.333 * k at 24 fps and 50 Hz audio latents). No first-frame correction (the release has it off).
    """
    f, h, w = grid
    audio_pos = torch.arange(audio_len, device=device, dtype=torch.float32)
    scale = float(audio_fps) / float(video_fps / VAE_TEMPORAL_STRIDE)
    per_frame = torch.arange(f, device=device, dtype=torch.float32) * scale
    return per_frame.repeat_interleave(h * w), audio_pos


def rotate_half_cos_sin(positions: torch.Tensor, head_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """HF-style (cos, sin), each (L, head_dim): computed in float32, then cast to ``dtype`` (the model dtype)."""
    # inv_freq is built on the CPU (as the official module builds its buffer at construction), then moved.
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype=torch.float32) / head_dim
    inv_freq = (1.0 / (ROPE_THETA ** exponent)).to(positions.device)  # (head_dim/2,) float32
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (L, head_dim/2)
    emb = torch.cat([angles, angles], dim=-1)  # (L, head_dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope_rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin per head; x (B, L, heads*head_dim), cos/sin (L, head_dim) in x's dtype.

    With x = [x1 | x2] per head: [x1 * cos1 - x2 * sin1 | x2 * cos2 + x1 * sin2], one product and two fused
    multiply-adds into it (no rotated copy of x). For bf16/fp16 it is formed in float32 and rounded once (the
    official code runs this under torch.compile, which fuses it the same way).
    """
    b, n, d = x.shape
    if cos.shape[0] != n:
        raise ValueError(f"RoPE table has {cos.shape[0]} positions for {n} tokens")
    wide = opmath_dtype(x.dtype)
    head_dim = d // num_heads
    half = head_dim // 2
    c_all = cos.to(x.dtype).to(wide)[:, None, :]  # (L, 1, head_dim)
    s_all = sin.to(x.dtype).to(wide)[:, None, :]

    def rotate(xs: torch.Tensor, start: int, end: int) -> torch.Tensor:
        xh = xs.reshape(b, end - start, num_heads, head_dim).to(wide)  # (B, n, heads, head_dim)
        s = s_all[start:end]
        out = xh * c_all[start:end]
        out[..., :half].addcmul_(xh[..., half:], s[..., :half], value=-1)
        out[..., half:].addcmul_(xh[..., :half], s[..., half:])
        return out.reshape(b, end - start, d).to(x.dtype)

    return map_token_chunks(x, rotate)
