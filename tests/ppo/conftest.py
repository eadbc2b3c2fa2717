"""PPO tests run with one intra-op thread: on shared 2-core machines OpenMP spin-waiting makes two threads several
times slower."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on shared 2-core machines OpenMP spin-waiting makes two threads several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
