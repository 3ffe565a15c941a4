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


@pytest.fixture
def one_thread():
    """Runs a training smoke test single-threaded (steadier on a shared 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
