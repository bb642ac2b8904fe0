"""Encoder service entry point: `python -m movakit.services.encoder.main [--flag value ...]` (flags: see settings.py).

The listen port is reserved before the heavy imports and the model load (see reserve_listen_port). With
MOVA_ENCODER_TRITON_URL set, the text encoder is not loaded: Triton serves it (triton_client.py).
"""

from __future__ import annotations

import dataclasses
import sys

from movakit.runtime.stage_settings import reserve_listen_port
from movakit.services.encoder.settings import EncoderSettings


def main(argv: list[str] | None = None) -> int:
    settings = EncoderSettings.from_command_line(sys.argv[1:] if argv is None else argv)
    reservation = reserve_listen_port(settings.listen)
    from movakit.runtime.stage_service import load_models, run_stage_service
    from movakit.services.encoder.servicer import COMPONENTS, EncodeHandler

    def build_handler(store):
        if not settings.triton_url:
            return EncodeHandler(load_models(settings, COMPONENTS), store)
        from movakit.services.encoder.triton_client import TritonTextEncoder

        models = load_models(settings, tuple(c for c in COMPONENTS if c != "text_encoder"))
        text_encoder = TritonTextEncoder(settings.triton_url, settings.triton_model, settings.model_dtype,
                                         settings.triton_timeout_s)
        text_encoder.wait_ready(settings.triton_timeout_s)  # before SERVING: a missing Triton fails the start
        return EncodeHandler(dataclasses.replace(models, text_encoder=text_encoder), store)

    return run_stage_service(settings, "encoder", build_handler, reservation=reservation)


if __name__ == "__main__":
    sys.exit(main())
