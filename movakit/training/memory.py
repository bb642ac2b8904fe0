"""Where a fine-tuning job keeps the frozen model, and what it keeps of the activations (docs/training.md, "Memory").

The trainer holds every component's weights in host RAM (pinned when the device is CUDA): these host copies are
the masters, never written (the base model is frozen; only the LoRA parameters train, and they stay on the
device). `Placement.place(names)` points the named components' parameters and buffers at device copies of their
masters and every other component's at the masters themselves, so moving a component out costs no copy and frees
its device memory once nothing else refers to it.

A job's `MemoryPlan`:
  - gradient_checkpointing: every bridge update and DiT block runs in non-reentrant torch.utils.checkpoint
    (models.dual_tower), keeping only each block's inputs for the backward pass;
  - offload "none": every component on the device for the whole job;
  - offload "model": the text encoder and the VAEs on the device only while the job's clips are encoded (once,
    before the first step); during the steps the audio DiT, the bridge and the ONE video expert the micro-batch
    trains are on the device, the other expert in host RAM, moved in when the expert alternation switches to it;
  - offload "model-and-activations": as "model", and the tensors the backward pass needs (with checkpointing: the
    block inputs) wait in host RAM (torch.autograd.graph.save_on_cpu) instead of on the device.
Placement changes where tensors live, never their values: losses and gradients are the same under every plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from movakit.api.v1 import training_pb2
from movakit.training.spec import DEFAULT_GRADIENT_CHECKPOINTING, DEFAULT_OFFLOAD, OFFLOADS

ENCODERS = ("text_encoder", "video_vae", "audio_vae")
TRAINED = ("audio_dit", "bridge")  # on the device at every step; plus the micro-batch's video expert
EXPERTS = ("video_dit", "video_dit_2")
COMPONENTS = ENCODERS + EXPERTS + TRAINED


@dataclass(frozen=True)
class MemoryPlan:
    gradient_checkpointing: bool = DEFAULT_GRADIENT_CHECKPOINTING
    offload: str = DEFAULT_OFFLOAD  # a key of spec.OFFLOADS

    def __post_init__(self) -> None:
        if self.offload not in OFFLOADS:
            raise ValueError(f"offload: {self.offload!r} is not one of {', '.join(OFFLOADS)}")

    @classmethod
    def of(cls, request: training_pb2.FineTuneRequest) -> "MemoryPlan":
        """The plan of a resolved request (spec.resolved)."""
        names = {value: name for name, value in OFFLOADS.items()}
        return cls(gradient_checkpointing=request.gradient_checkpointing, offload=names[request.offload])

    def encoding(self) -> tuple[str, ...]:
        """Components on the device while the clips are encoded."""
        return ENCODERS if self.offload != "none" else COMPONENTS

    def step(self, expert: str) -> tuple[str, ...]:
        """Components on the device during a micro-batch that trains `expert`."""
        return (expert, *TRAINED) if self.offload != "none" else COMPONENTS

    def saved_tensors(self, device: torch.device) -> AbstractContextManager:
        """The context a micro-batch's forward runs in: tensors saved for backward go to host RAM or stay."""
        if self.offload != "model-and-activations":
            return nullcontext()
        return torch.autograd.graph.save_on_cpu(pin_memory=device.type == "cuda")


class Placement:
    """The components of a loaded MovaModels (frozen here: requires_grad off), each either on `device` or at its
    host master. Starts with every component at its master."""

    def __init__(self, models, device: str | torch.device) -> None:
        self.models = models
        self.device = torch.device(device)
        pin = self.device.type == "cuda"
        self._tensors: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for name in COMPONENTS:
            module = getattr(models, name)
            if module is None:
                raise ValueError(f"Placement: models.{name} is not loaded")
            module.requires_grad_(False)
            pairs = []
            for tensor in (*module.parameters(), *module.buffers()):
                master = tensor.detach().cpu()
                tensor.data = master.pin_memory() if pin else master
                pairs.append((tensor, tensor.data))
            self._tensors[name] = pairs
        self.resident: frozenset[str] = frozenset()

    def place(self, names: Iterable[str]) -> None:
        """`names` on the device, every other component at its master; a component already where it belongs is
        left alone."""
        wanted = frozenset(names)
        unknown = wanted - set(COMPONENTS)
        if unknown:
            raise ValueError(f"Placement: unknown components {sorted(unknown)}")
        for name in self.resident - wanted:
            for tensor, master in self._tensors[name]:
                tensor.data = master
        for name in wanted - self.resident:
            for tensor, master in self._tensors[name]:
                tensor.data = master.to(self.device, non_blocking=True)
        self.resident = wanted
