"""CTC greedy decoding: fastcrnn vs the vectorized torch reference and the Python loop.

pytest-benchmark:  pytest benchmarks/bench_decode.py --benchmark-only
report rows:       python benchmarks/report.py   (ratios measured in the same run)
"""

import pytest
import torch

import fastcrnn
from benchmarks.timing import devices, median_ms, paired_ms, row, synchronized
from benchmarks.workloads import (
    CTC_WORKLOADS,
    DECODE_WORKLOADS,
    applicable,
    ctc_inputs,
    skip_unless_applicable,
)
from fastcrnn import reference

IMPLS = {
    "fastcrnn": lambda lp: fastcrnn.ctc_greedy_decode(lp),
    "torch-vectorized": lambda lp: reference.ctc_greedy_decode_torch(lp),
    "python-loop": lambda lp: reference.ctc_greedy_decode_loop(lp),
}


def _log_probs(name, device):
    return ctc_inputs(name, device)[0].log_softmax(-1)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("impl", ["fastcrnn", "torch-vectorized"])
@pytest.mark.parametrize("workload", DECODE_WORKLOADS)
def test_decode(benchmark, workload, impl, device):
    skip_unless_applicable(CTC_WORKLOADS[workload], device)
    lp = _log_probs(workload, device)
    benchmark(synchronized(lambda: IMPLS[impl](lp), device))


def report_rows(device):
    rows = []
    for name in DECODE_WORKLOADS:
        if not applicable(CTC_WORKLOADS[name], device):
            continue
        lp = _log_probs(name, device)
        logits = ctc_inputs(name, device)[0]
        ours = median_ms(lambda: fastcrnn.ctc_greedy_decode(lp), device)
        vec = median_ms(lambda: reference.ctc_greedy_decode_torch(lp), device)
        rows.append(row("decode", name, "greedy", device, ours, "torch vectorized", vec))
        ours_ms, minimal, ratio = paired_ms(
            lambda: fastcrnn.ctc_greedy_decode(lp),
            lambda: reference.ctc_greedy_decode_minimal(lp),
            device,
        )
        rows.append(
            row(
                "decode",
                name,
                "greedy",
                device,
                ours_ms,
                "minimal torch decode",
                minimal,
                ratio=ratio,
            )
        )
        if torch.device(device).type == "cpu":
            loop = median_ms(
                lambda: reference.ctc_greedy_decode_loop(lp),
                device,
                warmup=1,
                repeat=3,
                min_time_s=0,
            )
            rows.append(row("decode", name, "greedy", device, ours, "python loop", loop))
        ours_l = median_ms(lambda: fastcrnn.ctc_greedy_decode(logits, logits=True), device)
        vec_l = median_ms(lambda: reference.ctc_greedy_decode_torch(logits, logits=True), device)
        rows.append(
            row(
                "decode",
                name,
                "greedy from logits",
                device,
                ours_l,
                "log_softmax + torch vectorized",
                vec_l,
            )
        )
        if torch.device(device).type == "cuda":
            # floor: reading the input once at the measured device copy bandwidth
            src = torch.empty(lp.numel() * lp.element_size() // 4, device=device)
            dst = torch.empty_like(src)
            copy = median_ms(lambda: dst.copy_(src), device)
            read_once = copy / 2  # a copy reads and writes the bytes once each
            rows.append(
                row(
                    "decode",
                    name,
                    "greedy vs read-once floor",
                    device,
                    ours,
                    "read input once",
                    read_once,
                )
            )
    return rows
