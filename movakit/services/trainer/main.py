"""Trainer service entry point: `python -m movakit.services.trainer.main [--flag value ...]` (flags: settings.py).

A Celery worker (solo pool: one fine-tuning job at a time on this process's device) with the whole checkpoint
in host RAM (pinned on CUDA; each job moves to the device what its memory plan needs: movakit.training.memory),
plus a gRPC server with health and reflection on `listen`. The task `mova.finetune(job_id)` runs
movakit.training.runner.run_job under the job's lease; a copy redelivered while another live worker holds the
lease is retried later instead of running beside it.
"""

from __future__ import annotations

import dataclasses
import logging
import sys

log = logging.getLogger("movakit.trainer")

ALL_COMPONENTS = ("text_encoder", "video_vae", "audio_vae", "video_dit", "video_dit_2", "audio_dit", "bridge",
                  "scheduler")


def main(argv: list[str] | None = None) -> int:
    from movakit.services.trainer.settings import TrainerSettings

    settings = TrainerSettings.from_command_line(sys.argv[1:] if argv is None else argv)
    from movakit.runtime.celery_app import FINETUNE_TASK, TRAINING_QUEUE, LeaseHeld, lease, make_app
    from movakit.runtime.grpc_server import serve
    from movakit.runtime.stage_service import load_models, make_store, open_checkpoint
    from movakit.runtime.stage_settings import setup_json_logging
    from movakit.training.memory import Placement
    from movakit.training.runner import run_job, training_geometry
    from movakit.lora.registry import AdapterRegistry
    from movakit.model_rules import ModelRules
    from movakit.lora.store import encode

    setup_json_logging()
    log.info("settings", extra={"fields": {"service": "trainer", "settings": settings.redacted()}})
    store = make_store(settings)
    registry = AdapterRegistry(store)
    models = load_models(dataclasses.replace(settings, device="cpu", dtype=settings.model_dtype), ALL_COMPONENTS)
    placement = Placement(models, settings.device, host_weights=settings.host_weights)
    geometry = training_geometry(ModelRules.from_checkpoint(open_checkpoint(settings).path))
    app = make_app(settings.celery_broker, visibility_timeout_s=settings.visibility_timeout_s)

    @app.task(name=FINETUNE_TASK, bind=True)
    def finetune(task, job_id: str) -> str:
        try:
            with lease(app, f"finetune:{job_id}", settings.lease_s) as renew:
                job = run_job(job_id, store, placement=placement, geometry=geometry,
                              register=lambda tenant, name, adapter: registry.put(tenant, name, *encode(adapter),
                                                                             replace=True),
                              heartbeat=renew)
        except LeaseHeld:
            raise task.retry(countdown=max(1.0, settings.lease_s / 2), max_retries=None) from None
        log.info("fine-tuning job ended", extra={"fields": {"job_id": job_id, "state": job.state, "step": job.step}})
        return job_id

    server = serve("trainer", lambda _server: [], settings.listen, handle_signals=False)
    try:
        app.worker_main(["worker", "--pool=solo", "--concurrency=1", "--without-gossip", "--without-mingle",
                         "--without-heartbeat", "-Q", TRAINING_QUEUE, "--loglevel=INFO",
                         f"--hostname=trainer-{settings.replica_id}@%h"])
    finally:
        server.stop(2.0).wait(5.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
