"""Shared fixtures, the one CUDA skip, and float32 settings for comparisons against torch on GPU.

CUDA tests. A test is a CUDA test when it carries the ``cuda`` marker (declared in
pyproject.toml), is parametrized with a CUDA device (the ``device`` fixture below, or any
parameter whose value is "cuda" / "cuda:N" / a CUDA torch.device), or is named ``test_cuda*``.
:func:`pytest_collection_modifyitems` gives every such test the marker, so ``pytest -m cuda``
selects exactly the CUDA tests (benchmarks/gpu_check.sh runs that selection on a GPU machine),
and applies the one skip below to all of them when no GPU is present. Test files do not declare
their own CUDA skip.
"""

import warnings

import pytest
import torch

CUDA_AVAILABLE = torch.cuda.is_available()
CUDA_SKIP_REASON = "needs a CUDA GPU (none present)"
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _disable_tf32():
    """Float32 tests compare our kernels with cuBLAS / cuDNN float32 results (nn.LSTM, nn.RNN,
    convolutions in CRNN) at float32 tolerances. torch lets cuDNN convolutions and RNNs use TF32
    by default (``torch.backends.cudnn.*.fp32_precision`` is "tf32"): their float32 inputs are
    rounded to a 10-bit mantissa, a relative error near 1e-3, which would fail those comparisons
    for a reason unrelated to our code. Force IEEE float32 for cuDNN and cuBLAS in every test.
    Both APIs are set, the legacy flags first: torch (>= 2.9) refuses to read
    ``cudnn.allow_tf32`` (torch.jit.trace and export do) when only the per-backend
    ``fp32_precision`` settings say "ieee" while the legacy flag still says True."""
    cudnn = torch.backends.cudnn
    cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    if hasattr(cudnn, "rnn") and hasattr(cudnn.rnn, "fp32_precision"):
        cudnn.rnn.fp32_precision = "ieee"
        cudnn.conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"


_disable_tf32()


def _is_cuda_param(value) -> bool:
    if isinstance(value, torch.device):
        return value.type == "cuda"
    return isinstance(value, str) and (value == "cuda" or value.startswith("cuda:"))


def is_cuda_test(item) -> bool:
    """The rule of the module docstring, for one collected test."""
    if item.get_closest_marker("cuda") is not None:
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(_is_cuda_param(v) for v in callspec.params.values()):
        return True
    return getattr(item, "originalname", item.name).startswith("test_cuda")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=CUDA_SKIP_REASON)
    for item in items:
        if is_cuda_test(item):
            if item.get_closest_marker("cuda") is None:
                item.add_marker(pytest.mark.cuda)
            if not CUDA_AVAILABLE:
                item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request):
    """Runs a test on the CPU and, when a GPU is present, on CUDA."""
    return torch.device(request.param)


@pytest.fixture(params=["default", "avx2"])
def cpu_isa(request):
    """Each instruction-set variant the CPU kernels are compiled in, by name (for
    helpers.run_with_cpu_isa); skipped where this build lacks it."""
    import fastcrnn

    if request.param not in fastcrnn.build_info()["cpu_isas_built"]:
        pytest.skip(f"{request.param} variant not built on this architecture")
    return request.param


@pytest.fixture
def count_syncs():
    """count_syncs(fn) -> how many synchronising CUDA calls fn() makes: torch's sync debug mode
    warns once per call (a device-to-host copy, .item(), a stream synchronisation)."""

    def count(fn):
        torch.cuda.synchronize()
        before = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode(before)
        return sum("synchroniz" in str(w.message) for w in seen)

    return count


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
