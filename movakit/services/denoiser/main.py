"""Denoiser service entry point: `python -m movakit.services.denoiser.main [--flag value ...]` (flags: see settings.py).

Both video experts are loaded once at startup and stay resident; of the audio VAE only its config is read (the
audio latent length comes from its sample rate and hop length, movakit/model_rules.py). Guidance batching follows
the device (movakit/execution.py), as in `mova generate`. The listen port is reserved before the heavy
imports and the model load (see reserve_listen_port). With context_parallel N > 1 the replica runs N ranks, one
device each (movakit/services/denoiser/ranks.py): this process is rank 0 and serves, the others follow it.
"""

from __future__ import annotations

import os
import sys

from movakit.runtime.stage_settings import reserve_listen_port
from movakit.services.denoiser.settings import DenoiserSettings


def main(argv: list[str] | None = None) -> int:
    settings = DenoiserSettings.from_command_line(sys.argv[1:] if argv is None else argv)
    if settings.context_parallel > 1 and os.environ.get("RANK", "0") != "0":  # a rank > 0 started by torchrun
        from movakit.services.denoiser.ranks import run_follower

        return run_follower(settings)
    reservation = reserve_listen_port(settings.listen)
    from movakit.execution import cfg_batch_for, compile_denoiser
    from movakit.lora.cache import AdapterCache
    from movakit.lora.registry import AdapterRegistry
    from movakit.model_rules import ModelRules
    from movakit.runtime.stage_service import load_models, open_checkpoint, run_stage_service
    from movakit.services.denoiser.servicer import COMPONENTS, DenoiseHandler

    rules = ModelRules.from_checkpoint(open_checkpoint(settings).path)
    ranks = []  # with context_parallel > 1: the replica's ranks, joined once logging is set up

    def handler(store):
        own, lead = settings, None  # own: this process's settings (with N ranks: rank 0's device)
        if settings.context_parallel > 1:
            from movakit.services.denoiser.ranks import start_lead

            ranks.append(start_lead(settings))
            own, lead = ranks[0].settings, ranks[0].lead
        models = load_models(own, COMPONENTS)
        if settings.compile:
            compile_denoiser(models)
        return DenoiseHandler(models, store, rules=rules, checkpoint_every=settings.latent_checkpoint_every,
                              cfg_batch=cfg_batch_for(own.device),
                              adapters=AdapterCache(models, AdapterRegistry(store), settings.lora_cache_size),
                              lead=lead)

    try:
        return run_stage_service(settings, "denoiser", handler, reservation=reservation)
    finally:
        for replica in ranks:
            replica.stop()


if __name__ == "__main__":
    sys.exit(main())
