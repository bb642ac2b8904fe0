"""Artifact retention: what a job stores under jobs/ (input image, tensors, checkpoints, outputs) is kept
`artifact_retention_days` days after its last write (MOVA_GATEWAY_ARTIFACT_RETENTION_DAYS, default 7).

At startup the gateway sets the bucket's lifecycle to one rule, "objects under jobs/ expire after N days", which S3
and MinIO enforce themselves. SeaweedFS (the local stack) stores and returns that rule, but 4.48 was not seen to
act on it (objects written under the prefix afterwards carry no TTL), so the gateway also sweeps: at startup and
every SWEEP_INTERVAL_S it deletes the objects under jobs/ last written more than N days ago. The job records stay
(Get still answers; its artifact URLs then lead to nothing). Replicas sweeping at once delete the same objects:
harmless.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from movakit.runtime.object_store import ObjectStore
from movakit.runtime.periodic import Periodic

log = logging.getLogger("movakit.gateway.retention")

JOBS_PREFIX = "jobs/"  # every object of a job: movakit.runtime.object_store.job_key
SWEEP_INTERVAL_S = 3600.0


def apply_lifecycle(objects: ObjectStore, days: int) -> None:
    """Sets the bucket's expiry rule for jobs/ (it replaces any other lifecycle rule of the bucket)."""
    objects.set_expiry(JOBS_PREFIX, days)


def sweep(objects: ObjectStore, days: int, now: datetime) -> int:
    """Deletes the objects under jobs/ last written more than `days` days before `now`; returns how many."""
    return objects.delete_older_than(JOBS_PREFIX, now - timedelta(days=days))


class RetentionSweeper(Periodic):
    """A daemon thread running `sweep` at start and every SWEEP_INTERVAL_S."""

    def __init__(self, objects: ObjectStore, days: int) -> None:
        self._objects = objects
        self._days = days
        super().__init__("gateway-retention", SWEEP_INTERVAL_S, self._sweep, first_now=True)

    def _sweep(self) -> None:
        deleted = sweep(self._objects, self._days, datetime.now(timezone.utc))
        if deleted:
            log.info("expired artifacts deleted", extra={"fields": {"objects": deleted, "days": self._days}})
