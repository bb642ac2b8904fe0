"""Unit tests run torch single-threaded: their tensors are tiny, and on a shared 2-core machine intra-op threads
only add OpenMP contention (tiny forwards ran 10-50x slower with them)."""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
