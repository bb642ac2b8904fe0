"""A MOVA checkpoint folder: `model_index.json` plus one folder per component (docs/checkpoint.md).

`model_index.json` comes in two forms, both read the same way: entries whose value is a two-item list are
components, named by the folder that holds them. The official `save_pretrained` writes module paths such as
`["mova.diffusion.models.wan_video_dit", "WanModel"]`, a diffusers-style export writes library names; neither
is ever imported. `[null, null]` marks a component that is not shipped. Pipeline settings are
`audio_vae_type` ("dac") and `boundary_ratio` (0.9 when absent, the official constructor default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from movakit.loading import components as load
from movakit.loading.safetensors_io import CheckpointError
from movakit.model_rules import TINY_MARKER

# MovaModels field -> component folder (= key in model_index.json).
COMPONENT_FOLDERS: dict[str, str] = {
    "video_dit": "video_dit",
    "video_dit_2": "video_dit_2",
    "audio_dit": "audio_dit",
    "bridge": "dual_tower_bridge",
    "audio_vae": "audio_vae",
    "video_vae": "video_vae",
    "text_encoder": "text_encoder",
    "scheduler": "scheduler",
}
ALL_COMPONENTS: tuple[str, ...] = tuple(COMPONENT_FOLDERS)
_KNOWN_FOLDERS = frozenset(COMPONENT_FOLDERS.values()) | {"tokenizer"}
DEFAULT_BOUNDARY_RATIO = 0.9  # official MOVA.__init__ default, used when model_index.json omits it


@dataclass(frozen=True)
class ModelIndex:
    path: Path
    class_name: str | None
    components: dict[str, tuple[str | None, str | None]]  # folder -> (library/module, class), as written
    audio_vae_type: str
    boundary_ratio: float

    @classmethod
    def read(cls, path: Path) -> ModelIndex:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise CheckpointError(f"{path} does not exist: not a MOVA checkpoint folder") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"{path} does not hold a JSON object")
        comps: dict[str, tuple[str | None, str | None]] = {}
        settings: dict[str, object] = {}
        for key, value in data.items():
            if key.startswith("_"):
                continue
            if isinstance(value, list):
                if len(value) != 2 or not all(v is None or isinstance(v, str) for v in value):
                    raise CheckpointError(f"{path}: entry {key!r} must be [library, class], got {value!r}")
                if key not in _KNOWN_FOLDERS:
                    raise CheckpointError(f"{path}: unknown component {key!r}")
                comps[key] = (value[0], value[1])
            elif key in ("audio_vae_type", "boundary_ratio"):
                settings[key] = value
            else:
                raise CheckpointError(f"{path}: unknown entry {key!r}")
        class_name = data.get("_class_name")
        if class_name is not None and class_name != "MOVA":
            raise CheckpointError(f"{path}: _class_name is {class_name!r}, expected 'MOVA'")
        audio_vae_type = settings.get("audio_vae_type", "dac")
        if audio_vae_type != "dac":
            raise NotImplementedError(f"{path}: audio_vae_type {audio_vae_type!r} is not supported (only 'dac')")
        ratio = settings.get("boundary_ratio", DEFAULT_BOUNDARY_RATIO)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio < 1.0:
            raise CheckpointError(f"{path}: boundary_ratio must be a number in (0, 1), got {ratio!r}")
        return cls(path, class_name, comps, str(audio_vae_type), float(ratio))

    def has(self, folder: str) -> bool:
        return self.components.get(folder, (None, None)) != (None, None)


@dataclass(frozen=True)
class MovaModels:
    """Loaded components; the ones not asked for (or not given, when tests and benchmarks build a subset) are None."""

    boundary_ratio: float  # from model_index.json: the switch to video_dit_2 at t < boundary_ratio * 1000
    video_dit: torch.nn.Module | None = None
    video_dit_2: torch.nn.Module | None = None
    audio_dit: torch.nn.Module | None = None
    bridge: torch.nn.Module | None = None
    audio_vae: torch.nn.Module | None = None  # DacVAE, always float32
    video_vae: torch.nn.Module | None = None  # VideoVAE
    text_encoder: torch.nn.Module | None = None  # TextEncoder
    scheduler: object | None = None  # FlowMatchPairScheduler
    random_weights: bool = False  # True for checkpoints written by movakit.loading.demo


class MovaCheckpoint:
    """A MOVA checkpoint folder. Reading the index is cheap; `load` builds only the components asked for."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"checkpoint folder {self.path} does not exist")
        self.index = ModelIndex.read(self.path / "model_index.json")

    @property
    def boundary_ratio(self) -> float:
        return self.index.boundary_ratio

    @property
    def random_weights(self) -> bool:
        """True when the folder carries the tiny-checkpoint marker (random weights: outputs are noise)."""
        return (self.path / TINY_MARKER).is_file()

    def folder(self, component: str) -> Path:
        """The folder of a MovaModels field name (e.g. "bridge" -> <path>/dual_tower_bridge)."""
        if component not in COMPONENT_FOLDERS:
            raise ValueError(f"components: unknown component {component!r} (known: {', '.join(ALL_COMPONENTS)})")
        name = COMPONENT_FOLDERS[component]
        if not self.index.has(name):
            raise CheckpointError(f"{self.index.path}: component {name!r} is not in the checkpoint")
        folder = self.path / name
        if not folder.is_dir():
            raise CheckpointError(f"component folder {folder} (listed in {self.index.path.name}) does not exist")
        return folder

    def load(
        self,
        components: tuple[str, ...] | list[str] = ALL_COMPONENTS,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> MovaModels:
        """Load the named components (MovaModels field names) onto `device`.

        `dtype` applies to the DiTs, bridge, text encoder and video VAE (None keeps the stored dtype); the
        audio VAE is always float32.
        """
        if isinstance(components, str):
            raise TypeError("components: expected a tuple of component names, not a str")
        wanted = list(dict.fromkeys(components))
        folders = {name: self.folder(name) for name in wanted}  # validate everything before loading anything
        loaded: dict[str, object] = {}
        for name, folder in folders.items():
            if name in ("video_dit", "video_dit_2"):
                loaded[name] = load.load_video_dit(folder, dtype=dtype, device=device)
            elif name == "audio_dit":
                loaded[name] = load.load_audio_dit(folder, dtype=dtype, device=device)
            elif name == "bridge":
                loaded[name] = load.load_bridge(folder, dtype=dtype, device=device)
            elif name == "audio_vae":
                loaded[name] = load.load_audio_vae(folder, device=device)
            elif name == "video_vae":
                loaded[name] = load.load_video_vae(folder, dtype=dtype, device=device)
            elif name == "text_encoder":
                tokenizer = self.path / "tokenizer"
                if not self.index.has("tokenizer") or not tokenizer.is_dir():
                    raise CheckpointError(f"{self.path}: the text encoder needs the 'tokenizer' folder")
                loaded[name] = load.load_text_encoder(folder, tokenizer, dtype=dtype, device=device)
            else:
                loaded[name] = load.load_scheduler(folder)
        return MovaModels(
            **{name: loaded.get(name) for name in ALL_COMPONENTS},
            boundary_ratio=self.index.boundary_ratio,
            random_weights=self.random_weights,
        )
