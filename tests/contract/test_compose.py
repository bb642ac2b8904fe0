"""docker-compose.yml cannot run here (no Docker): check that it parses and agrees with what the code reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from movakit.runtime.stack import STAGE_SERVICES
from movakit.services.decoder.settings import DecoderSettings
from movakit.services.denoiser.settings import DenoiserSettings
from movakit.services.encoder.settings import EncoderSettings
from movakit.services.gateway.settings import GatewaySettings
from movakit.services.prompt_enhancer.settings import PromptEnhancerSettings
from movakit.services.trainer.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"gateway": GatewaySettings, "prompt-enhancer": PromptEnhancerSettings, "encoder": EncoderSettings,
            "denoiser": DenoiserSettings, "decoder": DecoderSettings, "trainer": TrainerSettings}
MODULES = {"gateway": "gateway", **{name: module for name, module in STAGE_SERVICES}, "trainer": "trainer"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env_names(cls) -> set[str]:
    return {cls.env_name(f.name) for f in dataclasses.fields(cls)}


def _kafka_keys(cls) -> tuple[str, ...]:
    """The Kafka settings of a service that takes its work from Kafka (not the trainer: Celery on Redis)."""
    return ("kafka_bootstrap", "kafka_secret") if cls.env_name("kafka_secret") in _env_names(cls) else ()


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def test_services_and_infra_images(compose):
    services = compose["services"]
    assert set(SETTINGS) <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["minio"]["image"].startswith("minio/minio:")
    assert services["redis"]["image"].startswith("redis:")
    assert "opentelemetry-collector" in services["otel-collector"]["image"]
    assert (ROOT / services["gateway"]["build"]["dockerfile"]).is_file()
    builds = {services[name]["build"]["dockerfile"] for name in SETTINGS}
    assert builds == {"services/Dockerfile"}  # one Dockerfile for every service


def test_host_addresses_match_the_local_stack_defaults(compose):
    services = compose["services"]
    assert "127.0.0.1:9092:9092" in services["kafka"]["ports"]
    assert "127.0.0.1:9000:9000" in services["minio"]["ports"]
    for name, cls in SETTINGS.items():
        required = {cls.env_name(k): "x" for k in ("s3_access_key", "s3_secret_key", *_kafka_keys(cls))}
        if cls is GatewaySettings:
            required[cls.env_name("tokens_file")] = "/x"
        default_port = _port(cls.load([], required).listen)
        listen = services[name]["environment"][cls.env_name("listen")]
        assert _port(listen) == default_port, name
        assert f"127.0.0.1:{default_port}:{default_port}" in services[name]["ports"], name
        for published in services[name]["ports"]:
            assert published.startswith("127.0.0.1:"), f"{name} publishes {published} beyond loopback"


def test_environment_names_are_what_the_settings_read(compose):
    for name, cls in SETTINGS.items():
        env = compose["services"][name]["environment"]
        own = {k for k in env if k.startswith(cls.env_name(""))}
        unknown = own - _env_names(cls)
        assert not unknown, f"{name}: compose sets variables its settings never read: {sorted(unknown)}"
        for key in ("listen", "s3_endpoint", "s3_access_key", "s3_secret_key", "s3_bucket", *_kafka_keys(cls)):
            assert cls.env_name(key) in env, f"{name}: {cls.env_name(key)} missing"
        if _kafka_keys(cls):
            assert env[cls.env_name("kafka_bootstrap")] == "kafka:19092"
        assert env[cls.env_name("s3_endpoint")] == "minio:9000"


def test_s3_keys_match_minio_and_settings_load_from_compose_env(compose):
    minio = compose["services"]["minio"]["environment"]
    for name, cls in SETTINGS.items():
        env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        assert env[cls.env_name("s3_access_key")] == minio["MINIO_ROOT_USER"]
        assert env[cls.env_name("s3_secret_key")] == minio["MINIO_ROOT_PASSWORD"]
        assert env[cls.env_name("s3_secret_key")].startswith("${MOVA_S3_SECRET_KEY:?")  # no key written in the file
        settings = cls.load([], env)  # every value compose sets parses and validates
        assert settings.listen == env[cls.env_name("listen")]


def test_artifact_urls_point_at_the_s3_port_published_on_the_host(compose):
    public = compose["services"]["gateway"]["environment"]["MOVA_GATEWAY_S3_PUBLIC_ENDPOINT"]
    assert f"{public}:{_port(public)}" in compose["services"]["minio"]["ports"]


def test_commands_start_the_right_modules(compose):
    for name, module in MODULES.items():
        command = compose["services"][name]["command"]
        assert command == ["python", "-m", f"movakit.services.{module}.main"]
        assert (ROOT / "movakit" / "services" / module / "main.py").is_file()
    assert compose["services"]["init"]["command"][:3] == ["mova", "stack", "init"]


def test_kafka_demands_scram_and_every_client_logs_in(compose):
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    protocols = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    published = {listener.split("://")[0] for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert published == {"HOST", "DOCKER"} and all(protocols[name] == "SASL_PLAINTEXT" for name in published)
    assert protocols["CONTROLLER"] == "PLAINTEXT" and not any(":9093" in p for p in kafka["ports"])  # in-container
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    for name in published:  # each SASL listener has its JAAS login module (the image's ___ stands for -)
        assert "ScramLoginModule required" in env[f"KAFKA_LISTENER_NAME_{name}_SCRAM___SHA___512_SASL_JAAS_CONFIG"]
    user, password = env["MOVA_KAFKA_SASL_USERNAME"], env["MOVA_KAFKA_SASL_PASSWORD"]
    assert password.startswith("${MOVA_KAFKA_SASL_PASSWORD:?")  # no password written in the file
    # The entry point creates the user at format time, then runs the image's launcher.
    script_mount, _ = [v for v in kafka["volumes"] if v.endswith(kafka["entrypoint"][0] + ":ro")][0].split(":", 1)
    script = (ROOT / script_mount).read_text()
    assert "--add-scram" in script and "SCRAM-SHA-512=[name=${MOVA_KAFKA_SASL_USERNAME}" in script
    assert "exec /etc/kafka/docker/run" in script
    for name, cls in SETTINGS.items():
        if not _kafka_keys(cls):
            continue  # the trainer takes its work from Celery, not Kafka
        service_env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        auth = cls.load([], service_env).kafka_auth()  # what the services pass to kafka-python
        assert (auth.security_protocol, auth.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-512"), name
        assert (auth.username, auth.password) == (user, password), name
    init = compose["services"]["init"]
    flags = dict(zip(init["command"][3::2], init["command"][4::2]))
    assert (flags["--kafka-security-protocol"], flags["--kafka-sasl-mechanism"], flags["--kafka-sasl-username"]) \
        == ("SASL_PLAINTEXT", "SCRAM-SHA-512", user)
    assert init["environment"]["MOVA_KAFKA_SASL_PASSWORD"] == password
