import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: on a shared 2-core machine, two OpenMP threads spinning against
    other processes made small forwards 50-100x slower (measured: 17 s vs 0.2 s for a yolov8n forward)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
