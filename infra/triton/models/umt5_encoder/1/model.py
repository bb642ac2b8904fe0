"""Triton python-backend model: a prompt's UTF-8 bytes -> its umT5 context (512, d_model) as float32.

The encoder is movakit's TextEncoder (prompt cleaning, tokenisation to 512 tokens, zeros past each prompt's tokens),
loaded from the checkpoint named by MOVA_TRITON_CHECKPOINT ("" or unset: the cached tiny demo checkpoint) on
MOVA_TRITON_DEVICE (default cpu) in MOVA_TRITON_DTYPE (default float32). A bfloat16/float16 context is sent as
float32, which holds it exactly; the encoder service casts it back. A dynamic batch is encoded in one forward.
Tensors cross the backend as DLPack (torch), never numpy: the stub's numpy binding predates numpy 2.
"""

import os
import sys

# The stub's embedded interpreter does not read PYTHONPATH (measured: it imported the venv's installed movakit, not
# the one PYTHONPATH named); apply it here so that the movakit of the source tree that started the server is used.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from movakit.loading import MovaCheckpoint  # noqa: E402
from movakit.loading.demo import default_demo_checkpoint  # noqa: E402
from movakit.runtime.stage_service import DTYPES  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):  # noqa: ARG002 (Triton's signature)
        path = os.environ.get("MOVA_TRITON_CHECKPOINT") or str(default_demo_checkpoint())
        dtype = os.environ.get("MOVA_TRITON_DTYPE", "float32")
        if dtype not in DTYPES:
            raise ValueError(f"MOVA_TRITON_DTYPE: one of {', '.join(DTYPES)}, got {dtype!r}")
        device = os.environ.get("MOVA_TRITON_DEVICE", "cpu")
        models = MovaCheckpoint(path).load(("text_encoder",), device=device, dtype=DTYPES[dtype])
        self.encoder = models.text_encoder

    def execute(self, requests):
        try:
            prompts = [_prompt(pb_utils.get_input_tensor_by_name(r, "PROMPT")) for r in requests]
            contexts = self.encoder.encode(prompts).float().cpu()
        except (TypeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            error = pb_utils.TritonError(f"PROMPT: {exc}", pb_utils.TritonError.INVALID_ARG)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        return [pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor.from_dlpack("CONTEXT", torch.utils.dlpack.to_dlpack(contexts[i:i + 1].contiguous()))])
            for i in range(len(requests))]


def _prompt(tensor) -> str:
    """One request's PROMPT, shape (1, n) UINT8, as text."""
    data = torch.from_dlpack(tensor.to_dlpack())
    if data.dim() != 2 or data.shape[0] != 1:
        raise ValueError(f"expected one prompt per request, shape (1, n), got {tuple(data.shape)}")
    return bytes(data.reshape(-1).tolist()).decode("utf-8")
