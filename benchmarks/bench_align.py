"""CTC forced alignment: fastcrnn vs the vectorized torch Viterbi (fastcrnn.reference), on the
ocr-en and long workloads (and gpu-big on CUDA).

pytest-benchmark:  pytest benchmarks/bench_align.py --benchmark-only
report rows:       python benchmarks/report.py --only align   (ratios measured in the same run)
"""

import pytest

import fastcrnn
from benchmarks.timing import devices, paired_ms, row, synchronized
from benchmarks.workloads import CTC_WORKLOADS, applicable, ctc_inputs, skip_unless_applicable
from fastcrnn import reference

ALIGN_WORKLOADS = ("ocr-en", "long", "gpu-big")


def _inputs(name, device):
    logits, targets, il, tl = ctc_inputs(name, device)
    return logits.log_softmax(-1), targets, il, tl


IMPLS = {
    "fastcrnn": fastcrnn.ctc_forced_align,
    "torch-vectorized": reference.ctc_forced_align_torch,
}


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("workload", ALIGN_WORKLOADS)
def test_align(benchmark, workload, impl, device):
    skip_unless_applicable(CTC_WORKLOADS[workload], device)
    args = _inputs(workload, device)
    benchmark(synchronized(lambda: IMPLS[impl](*args), device))


def report_rows(device):
    rows = []
    for name in ALIGN_WORKLOADS:
        if not applicable(CTC_WORKLOADS[name], device):
            continue
        args = _inputs(name, device)
        ours, ref, ratio = paired_ms(
            lambda: fastcrnn.ctc_forced_align(*args),
            lambda: reference.ctc_forced_align_torch(*args),
            device,
            repeat=5,
            min_time_s=0.1,
        )
        rows.append(
            row("align", name, "viterbi", device, ours, "torch vectorized", ref, ratio=ratio)
        )
    return rows
