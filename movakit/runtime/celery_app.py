"""The Celery application of long batch work (fine-tuning), on a Redis broker.

Delivery is at least once and survives a killed worker: tasks are acknowledged only when they finish
(`task_acks_late`), a task whose worker process died is handed back (`task_reject_on_worker_lost`), each worker takes
one task at a time (`worker_prefetch_multiplier=1`), and Redis hands an unacknowledged task to another worker after
`visibility_timeout_s`. A task body must therefore be safe to run again: the trainer's resumes from its newest
checkpoint, and a lease (`lease`) keeps a redelivered copy from running beside a live one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery

FINETUNE_TASK = "mova.finetune"
TRAINING_QUEUE = "mova.training"


def make_app(broker_url: str, *, visibility_timeout_s: float = 3600.0) -> Celery:
    app = Celery("movakit", broker=broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=TRAINING_QUEUE,
        broker_transport_options={"visibility_timeout": visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


def dispatch_finetune(app: Celery, job_id: str) -> None:
    """Queue the fine-tuning task of `job_id` (its record must already be in S3)."""
    app.send_task(FINETUNE_TASK, args=[job_id], queue=TRAINING_QUEUE)


class LeaseHeld(RuntimeError):
    """Another live worker holds the job's lease."""


@contextmanager
def lease(app: Celery, name: str, ttl_s: float) -> Iterator[callable]:
    """Hold the Redis key `mova:lease:<name>` (set if absent, expiring after ttl_s) for the block; yields a
    `renew()` to call more often than ttl_s. LeaseHeld when a live holder has it; released on exit."""
    token = uuid.uuid4().hex
    key = f"mova:lease:{name}"
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        if not client.set(key, token, nx=True, px=int(ttl_s * 1000)):
            raise LeaseHeld(f"{name}: held by another worker")

        def renew() -> None:
            if client.get(key) in (token.encode(), None):
                client.set(key, token, px=int(ttl_s * 1000))

        try:
            yield renew
        finally:
            if client.get(key) == token.encode():
                client.delete(key)
