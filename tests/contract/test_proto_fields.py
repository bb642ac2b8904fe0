"""Field numbers are forever: every field in tests/contract/proto_fields.txt (message.field = number) must
still exist with the same number. Adding fields is fine (then append them with `--update` below);
renumbering or deleting one is a breaking change that belongs in movakit.api.v2.

Regenerate the listing after adding fields:  .venv/bin/python tests/contract/test_proto_fields.py --update
"""

from __future__ import annotations

import sys
from pathlib import Path

LISTING = Path(__file__).with_name("proto_fields.txt")
MODULES = ("common_pb2", "events_pb2", "gateway_pb2", "prompt_enhancer_pb2", "encoder_pb2", "denoiser_pb2",
           "decoder_pb2", "adapters_pb2", "training_pb2")


def current_fields() -> dict[str, int]:
    import importlib

    out: dict[str, int] = {}

    def walk(message) -> None:
        for field in message.fields:
            out[f"{message.full_name}.{field.name}"] = field.number
        for nested in message.nested_types:
            walk(nested)

    for module in MODULES:
        file_descriptor = importlib.import_module(f"movakit.api.v1.{module}").DESCRIPTOR
        for message in file_descriptor.message_types_by_name.values():
            walk(message)
        for enum in file_descriptor.enum_types_by_name.values():
            for value in enum.values:
                out[f"{enum.full_name}.{value.name}"] = value.number
    return out


def recorded_fields() -> dict[str, int]:
    fields = {}
    for line in LISTING.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, number = line.split(" = ")
            fields[name] = int(number)
    return fields


def test_no_field_was_renumbered_or_removed():
    now = current_fields()
    for name, number in recorded_fields().items():
        assert name in now, f"{name} was removed (breaking: use movakit.api.v2)"
        assert now[name] == number, f"{name} was renumbered {number} -> {now[name]} (breaking)"


def test_no_recorded_number_is_given_to_another_field():
    # (protoc already refuses two fields with one number in the same message; what it cannot see is a number the
    # listing records for one field now carried by another, e.g. a deleted field's number reused by a new one.)
    recorded = {}
    for name, number in recorded_fields().items():
        message, _, field = name.rpartition(".")
        recorded[(message, number)] = field
    for name, number in current_fields().items():
        message, _, field = name.rpartition(".")
        previous = recorded.get((message, number), field)
        assert previous == field, f"{message}: number {number} of {previous} is now used by {field} (breaking)"


if __name__ == "__main__" and "--update" in sys.argv:
    merged = {**recorded_fields(), **current_fields()} if LISTING.exists() else current_fields()
    lines = ["# message.field = number (enums: Enum.VALUE = number); append-only, see test_proto_fields.py"]
    lines += [f"{name} = {number}" for name, number in sorted(merged.items())]
    LISTING.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(merged)} entries to {LISTING}")
