"""How a request runs on a device: choices that change speed and memory, never what a request means.

Model dtype: `default_dtype`, bfloat16 on CUDA (the release's dtype) and float32 elsewhere, when a request or a
service setting names none.

Guidance (CFG) batching: with guidance on, each step runs the model for the prompt and for the negative prompt.
Batched, both go through one batch-2 forward (faster on a GPU, about twice the activation memory); unbatched,
as two batch-1 forwards (the official sampler's order). The two differ only by kernel rounding (about 1e-6 in
float32), so for bit-identical results every mode must make the same choice on the same device: `cfg_batch_for`
is that choice, used by `mova generate` (unless --cfg-batch / --no-cfg-batch says otherwise) and by the denoiser
service for its MOVA_DENOISER_DEVICE.

torch.compile: `compile_denoiser`, off by default (`mova generate --compile`, MOVA_DENOISER_COMPILE=1). It fuses
each block's elementwise work into generated kernels; the values change by rounding only. Its cost is the first
forward of every new token shape (minutes on a CPU), and it needs a C compiler on the CPU (docs/performance.md).
"""

from __future__ import annotations


def cfg_batch_for(device: str) -> bool:
    """Batch the two guidance branches on CUDA devices ("cuda", "cuda:N"); run them one by one elsewhere (the
    CPU: the official sampler's order)."""
    return device.split(":")[0] == "cuda"


def default_dtype(device: str) -> str:
    """The model dtype when none is asked for: bfloat16 on CUDA devices, float32 elsewhere."""
    return "bfloat16" if device.split(":")[0] == "cuda" else "float32"


def compile_denoiser(models) -> None:
    """torch.compile every DiT block of both video experts and the audio tower, and every bridge block, in place
    (nn.Module.compile: the module keeps its parameters and state-dict keys; the compiled forward is used on call)."""
    from movakit.models.dual_tower import named_blocks

    for name in ("video_dit", "video_dit_2", "audio_dit", "bridge"):
        for _name, block in named_blocks(name, getattr(models, name)):
            block.compile()
