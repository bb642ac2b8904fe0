"""MOVA dual-tower bridge (official class ``DualTowerConditionalBridge``): DualTowerBridge + BridgeConfig.

For every interaction layer i (strategy "full": i < min(visual_layers, audio_layers)) the bridge holds an
audio->video and a video->audio cross-attention block. Applied before tower block i, both directions read the
PRE-update states:  V' = V + a2v_scale * A2V_i(V, A),  A' = A + v2a_scale * V2A_i(A, V).
A block (query stream x of width dim, conditioning stream y of width kv_dim, dim // head_dim heads):
    y_n = LayerNorm(y) (weight+bias, eps 1e-6); q = RMSNorm_dim(Wq x); k = RMSNorm_dim(Wk y_n); v = Wv y_n
    rotate-half RoPE on q (positions of x's stream) and k (positions of y's stream); unmasked SDPA; Wo.
The query stream is not normalised. Keys: docs/model.md#bridge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from movakit.models.layers.attention import QKNormAttention, multi_head_attention, rms_norm
from movakit.config import JsonConfig, normalise_fields, reject_flag, require_positive
from movakit.models.layers.rope import LastTable, apply_rope_rotate_half, bridge_positions, rotate_half_cos_sin

_COMPONENT = "dual_tower_bridge"
BRIDGE_EPS = 1e-6  # fixed in the official blocks (not a config key)

CosSin = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class BridgeConfig(JsonConfig):
    """From dual_tower_bridge/config.json. Every key is required: the official code defaults are legacy values
    (3072-wide, "shallow_focus", no RoPE) that contradict the release."""

    visual_layers: int
    audio_layers: int
    visual_hidden_dim: int
    audio_hidden_dim: int
    audio_fps: float  # audio latent frames per second (50 = 48 kHz / hop 960)
    head_dim: int
    interaction_strategy: str
    apply_cross_rope: bool
    apply_first_frame_bias_in_rope: bool
    trainable_condition_scale: bool
    pooled_adaln: bool

    COMPONENT = _COMPONENT

    def __post_init__(self) -> None:
        normalise_fields(self, component=_COMPONENT)
        require_positive(self, ("visual_layers", "audio_layers", "visual_hidden_dim", "audio_hidden_dim",
                                "audio_fps", "head_dim"), component=_COMPONENT)
        for name in ("visual_hidden_dim", "audio_hidden_dim"):
            if getattr(self, name) % self.head_dim:
                raise ValueError(f"{_COMPONENT} config: {name!r} {getattr(self, name)} is not divisible by "
                                 f"'head_dim' {self.head_dim}")
        if self.head_dim % 2:
            raise ValueError(f"{_COMPONENT} config: 'head_dim' {self.head_dim} must be even for RoPE")
        reject_flag(self, "interaction_strategy", "full", component=_COMPONENT)
        reject_flag(self, "apply_cross_rope", True, component=_COMPONENT)
        reject_flag(self, "apply_first_frame_bias_in_rope", False, component=_COMPONENT)
        reject_flag(self, "trainable_condition_scale", False, component=_COMPONENT)
        reject_flag(self, "pooled_adaln", False, component=_COMPONENT)

    @property
    def num_interaction_layers(self) -> int:
        """Strategy "full": layers 0 .. min(visual_layers, audio_layers) - 1."""
        return min(self.visual_layers, self.audio_layers)


class BridgeAttention(QKNormAttention):
    """Cross-attention of one bridge block (key prefix ``inner``): rotate-half RoPE on q and k."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int, kv_stream: str):
        super().__init__(dim, num_heads, BRIDGE_EPS, kv_dim=kv_dim, kv_stream=kv_stream)

    def forward(self, x: torch.Tensor, y: torch.Tensor, x_rope: CosSin, y_rope: CosSin) -> torch.Tensor:
        # x (B, Lx, dim) raw query stream; y (B, Ly, kv_dim) layer-normed conditioning stream
        q = apply_rope_rotate_half(rms_norm(self.norm_q, self.q(x)), *x_rope, self.num_heads)  # (B, Lx, dim)
        k = apply_rope_rotate_half(rms_norm(self.norm_k, self.k(y)), *y_rope, self.num_heads)  # (B, Ly, dim)
        v = self.v(y)
        return self.o(multi_head_attention(q, k, v, self.num_heads, self.kv_stream))


