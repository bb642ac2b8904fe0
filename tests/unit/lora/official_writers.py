"""Writers of the official LoRA save formats, written here from the official code's save functions (same key names,
containers and config objects), so the readers are tested against what the official trainers leave on disk.

accelerate, FSDP save (lora_utils.save_lora_weights_fsdp, format "peft"): keys of accelerator.get_state_dict that
contain "lora_A.weight"/"lora_B.weight", config fixed at {"rank": 16, "alpha": 16.0, "target_modules": names or []}.
accelerate, non-FSDP save (save_lora_weights, format "diffsynth"): ".lora_A.default.weight" keys, config "rank" =
the class name of the model's first module (MOVATrain), alpha 16.0.
low-resource (LoRAManager.save_lora): {"lora_state_dict": state_dict entries containing "lora_" (".lora_A",
".lora_B" bare parameters), "rank", "alpha", "dropout", "target_modules"}.
"""

from __future__ import annotations

from pathlib import Path

import torch

from movakit.lora.targets import target_layers

LOW_RESOURCE_TARGETS = ["q", "k", "v", "o", "to_q", "to_k", "to_v", "to_out", "proj"]


def random_lora(components: dict, kind: str, rank: int, *, seed: int, dtype=torch.float32) -> dict:
    """<component>.<path> -> (A (rank, in), B (out, rank)) for every official target layer, nonzero (a trained B)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, layer in target_layers(components, kind).items():
        a = torch.randn(rank, layer.in_features, generator=gen) * 0.2
        b = torch.randn(layer.out_features, rank, generator=gen) * 0.2
        out[key] = (a.to(dtype), b.to(dtype))
    return out


def write_accelerate_fsdp(folder: Path, lora: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, (a, b) in lora.items():
        state[f"{key}.lora_A.weight"] = a.cpu()
        state[f"{key}.lora_B.weight"] = b.cpu()
    torch.save(state, folder / "lora_weights.pt")
    torch.save({"rank": 16, "alpha": 16.0, "target_modules": []}, folder / "lora_config.pt")
    return folder


def write_accelerate_plain(folder: Path, lora: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, (a, b) in lora.items():
        state[f"{key}.lora_A.default.weight"] = a.cpu()
        state[f"{key}.lora_B.default.weight"] = b.cpu()
    torch.save(state, folder / "lora_weights.pt")
    torch.save({"rank": "MOVATrain", "alpha": 16.0, "target_modules": []}, folder / "lora_config.pt")
    return folder


def write_low_resource(path: Path, lora: dict, *, rank: int, alpha: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, (a, b) in lora.items():
        state[f"{key}.lora_A"] = a
        state[f"{key}.lora_B"] = b
    torch.save({"lora_state_dict": state, "rank": rank, "alpha": alpha, "dropout": 0.0,
                "target_modules": LOW_RESOURCE_TARGETS}, path)
    return path
