#!/usr/bin/env bash
# Regenerates the Python stubs of proto/movakit/api/v1/*.proto into movakit/api/v1/ (or into $1 when given,
# as the contract test does). Run from anywhere; uses the project's .venv unless PYTHON is set.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
mkdir -p "$OUT"
"$PYTHON" -m grpc_tools.protoc -I proto \
    --python_out="$OUT" --grpc_python_out="$OUT" --pyi_out="$OUT" \
    proto/movakit/api/v1/*.proto
