"""The base model an adapter is checked against, without loading weights: the four components of a checkpoint
built on the meta device from their config.json (no memory), and the checkpoint's base identity."""

from __future__ import annotations

from torch import nn

from movakit.lora.adapter import LoraAdapter, check_base, check_fits
from movakit.lora.targets import COMPONENT_FIELDS, base_identity


def meta_components(checkpoint) -> dict[str, nn.Module]:
    """Official component name -> module on the meta device, for a movakit.loading.MovaCheckpoint."""
    from movakit.loading.safetensors_io import CheckpointError
    from movakit.loading.strict import build_on_meta
    from movakit.models.audio_dit import AudioDiT, AudioDiTConfig
    from movakit.models.bridge import BridgeConfig, DualTowerBridge
    from movakit.models.video_dit import VideoDiT, VideoDiTConfig

    classes = {"video_dit": (VideoDiTConfig, VideoDiT), "video_dit_2": (VideoDiTConfig, VideoDiT),
               "audio_dit": (AudioDiTConfig, AudioDiT), "dual_tower_bridge": (BridgeConfig, DualTowerBridge)}
    modules = {}
    for component, field in COMPONENT_FIELDS.items():
        config_cls, module_cls = classes[component]
        path = checkpoint.folder(field) / "config.json"
        try:
            config = config_cls.from_json(path)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        modules[component] = build_on_meta(lambda: module_cls(config))
    return modules


def for_checkpoint(adapter: LoraAdapter, checkpoint) -> LoraAdapter:
    """The adapter checked against ``checkpoint`` (keys, shapes, recorded base) and stamped with its identity."""
    from dataclasses import replace

    components = meta_components(checkpoint)
    identity = base_identity({name: module.config for name, module in components.items()})
    check_base(adapter, identity)
    check_fits(adapter, components)
    return replace(adapter, base=identity)
