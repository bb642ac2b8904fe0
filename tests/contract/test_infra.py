"""infra/ is data: topics, k8s manifests and the collector config agree with the code."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

from movakit.runtime import metrics
from movakit.runtime.topics import TOPICS
from movakit.runtime.triton_server import TEXT_ENCODER_MODEL
from movakit.services.decoder.servicer import DecodeHandler
from movakit.services.denoiser.servicer import DenoiseHandler
from movakit.services.denoiser.settings import DenoiserSettings
from movakit.services.encoder.servicer import EncodeHandler
from movakit.services.prompt_enhancer.servicer import EnhanceHandler

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
HANDLERS = {"prompt-enhancer": EnhanceHandler, "encoder": EncodeHandler, "denoiser": DenoiseHandler,
            "decoder": DecodeHandler}


def _docs(path: Path) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(path.read_text()) if doc}


def _plain_env(container: dict) -> dict[str, str]:
    """The container's env entries with a literal value (secrets come by valueFrom: not listed)."""
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_topics_yaml_matches_runtime_topics():
    spec = yaml.safe_load((INFRA / "kafka" / "topics.yaml").read_text())
    declared = {t["name"]: (t["partitions"], t["compacted"]) for t in spec["topics"]}
    assert declared == {name: (t.partitions, t.compacted) for name, t in TOPICS.items()}


