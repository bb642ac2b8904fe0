"""Model tests run single-threaded: tiny tensors are far faster without OpenMP contention on a shared machine."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models are far faster single-threaded on a shared 2-core machine (no OpenMP contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
