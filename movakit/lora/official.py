"""The two official LoRA save formats: read them (pickles only with weights_only=True) and write the accelerate one.

accelerate trainer (mova/engine/trainer/accelerate/lora_utils.py): a folder with
  lora_weights.pt  {"<component>.<path>.lora_A.weight": (rank, in), "....lora_B.weight": (out, rank)}
                   (the "diffsynth" variant spells them ".lora_A.default.weight" / ".lora_B.default.weight")
  lora_config.pt   {"rank": ..., "alpha": ..., "target_modules": [...]}   (optional; the official loader then
                   assumes rank 16, alpha 16)
low-resource trainer (mova/engine/trainer/low_resource/lora_layers.py, LoRAManager.save_lora): one file
  lora_weights.pt  {"lora_state_dict": {"<component>.<path>.lora_A": (rank, in), "....lora_B": (out, rank)},
                    "rank", "alpha", "dropout", "target_modules"}

Known nonsense in the saved configs, reported as notes and repaired (docs/lora.md, "Official formats"):
- the non-FSDP save writes a class name as "rank" and alpha 16.0 whatever was trained; the FSDP save writes rank 16,
  alpha 16.0 whatever was trained. The rank always comes from the tensor shapes. When the config's rank is not the
  tensors' rank, alpha is set so that alpha/rank keeps the config's alpha/rank (the scaling the official loader
  applies: it builds its layers with the config's rank); a rank that is not a number gives scaling 1, the value
  of every official training config (rank 16/alpha 16, rank 8/alpha 8).
- the non-FSDP save with module names writes an empty file (0 tensors): refused, there is nothing to load.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from movakit.lora.adapter import AdapterError, LoraAdapter, rank_of

WEIGHTS_FILE = "lora_weights.pt"
CONFIG_FILE = "lora_config.pt"
OFFICIAL_DEFAULT_RANK_ALPHA = (16, 16.0)  # what the official loader assumes without lora_config.pt
_ACCELERATE_SUFFIXES = {".lora_A.weight": 0, ".lora_B.weight": 1, ".lora_A.default.weight": 0,
                        ".lora_B.default.weight": 1}
_LOW_RESOURCE_SUFFIXES = {".lora_A": 0, ".lora_B": 1}


def load_pickle(path: Path) -> object:
    """torch.load with weights_only=True on the CPU; a file that needs arbitrary code (or is not a torch file) is
    refused with an AdapterError naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AdapterError(f"{path}: refused: loading it would run arbitrary code (only tensors, numbers, strings, "
                           f"lists and dicts are read; {first})") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise AdapterError(f"{path}: not a readable torch file ({exc})") from None


