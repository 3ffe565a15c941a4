"""What the ops' CPU buffer cache (fastcrnn.memory) is worth: each case timed with the cache on
and off in the same process (paired rounds), with the page faults per call of each side and of
the torch reference.

    python benchmarks/cache_effect.py

Whether glibc hands out fresh pages depends on the process's history: its mmap and trim
thresholds grow after large blocks are freed (up to 32 MiB / 64 MiB), after which blocks below
them are reused without faults. So run this in a fresh process, and read "faults/call" to see
which regime a case ran in. The report (benchmarks/report.py) runs the CTC workloads first, and
its LSTM rows then run with grown thresholds.
"""

import os
import resource
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere, like report.py
    sys.path.insert(0, ROOT)

import fastcrnn  # noqa: E402
from benchmarks.bench_lstm import _cell_models, _cell_step  # noqa: E402
from benchmarks.timing import paired_ms  # noqa: E402
from benchmarks.workloads import ctc_inputs  # noqa: E402


def faults_per_call(fn, calls: int = 20) -> float:
    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def cases():
    """(name, fastcrnn fn, reference name, reference fn)."""
    ours_cell, ref_cell, args = _cell_models("cpu")
    yield (
        "seq2seq decoder cell step fwd+bwd",
        lambda: _cell_step(ours_cell, *args),
        "nn.LSTMCell",
        lambda: _cell_step(ref_cell, *args),
    )
    logits, targets, input_lengths, target_lengths = ctc_inputs("ocr-zh", "cpu")
    log_probs = logits.log_softmax(-1).detach().requires_grad_()

    def ctc(loss_fn):
        loss = loss_fn(log_probs, targets, input_lengths, target_lengths)
        return torch.autograd.grad(loss, log_probs)

    yield (
        "ctc ocr-zh forward+backward",
        lambda: ctc(fastcrnn.ctc_loss),
        "F.ctc_loss",
        lambda: ctc(F.ctc_loss),
    )


def main():
    torch.set_num_threads(2)
    limit = fastcrnn.cpu_cache_info()["limit_bytes"]
    if limit == 0:
        raise SystemExit("the cache is off (FASTCRNN_CPU_CACHE_MB=0): nothing to compare")

    def with_limit(fn, nbytes):
        def run():
            fastcrnn.set_cpu_cache_limit(nbytes)
            return fn()

        return run

    print(
        f"{'case':36s} {'cache on ms':>11s} {'off ms':>8s} {'gain':>6s} "
        f"{'faults/call on / off / reference':>34s}"
    )
    for name, ours, ref_name, ref in cases():
        on, off = with_limit(ours, limit), with_limit(ours, 0)
        on_ms, off_ms, gain = paired_ms(on, off, "cpu", rounds=7, repeat=10, min_time_s=0.05)
        faults = (faults_per_call(on), faults_per_call(off), faults_per_call(ref))
        fastcrnn.set_cpu_cache_limit(limit)
        print(
            f"{name:36s} {on_ms:11.3f} {off_ms:8.3f} {gain:5.2f}x "
            f"{faults[0]:12.0f} / {faults[1]:.0f} / {faults[2]:.0f} ({ref_name})"
        )


if __name__ == "__main__":
    main()
