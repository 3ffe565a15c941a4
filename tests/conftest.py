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
