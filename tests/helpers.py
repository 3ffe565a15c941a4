"""Helpers shared by the test files: closeness with a message, gradients, and running a case in a
fresh process whose CPU kernels are capped at one instruction set."""

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
