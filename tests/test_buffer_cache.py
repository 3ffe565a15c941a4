"""The CPU buffer cache behind the ops' large buffers (fastcrnn.memory): reuse, the limit,
results that do not depend on it, ordinary tensors out, threads and forked children."""

import io
import multiprocessing
import os
import subprocess
import sys
import threading

import pytest
import torch
from helpers import run_python

import fastcrnn
from fastcrnn.nn import LSTM, LSTMCell

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
I, H, N = 48, 64, 32  # dW_ih (4H, I) = 48 KiB < 64 KiB is not cached; dW_hh (4H, H) = 64 KiB is


@pytest.fixture
def fresh_cache():
    limit = fastcrnn.cpu_cache_info()["limit_bytes"]
    fastcrnn.empty_cpu_cache()
    yield
    fastcrnn.set_cpu_cache_limit(limit)


def _cell_and_inputs(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    cell = LSTMCell(I, H).to(dtype)
    x = torch.randn(N, I, dtype=dtype, requires_grad=True)
    h = torch.randn(N, H, dtype=dtype, requires_grad=True)
    c = torch.randn(N, H, dtype=dtype, requires_grad=True)
    return cell, (x, h, c)


def _cell_step(cell, x, h, c):
    h1, c1 = cell(x, (h, c))
    gh, gc = torch.linspace(-1, 1, h1.numel()).view_as(h1), torch.cos(c1.detach())
    grads = torch.autograd.grad((h1, c1), [x, h, c] + list(cell.parameters()), (gh, gc))
    return [h1.detach(), c1.detach()] + list(grads)


def _poison_and_release(tensors):
    """Fills with NaN and drops the caller's list, so that their blocks go back to the cache."""
    for t in tensors:
        t.fill_(float("nan"))
    tensors.clear()


def test_released_buffers_are_reused(fresh_cache):
    cell, args = _cell_and_inputs()
    assert fastcrnn.cpu_cache_info()["held_bytes"] == 0
    out = _cell_step(cell, *args)
    del out  # releases dW_hh, the one buffer here large enough to be cached
    held = fastcrnn.cpu_cache_info()["held_bytes"]
    assert held >= 4 * H * H * 4
    for _ in range(3):
        out = _cell_step(cell, *args)
        del out
        assert fastcrnn.cpu_cache_info()["held_bytes"] == held  # reused, not grown


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_results_do_not_depend_on_the_cache(fresh_cache, dtype):
    cell, args = _cell_and_inputs(1, dtype)
    ref = torch.nn.LSTMCell(I, H).to(dtype)
    ref.load_state_dict(cell.state_dict())
    fastcrnn.set_cpu_cache_limit(0)
    uncached = _cell_step(cell, *args)
    fastcrnn.set_cpu_cache_limit(64 << 20)
    # poison the blocks the next step will reuse: a kernel that read memory it did not write
    # would now give NaN
    poisoned = _cell_step(cell, *args)
    _poison_and_release(poisoned)
    assert fastcrnn.cpu_cache_info()["held_bytes"] > 0
    first = _cell_step(cell, *args)
    second = _cell_step(cell, *args)  # from blocks the first step released
    for a, b, c in zip(uncached, first, second):
        assert torch.equal(a, b) and torch.equal(a, c)
    expected = _cell_step(ref, *args)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for a, e in zip(first, expected):
        torch.testing.assert_close(a, e, atol=tol, rtol=tol)


def test_limit_bounds_what_is_held(fresh_cache):
    limit = 1 << 20
    fastcrnn.set_cpu_cache_limit(limit)
    assert fastcrnn.cpu_cache_info()["limit_bytes"] == limit
    torch.manual_seed(2)
    lstm = LSTM(I, H, num_layers=2, bidirectional=True)
    for T in (3, 17, 40, 9, 64, 5):  # sizes that keep changing
        x = torch.randn(T, N, I, requires_grad=True)
        out, _ = lstm(x)
        out.sum().backward()
        assert fastcrnn.cpu_cache_info()["held_bytes"] <= limit
    fastcrnn.set_cpu_cache_limit(0)
    assert fastcrnn.cpu_cache_info()["held_bytes"] == 0
    out, _ = lstm(torch.randn(20, N, I))
    del out
    assert fastcrnn.cpu_cache_info()["held_bytes"] == 0  # off: nothing is kept


@pytest.mark.parametrize(
    "bad, error",
    [
        (1.5, TypeError),
        (True, TypeError),
        ("1", TypeError),
        (-1, ValueError),
        (1 << 64, ValueError),
    ],
)
def test_limit_rejects_bad_values(bad, error):
    with pytest.raises(error, match="nbytes"):
        fastcrnn.set_cpu_cache_limit(bad)


def test_cached_tensors_are_ordinary_tensors(fresh_cache):
    torch.manual_seed(3)
    lstm = LSTM(I, H, bidirectional=True)
    with torch.no_grad():
        out, _ = lstm(torch.randn(12, N, I))
    assert out.nbytes >= 64 << 10
    before = out.clone()
    out.resize_(2 * out.numel())  # grows through the storage's allocator
    assert torch.equal(out[: before.numel()], before.flatten())
    out = out[: before.numel()].view_as(before)
    buf = io.BytesIO()
    torch.save(out, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf), before)
    assert torch.equal(torch.from_numpy(out.numpy()), before)
    out.share_memory_()
    assert out.is_shared() and torch.equal(out, before)


