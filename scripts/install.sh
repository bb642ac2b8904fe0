#!/usr/bin/env bash
# Installs everything the tests and `mova` need on a fresh Debian machine:
# ffmpeg (ffprobe too), chromium (the /v1/videos test plays an MP4 in it) and redis-server (the trainer's Celery
# broker) from apt, a .venv with the CPU torch wheel and the project in editable mode, and tritonserver (from the
# nvidia-pytriton wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v ffprobe >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq ffmpeg chromium redis-server >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
# The CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
# tritonserver 2.51 (binary, libraries, python backend) for `mova stack up --triton` and the tests, from the
# nvidia-pytriton wheel. Without its dependencies: they pin numpy<2, and the server needs none of them.
.venv/bin/python -m pip install -q --no-deps "nvidia-pytriton==0.7.0" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import movakit, torch, diffusers, transformers, grpc; print('movakit installed; torch', torch.__version__)"
