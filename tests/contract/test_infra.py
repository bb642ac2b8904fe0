"""infra/ is data: topics, k8s manifests and the collector config agree with the code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from movakit.runtime.topics import TOPICS
from movakit.services.decoder.servicer import DecodeHandler
from movakit.services.denoiser.servicer import DenoiseHandler
from movakit.services.encoder.servicer import EncodeHandler
from movakit.services.prompt_enhancer.servicer import EnhanceHandler

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
HANDLERS = {"prompt-enhancer": EnhanceHandler, "encoder": EncodeHandler, "denoiser": DenoiseHandler,
            "decoder": DecodeHandler}


def _docs(path: Path) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(path.read_text()) if doc}


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
    (trigger,) = docs["ScaledObject"]["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["topic"] == HANDLERS[name].inbox
    assert trigger["metadata"]["consumerGroup"] == f"mova-{name}"
    assert docs["ScaledObject"]["spec"]["maxReplicaCount"] <= TOPICS[HANDLERS[name].inbox].partitions
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    prefix = f"MOVA_{name.replace('-', '_').upper()}_"
    assert env[prefix + "GROUP_ID"] == f"mova-{name}"
    port = container["ports"][0]["containerPort"]
    assert env[prefix + "LISTEN"].endswith(f":{port}")
    assert container["readinessProbe"]["grpc"]["port"] == port


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((INFRA / "k8s" / "base" / "kustomization.yaml").read_text())
    files = {p.name for p in (INFRA / "k8s" / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files == {f"{n}.yaml" for n in [*HANDLERS, "gateway"]}


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