def test_threads_share_the_cache(fresh_cache):
    cells = [_cell_and_inputs(seed) for seed in range(4)]
    expected = [_cell_step(cell, *args) for cell, args in cells]
    results = [None] * len(cells)

    def work(k):
        for _ in range(5):
            results[k] = _cell_step(cells[k][0], *cells[k][1])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(cells))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        for a, b in zip(got, want):
            assert torch.equal(a, b)


def _child_step(queue):
    torch.set_num_threads(1)  # as DataLoader workers: no OpenMP pool across the fork
    cell, args = _cell_and_inputs()
    queue.put([t.sum().item() for t in _cell_step(cell, *args)])


def forked_child_matches_parent():
    """The parent steps (filling its cache), forks, and the child steps with its own cache to
    the parent's results."""
    cell, args = _cell_and_inputs()
    parent = [t.sum().item() for t in _cell_step(cell, *args)]
    assert fastcrnn.cpu_cache_info()["held_bytes"] > 0
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_step, args=(queue,))
    child.start()
    got = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert got == pytest.approx(parent, rel=1e-6, abs=1e-6)


def test_forked_child_gets_its_own_cache():
    """Run from a fresh interpreter: forking is only safe (for autograd, as for DataLoader
    workers) from a parent that has not started autograd's worker threads, which earlier tests
    in this process (torch.compile) may have done."""
    code = (
        "import sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_buffer_cache import forked_child_matches_parent\n"
        "forked_child_matches_parent()\n"
        "print('ok')\n"
    )
    res = run_python("-c", code)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def _ctc_grad(log_probs, targets, input_lengths, target_lengths):
    lp = log_probs.detach().requires_grad_()
    loss = fastcrnn.ctc_loss(lp, targets, input_lengths, target_lengths, reduction="sum")
    (grad,) = torch.autograd.grad(loss, lp)
    return [loss.detach(), grad]


def test_ctc_results_do_not_depend_on_the_cache(fresh_cache):
    g = torch.Generator().manual_seed(4)
    T, B, C = 30, 8, 120  # the gradient (T, N, C) is 112 KiB: cached
    log_probs = torch.randn(T, B, C, generator=g).log_softmax(-1)
    targets = torch.randint(1, C, (B, 12), generator=g)
    input_lengths = torch.randint(1, T + 1, (B,), generator=g)
    target_lengths = torch.randint(0, 13, (B,), generator=g)
    fastcrnn.set_cpu_cache_limit(0)
    uncached = _ctc_grad(log_probs, targets, input_lengths, target_lengths)
    fastcrnn.set_cpu_cache_limit(64 << 20)
    poisoned = _ctc_grad(log_probs, targets, input_lengths, target_lengths)
    _poison_and_release(poisoned)
    assert fastcrnn.cpu_cache_info()["held_bytes"] >= T * B * C * 4
    cached = _ctc_grad(log_probs, targets, input_lengths, target_lengths)
    for a, b in zip(uncached, cached):
        assert torch.equal(a, b)
    expected = torch.nn.functional.ctc_loss(
        log_probs, targets, input_lengths, target_lengths, reduction="sum", zero_infinity=False
    )
    torch.testing.assert_close(cached[0], expected, atol=1e-3, rtol=1e-5)


_ENV_PROBE = """
import torch, fastcrnn
try:
    print(fastcrnn.cpu_cache_info()["limit_bytes"])
except ValueError as e:
    print("ValueError", e)
"""


@pytest.mark.parametrize(
    "value, expected",
    [
        ("3", str(3 << 20)),
        ("-2", "ValueError FASTCRNN_CPU_CACHE_MB"),
        ("99999999999999999999", "ValueError FASTCRNN_CPU_CACHE_MB"),
    ],
)
def test_limit_from_the_environment(value, expected):
    env = dict(
        os.environ,
        FASTCRNN_CPU_CACHE_MB=value,
        PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
    )
    out = subprocess.run(
        [sys.executable, "-c", _ENV_PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(expected), out.stdout
