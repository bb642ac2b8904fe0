"""Make the independent reference (tests/reference/) importable as top-level modules, and run these tiny-tensor
tests single-threaded (intra-op threads only add contention at these sizes; on a busy 2-core machine they made
the reference sampler tests ~50x slower)."""

import sys
from pathlib import Path

import pytest
import torch

_REFERENCE_DIR = Path(__file__).resolve().parents[2] / "reference"
if str(_REFERENCE_DIR) not in sys.path:
    sys.path.insert(0, str(_REFERENCE_DIR))


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
