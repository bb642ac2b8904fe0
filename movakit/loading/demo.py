"""A tiny MOVA checkpoint with random weights, in the official layout (docs/checkpoint.md).

Every folder of the release is written with the release's config keys (movakit.loading.release_configs) and
tiny sizes; video_dit, video_dit_2 and text_encoder are sharded with an index; model_index.json is in the
official save_pretrained form; `movakit_tiny.json` marks the weights as random, so whatever runs on it
produces noise and must say so.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from movakit.loading.release_configs import release_config
from movakit.model_rules import TINY_MARKER
from movakit.loading.demo_tokenizer import write_tiny_tokenizer

WRITER_VERSION = 2  # bump whenever the written files change, so cached demo checkpoints are rebuilt
TEXT_DIM = 32  # tiny umT5 d_model = the DiTs' text_dim
AUDIO_LATENT_DIM = 16

# Size overrides applied to the release configs; every other key keeps its release value.
TINY_OVERRIDES: dict[str, dict] = {
    "video_dit": {"dim": 48, "ffn_dim": 64, "num_heads": 2, "num_layers": 2, "text_dim": TEXT_DIM},
    "audio_dit": {
        "dim": 48,
        "ffn_dim": 64,
        "num_heads": 2,
        "num_layers": 2,
        "text_dim": TEXT_DIM,
        "in_dim": AUDIO_LATENT_DIM,
        "out_dim": AUDIO_LATENT_DIM,
    },
    "dual_tower_bridge": {
        "visual_layers": 2,
        "audio_layers": 2,
        "visual_hidden_dim": 48,
        "audio_hidden_dim": 48,
        "head_dim": 24,
    },
    "audio_vae": {"encoder_dim": 4, "latent_dim": AUDIO_LATENT_DIM, "decoder_dim": 64},
    "video_vae": {"base_dim": 8},
    "text_encoder": {
        "d_model": TEXT_DIM,
        "d_kv": 16,
        "d_ff": 64,
        "num_heads": 2,
        "num_layers": 2,
        "num_decoder_layers": 2,
    },
}
_SHARDED = {"video_dit": 2, "video_dit_2": 2, "text_encoder": 2}


def tiny_config(folder: str) -> dict:
    """Release config of `folder` with the tiny sizes applied (text_encoder vocab_size is set when writing)."""
    config = release_config(folder)
    config.update(TINY_OVERRIDES.get("video_dit" if folder == "video_dit_2" else folder, {}))
    return config


def _fingerprint(seed: int, dtype: torch.dtype) -> str:
    configs = {name: tiny_config(name) for name in (*TINY_OVERRIDES, "scheduler", "model_index")}
    blob = json.dumps([WRITER_VERSION, seed, str(dtype), configs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def stored_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as a checkpoint stores it: each tied tensor once, under its first name, in state-dict order."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out[key] = tensor
    return out


def _tensors(module: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """`stored_tensors`, detached, contiguous, floats cast to dtype."""
    return {
        key: (t.to(dtype) if t.is_floating_point() else t).contiguous().clone()
        for key, t in ((k, v.detach()) for k, v in stored_tensors(module).items())
    }


def _save(folder: Path, stem: str, tensors: dict[str, torch.Tensor], shards: int) -> None:
    if shards <= 1:
        save_file(tensors, str(folder / f"{stem}.safetensors"))
        return
    keys = list(tensors)
    per = math.ceil(len(keys) / shards)
    weight_map: dict[str, str] = {}
    for i in range(shards):
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in keys[i * per : (i + 1) * per]}
        save_file(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(folder / f"{stem}.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def build_component(folder: str, config: dict) -> nn.Module:
    """The module of a component folder built from its config.json contents (keys starting with "_" ignored)."""
    body = {k: v for k, v in config.items() if not k.startswith("_")}
    if folder in ("video_dit", "video_dit_2"):
        from movakit.models.video_dit import VideoDiT, VideoDiTConfig

        return VideoDiT(VideoDiTConfig.from_dict(body))
    if folder == "audio_dit":
        from movakit.models.audio_dit import AudioDiT, AudioDiTConfig

        return AudioDiT(AudioDiTConfig.from_dict(body))
    if folder == "dual_tower_bridge":
        from movakit.models.bridge import BridgeConfig, DualTowerBridge

        return DualTowerBridge(BridgeConfig.from_dict(body))
    if folder == "audio_vae":
        from movakit.models.audio_vae import DacVAE, DacVAEConfig

        return DacVAE(DacVAEConfig.from_dict(body))
    if folder == "video_vae":
        from diffusers import AutoencoderKLWan

        return AutoencoderKLWan.from_config(body)
    if folder == "text_encoder":
        from transformers import UMT5Config, UMT5EncoderModel

        return UMT5EncoderModel(UMT5Config.from_dict(body))
    raise KeyError(folder)


def _write_into(root: Path, *, seed: int, dtype: torch.dtype) -> None:
    vocab_size = write_tiny_tokenizer(_mkdir(root / "tokenizer"))
    for index, folder in enumerate(
        ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "audio_vae", "video_vae", "text_encoder")
    ):
        config = tiny_config(folder)
        if folder == "text_encoder":
            config["vocab_size"] = -(-vocab_size // 64) * 64
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1000 + index)  # each component its own stream: changing one leaves the rest
            module = build_component(folder, config)
        target = _mkdir(root / folder)
        _write_json(target / "config.json", config)
        stem = "model" if folder == "text_encoder" else "diffusion_pytorch_model"
        _save(target, stem, _tensors(module, dtype), _SHARDED.get(folder, 1))
        del module
    _write_json(_mkdir(root / "scheduler") / "scheduler_config.json", release_config("scheduler"))
    _write_json(root / "model_index.json", release_config("model_index"))
    _write_json(
        root / TINY_MARKER,
        {
            "random_weights": True,
            "note": "tiny MOVA checkpoint with RANDOM weights (movakit.loading.demo): outputs are noise",
            "seed": seed,
            "dtype": str(dtype).removeprefix("torch."),
            "writer_version": WRITER_VERSION,
            "fingerprint": _fingerprint(seed, dtype),
        },
    )


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_tiny_checkpoint(path: str | Path, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """Write a tiny random-weight MOVA checkpoint into `path` (created; must not exist or be empty)."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not an empty folder")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating dtype, got {dtype}")
    _write_into(_mkdir(path), seed=seed, dtype=dtype)
    return path


