"""Denoiser service entry point: `python -m services.denoiser.main [--flag value ...]` (flags: see settings.py).

Both video experts are loaded once at startup and stay resident.
"""

from __future__ import annotations

import sys

from movakit.runtime.stage_service import load_models, run_stage_service
from services.denoiser.servicer import COMPONENTS, DenoiseHandler, add_servicers
from services.denoiser.settings import DenoiserSettings


def main(argv: list[str] | None = None) -> int:
    settings = DenoiserSettings.load(sys.argv[1:] if argv is None else argv)
    return run_stage_service(
        settings, "denoiser",
        lambda store: DenoiseHandler(load_models(settings, COMPONENTS), store,
                                     checkpoint_every=settings.latent_checkpoint_every),
        add_servicers)


if __name__ == "__main__":
    sys.exit(main())
