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
    block inputs) wait in host RAM (torch.autograd.graph.save_on_cpu) instead of on the device;
  - offload "blocks": as "model-and-activations", and of the components on the device only what lies outside
    the DiT blocks and bridge blocks is copied in (embeddings, heads: 0.5 GB per video expert at release size);
    each block's weights come in from host RAM for the one call that runs it and leave after it, in the forward
    and again in the backward's recompute (movakit.training.streaming). Needs gradient checkpointing.
Placement changes where tensors live, never their values: losses and gradients are the same under every plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from movakit.api.v1 import training_pb2
from movakit.models.dual_tower import BlockRunner, checkpointed, named_blocks
from movakit.training.spec import DEFAULT_GRADIENT_CHECKPOINTING, DEFAULT_OFFLOAD, HOST_WEIGHTS, OFFLOADS
from movakit.training.streaming import Float8Master, Master, Streamer, Unit

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
        if self.offload == "blocks" and not self.gradient_checkpointing:
            raise ValueError("offload: 'blocks' needs gradient_checkpointing (a block's weights are copied in "
                             "again for its recompute)")

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

    @property
    def streams_blocks(self) -> bool:
        return self.offload == "blocks"

    def saved_tensors(self, device: torch.device) -> AbstractContextManager:
        """The context a micro-batch's forward runs in: tensors saved for backward go to host RAM or stay."""
        if self.offload not in ("model-and-activations", "blocks"):
            return nullcontext()
        return torch.autograd.graph.save_on_cpu(pin_memory=device.type == "cuda")

    def block_runner(self, placement: "Placement | None") -> BlockRunner | None:
        """How the forward calls each block (models.dual_tower): streamed, checkpointed, or directly (None)."""
        if self.streams_blocks:
            if placement is None:
                raise ValueError("offload: 'blocks' needs a Placement to stream from")
            return placement.streamer.run
        return checkpointed if self.gradient_checkpointing else None


def _float8(tensor: torch.Tensor, master: torch.Tensor, pin: bool) -> Master:
    """The float8 master of a block matrix (1-D tensors, a sliver of the bytes, keep the model dtype); the tensor
    is pointed at an empty placeholder so its original storage is freed."""
    if not (master.is_floating_point() and master.ndim >= 2):
        return master
    out = Float8Master.of(master, pin=pin)
    tensor.data = _at_host(out)
    return out


def _at_host(master: Master) -> torch.Tensor:
    """What a tensor points at while its component is in host RAM: the master itself, or for a float8 master an
    empty placeholder of the model dtype (the component does not run there)."""
    return master if isinstance(master, torch.Tensor) else torch.empty(0, dtype=master.dtype)


def stream_units(name: str, module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The modules of component `name` that offload "blocks" streams: every DiT block, every bridge block (none of
    the encoders)."""
    return named_blocks(name, module) if name in EXPERTS + TRAINED else []


class Placement:
    """The components of a loaded MovaModels (frozen here: requires_grad off), each either on `device` or at its
    host master, or streamed (its blocks' weights copied in per call by `streamer`). Starts with every component
    at its master."""

    def __init__(self, models, device: str | torch.device, *, components: tuple[str, ...] = COMPONENTS,
                 host_weights: str = "model") -> None:
        """`components`: the ones placed (all by default; a benchmark without encoders names fewer).
        `host_weights` "float8": every matrix of the DiT and bridge blocks is kept in host RAM as float8 (streaming's
        Float8Master; the original tensor is released, for good), and every device copy made from it is the
        dequantised weight; "model": the masters keep the model dtype."""
        if host_weights not in HOST_WEIGHTS:
            raise ValueError(f"host_weights: {host_weights!r} is not one of {', '.join(HOST_WEIGHTS)}")
        self.models = models
        self.device = torch.device(device)
        self.components = components
        self.streamer = Streamer(self.device)
        pin = self.device.type == "cuda"
        self._tensors: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # outside the streamed units
        self._units: dict[str, list[Unit]] = {}
        for name in components:
            module = getattr(models, name)
            if module is None:
                raise ValueError(f"Placement: models.{name} is not loaded")
            module.requires_grad_(False)
            pairs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            for tensor in (*module.parameters(), *module.buffers()):
                master = tensor.detach().cpu()
                tensor.data = master.pin_memory() if pin else master
                pairs[id(tensor)] = (tensor, tensor.data)
            units = []
            for unit_name, unit_module in stream_units(name, module):
                tensors = (*unit_module.parameters(), *unit_module.buffers())
                unit_pairs = [pairs.pop(id(t)) for t in tensors]
                if host_weights == "float8":
                    unit_pairs = [(t, _float8(t, master, pin)) for t, master in unit_pairs]
                units.append(Unit(unit_name, unit_module, unit_pairs))
            self._units[name] = units
            self._tensors[name] = list(pairs.values())
        self._modes = dict.fromkeys(components, "host")  # host | device | streamed

    def units(self, name: str) -> tuple[Unit, ...]:
        """The blocks of component `name` that offload "blocks" streams."""
        return tuple(self._units[name])

    @property
    def resident(self) -> frozenset[str]:
        """The components on the device, whole or streamed."""
        return frozenset(name for name, mode in self._modes.items() if mode != "host")

    def place(self, names: Iterable[str], *, stream: bool = False) -> None:
        """`names` on the device (with `stream`, the DiTs' and bridge's blocks streamed), every other component at
        its master; a component already where it belongs is left alone (names this placement does not hold too)."""
        wanted = frozenset(names)
        unknown = wanted - set(COMPONENTS)
        if unknown:
            raise ValueError(f"Placement: unknown components {sorted(unknown)}")
        modes = {name: ("host" if name not in wanted else "streamed" if stream and self._units[name] else "device")
                 for name in self.components}
        self.streamer.stop()
        for name, mode in modes.items():
            before, moving = self._modes[name], []
            if (before == "host") != (mode == "host"):  # what lies outside the blocks
                moving += self._tensors[name]
            if before != mode and mode != "streamed":  # the blocks (the streamer parks streamed ones)
                moving += [pair for unit in self._units[name] for pair in unit.pairs]
            for tensor, master in moving:
                tensor.data = _at_host(master) if mode == "host" else master.to(self.device, non_blocking=True)
        self.streamer.start([unit for name, mode in modes.items() if mode == "streamed" for unit in self._units[name]])
        self._modes = modes
