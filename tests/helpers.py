"""Helpers shared by the test files: closeness with a message, gradients, running a case in a
fresh process whose CPU kernels are capped at one instruction set, and running the
`python -m fastcrnn` command line in process."""

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
