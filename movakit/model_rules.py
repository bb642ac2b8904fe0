"""What a checkpoint decides about a request, read from its small JSON config files (no torch, no weights).

The gateway reads these rules from the checkpoint folder its settings name, `mova generate` from the checkpoint
it loads, so both judge a request by the same rules. Each rule comes from the config that defines it:
- spatial size step = video VAE spatial stride x video DiT patch size (8 x 2 = 16 for MOVA): height and width
  must be multiples of it;
- frame rule N = temporal_stride·k + 1 from the video VAE's temporal stride (4 for MOVA): the first frame is its
  own latent frame, every further `temporal_stride` frames make one more;
- audio sample rate and hop (the DAC VAE's `sample_rate` and the product of its `encoder_rates`): they set the
  audio latent length (movakit.stages.denoise.audio_latent_length);
- random weights: the folder carries TINY_MARKER (written by movakit.loading.demo). Such a checkpoint accepts every
  size that keeps the size step; a released checkpoint only the sizes MOVA was trained at (TRAINED_SIZES).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

TINY_MARKER = "movakit_tiny.json"  # written by movakit.loading.demo: the weights are random

# (height, width) pairs the released MOVA checkpoints were trained at (360p and 720p, landscape and portrait).
# The release's config files do not list them, so they are stated here, once.
TRAINED_SIZES = frozenset({(352, 640), (640, 352), (720, 1280), (1280, 720)})


class RulesError(ValueError):
    """A config file of the checkpoint is missing or does not say what a request rule needs."""


@dataclass(frozen=True)
class ModelRules:
    size_step: int  # height and width are multiples of this
    temporal_stride: int  # num_frames = temporal_stride·k + 1
    audio_sample_rate: int  # Hz
    audio_hop_length: int  # audio samples per audio latent frame
    random_weights: bool  # the tiny demo checkpoint (or any checkpoint with TINY_MARKER)

    @property
    def supported_sizes(self) -> frozenset[tuple[int, int]] | None:
        """(height, width) pairs accepted; None = every multiple of size_step (random-weight checkpoints)."""
        return None if self.random_weights else TRAINED_SIZES

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> ModelRules:
        """Read video_vae/, video_dit/ and audio_vae/config.json of the checkpoint folder `path`."""
        root = Path(path)
        vae = _read(root / "video_vae" / "config.json")
        dit = _read(root / "video_dit" / "config.json")
        dac = _read(root / "audio_vae" / "config.json")
        downsample = _key(vae, "temperal_downsample", root / "video_vae" / "config.json")
        # diffusers' AutoencoderKLWan: one spatial halving per stage, a temporal one where the flag is set
        spatial = int(vae.get("scale_factor_spatial", 2 ** len(downsample)))
        temporal = int(vae.get("scale_factor_temporal", 2 ** sum(bool(d) for d in downsample)))
        patch = _key(dit, "patch_size", root / "video_dit" / "config.json")
        rates = _key(dac, "encoder_rates", root / "audio_vae" / "config.json")
        return cls(
            size_step=spatial * int(patch[-1]),
            temporal_stride=temporal,
            audio_sample_rate=int(_key(dac, "sample_rate", root / "audio_vae" / "config.json")),
            audio_hop_length=math.prod(int(r) for r in rates),  # DAC's hop: the product of its strides
            random_weights=(root / TINY_MARKER).is_file(),
        )


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RulesError(f"{path} does not exist (not a MOVA checkpoint folder?)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise RulesError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise RulesError(f"{path} does not hold a JSON object")
    return data


def _key(config: dict, key: str, path: Path):
    if key not in config:
        raise RulesError(f"{path}: missing key {key!r}")
    return config[key]