def _pairs(state: object, suffixes: dict[str, int], where: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    if not isinstance(state, dict):
        raise AdapterError(f"{where}: expected a dict of tensors, got {type(state).__name__}")
    halves: dict[str, list[torch.Tensor | None]] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise AdapterError(f"{where}: entry {key!r} is not a named tensor")
        suffix = next((s for s in suffixes if key.endswith(s)), None)
        if suffix is None:
            raise AdapterError(f"{where}: key {key!r} is not a LoRA tensor (expected it to end in "
                               f"{' or '.join(suffixes)})")
        layer = key[: -len(suffix)]
        pair = halves.setdefault(layer, [None, None])
        if pair[suffixes[suffix]] is not None:
            raise AdapterError(f"{where}: layer {layer!r} has two lora_{'AB'[suffixes[suffix]]} tensors")
        pair[suffixes[suffix]] = value.detach().contiguous()
    for layer, (a, b) in halves.items():
        if a is None or b is None:
            raise AdapterError(f"{where}: layer {layer!r} has lora_{'A' if a is not None else 'B'} but no "
                               f"lora_{'B' if a is not None else 'A'}")
    if not halves:
        raise AdapterError(f"{where}: holds no LoRA tensors (the official non-FSDP save_lora_weights writes an empty "
                           "file when it is given module names; the trained weights are only in the accelerator/ "
                           "state of that run)")
    return {layer: (a, b) for layer, (a, b) in halves.items()}


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _rank_alpha(cfg_rank: object, cfg_alpha: object, rank: int, where: str, notes: list[str]) -> float:
    """alpha for tensors of rank ``rank`` given the config's (rank, alpha); appends what it repaired to notes."""
    alpha = _number(cfg_alpha)
    config_rank = _number(cfg_rank)
    if alpha is None:
        notes.append(f"{where}: alpha {cfg_alpha!r} is not a positive number; alpha = rank {rank} (scaling 1)")
        return float(rank)
    if config_rank is None:
        notes.append(f"{where}: rank {cfg_rank!r} is not a number (the official non-FSDP save writes a class name "
                     f"there, and a hard-coded alpha); rank {rank} from the tensors, alpha = {rank} (scaling 1)")
        return float(rank)
    if config_rank != rank:
        repaired = alpha * rank / config_rank
        notes.append(f"{where}: rank {cfg_rank} does not match the tensors' rank {rank} (the official FSDP save "
                     f"hard-codes rank 16, alpha 16); scaling kept at alpha/rank = {alpha / config_rank:g} as the "
                     f"official loader applies it: alpha = {repaired:g}")
        return repaired
    return alpha


def read_accelerate(folder: Path, state: object | None = None) -> LoraAdapter:
    """The accelerate trainer's folder (lora_weights.pt + optional lora_config.pt)."""
    weights = folder / WEIGHTS_FILE
    if state is None:
        state = load_pickle(weights)
    layers = _pairs(state, _ACCELERATE_SUFFIXES, str(weights))
    rank = rank_of(layers)
    notes: list[str] = []
    config_path = folder / CONFIG_FILE
    if config_path.is_file():
        config = load_pickle(config_path)
        if not isinstance(config, dict):
            raise AdapterError(f"{config_path}: expected a dict, got {type(config).__name__}")
        cfg_rank, cfg_alpha = config.get("rank"), config.get("alpha")
        where = str(config_path)
    else:
        cfg_rank, cfg_alpha = OFFICIAL_DEFAULT_RANK_ALPHA
        where = f"{folder}: no {CONFIG_FILE} (the official loader assumes rank 16, alpha 16)"
        notes.append(where)
    alpha = _rank_alpha(cfg_rank, cfg_alpha, rank, where, notes)
    return LoraAdapter(rank=rank, alpha=alpha, targets="accelerate", layers=layers, notes=tuple(notes))


def read_low_resource(path: Path, data: object | None = None) -> LoraAdapter:
    """The low-resource trainer's lora_weights.pt ({'lora_state_dict', 'rank', 'alpha', 'dropout', ...})."""
    if data is None:
        data = load_pickle(path)
    if not isinstance(data, dict) or "lora_state_dict" not in data:
        raise AdapterError(f"{path}: not a low-resource trainer file (no 'lora_state_dict')")
    layers = _pairs(data["lora_state_dict"], _LOW_RESOURCE_SUFFIXES, f"{path}: lora_state_dict")
    rank = rank_of(layers)
    notes: list[str] = []
    alpha = _rank_alpha(data.get("rank"), data.get("alpha"), rank, str(path), notes)
    dropout = data.get("dropout")
    if _number(dropout):
        notes.append(f"{path}: dropout {dropout} applies to training only; not used at inference")
    return LoraAdapter(rank=rank, alpha=alpha, targets="attention", layers=layers, notes=tuple(notes))


def read_official(path: Path) -> LoraAdapter:
    """Either official format: a folder holding lora_weights.pt, or the lora_weights.pt file itself."""
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        raise AdapterError(f"{path}: no {WEIGHTS_FILE} (not an official LoRA save)")
    data = load_pickle(weights)
    if isinstance(data, dict) and "lora_state_dict" in data:
        return read_low_resource(weights, data)
    return read_accelerate(weights.parent, data)


def write_accelerate(adapter: LoraAdapter, folder: Path) -> Path:
    """The accelerate trainer's folder, as its FSDP save writes it ("peft" key names), with the true rank and alpha:
    the official inference (MOVALoRA.load_lora) loads it as it is."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, (a, b) in adapter.layers.items():
        state[f"{key}.lora_A.weight"] = a.detach().cpu().contiguous()
        state[f"{key}.lora_B.weight"] = b.detach().cpu().contiguous()
    torch.save(state, folder / WEIGHTS_FILE)
    torch.save({"rank": adapter.rank, "alpha": float(adapter.alpha), "target_modules": []}, folder / CONFIG_FILE)
    return folder
