"""Block-wise weight streaming for fine-tuning: each DiT block's and bridge block's frozen weights on the device
only while that block runs (docs/training.md, "Memory").

A streamed call (`streamed_checkpoint`) is gradient checkpointing that also owns the weights' placement:
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
    pairs: list[tuple[torch.Tensor, torch.Tensor]]  # (the module's parameter or buffer, its host master)
    resident: bool = False
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.nbytes = sum(master.numel() * master.element_size() for _t, master in self.pairs)


class Streamer:
    """Copies units in and out around streamed calls. `units`: every streamable unit of the components being
    streamed; each unit's tensors must point at an empty placeholder (Streamer.park) while it is not resident."""

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
