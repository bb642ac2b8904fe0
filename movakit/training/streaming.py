"""Block-wise weight streaming for fine-tuning: each DiT block's and bridge block's frozen weights on the device
only while that block runs (docs/training.md, "Memory").

A streamed call (`Streamer.run`) is gradient checkpointing that also owns the weights' placement:
  forward:  the unit's weights are copied in from their host masters, the function runs without keeping
            activations, the copies are dropped; the call's tensor inputs are saved for backward (in host RAM under
            torch.autograd.graph.save_on_cpu, as the trainer's activation offload runs it);
  backward: the weights are copied in again, the function is recomputed with gradients, the gradient flows
            through it (into the LoRA parameters, which stay on the device, and back to the inputs), and the
            copies are dropped once that is done.
So at any time the device holds the frozen weights of the one call being run (a video block is 0.36 GB in bf16
at release size), never a whole 28.6 GB expert. The autograd Function is reentrant in the way of
torch.utils.checkpoint(use_reentrant=True): the recompute and its backward run inside the outer backward, so the
weights they need are released only after both. Non-reentrant checkpointing cannot do this: it keeps frozen
parameters by reference and would read them after they were moved back.

Which weights a call needs is found while it runs: `Streamer` hooks every submodule of a streamed unit, and the
first hook that fires in a call copies the whole unit in. A unit that runs outside a streamed call is an error
(it would otherwise compute with an empty placeholder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

FLOAT8 = torch.float8_e4m3fn
FLOAT8_MAX = 448.0  # the largest finite float8_e4m3fn


@dataclass(frozen=True)
class Float8Master:
    """A frozen matrix kept in host RAM as float8_e4m3fn with one float32 scale, as the official low-resource
    trainer's FP8 offload stores weights (mova/engine/trainer/utils/fp8_cpu_offload.py in the official repository):
    scale = absmax / 448, the matrix divided by it in float32 and clamped to ±448, then rounded; copied to the
    device as (float8 → float32) · scale → `dtype`. Half the host bytes of bf16; the model then computes with
    FP8-rounded weights (docs/training.md, "Memory")."""

    data: torch.Tensor  # float8_e4m3fn, host
    scale: float  # a float32 value
    dtype: torch.dtype  # the model dtype the device copy has

    @classmethod
    def of(cls, tensor: torch.Tensor, *, pin: bool = False) -> "Float8Master":
        absmax = float(tensor.detach().abs().max()) if tensor.numel() else 0.0
        scale = float(torch.tensor(absmax / FLOAT8_MAX if absmax > 0 else 1.0, dtype=torch.float32))
        data = (tensor.detach().cpu().float() / scale).clamp_(-FLOAT8_MAX, FLOAT8_MAX).to(FLOAT8)
        return cls(data.pin_memory() if pin else data, scale, tensor.dtype)

    def to(self, device: torch.device, *, non_blocking: bool = False, copy: bool = True) -> torch.Tensor:
        """The weight as `dtype` on `device`: always a new tensor (`copy` is there for Tensor.to's signature)."""
        del copy
        data = self.data.to(device, non_blocking=non_blocking)
        return (data.float() * torch.tensor(self.scale, dtype=torch.float32, device=device)).to(self.dtype)

    def numel(self) -> int:
        return self.data.numel()


Master = torch.Tensor | Float8Master


@dataclass
class StreamStats:
    """What streaming has done so far: copies made, and the most units / bytes on the device at once."""

    uploads: int = 0
    peak_units: int = 0
    peak_bytes: int = 0


@dataclass
class Unit:
    """One streamed module: its tensors, each with its host master; `resident` while a call holds device copies."""

    name: str  # "video_dit.blocks.3", "bridge.audio_to_video_conditioners.0", ...
    module: torch.nn.Module
    pairs: list[tuple[torch.Tensor, Master]]  # (the module's parameter or buffer, its host master)
    resident: bool = False
    nbytes: int = field(init=False)  # of the device copies

    def __post_init__(self) -> None:
        self.nbytes = sum(master.numel() * master.dtype.itemsize for _t, master in self.pairs)


class Streamer:
    """Copies units in and out around streamed calls: `start(units)` streams the given units (movakit.training.memory
    .Placement passes every block of the components it streams), each parked on an empty placeholder while no
    call holds it; `run` is the streamed call."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stats = StreamStats()
        self._units: list[Unit] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._call: list[Unit] | None = None  # the units the current streamed call copied in

    @property
    def units(self) -> tuple[Unit, ...]:
        """The units being streamed."""
        return tuple(self._units)

    def start(self, units: list[Unit]) -> None:
        """Stream `units` from now on (each parked, hooked)."""
        self.stop()
        self._units = units
        for unit in units:
            self.park(unit)
            for module in unit.module.modules():
                if next(module.parameters(recurse=False), None) is not None or \
                        next(module.buffers(recurse=False), None) is not None:
                    self._hooks.append(module.register_forward_pre_hook(self._pre_hook(unit)))

    def stop(self) -> None:
        """Unhook every unit; their tensors are left as they are (the caller places them)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks, self._units = [], []

    def park(self, unit: Unit) -> None:
        """Drop the unit's device copies: each tensor becomes an empty placeholder of its dtype on the device, so
        the module still reports its device and dtype, and a use outside a streamed call fails on the shape."""
        for tensor, master in unit.pairs:
            tensor.data = torch.empty(0, dtype=master.dtype, device=self.device)
        unit.resident = False

    def _upload(self, unit: Unit) -> None:
        for tensor, master in unit.pairs:
            tensor.data = master.to(self.device, non_blocking=True, copy=True)
        unit.resident = True
        self.stats.uploads += 1
        resident = [u for u in self._units if u.resident]
        self.stats.peak_units = max(self.stats.peak_units, len(resident))
        self.stats.peak_bytes = max(self.stats.peak_bytes, sum(u.nbytes for u in resident))

    def _pre_hook(self, unit: Unit) -> Callable:
        def fetch(_module: torch.nn.Module, _args) -> None:
            if unit.resident:
                return
            if self._call is None:
                raise RuntimeError(f"block streaming: {unit.name} ran outside a streamed call "
                                   "(its weights are not on the device)")
            self._upload(unit)
            self._call.append(unit)
        return fetch

    @contextmanager
    def holding(self) -> Iterator[None]:
        """The units a call copies in stay on the device until the block ends, then are parked."""
        if self._call is not None:
            raise RuntimeError("block streaming: streamed calls do not nest")
        self._call = []
        try:
            yield
        finally:
            for unit in self._call:
                self.park(unit)
            self._call = None

    def run(self, fn: Callable, *args, **kwargs):
        """fn(*args, **kwargs) as a streamed call (a block runner for models.dual_tower.dual_tower_forward)."""
        leaves, spec = tree_flatten((args, kwargs))
        slots = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
        tensors = [leaves[i] for i in slots]

        def call(*inputs: torch.Tensor):
            filled = list(leaves)
            for i, tensor in zip(slots, inputs, strict=True):
                filled[i] = tensor
            call_args, call_kwargs = tree_unflatten(filled, spec)
            return fn(*call_args, **call_kwargs)

        # the empty input that requires grad makes the outputs require grad even when no input does (the text
        # keys and values come from a context without gradients, yet their LoRA parameters train)
        anchor = torch.empty(0, requires_grad=True)
        holder: dict = {}
        outputs = _StreamedCall.apply(self, call, holder, anchor, *tensors)
        return tree_unflatten(list(outputs), holder["spec"])


class _StreamedCall(torch.autograd.Function):
    @staticmethod
    def forward(ctx, streamer: Streamer, call: Callable, holder: dict, _anchor: torch.Tensor,
                *inputs: torch.Tensor):
        ctx.streamer, ctx.call = streamer, call
        with streamer.holding(), torch.no_grad():
            out = call(*inputs)
        flat, holder["spec"] = tree_flatten(out)
        ctx.save_for_backward(*inputs)
        return tuple(flat)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        needs = ctx.needs_input_grad[4:]
        inputs = [t.detach().requires_grad_(need) for t, need in zip(ctx.saved_tensors, needs, strict=True)]
        with ctx.streamer.holding(), torch.enable_grad():
            flat, _spec = tree_flatten(ctx.call(*inputs))
            pairs = [(out, grad) for out, grad in zip(flat, grads, strict=True)
                     if grad is not None and out.requires_grad]
            if pairs:
                torch.autograd.backward([out for out, _g in pairs], [g for _o, g in pairs])
        return (None, None, None, None, *(t.grad if need else None for t, need in zip(inputs, needs, strict=True)))
