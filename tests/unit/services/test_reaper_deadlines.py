"""The stalled-job reaper's deadline choice: the queue deadline while a job waits in an inbox, its stage's
deadline while a worker runs it, each named by its variable."""

from __future__ import annotations

import pytest

from movakit.api.v1 import common_pb2 as c
from movakit.runtime.settings import SettingsError
from movakit.services.gateway.job_store import Progress
from movakit.services.gateway.reaper import deadline_of
from movakit.services.gateway.settings import GatewaySettings

SETTINGS = GatewaySettings(s3_access_key="id", s3_secret_key="sk", tokens_file="/t", kafka_secret="ks",
                           queue_deadline_s=100, enhance_deadline_s=1, encode_deadline_s=2, denoise_deadline_s=3,
                           decode_deadline_s=4)


def progress(stage: int, waiting: bool) -> Progress:
    return Progress(c.Job(job_id="j", stage=stage, state=c.JOB_STATE_RUNNING), progress_ns=0, waiting=waiting)


def test_waiting_jobs_get_the_queue_deadline_and_running_ones_their_stage_s():
    assert deadline_of(SETTINGS, progress(c.STAGE_DENOISE, True)) == (100, "MOVA_GATEWAY_QUEUE_DEADLINE_S")
    expected = {c.STAGE_ENHANCE: (1, "MOVA_GATEWAY_ENHANCE_DEADLINE_S"),
                c.STAGE_ENCODE: (2, "MOVA_GATEWAY_ENCODE_DEADLINE_S"),
                c.STAGE_DENOISE: (3, "MOVA_GATEWAY_DENOISE_DEADLINE_S"),
                c.STAGE_DECODE: (4, "MOVA_GATEWAY_DECODE_DEADLINE_S")}
    for stage, want in expected.items():
        assert deadline_of(SETTINGS, progress(stage, False)) == want


def test_deadlines_are_validated_by_name():
    required = {"MOVA_GATEWAY_S3_ACCESS_KEY": "k", "MOVA_GATEWAY_S3_SECRET_KEY": "s",  # the other checks pass
                "MOVA_GATEWAY_TOKENS_FILE": "/tokens", "MOVA_GATEWAY_KAFKA_SECRET": "x"}
    GatewaySettings.load([], required)
    with pytest.raises(SettingsError, match="MOVA_GATEWAY_DENOISE_DEADLINE_S"):
        GatewaySettings.load([], {**required, "MOVA_GATEWAY_DENOISE_DEADLINE_S": "0"})
