"""One loader per MOVA component folder: config.json -> module on meta -> strict safetensors load.

Every module is built from its own folder's config (docs/checkpoint.md#configs-come-from-the-folder:
code defaults are not the release values).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from movakit.loading.safetensors_io import CheckpointError
from movakit.loading.strict import build_on_meta, load_component_strict


def _config_path(folder: str | Path, name: str = "config.json") -> Path:
    path = Path(folder) / name
    if not path.is_file():
        raise CheckpointError(f"config file {path} does not exist")
    return path


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data


def load_audio_vae(folder: str | Path, *, device: str | torch.device = "cpu"):
    """DAC-VAE in float32 whatever the stored dtype (the official decode runs in float32)."""
    from movakit.models.audio_vae import DacVAE, DacVAEConfig

    return _load_configured(folder, DacVAEConfig, DacVAE, dtype=torch.float32, device=device)


def load_video_vae(folder: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    from diffusers import AutoencoderKLWan

    from movakit.models.video_vae import VideoVAE

    path = _config_path(folder)
    config = {k: v for k, v in _read_json(path).items() if not k.startswith("_")}
    vae = build_on_meta(lambda: AutoencoderKLWan.from_config(config))
    load_component_strict(vae, folder, dtype=dtype, device=device)
    try:
        wrapped = VideoVAE(vae)  # checks latents_mean / latents_std against z_dim
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return wrapped.to(device=device).eval()


def load_text_encoder(
    text_encoder_dir: str | Path,
    tokenizer_dir: str | Path,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
):
    from transformers import PreTrainedTokenizerFast, T5TokenizerFast, UMT5Config, UMT5EncoderModel

    from movakit.models.text_encoder import TextEncoder

    path = _config_path(text_encoder_dir)
    try:
        config = UMT5Config.from_dict(_read_json(path))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    model = build_on_meta(lambda: UMT5EncoderModel(config))
    load_component_strict(model, text_encoder_dir, dtype=dtype, device=device)
    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise CheckpointError(f"tokenizer folder {tokenizer_dir} does not exist")
    try:
        if (tokenizer_dir / "tokenizer.json").is_file():
            # tokenizer.json verbatim, as transformers 4.x T5TokenizerFast loads it. transformers 5's T5Tokenizer
            # rebuilds the Unigram model from the vocabulary and drops settings such as byte_fallback.
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir), local_files_only=True)
        else:
            tokenizer = T5TokenizerFast.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the tokenizer from {tokenizer_dir}: {exc}") from exc
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise CheckpointError(f"tokenizer in {tokenizer_dir} defines no pad or eos token")
    return TextEncoder(tokenizer, model).eval()


def load_video_dit(folder: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    from movakit.models.video_dit import VideoDiT, VideoDiTConfig

    return _load_configured(folder, VideoDiTConfig, VideoDiT, dtype=dtype, device=device)


def load_audio_dit(folder: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    from movakit.models.audio_dit import AudioDiT, AudioDiTConfig

    return _load_configured(folder, AudioDiTConfig, AudioDiT, dtype=dtype, device=device)


def load_bridge(folder: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    from movakit.models.bridge import BridgeConfig, DualTowerBridge

    return _load_configured(folder, BridgeConfig, DualTowerBridge, dtype=dtype, device=device)


def _load_configured(folder, config_cls, module_cls, *, dtype, device) -> nn.Module:
    path = _config_path(folder)
    try:
        config = config_cls.from_dict(_read_json(path))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    module = build_on_meta(lambda: module_cls(config))
    return load_component_strict(module, folder, dtype=dtype, device=device)


def load_scheduler(folder: str | Path):
    from movakit.schedulers.flow_match_pair import FlowMatchPairScheduler

    path = _config_path(folder, "scheduler_config.json")
    try:
        return FlowMatchPairScheduler.from_config(_read_json(path))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
