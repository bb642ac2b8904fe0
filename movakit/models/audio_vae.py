"""Continuous DAC-VAE (the MOVA audio VAE): DAC encoder/decoder with a diagonal-Gaussian bottleneck.

Everything is sized from `audio_vae/config.json` (docs/model.md#audio-vae): the release uses sample_rate 48000,
encoder_rates [2,3,4,5,8] (hop 960, 50 latent frames per second), latent_dim 128, decoder_dim 2048.
State-dict keys follow the official module tree (`encoder.block.*`, `quant_conv`, `post_quant_conv`,
`decoder.model.*`). Convolutions hold plain `.weight` tensors; checkpoints stored weight-normed are fused by
the loader (movakit/loading/renames.py).

    wav (B,1,N) --encoder--> (B,latent,ceil(N/hop)) --quant_conv--> (mean, logvar)
    z (B,latent,L) --post_quant_conv--> --decoder--> tanh --> wav (B,1,hop*L)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from movakit.config import config_from_dict, config_from_json

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
# Keys a config.json may carry that are not DAC constructor arguments. SGLang's DAC config lists
# `hop_length: 3840`; the effective hop is always prod(encoder_rates) (docs/model.md#audio-vae), so it is ignored.
_IGNORED_KEYS = ("hop_length",)


@dataclass(frozen=True)
class DacVAEConfig:
    """Constructor arguments of the official DAC, as stored in `audio_vae/config.json`."""

    encoder_dim: int
    encoder_rates: tuple[int, ...]
    latent_dim: int | None  # None: encoder_dim * 2**len(encoder_rates), as the official class computes
    decoder_dim: int
    decoder_rates: tuple[int, ...]
    sample_rate: int
    continuous: bool
    # How the weights were trained/stored; the loader accepts plain and weight-normed tensors either way.
    # Default = the official constructor's (the release was exported after remove_weight_norm()).
    use_weight_norm: bool = False
    # Residual-VQ settings: only used by the discrete (continuous=false) variant, which MOVA does not ship.
    n_codebooks: int | None = None
    codebook_size: int | None = None
    codebook_dim: int | list[int] | None = None
    quantizer_dropout: float | bool | None = None

    def __post_init__(self) -> None:
        for name in ("encoder_rates", "decoder_rates"):
            rates = tuple(getattr(self, name))
            if not rates or not all(isinstance(r, int) and r > 0 for r in rates):
                raise ValueError(f"audio_vae config {name}: expected a non-empty list of positive ints, got {rates}")
            object.__setattr__(self, name, rates)
        for name in ("encoder_dim", "decoder_dim", "sample_rate"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"audio_vae config {name}: expected a positive int, got {value!r}")
        if self.decoder_dim % (2 ** len(self.decoder_rates)) != 0:
            raise ValueError(
                f"audio_vae config decoder_dim: {self.decoder_dim} must be divisible by 2**len(decoder_rates)"
            )
        if math.prod(self.decoder_rates) != math.prod(self.encoder_rates):
            raise ValueError(
                f"audio_vae config decoder_rates: product {math.prod(self.decoder_rates)} differs from the "
                f"encoder hop {math.prod(self.encoder_rates)}"
            )
        if not self.continuous:
            raise NotImplementedError("audio_vae config continuous=false (residual-VQ DAC) is not supported")

    @property
    def hop_length(self) -> int:
        return math.prod(self.encoder_rates)

    @property
    def resolved_latent_dim(self) -> int:
        if self.latent_dim is not None:
            return self.latent_dim
        return self.encoder_dim * 2 ** len(self.encoder_rates)

    @classmethod
    def from_dict(cls, data: dict) -> DacVAEConfig:
        """Keys starting with '_' (e.g. `_class_name`) and `hop_length` are ignored; other unknown keys raise."""
        return config_from_dict(cls, data, component="audio_vae", ignored=_IGNORED_KEYS)

    @classmethod
    def from_json(cls, path: str | Path) -> DacVAEConfig:
        return config_from_json(cls, path, component="audio_vae", ignored=_IGNORED_KEYS)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["encoder_rates"] = list(self.encoder_rates)
        out["decoder_rates"] = list(self.decoder_rates)
        return {k: v for k, v in out.items() if v is not None or k == "latent_dim"}


class Snake1d(nn.Module):
    """x + sin(alpha x)^2 / alpha, one learnable alpha per channel (key `alpha`, shape (1,C,1))."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class ResidualUnit(nn.Module):
    """Snake -> dilated conv k7 -> Snake -> conv k1, added to the input (length preserved)."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(dim),
            nn.Conv1d(dim, dim, kernel_size=7, dilation=dilation, padding=3 * dilation),
            Snake1d(dim),
            nn.Conv1d(dim, dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class EncoderBlock(nn.Module):
    """Three residual units at dim/2, then a strided conv to `dim` that divides the length by `stride`."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        half = dim // 2
        self.block = nn.Sequential(
            ResidualUnit(half, 1),
            ResidualUnit(half, 3),
            ResidualUnit(half, 9),
            Snake1d(half),
            nn.Conv1d(half, dim, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """Snake, a transposed conv that multiplies the length by `stride` exactly, three residual units."""

    def __init__(self, in_dim: int, out_dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(in_dim),
            nn.ConvTranspose1d(
                in_dim,
                out_dim,
                kernel_size=2 * stride,
                stride=stride,
                padding=math.ceil(stride / 2),
                output_padding=stride % 2,
            ),
            ResidualUnit(out_dim, 1),
            ResidualUnit(out_dim, 3),
            ResidualUnit(out_dim, 9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Encoder(nn.Module):
    def __init__(self, dim: int, rates: tuple[int, ...], latent_dim: int):
        super().__init__()
        # 1. conv in (1 -> dim); 2. one block per rate, doubling channels; 3. Snake + conv to latent_dim
        layers: list[nn.Module] = [nn.Conv1d(1, dim, kernel_size=7, padding=3)]
        for stride in rates:
            dim *= 2
            layers.append(EncoderBlock(dim, stride))
        layers += [Snake1d(dim), nn.Conv1d(dim, latent_dim, kernel_size=3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    def __init__(self, latent_dim: int, dim: int, rates: tuple[int, ...]):
        super().__init__()
        # 1. conv in (latent -> dim); 2. one block per rate, halving channels; 3. Snake + conv to 1 channel + tanh
        layers: list[nn.Module] = [nn.Conv1d(latent_dim, dim, kernel_size=7, padding=3)]
        for i, stride in enumerate(rates):
            layers.append(DecoderBlock(dim // 2**i, dim // 2 ** (i + 1), stride))
        out_dim = dim // 2 ** len(rates)
        layers += [Snake1d(out_dim), nn.Conv1d(out_dim, 1, kernel_size=7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class DacVAE(nn.Module):
    def __init__(self, config: DacVAEConfig):
        super().__init__()
        self.config = config
        latent = config.resolved_latent_dim
        self.encoder = Encoder(config.encoder_dim, config.encoder_rates, latent)
        self.quant_conv = nn.Conv1d(latent, 2 * latent, kernel_size=1)
        self.post_quant_conv = nn.Conv1d(latent, latent, kernel_size=1)
        self.decoder = Decoder(latent, config.decoder_dim, config.decoder_rates)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def latent_dim(self) -> int:
        return self.config.resolved_latent_dim

    def _param_dtype(self) -> torch.dtype:
        return self.post_quant_conv.weight.dtype

    def latent_length(self, num_samples: int) -> int:
        """Latent frames for `num_samples` audio samples: ceil(N / hop)."""
        return -(-num_samples // self.hop_length)

    def encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav (B,1,N) in [-1,1] -> (mean, logvar), each (B,latent_dim,ceil(N/hop)); logvar clamped to [-30,20].

        The waveform is right-padded with zeros to a multiple of the hop, as the official preprocessing does.
        """
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"audio_vae.encode wav: expected shape (B,1,N), got {tuple(wav.shape)}")
        pad = self.latent_length(wav.shape[-1]) * self.hop_length - wav.shape[-1]
        x = F.pad(wav.to(self._param_dtype()), (0, pad))
        h = self.quant_conv(self.encoder(x))  # (B, 2*latent, L)
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B,latent_dim,L) -> wav (B,1,hop*L) in [-1,1], float32.

        Runs in the module's parameter dtype; the checkpoint loader builds the audio VAE in float32.
        """
        if z.dim() != 3 or z.shape[1] != self.latent_dim:
            raise ValueError(f"audio_vae.decode z: expected shape (B,{self.latent_dim},L), got {tuple(z.shape)}")
        wav = self.decoder(self.post_quant_conv(z.to(self._param_dtype())))  # (B, 1, hop*L)
        return wav.float()
