"""Fine-tuning jobs in S3: the job record, the cancel marker and the training checkpoints (docs/training.md, "Jobs").

Keys, all under `training/<job_id>/`:
  job.pb                         the FineTuneJob (request with defaults, state, progress), rewritten on every change
  cancel                         present once a cancel was requested
  checkpoint.json                the newest checkpoint: {"step", "adapter": key, "state": key}; written last, so it
                                 only ever names complete files
  checkpoint-<step>.json, .safetensors   the LoRA adapter in its stored form (movakit.lora.store: manifest, tensors)
  checkpoint-<step>.state.pt     counters, losses and the optimizer state (tensors and plain types only: loaded with
                                 torch.load(weights_only=True))
`idempotency/training/<tenant>/<sha256 of key>` maps a tenant's idempotency key to its job id.
"""

from __future__ import annotations

import hashlib
import io
import json
import time

import torch
from google.protobuf import timestamp_pb2

from movakit.api.v1 import common_pb2, training_pb2
from movakit.runtime.object_store import ObjectStore

PREFIX = "training/"
TERMINAL = (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED)


def _key(job_id: str, name: str) -> str:
    return f"{PREFIX}{job_id}/{name}"


def now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


class JobRecords:
    """Reads and writes the records of fine-tuning jobs in one bucket."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    # ---- the job record ----------------------------------------------------------------------------------------
    def write(self, job: training_pb2.FineTuneJob) -> None:
        job.updated_at.CopyFrom(now())
        self.store.put_bytes(_key(job.job_id, "job.pb"), job.SerializeToString(), "application/x-protobuf")

    def read(self, job_id: str) -> training_pb2.FineTuneJob | None:
        data = self.store.get_raw(_key(job_id, "job.pb"))
        return None if data is None else training_pb2.FineTuneJob.FromString(data)

    def job_ids(self) -> list[str]:
        return sorted({key[len(PREFIX):].split("/", 1)[0] for key in self.store.list_keys(PREFIX)})

    def idempotent_job(self, tenant: str, key: str) -> str | None:
        data = self.store.get_raw(self._idempotency_key(tenant, key))
        return None if data is None else data.decode()

    def remember_idempotency(self, tenant: str, key: str, job_id: str) -> None:
        self.store.put_bytes(self._idempotency_key(tenant, key), job_id.encode(), "text/plain")

    @staticmethod
    def _idempotency_key(tenant: str, key: str) -> str:
        return f"idempotency/training/{tenant}/" + hashlib.sha256(key.encode()).hexdigest()

    # ---- cancel ------------------------------------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> None:
        self.store.put_bytes(_key(job_id, "cancel"), b"", "text/plain")

    def cancel_requested(self, job_id: str) -> bool:
        return self.store.has_key(_key(job_id, "cancel"))

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def write_checkpoint(self, job_id: str, step: int, manifest: bytes, weights: bytes, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        stem = f"checkpoint-{step:06d}"
        files = {"manifest": (f"{stem}.json", manifest), "weights": (f"{stem}.safetensors", weights),
                 "state": (f"{stem}.state.pt", buffer.getvalue())}
        index: dict = {"step": step}
        for part, (name, data) in files.items():
            ref = self.store.put_bytes(_key(job_id, name), data)
            index[part] = {"key": ref.key, "sha256": ref.sha256}
        self.store.put_bytes(_key(job_id, "checkpoint.json"), json.dumps(index).encode(), "application/json")

    def newest_checkpoint(self, job_id: str) -> tuple[int, bytes, bytes, dict] | None:
        """(step, manifest, weights, state) of the newest checkpoint, each verified against the index's sha256;
        None when the job has none."""
        data = self.store.get_raw(_key(job_id, "checkpoint.json"))
        if data is None:
            return None
        index = json.loads(data)
        manifest, weights, state = (
            self.store.get_bytes(common_pb2.ObjectRef(key=index[part]["key"], sha256=index[part]["sha256"]))
            for part in ("manifest", "weights", "state"))
        return int(index["step"]), manifest, weights, torch.load(io.BytesIO(state), weights_only=True)
