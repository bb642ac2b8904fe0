"""A fine-tuning request: its defaults and limits, in one place (torch-free: the gateway and the CLI use it).

The defaults follow the official accelerate recipe where it has one (rank 16, alpha 16, lr 1e-4, 4 micro-batches
per update, gradient clipping at 1.0, gradient checkpointing on) and are sized for a first run otherwise (1000
updates, no warmup, nothing offloaded to host RAM).
"""

from __future__ import annotations

import re

from movakit.api.v1 import training_pb2
from movakit.request import LORA_NAME, LORA_NAME_RULE, InvalidArgument, validate_idempotency_key

COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")
DEFAULT_RANK = 16
DEFAULT_STEPS = 1000
DEFAULT_LR = 1e-4
DEFAULT_GRAD_ACCUM = 4
DEFAULT_CHECKPOINT_EVERY = 100
DEFAULT_SEED = 42
DEFAULT_GRADIENT_CHECKPOINTING = True
# TrainingOffload values by the names `mova finetune --offload` and movakit.training.memory use
OFFLOADS = {"none": training_pb2.TRAINING_OFFLOAD_NONE, "model": training_pb2.TRAINING_OFFLOAD_MODEL,
            "model-and-activations": training_pb2.TRAINING_OFFLOAD_MODEL_AND_ACTIVATIONS,
            "blocks": training_pb2.TRAINING_OFFLOAD_BLOCKS}
DEFAULT_OFFLOAD = "none"
# how the trainer keeps the DiT and bridge blocks' matrices in host RAM (MOVA_TRAINER_HOST_WEIGHTS; training.memory)
HOST_WEIGHTS = ("model", "float8")
MAX_RANK = 256
MAX_STEPS = 100_000
MAX_LR = 0.1
MAX_GRAD_ACCUM = 64
DATASET_PREFIX = "datasets/"
_DATASET = re.compile(r"^datasets/[A-Za-z0-9._/-]{1,260}$")


def resolved(request: training_pb2.FineTuneRequest) -> training_pb2.FineTuneRequest:
    """A copy with every zero field set to its default (alpha defaults to the rank, components to all four,
    an unset gradient_checkpointing to true)."""
    out = training_pb2.FineTuneRequest()
    out.CopyFrom(request)
    out.rank = out.rank or DEFAULT_RANK
    out.alpha = out.alpha or float(out.rank)
    out.steps = out.steps or DEFAULT_STEPS
    out.learning_rate = out.learning_rate or DEFAULT_LR
    out.grad_accum = out.grad_accum or DEFAULT_GRAD_ACCUM
    out.checkpoint_every = out.checkpoint_every or DEFAULT_CHECKPOINT_EVERY
    out.seed = out.seed or DEFAULT_SEED
    if not out.HasField("gradient_checkpointing"):
        out.gradient_checkpointing = DEFAULT_GRADIENT_CHECKPOINTING
    out.offload = out.offload or OFFLOADS[DEFAULT_OFFLOAD]
    if not out.components:
        out.components.extend(COMPONENTS)
    out.dataset = out.dataset.rstrip("/")
    return out


def validate(request: training_pb2.FineTuneRequest) -> None:
    """InvalidArgument naming the first bad field of a resolved request."""
    if not LORA_NAME.match(request.name):
        raise InvalidArgument("name", f"{request.name[:140]!r} must be {LORA_NAME_RULE}")
    if not _DATASET.match(request.dataset) or ".." in request.dataset.split("/"):
        raise InvalidArgument("dataset", f"{request.dataset[:220]!r} must be an S3 prefix under {DATASET_PREFIX} "
                              "(mova finetune --data DIR uploads a local folder there)")
    checks = (
        ("rank", 1 <= request.rank <= MAX_RANK, f"1..{MAX_RANK}"),
        ("alpha", request.alpha > 0, "> 0"),
        ("steps", 1 <= request.steps <= MAX_STEPS, f"1..{MAX_STEPS}"),
        ("learning_rate", 0 < request.learning_rate <= MAX_LR, f"(0, {MAX_LR:g}]"),
        ("warmup_steps", request.warmup_steps < request.steps, "below steps"),
        ("grad_accum", 1 <= request.grad_accum <= MAX_GRAD_ACCUM, f"1..{MAX_GRAD_ACCUM}"),
        ("checkpoint_every", 1 <= request.checkpoint_every <= MAX_STEPS, f"1..{MAX_STEPS}"),
    )
    for field, ok, bound in checks:
        if not ok:
            raise InvalidArgument(field, f"{getattr(request, field):g} must be {bound}")
    if request.offload not in OFFLOADS.values():
        raise InvalidArgument("offload", f"{request.offload} is not a TrainingOffload value")
    if request.offload == training_pb2.TRAINING_OFFLOAD_BLOCKS and not request.gradient_checkpointing:
        raise InvalidArgument("gradient_checkpointing", "must be true with offload BLOCKS (each block's weights are "
                              "copied in again for its recompute)")
    for component in request.components:
        if component not in COMPONENTS:
            raise InvalidArgument("components", f"{component[:64]!r} is not one of {', '.join(COMPONENTS)}")
    if len(set(request.components)) != len(request.components):
        raise InvalidArgument("components", "a component is named twice")
    validate_idempotency_key(request.idempotency_key)