class BridgeBlock(nn.Module):
    """One direction of one interaction layer: y_norm (LayerNorm of the conditioning stream) + inner attention."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int, kv_stream: str):
        super().__init__()
        self.y_norm = nn.LayerNorm(kv_dim, eps=BRIDGE_EPS)
        self.inner = BridgeAttention(dim, kv_dim, num_heads, kv_stream)

    def forward(self, x: torch.Tensor, y: torch.Tensor, x_rope: CosSin, y_rope: CosSin) -> torch.Tensor:
        return self.inner(x, self.y_norm(y), x_rope, y_rope)


class DualTowerBridge(nn.Module):
    """All bridge blocks. Keys ``audio_to_video_conditioners.{i}.*`` and ``video_to_audio_conditioners.{i}.*``."""

    def __init__(self, config: BridgeConfig):
        super().__init__()
        self.config = config
        v_dim, a_dim, hd = config.visual_hidden_dim, config.audio_hidden_dim, config.head_dim
        layers = range(config.num_interaction_layers)
        # 1. audio -> video: query = video stream, key/value = audio stream
        self.audio_to_video_conditioners = nn.ModuleDict({str(i): BridgeBlock(v_dim, a_dim, v_dim // hd, "audio") for i in layers})
        # 2. video -> audio: query = audio stream, key/value = video stream
        self.video_to_audio_conditioners = nn.ModuleDict({str(i): BridgeBlock(a_dim, v_dim, a_dim // hd, "video") for i in layers})
        self._rope_tables = LastTable()

    @property
    def num_interaction_layers(self) -> int:
        return self.config.num_interaction_layers

    def build_aligned_rope(self, grid: tuple[int, int, int], audio_len: int, *, video_fps: float,
                           device: torch.device | str, dtype: torch.dtype) -> tuple[CosSin, CosSin]:
        """((cos_v, sin_v) (f*h*w, head_dim), (cos_a, sin_a) (audio_len, head_dim)) on the shared time axis,
        computed in float32 and cast to ``dtype``; the same tables serve every layer."""
        if not video_fps > 0:
            raise ValueError(f"video_fps must be > 0, got {video_fps!r}")
        video_pos, audio_pos = bridge_positions(grid, audio_len, video_fps=video_fps,
                                                audio_fps=self.config.audio_fps, device=device)
        hd = self.config.head_dim
        return rotate_half_cos_sin(video_pos, hd, dtype), rotate_half_cos_sin(audio_pos, hd, dtype)

    def aligned_rope(self, grid: tuple[int, int, int], audio_len: int, *, video_fps: float,
                     device: torch.device | str, dtype: torch.dtype) -> tuple[CosSin, CosSin]:
        """build_aligned_rope, computed once while the arguments repeat (the steps of a job)."""
        key = (tuple(grid), audio_len, float(video_fps), torch.device(device), dtype)
        return self._rope_tables.get(key, lambda: self.build_aligned_rope(grid, audio_len, video_fps=video_fps,
                                                                           device=device, dtype=dtype))

    def forward(self, layer_idx: int, video_x: torch.Tensor, audio_x: torch.Tensor, *, video_rope: CosSin,
                audio_rope: CosSin, a2v_condition_scale: float = 1.0,
                v2a_condition_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Both updates of layer ``layer_idx`` from the pre-update states: video_x (B, Lv, Dv), audio_x (B, La, Da)."""
        if not 0 <= layer_idx < self.num_interaction_layers:
            raise IndexError(f"bridge layer {layer_idx} out of range 0..{self.num_interaction_layers - 1}")
        key = str(layer_idx)
        a2v = self.audio_to_video_conditioners[key](video_x, audio_x, video_rope, audio_rope)
        v2a = self.video_to_audio_conditioners[key](audio_x, video_x, audio_rope, video_rope)
        return torch.add(video_x, a2v, alpha=a2v_condition_scale), torch.add(audio_x, v2a, alpha=v2a_condition_scale)
