"""Which linear layers a LoRA adapter may touch, by the official injection rules (docs/lora.md, "Target layers").

Adapters are keyed by the official names ``<component>.<module path>``, e.g. ``video_dit.blocks.0.self_attn.q`` or
``dual_tower_bridge.audio_to_video_conditioners.0.inner.k``. The four components are the official module names;
``dual_tower_bridge`` is the MovaModels field ``bridge``.

Two rule sets, as the two official trainers inject:
- "accelerate" (lora_utils.inject_lora_to_model via MOVALoRA._inject_lora_layers): an nn.Linear whose full path
  CONTAINS one of q, k, v, o, to_q, to_k, to_v, proj and none of time_projection, time_embedding. On the MOVA
  modules that is every linear inside the DiT blocks (self/cross-attention q, k, v, o and ffn.0, ffn.2) and every
  bridge q, k, v, o; never text_embedding, time_* or head.
- "attention" (low_resource/lora_layers.inject_lora_into_model): an nn.Linear whose LAST name is one of q, k, v, o,
  to_q, to_k, to_v, to_out, proj: the attention q, k, v, o of the blocks and of the bridge.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from torch import nn

# Official component name -> MovaModels field.
COMPONENT_FIELDS: dict[str, str] = {
    "video_dit": "video_dit",
    "video_dit_2": "video_dit_2",
    "audio_dit": "audio_dit",
    "dual_tower_bridge": "bridge",
}
ACCELERATE_NAMES = ("q", "k", "v", "o", "to_q", "to_k", "to_v", "proj")  # substrings of the path
ACCELERATE_EXCLUDED = ("time_projection", "time_embedding")
ATTENTION_NAMES = ("q", "k", "v", "o", "to_q", "to_k", "to_v", "to_out", "proj")  # last path element
TARGET_KINDS = ("accelerate", "attention")


def is_target(kind: str, path: str) -> bool:
    """Whether the linear at ``path`` (inside one component) is wrapped by the official rule ``kind``."""
    if kind == "accelerate":
        return any(n in path for n in ACCELERATE_NAMES) and not any(x in path for x in ACCELERATE_EXCLUDED)
    if kind == "attention":
        return path.rsplit(".", 1)[-1] in ATTENTION_NAMES
    raise ValueError(f"targets: unknown kind {kind!r} (known: {', '.join(TARGET_KINDS)})")


def target_layers(components: Mapping[str, nn.Module], kind: str) -> dict[str, nn.Linear]:
    """``<component>.<path>`` -> nn.Linear for every target layer; ``components`` maps official component names to
    modules (absent components contribute nothing)."""
    layers: dict[str, nn.Linear] = {}
    for component, module in components.items():
        for path, child in module.named_modules():
            if isinstance(child, nn.Linear) and is_target(kind, path):
                layers[f"{component}.{path}"] = child
    return layers


def components_of(models) -> dict[str, nn.Module]:
    """The loaded official components of a MovaModels (official name -> module); missing ones are left out."""
    out = {}
    for component, field in COMPONENT_FIELDS.items():
        module = getattr(models, field)
        if module is not None:
            out[component] = module
    return out


def base_identity(configs: Mapping[str, object]) -> str:
    """``sha256:<hex>`` of the four components' architecture configs (official name -> config dataclass with
    to_dict()). It names the model size and layout an adapter was made for, not the weight values."""
    missing = set(COMPONENT_FIELDS) - set(configs)
    if missing:
        raise ValueError(f"base identity: configs of {', '.join(sorted(missing))} are missing")
    canonical = {name: configs[name].to_dict() for name in sorted(configs)}
    blob = json.dumps(canonical, sort_keys=True, default=list).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def identity_of(models) -> str:
    """base_identity of a MovaModels whose four DiT/bridge components are loaded."""
    return base_identity({name: module.config for name, module in components_of(models).items()})