def test_topics_yaml_consumer_groups_match_the_stage_inboxes():
    spec = yaml.safe_load((INFRA / "kafka" / "topics.yaml").read_text())
    groups = {t["name"]: t.get("consumer_group") for t in spec["topics"] if t.get("consumer_group")}
    assert groups == {handler.inbox: f"mova-{name}" for name, handler in HANDLERS.items()}


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_stage_manifest_scales_on_its_inbox_lag(name):
    docs = _docs(INFRA / "k8s" / "base" / f"{name}.yaml")
    assert set(docs) == {"Deployment", "Service", "ScaledObject"}
    triggers = {t["type"]: t for t in docs["ScaledObject"]["spec"]["triggers"]}
    assert set(triggers) == {"kafka", "prometheus"}
    trigger = triggers["kafka"]
    query = triggers["prometheus"]["metadata"]["query"]
    assert query == f'sum(mova_queue_lag{{topic="{HANDLERS[name].inbox}",group="mova-{name}"}})'
    assert trigger["metadata"]["topic"] == HANDLERS[name].inbox
    assert trigger["metadata"]["consumerGroup"] == f"mova-{name}"
    assert docs["ScaledObject"]["spec"]["maxReplicaCount"] <= TOPICS[HANDLERS[name].inbox].partitions
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = _plain_env(container)
    prefix = f"MOVA_{name.replace('-', '_').upper()}_"
    assert env[prefix + "GROUP_ID"] == f"mova-{name}"
    port = container["ports"][0]["containerPort"]
    assert env[prefix + "LISTEN"].endswith(f":{port}")
    assert container["readinessProbe"]["grpc"]["port"] == port


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((INFRA / "k8s" / "base" / "kustomization.yaml").read_text())
    files = {p.name for p in (INFRA / "k8s" / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files == {f"{n}.yaml" for n in [*HANDLERS, "gateway", "triton", "trainer"]}


def test_collector_receives_otlp_grpc_on_4317():
    config = yaml.safe_load((INFRA / "otel" / "collector.yaml").read_text())
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    assert "otlp" in config["service"]["pipelines"]["traces"]["receivers"]


def test_dev_overlay_patches_point_at_the_right_env_entries():
    overlay = yaml.safe_load((INFRA / "k8s" / "overlays" / "dev" / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../base"]
    (deployments,) = [p for p in overlay["patches"] if p["target"]["kind"] == "Deployment"
                      and "labelSelector" in p["target"]]
    ops = yaml.safe_load(deployments["patch"])
    expected = {"/spec/template/spec/containers/0/env/5/value": "_CHECKPOINT",
                "/spec/template/spec/containers/0/env/6/value": "_DEVICE",
                "/spec/template/spec/containers/0/env/7/value": "_DTYPE"}
    assert {op["path"] for op in ops} >= set(expected)
    for name in HANDLERS:
        assert name in deployments["target"]["labelSelector"]
        env = _docs(INFRA / "k8s" / "base" / f"{name}.yaml")["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
        for path, suffix in expected.items():
            index = int(path.split("/")[-2])
            assert env[index]["name"].endswith(suffix), (name, index, env[index]["name"])


def test_dev_overlay_points_the_gateway_at_the_demo_checkpoint_too():
    overlay = yaml.safe_load((INFRA / "k8s" / "overlays" / "dev" / "kustomization.yaml").read_text())
    (patch,) = [p for p in overlay["patches"] if p["target"].get("name") == "gateway"]
    (op, _) = yaml.safe_load(patch["patch"])
    env = _docs(INFRA / "k8s" / "base" / "gateway.yaml")["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[int(op["path"].split("/")[-2])]["name"] == "MOVA_GATEWAY_CHECKPOINT" and op["value"] == ""


def _mova_metric_names(text: str) -> set[str]:
    """mova_* metric names in a query text, without the histogram/counter sample suffixes."""
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in re.findall(r"\bmova_[a-z_]+", text)}


def test_dashboard_and_keda_queries_use_metrics_the_services_export():
    documented = set(re.findall(r"^  (mova_\w+)", metrics.__doc__, re.M))
    dashboard = json.loads((INFRA / "grafana" / "mova-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    keda = " ".join((INFRA / "k8s" / "base" / f"{name}.yaml").read_text() for name in HANDLERS)
    used = _mova_metric_names(exprs) | _mova_metric_names(keda)
    assert used and used <= documented, used - documented
    assert documented <= _mova_metric_names(exprs)  # every metric has a panel


def test_metrics_ports_of_manifests_and_prometheus_config_are_the_defaults():
    scrape = (INFRA / "prometheus" / "prometheus.yml").read_text()
    for name, port in metrics.METRICS_PORTS.items():
        container = _docs(INFRA / "k8s" / "base" / f"{name}.yaml")["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        env = _plain_env(container)
        assert env[f"MOVA_{name.replace('-', '_').upper()}_METRICS_LISTEN"] == f"0.0.0.0:{port}"
        assert {"name": "metrics", "containerPort": port} in container["ports"]
        assert f'"{name}:{port}"' in scrape


def test_triton_model_repository_and_manifest_agree_with_the_encoder():
    config = (INFRA / "triton" / "models" / TEXT_ENCODER_MODEL / "config.pbtxt").read_text()
    assert f'name: "{TEXT_ENCODER_MODEL}"' in config and 'backend: "python"' in config
    assert "dynamic_batching" in config
    assert (INFRA / "triton" / "models" / TEXT_ENCODER_MODEL / "1" / "model.py").is_file()
    triton = _docs(INFRA / "k8s" / "base" / "triton.yaml")
    grpc_port = {p["name"]: p["port"] for p in triton["Service"]["spec"]["ports"]}["grpc"]
    encoder = _docs(INFRA / "k8s" / "base" / "encoder.yaml")["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    encoder_env = _plain_env(encoder)
    triton_env = _plain_env(triton["Deployment"]["spec"]["template"]["spec"]["containers"][0])
    assert encoder_env["MOVA_ENCODER_TRITON_URL"] == f"triton:{grpc_port}"
    assert triton_env["MOVA_TRITON_CHECKPOINT"] == encoder_env["MOVA_ENCODER_CHECKPOINT"]
    assert triton_env["MOVA_TRITON_DTYPE"] == encoder_env["MOVA_ENCODER_DTYPE"]


def test_dev_overlay_runs_triton_on_the_cpu_as_the_encoder():
    overlay = yaml.safe_load((INFRA / "k8s" / "overlays" / "dev" / "kustomization.yaml").read_text())
    (patch,) = [p for p in overlay["patches"] if p["target"] == {"kind": "Deployment", "name": "triton"}]
    (env,) = [op["value"] for op in yaml.safe_load(patch["patch"]) if op["path"].endswith("/env")]
    assert {e["name"]: e["value"] for e in env} == {"MOVA_TRITON_CHECKPOINT": "", "MOVA_TRITON_DEVICE": "cpu",
                                                   "MOVA_TRITON_DTYPE": "float32"}


SETTINGS_MODULES = {"gateway": "gateway", "prompt-enhancer": "prompt_enhancer", "encoder": "encoder",
                    "denoiser": "denoiser", "decoder": "decoder"}  # the Kafka clients (the trainer uses Celery)


@pytest.mark.parametrize("name", sorted(SETTINGS_MODULES))
def test_secrets_come_from_kubernetes_secrets_and_kafka_uses_scram(name):
    """No secret in a manifest: S3 keys by envFrom, the Kafka secret and SCRAM login by secretKeyRef, the
    gateway's tokens file from a mounted Secret; every env name is one the service's settings read."""
    module = importlib.import_module(f"movakit.services.{SETTINGS_MODULES[name]}.settings")
    (cls,) = [c for c in vars(module).values() if isinstance(c, type) and c.__name__.endswith("Settings")
              and c.__module__ == module.__name__]
    deployment = _docs(INFRA / "k8s" / "base" / f"{name}.yaml")["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    known = {cls.env_name(f.name) for f in dataclasses.fields(cls)}
    assert set(env) <= known, set(env) - known
    assert f"movakit-s3-{name}" in [ref["secretRef"]["name"] for ref in container["envFrom"]]
    for field, key in (("kafka_secret", "record-secret"), ("kafka_sasl_username", "sasl-username"),
                       ("kafka_sasl_password", "sasl-password")):
        assert env[cls.env_name(field)]["valueFrom"]["secretKeyRef"] == {"name": "movakit-kafka", "key": key}
    assert env[cls.env_name("kafka_security_protocol")]["value"] == "SASL_PLAINTEXT"
    assert env[cls.env_name("kafka_sasl_mechanism")]["value"] == "SCRAM-SHA-512"
    for entry in container["env"]:  # nothing that names a secret carries a literal value
        if any(marker in entry["name"] for marker in ("SECRET", "PASSWORD", "ACCESS_KEY", "TOKEN")):
            assert "value" not in entry or entry["name"].endswith("_TOKENS_FILE"), entry["name"]
    if name == "gateway":
        (volume,) = [v for v in pod["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == "movakit-gateway-tokens"
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert env["MOVA_GATEWAY_TOKENS_FILE"]["value"].startswith(mount["mountPath"] + "/")
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]  # the file is readable


def test_no_manifest_writes_a_secret():
    for path in (INFRA / "k8s").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert not (doc and doc.get("kind") == "Secret"), f"{path}: a Secret with its data in the repository"
        assert "secretGenerator" not in path.read_text(), path


def test_context_parallel_overlay_gives_the_denoiser_one_gpu_per_rank():
    overlay = yaml.safe_load((INFRA / "k8s" / "overlays" / "gpu-context-parallel" / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../gpu"]
    (patch,) = overlay["patches"]
    assert patch["target"] == {"kind": "Deployment", "name": "denoiser"}
    ops = {op["path"]: op["value"] for op in yaml.safe_load(patch["patch"])}
    variable = ops["/spec/template/spec/containers/0/env/-"]
    assert variable["name"] == DenoiserSettings.env_name("context_parallel")
    resources = ops["/spec/template/spec/containers/0/resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == variable["value"]
    assert ops["/spec/template/spec/volumes/-"]["name"] == ops["/spec/template/spec/containers/0/volumeMounts/-"]["name"]
