"""How much of an LSTM workload is matrix products: torch.profiler self time of aten::mm and
aten::addmm against the whole, for fastcrnn and its reference on one workload.

    python benchmarks/gemm_share.py            # bilstm-2 forward+backward and the cell step

The LSTM targets compare against references that run the same matrix products (same shapes and
FLOPs); what fastcrnn can win is the rest. This prints that rest, per call.

Times are the profiler's CPU time per op, under the profiler's own overhead: ops that run on
two threads at once (fastcrnn's direction-parallel time loop) count each thread, so compare
shares within one row, not GEMM ms across rows. nn.LSTM is not listed: it runs its products
inside oneDNN's RNN primitive, where no aten::mm is recorded.
"""

import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere, like report.py
    sys.path.insert(0, ROOT)

from benchmarks.bench_lstm import _cell_models, _cell_step, _fwd_bwd, _input, _lstm_models
from benchmarks.workloads import BILSTM_2

GEMMS = ("aten::mm", "aten::addmm")


def gemm_share(fn, calls: int):
    """(GEMM ms per call, all ms per call) from torch.profiler self CPU times."""
    for _ in range(2):
        fn()
    with torch.profiler.profile() as prof:
        for _ in range(calls):
            fn()
    events = prof.key_averages()
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMMS)
    total = sum(e.self_cpu_time_total for e in events)
    return gemm / calls / 1e3, total / calls / 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    w = BILSTM_2
    models = _lstm_models(w, "cpu")
    x = _input(w["T"], w["N"], w["input_size"], "cpu").requires_grad_()
    ours_cell, ref_cell, cell_args = _cell_models("cpu")
    cases = [
        ("bilstm-2 forward+backward", "fastcrnn", lambda: _fwd_bwd(models["fastcrnn"], x), 5),
        (
            "bilstm-2 forward+backward",
            "python LSTMCell loop",
            lambda: _fwd_bwd(models["python LSTMCell loop"], x),
            3,
        ),
        ("cell step fwd+bwd", "fastcrnn", lambda: _cell_step(ours_cell, *cell_args), 200),
        ("cell step fwd+bwd", "nn.LSTMCell", lambda: _cell_step(ref_cell, *cell_args), 200),
    ]
    print(f"{'workload':28s} {'impl':22s} {'GEMM ms':>9s} {'all ms':>9s} {'GEMM share':>10s}")
    for name, impl, fn, calls in cases:
        gemm, total = gemm_share(fn, calls)
        print(f"{name:28s} {impl:22s} {gemm:9.3f} {total:9.3f} {gemm / total:9.0%}")


if __name__ == "__main__":
    main()
