"""Reliability tests run torch with one intra-op thread.

The suite shares two cores with other processes; idle OpenMP threads then busy-wait and make
the tiny models here up to ten times slower. The setting is restored after each test.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
