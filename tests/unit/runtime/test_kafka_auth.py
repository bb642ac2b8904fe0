"""Kafka client authentication settings: what reaches kafka-python, and bad values named by their variable."""

from __future__ import annotations

import pytest

from movakit.runtime.kafka_auth import ClientAuth
from movakit.runtime.settings import SettingsError
from movakit.services.denoiser.settings import DenoiserSettings
from movakit.services.gateway.settings import GatewaySettings

REQUIRED = {"MOVA_GATEWAY_S3_ACCESS_KEY": "a", "MOVA_GATEWAY_S3_SECRET_KEY": "b", "MOVA_GATEWAY_KAFKA_SECRET": "c",
            "MOVA_GATEWAY_TOKENS_FILE": "/t"}


def test_plaintext_passes_nothing_and_scram_passes_the_login():
    assert ClientAuth().options() == {}
    assert ClientAuth("SASL_SSL", "SCRAM-SHA-256", "mova", "pw").options() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "mova", "sasl_plain_password": "pw"}


@pytest.mark.parametrize("values, variable", [
    ({"KAFKA_SECURITY_PROTOCOL": "SSL"}, "MOVA_GATEWAY_KAFKA_SECURITY_PROTOCOL"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "GSSAPI", "KAFKA_SASL_USERNAME": "u",
      "KAFKA_SASL_PASSWORD": "p"}, "MOVA_GATEWAY_KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_PASSWORD": "p"}, "MOVA_GATEWAY_KAFKA_SASL_USERNAME"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u"}, "MOVA_GATEWAY_KAFKA_SASL_PASSWORD"),
])
def test_bad_kafka_auth_settings_name_their_variable(values, variable):
    environ = {**REQUIRED, **{f"MOVA_GATEWAY_{k}": v for k, v in values.items()}}
    with pytest.raises(SettingsError, match=variable):
        GatewaySettings.load([], environ)


def test_stage_settings_carry_the_login_and_redact_the_password():
    settings = DenoiserSettings.load(["--kafka-security-protocol", "SASL_PLAINTEXT", "--kafka-sasl-username", "mova",
                                      "--kafka-sasl-password", "hunter2"],
                                     {"MOVA_DENOISER_S3_ACCESS_KEY": "a", "MOVA_DENOISER_S3_SECRET_KEY": "b",
                                      "MOVA_DENOISER_KAFKA_SECRET": "c"})
    assert settings.kafka_auth() == ClientAuth("SASL_PLAINTEXT", "SCRAM-SHA-512", "mova", "hunter2")
    assert settings.redacted()["kafka_sasl_password"] == "***"
