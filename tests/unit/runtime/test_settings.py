"""Settings helpers and the gateway settings: types, ranges, flag over variable over default, redaction."""

from __future__ import annotations

import pytest

from movakit.runtime import settings as s
from movakit.services.gateway.settings import GatewaySettings

# The settings without a default (secrets and the tokens file); every load below adds them.
REQUIRED = {"MOVA_GATEWAY_S3_ACCESS_KEY": "id", "MOVA_GATEWAY_S3_SECRET_KEY": "sk", "MOVA_GATEWAY_TOKENS_FILE": "/t",
            "MOVA_GATEWAY_KAFKA_SECRET": "ks"}


def test_typed_reads_empty_counts_as_unset():
    env = {**REQUIRED, "MOVA_GATEWAY_MAX_ACTIVE_JOBS": " 7 ", "MOVA_GATEWAY_STARTUP_TIMEOUT_S": "2.5",
           "MOVA_GATEWAY_S3_SECURE": "Yes", "MOVA_GATEWAY_S3_BUCKET": "  ", "MOVA_GATEWAY_S3_REGION": "eu"}
    settings = GatewaySettings.load([], env)
    assert (settings.max_active_jobs, settings.startup_timeout_s, settings.s3_secure) == (7, 2.5, True)
    assert (settings.s3_bucket, settings.s3_region) == ("movakit", "eu")  # blank: the default
    assert GatewaySettings.from_env(env) == settings  # no flags: the same reading
    assert "MOVA_GATEWAY_S3_SECURE" in GatewaySettings.env_names()


def test_a_settings_instance_is_validated_however_it_is_made():
    with pytest.raises(s.SettingsError, match="MOVA_GATEWAY_MAX_ACTIVE_JOBS: must be >= 1"):
        GatewaySettings(s3_access_key="id", s3_secret_key="sk", tokens_file="/t", kafka_secret="ks", max_active_jobs=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: s.parse_int("N", "x"), "N: expected an integer"),
        (lambda: s.check_range("N", 0, minimum=1), "N: must be >= 1"),
        (lambda: s.check_range("F", 2.0, maximum=1), "F: must be <= 1"),
        (lambda: s.parse_bool("B", "maybe"), "B: expected one of"),
        (lambda: s.parse_float("F", "soon"), "F: expected a number"),
        (lambda: s.check_address("ADDR", "localhost"), "ADDR: expected host:port"),
        (lambda: s.check_address("ADDR", "h:99999"), "ADDR: expected host:port"),
    ],
)
def test_errors_name_the_variable(call, message):
    with pytest.raises(s.SettingsError, match=message):
        call()


def test_gateway_defaults_match_the_stack_addresses():
    settings = GatewaySettings.load([], REQUIRED)
    assert (settings.listen, settings.kafka_bootstrap, settings.s3_endpoint) == (
        "127.0.0.1:50051", "127.0.0.1:9092", "127.0.0.1:9000"
    )
    assert settings.checkpoint == ""  # the tiny demo checkpoint's rules, as the stage services
    assert settings.presign_expiry_s == 900  # artifact URLs live 15 minutes unless configured


def test_gateway_flag_beats_variable_beats_default():
    env = {"MOVA_GATEWAY_MAX_ACTIVE_JOBS": "5", "MOVA_GATEWAY_S3_BUCKET": "b1", "MOVA_GATEWAY_CHECKPOINT": "/m"}
    settings = GatewaySettings.load(["--s3-bucket", "b2"], {**REQUIRED, **env})
    assert (settings.max_active_jobs, settings.s3_bucket, settings.checkpoint) == (5, "b2", "/m")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"MOVA_GATEWAY_PRESIGN_EXPIRY_S": "10"}, "MOVA_GATEWAY_PRESIGN_EXPIRY_S: must be >= 60"),
        (["--max-active-jobs", "lots"], {}, "--max-active-jobs: expected an integer"),
        ([], {"MOVA_GATEWAY_OTEL_EXPORTER": "zipkin"}, "MOVA_GATEWAY_OTEL_EXPORTER: one of"),
        ([], {"MOVA_GATEWAY_OTEL_EXPORTER": "otlp"}, "MOVA_GATEWAY_OTEL_ENDPOINT: required"),
        ([], {"MOVA_GATEWAY_LISTEN": "50051"}, "MOVA_GATEWAY_LISTEN: expected host:port"),
        ([], {"MOVA_GATEWAY_TOKENS_FILE": ""}, "MOVA_GATEWAY_TOKENS_FILE: must not be empty"),
        ([], {"MOVA_GATEWAY_KAFKA_SECRET": ""}, "MOVA_GATEWAY_KAFKA_SECRET: must not be empty"),
        ([], {"MOVA_GATEWAY_S3_SECRET_KEY": ""}, "MOVA_GATEWAY_S3_SECRET_KEY: must not be empty"),
        ([], {"MOVA_GATEWAY_TENANT_MAX_GPU_S": "0"}, "MOVA_GATEWAY_TENANT_MAX_GPU_S: must be >= 1"),
    ],
)
def test_gateway_bad_settings(argv, env, message):
    with pytest.raises(s.SettingsError, match=message):
        GatewaySettings.load(argv, {**REQUIRED, **env})


def test_secrets_are_redacted():
    shown = GatewaySettings.load([], {**REQUIRED, "MOVA_GATEWAY_S3_SECRET_KEY": "hunter2"}).redacted()
    assert shown["s3_secret_key"] == "***" and shown["s3_access_key"] == "***"
    assert shown["s3_bucket"] == "movakit" and "hunter2" not in repr(shown)
