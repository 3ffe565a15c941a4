import pytest
import torch

CUDA_SKIP_REASON = "needs a CUDA GPU (none present)"
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason=CUDA_SKIP_REASON))]


@pytest.fixture(params=DEVICES)
def device(request):
    """Runs a test on the CPU and, when a GPU is present, on CUDA."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _with_threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Runs a training smoke test single-threaded (steadier on a shared 2-core machine)."""
    yield from _with_threads(1)


@pytest.fixture
def num_threads(request):
    """torch's intra-op thread count for one test, from an indirect parameter:
    ``@pytest.mark.parametrize("num_threads", [1, 2], indirect=True)``."""
    yield from _with_threads(request.param)