def _cached_is_current(path: Path, fingerprint: str) -> bool:
    try:
        marker = json.loads((path / TINY_MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(marker, dict) and marker.get("fingerprint") == fingerprint


def default_demo_checkpoint() -> Path:
    """The shared tiny checkpoint (seed 0, float32) under $MOVA_CACHE_DIR or ~/.cache/movakit: `<dir>/tiny-mova`.

    Written once into a temporary sibling folder and renamed into place, so concurrent callers never see a
    partial checkpoint; a current copy is never replaced, a cached copy from another writer version is.
    """
    cache = Path(os.environ.get("MOVA_CACHE_DIR") or Path.home() / ".cache" / "movakit")
    target = cache / "tiny-mova"
    fingerprint = _fingerprint(0, torch.float32)
    if _cached_is_current(target, fingerprint):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-mova-", dir=cache))
    try:
        write_tiny_checkpoint(tmp, seed=0, dtype=torch.float32)
        if _cached_is_current(target, fingerprint):  # another process finished first: keep its copy in place
            return target
        if target.exists():
            stale = Path(tempfile.mkdtemp(prefix=".tiny-mova-stale-", dir=cache))
            try:
                os.rename(target, stale / "old")
            except FileNotFoundError:
                pass  # another process removed it first
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _cached_is_current(target, fingerprint):  # lost a race to a writer of another version
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
