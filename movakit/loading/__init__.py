"""Checkpoint reading: memory-mapped safetensors, strict per-component loading, the MOVA folder layout."""

from movakit.loading.checkpoint import ALL_COMPONENTS, COMPONENT_FOLDERS, MovaCheckpoint, MovaModels, ModelIndex
from movakit.loading.safetensors_io import CheckpointError, load_state_dict, open_tensor_source
from movakit.loading.strict import build_on_meta, load_component_strict, parameters_on_meta

__all__ = [
    "ALL_COMPONENTS",
    "COMPONENT_FOLDERS",
    "CheckpointError",
    "ModelIndex",
    "MovaCheckpoint",
    "MovaModels",
    "build_on_meta",
    "load_component_strict",
    "load_state_dict",
    "open_tensor_source",
    "parameters_on_meta",
]
