"""Stage service settings: one MOVA_<SERVICE>_* variable and one flag per field, validated with the name."""

from __future__ import annotations

import json
import logging

import pytest

from movakit.runtime.settings import SettingsError
from movakit.runtime.stage_settings import JsonLogFormatter
from movakit.services.decoder.settings import DecoderSettings
from movakit.services.denoiser.settings import DenoiserSettings
from movakit.services.encoder.settings import EncoderSettings
from movakit.services.prompt_enhancer.settings import PromptEnhancerSettings
from movakit.services.trainer.settings import TrainerSettings


def keys(cls, **env) -> dict[str, str]:
    """The secrets every stage needs (they have no default), plus `env`."""
    return {cls.env_name("s3_access_key"): "id", cls.env_name("s3_secret_key"): "sk", cls.env_name("kafka_secret"): "ks",
            **env}


def test_defaults_are_the_local_stack_addresses():
    ports = {cls.SERVICE: cls.load([], keys(cls)).listen for cls in
             (PromptEnhancerSettings, EncoderSettings, DenoiserSettings, DecoderSettings)}
    assert ports == {"prompt_enhancer": "127.0.0.1:50052", "encoder": "127.0.0.1:50053",
                     "denoiser": "127.0.0.1:50054", "decoder": "127.0.0.1:50055"}
    s = EncoderSettings.load([], keys(EncoderSettings))
    assert (s.kafka_bootstrap, s.s3_endpoint, s.group_id, s.consume) == ("127.0.0.1:9092", "127.0.0.1:9000",
                                                                          "mova-encoder", True)
    assert PromptEnhancerSettings.load([], keys(PromptEnhancerSettings)).group_id == "mova-prompt-enhancer"


def test_flag_wins_over_variable_over_default():
    env = {"MOVA_DENOISER_LATENT_CHECKPOINT_EVERY": "7", "MOVA_DENOISER_LISTEN": "127.0.0.1:6000",
           "MOVA_DENOISER_CONSUME": "off"}
    s = DenoiserSettings.load(["--listen", "127.0.0.1:7000"], keys(DenoiserSettings, **env))
    assert (s.listen, s.latent_checkpoint_every, s.consume) == ("127.0.0.1:7000", 7, False)
    assert "MOVA_DENOISER_LATENT_CHECKPOINT_EVERY" in DenoiserSettings.env_names()
    assert "MOVA_ENCODER_LATENT_CHECKPOINT_EVERY" not in EncoderSettings.env_names()


@pytest.mark.parametrize(("env", "name"), [
    ({"MOVA_DECODER_LISTEN": "nowhere"}, "MOVA_DECODER_LISTEN"),
    ({"MOVA_DECODER_LISTEN": "127.0.0.1:99999"}, "MOVA_DECODER_LISTEN"),
    ({"MOVA_DECODER_CONSUME": "maybe"}, "MOVA_DECODER_CONSUME"),
    ({"MOVA_DECODER_OTEL_EXPORTER": "jaeger"}, "MOVA_DECODER_OTEL_EXPORTER"),
    ({"MOVA_DECODER_OTEL_EXPORTER": "otlp"}, "MOVA_DECODER_OTEL_ENDPOINT"),
    ({"MOVA_DECODER_DTYPE": "int8"}, "MOVA_DECODER_DTYPE"),
    ({"MOVA_DECODER_MAX_ATTEMPTS": "0"}, "MOVA_DECODER_MAX_ATTEMPTS"),
    ({"MOVA_DECODER_RETRY_BACKOFF_S": "soon"}, "MOVA_DECODER_RETRY_BACKOFF_S"),
    ({"MOVA_DECODER_S3_SECRET_KEY": ""}, "MOVA_DECODER_S3_SECRET_KEY"),
])
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(ValueError, match=name):
        DecoderSettings.load([], keys(DecoderSettings, **env))


def test_bad_flag_names_the_flag_and_checkpoint_interval_is_checked():
    with pytest.raises(ValueError, match="--latent-checkpoint-every"):
        DenoiserSettings.load(["--latent-checkpoint-every", "x"], keys(DenoiserSettings))
    with pytest.raises(ValueError, match="MOVA_DENOISER_LATENT_CHECKPOINT_EVERY"):
        DenoiserSettings.load([], keys(DenoiserSettings, MOVA_DENOISER_LATENT_CHECKPOINT_EVERY="-1"))


