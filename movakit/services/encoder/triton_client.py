"""The umT5 text encoder served by Triton (infra/triton/models/umt5_encoder), as the encode stage calls it.

`TritonTextEncoder.encode(prompts)` returns what movakit.models.text_encoder.TextEncoder.encode returns for the
same checkpoint, dtype and device, bit for bit: the model runs that same code in the server. Each prompt is one
gRPC request (its UTF-8 bytes as a UINT8 tensor, see the model's config.pbtxt); the requests of one call are
sent together, so Triton's dynamic batcher can group them (and those of other encoder replicas) into one forward.
"""

from __future__ import annotations

import queue
import time

import numpy as np
import torch
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from movakit.runtime.stage_service import DTYPES

# Triton answers that a later attempt may not meet: raised as ConnectionError, which the stage worker retries.
_TRANSIENT = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED"})


class TritonTextEncoder:
    def __init__(self, url: str, model: str, dtype: str, timeout_s: float) -> None:
        """url: Triton's gRPC endpoint host:port; dtype: the dtype the model was loaded in (MOVA_TRITON_DTYPE),
        to which the float32 answer is cast back exactly; timeout_s: the deadline of one request."""
        self.url = url
        self.model = model
        self.dtype = DTYPES[dtype]
        self.timeout_s = timeout_s
        self._client = triton_grpc.InferenceServerClient(url)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """prompts -> (B, 512, d_model) in `dtype`; ValueError for a prompt the model rejects, ConnectionError
        when Triton cannot be reached or times out."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts: expected a list of str")
        if not prompts:
            raise ValueError("prompts: expected at least one prompt")
        answers: queue.Queue = queue.Queue()
        for i, prompt in enumerate(prompts):
            data = np.frombuffer(prompt.encode("utf-8"), dtype=np.uint8).reshape(1, -1)
            tensor = triton_grpc.InferInput("PROMPT", list(data.shape), "UINT8")
            tensor.set_data_from_numpy(data)
            self._client.async_infer(
                self.model, [tensor], callback=lambda result, error, i=i: answers.put((i, result, error)),
                outputs=[triton_grpc.InferRequestedOutput("CONTEXT")], client_timeout=self.timeout_s)
        contexts: list = [None] * len(prompts)
        for _ in prompts:  # every request ends in its callback: an answer, an error or the client deadline
            i, result, error = answers.get()
            if error is not None:
                raise _mapped(self.url, error)
            contexts[i] = torch.from_numpy(result.as_numpy("CONTEXT").copy())
        return torch.cat(contexts).to(self.dtype)

    def wait_ready(self, timeout_s: float) -> None:
        """Block until Triton reports the model ready; ConnectionError naming the endpoint after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self._client.is_model_ready(self.model, client_timeout=5.0):
                    return
                reason = "the model is not ready"
            except InferenceServerException as exc:
                reason = exc.message()
            if time.monotonic() > deadline:
                raise ConnectionError(f"triton {self.url}: model {self.model!r} not ready after {timeout_s} s: {reason}")
            time.sleep(1.0)

    def close(self) -> None:
        self._client.close()


def _mapped(url: str, error: InferenceServerException) -> Exception:
    message = f"triton {url}: {error.message()}"
    if error.status() in _TRANSIENT:
        return ConnectionError(message)
    if error.status() == "StatusCode.INVALID_ARGUMENT":
        return ValueError(message)
    return RuntimeError(message)
