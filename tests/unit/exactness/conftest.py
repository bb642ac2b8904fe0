"""Make the independent reference (tests/reference/) importable as top-level modules (single-threaded torch for
these tiny tensors comes from tests/unit/conftest.py)."""

import sys
from pathlib import Path

_REFERENCE_DIR = Path(__file__).resolve().parents[2] / "reference"
if str(_REFERENCE_DIR) not in sys.path:
    sys.path.insert(0, str(_REFERENCE_DIR))