def test_a_service_main_reports_a_bad_value_and_exits_2(capsys, monkeypatch):
    monkeypatch.setenv("MOVA_PROMPT_ENHANCER_CONSUME", "maybe")
    with pytest.raises(SystemExit) as exit_info:
        PromptEnhancerSettings.from_command_line([])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("mova-prompt-enhancer: error: MOVA_PROMPT_ENHANCER_CONSUME: ")


def test_secrets_are_redacted_and_logs_are_json():
    s = EncoderSettings.load([], keys(EncoderSettings, MOVA_ENCODER_S3_SECRET_KEY="hunter2"))
    assert s.s3_secret_key == "hunter2"
    assert s.redacted()["s3_secret_key"] == "***" and "hunter2" not in json.dumps(s.redacted())
    assert s.redacted()["s3_access_key"] == "***"  # key ids are credentials, as in the gateway's log line
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.fields = {"job_id": "j1"}
    line = json.loads(JsonLogFormatter().format(record))
    assert (line["msg"], line["job_id"], line["level"]) == ("hello you", "j1", "info")


def test_reserved_listen_port_is_held_until_closed():
    import socket

    from movakit.runtime.localstack import free_port
    from movakit.runtime.stage_settings import reserve_listen_port

    port = free_port()
    held = reserve_listen_port(f"127.0.0.1:{port}")
    other = socket.socket()
    with pytest.raises(OSError):
        other.bind(("127.0.0.1", port))  # nobody else (no SO_REUSEADDR) gets it while held
    other.close()
    held.close()
    again = socket.socket()
    again.bind(("127.0.0.1", port))
    again.close()
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen()
    try:
        with pytest.raises(OSError, match=f"cannot reserve 127.0.0.1:{port}"):
            reserve_listen_port(f"127.0.0.1:{port}")  # a port in use is reported with the address
    finally:
        listener.close()


@pytest.mark.parametrize(("env", "dtype"), [
    ({}, "float32"),
    ({"MOVA_DENOISER_DEVICE": "cuda:1"}, "bfloat16"),
    ({"MOVA_DENOISER_DEVICE": "cuda", "MOVA_DENOISER_DTYPE": "float32"}, "float32"),
    ({"MOVA_DENOISER_DTYPE": "float16"}, "float16"),
])
def test_model_dtype_defaults_to_bfloat16_on_cuda_only(env, dtype):
    assert DenoiserSettings.load([], {**keys(DenoiserSettings), **env}).model_dtype == dtype


def test_the_trainer_needs_no_kafka_settings():
    s = TrainerSettings.load([], {"MOVA_TRAINER_S3_ACCESS_KEY": "id", "MOVA_TRAINER_S3_SECRET_KEY": "sk"})
    assert s.listen == "127.0.0.1:50056" and s.replica_id  # derived like the stage services'
    assert not {"MOVA_TRAINER_KAFKA_SECRET", "MOVA_TRAINER_KAFKA_BOOTSTRAP"} & set(TrainerSettings.env_names())
    with pytest.raises(SettingsError, match="MOVA_TRAINER_S3_SECRET_KEY: must not be empty"):
        TrainerSettings.load([], {"MOVA_TRAINER_S3_ACCESS_KEY": "id"})


def test_the_trainer_keeps_block_weights_in_float8_only_when_asked():
    env = {"MOVA_TRAINER_S3_ACCESS_KEY": "id", "MOVA_TRAINER_S3_SECRET_KEY": "sk"}
    assert TrainerSettings.load([], env).host_weights == "model"
    assert TrainerSettings.load(["--host-weights", "float8"], env).host_weights == "float8"
    with pytest.raises(SettingsError, match="MOVA_TRAINER_HOST_WEIGHTS: one of model, float8, got 'fp4'"):
        TrainerSettings.load([], {**env, "MOVA_TRAINER_HOST_WEIGHTS": "fp4"})
