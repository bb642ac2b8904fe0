"""proto/ is the single source of truth: the checked-in stubs under movakit/api/v1/ must be exactly what
scripts/gen_proto.sh generates from it, and every service the issue names must exist with its RPCs.

The generator's own version stamps (protobuf gencode version, GRPC_GENERATED_VERSION) are masked before
comparing, so a patch release of grpcio-tools within the pinned range does not fail the check; any change that
comes from the .proto files does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "movakit" / "api" / "v1"
PROTOS = sorted((ROOT / "proto" / "movakit" / "api" / "v1").glob("*.proto"))


_VERSION_STAMPS = [
    (re.compile(r"^# Protobuf Python Version: .*$", re.M), "# Protobuf Python Version: X"),
    (re.compile(r"(ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,)\s*\d+,\s*\d+,\s*\d+,"),
     r"\1 X,"),
    (re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.M), "GRPC_GENERATED_VERSION = X"),
]


def masked(text: str) -> str:
    for pattern, replacement in _VERSION_STAMPS:
        text = pattern.sub(replacement, text)
    return text


def generated_files(folder: Path) -> dict[str, str]:
    return {
        p.name: masked(p.read_text())
        for p in folder.iterdir()
        if p.name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi"))
    }


def test_masking_hides_only_version_stamps():
    text = (API / "common_pb2.py").read_text()
    assert masked(text) != text and "X," in masked(text)
    assert masked(text).count("\n") == text.count("\n") - 3  # three version numbers folded into one X


def test_checked_in_stubs_match_the_protos(tmp_path):
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)],
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh = generated_files(tmp_path / "movakit" / "api" / "v1")
    assert len(fresh) == 3 * len(PROTOS)
    checked_in = generated_files(API)
    assert sorted(checked_in) == sorted(fresh), "stub files missing or extra: run `make proto`"
    stale = [name for name in fresh if fresh[name] != checked_in[name]]
    assert not stale, f"stubs out of date with proto/: {stale}; run `make proto`"


@pytest.mark.parametrize(
    ("module", "service", "methods"),
    [
        ("gateway_pb2", "JobService", {"Submit", "Get", "Watch", "Cancel", "List"}),
        ("prompt_enhancer_pb2", "PromptEnhancer", {"Enhance"}),
        ("encoder_pb2", "Encoder", {"Encode"}),
        ("denoiser_pb2", "Denoiser", {"Denoise"}),
        ("decoder_pb2", "Decoder", {"Decode"}),
    ],
)
def test_services_and_rpcs(module, service, methods):
    import importlib

    descriptor = importlib.import_module(f"movakit.api.v1.{module}").DESCRIPTOR.services_by_name[service]
    assert descriptor.full_name == f"movakit.api.v1.{service}"
    assert {m.name for m in descriptor.methods} == methods
    if service == "JobService":
        assert descriptor.methods_by_name["Watch"].server_streaming
    else:  # stage RPCs take tensors by reference: no bytes fields anywhere in their inputs/outputs
        method = next(iter(descriptor.methods))
        for message in (method.input_type, method.output_type):
            assert not _has_bytes_field(message), f"{message.full_name} carries raw bytes"


def _has_bytes_field(message, seen=None) -> bool:
    seen = seen or set()
    if message.full_name in seen:
        return False
    seen.add(message.full_name)
    for field in message.fields:
        if field.type == field.TYPE_BYTES:
            return True
        if field.message_type is not None and _has_bytes_field(field.message_type, seen):
            return True
    return False


def test_every_proto_declares_the_versioned_package():
    for path in PROTOS:
        text = path.read_text()
        assert "package movakit.api.v1;" in text, path.name
        assert 'syntax = "proto3";' in text, path.name
