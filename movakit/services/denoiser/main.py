"""Denoiser service entry point: `python -m movakit.services.denoiser.main [--flag value ...]` (flags: see settings.py).

Both video experts are loaded once at startup and stay resident; of the audio VAE only its config is read (the
audio latent length comes from its sample rate and hop length). The listen port is reserved before the heavy
imports and the model load (see reserve_listen_port).
"""

from __future__ import annotations

import sys

from movakit.runtime.stage_settings import reserve_listen_port
from movakit.services.denoiser.settings import DenoiserSettings


def main(argv: list[str] | None = None) -> int:
    settings = DenoiserSettings.from_command_line(sys.argv[1:] if argv is None else argv)
    reservation = reserve_listen_port(settings.listen)
    from movakit.models.audio_vae import DacVAEConfig
    from movakit.runtime.stage_service import load_models, open_checkpoint, run_stage_service
    from movakit.services.denoiser.servicer import COMPONENTS, DenoiseHandler, add_servicers

    audio = DacVAEConfig.from_json(open_checkpoint(settings).folder("audio_vae") / "config.json")
    return run_stage_service(
        settings, "denoiser",
        lambda store: DenoiseHandler(load_models(settings, COMPONENTS), store,
                                     checkpoint_every=settings.latent_checkpoint_every,
                                     audio_sample_rate=audio.sample_rate, audio_hop_length=audio.hop_length),
        add_servicers, reservation=reservation)


if __name__ == "__main__":
    sys.exit(main())
