"""Helpers shared by the test files: closeness with a message, gradients, running Python in a
fresh process (whose CPU kernels may be capped at one instruction set), and building and running
the `python -m fastcrnn` command line in process."""

import contextlib
import io
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_close(actual, expected, atol, rtol=0.0, what="", equal_nan=False):
    """torch.testing.assert_close with equal shapes required and `what` in the message."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    torch.testing.assert_close(
        actual, expected, atol=atol, rtol=rtol, equal_nan=equal_nan, msg=lambda m: f"{what}: {m}"
    )


def grads(outputs, inputs, grad_outputs=None, retain=False):
    """torch.autograd.grad that allows unused inputs (their gradient is None)."""
    return torch.autograd.grad(
        outputs, inputs, grad_outputs, retain_graph=retain, allow_unused=True
    )


def assert_close_nan(actual, expected, rtol, atol):
    """:func:`assert_close` in torch.testing's (rtol, atol) order, NaN matching NaN."""
    assert_close(actual, expected, atol=atol, rtol=rtol, equal_nan=True)


def value_and_grad(fn, x, *args, **kwargs):
    """``fn(x, *args, **kwargs)`` on a fresh leaf copy of ``x``: (the value, detached; the
    gradient of its sum with respect to ``x``)."""
    x = x.detach().clone().requires_grad_()
    out = fn(x, *args, **kwargs)
    (g,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), g


def randomise_batchnorm(model, mean=0.5, var=(0.5, 2.0), bias=0.2):
    """Non-trivial BatchNorm2d statistics and affine weights, so that eval-mode comparisons
    exercise them: running mean uniform in [-mean, mean], running variance in ``var``, weight in
    [0.5, 1.5], bias in [-bias, bias] (None: left as it is)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-mean, mean)
                m.running_var.uniform_(*var)
                m.weight.uniform_(0.5, 1.5)
                if bias is not None:
                    m.bias.uniform_(-bias, bias)


def recurrent_sizes(max_hidden, max_layers):
    """Hypothesis strategies (for ``@given(**...)``) of a small random recurrent problem: T
    steps, batch N, input size I, hidden size H, layers, bidirectional."""
    from hypothesis import strategies as st

    return dict(
        T=st.integers(1, 6),
        N=st.integers(1, 4),
        I=st.integers(1, 5),
        H=st.integers(1, max_hidden),
        layers=st.integers(1, max_layers),
        bidirectional=st.booleans(),
    )


def run_python(*args, cwd=None, timeout=600):
    """`python ARGS` in a fresh process with this checkout on the path, one OpenMP thread and no
    warnings; returns the CompletedProcess with stdout and stderr captured as text."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_with_cpu_isa(isa, code, timeout=300):
    """Runs Python `code` in a fresh process with FASTCRNN_CPU_ISA=isa (the kernel variant is
    chosen once per process) and this checkout first on the path. Fails the test with the
    child's stderr if it fails; returns its stdout."""
    env = dict(os.environ, FASTCRNN_CPU_ISA=isa)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


# a CRNN small enough to train a few steps in a test (crnn.pytorch's layout, narrower)
TINY_CRNN_FLAGS = ["--nh", "16", "--channels", "8,8,16,16,16,16,16"]


def flags(**options):
    """Command-line flags from keyword arguments, in order: ``--name value``, a bare ``--name``
    for True."""
    out = []
    for name, value in options.items():
        out += [f"--{name}"] if value is True else [f"--{name}", value]
    return out


# how the CLI tests train the tiny model: Adam at lr 1e-3, 16 lines a batch (:func:`flags`)
TINY_ADAM = dict(batchSize=16, adam=True, lr="1e-3")


def tiny_train_args(train_root, val_root, expr_dir, *extra, intervals=None, **options):
    """`fastcrnn train` of the TINY_CRNN_FLAGS model on the LMDBs ``train_root`` /
    ``val_root`` into ``expr_dir``, with the :func:`flags` of ``options``, then ``extra``.
    ``intervals``: (--displayInterval, --valInterval, --saveInterval)."""
    if intervals is not None:
        display, val, save = intervals
        options.update(displayInterval=display, valInterval=val, saveInterval=save)
    return [
        "train",
        *flags(trainRoot=train_root, valRoot=val_root, expr_dir=expr_dir, **options),
        *TINY_CRNN_FLAGS,
        *extra,
    ]


class CliResult:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(*args, check=True):
    """Runs `fastcrnn ARGS` in this process (as the console script would) and captures it."""
    from fastcrnn.ocr.cli import main

    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args]) or 0
        except SystemExit as exc:  # argparse errors and SystemExit("error: ...")
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
                rc = 1
            else:
                rc = exc.code or 0
        finally:
            torch.set_num_threads(threads)
    proc = CliResult(rc, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(
            f"fastcrnn {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc
