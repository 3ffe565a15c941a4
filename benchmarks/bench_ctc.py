"""CTC loss: fastcrnn vs torch.nn.functional.ctc_loss, measured in the same run.

pytest-benchmark:  pytest benchmarks/bench_ctc.py --benchmark-only
report rows:       python benchmarks/report.py --only ctc   (ratios measured in the same run)
THP figures:       THP_MEM_ALLOC_ENABLE=1 python benchmarks/report.py --only ctc
                   (the variable must be set before torch starts; rows record it in `thp`)

Cases per workload (benchmarks/workloads.py: ocr-en, ocr-zh, long; gpu-big on CUDA):
  forward            fastcrnn.ctc_loss(log_probs)               vs F.ctc_loss(log_probs)
  forward+backward   the same plus the gradient (torch.autograd.grad: a fresh gradient each
                     step, as after zero_grad)
  logits fwd[+bwd]   fastcrnn.ctc_loss_from_logits(logits)      vs F.ctc_loss(log_softmax(logits))
On CUDA also against torch's cuDNN path (blank 0, float32, int32 concatenated CPU targets, list
lengths, all input lengths = T, target lengths <= 256), and peak memory (max_memory_allocated)
as row fields `peak_mb` / `baseline_peak_mb`.
"""

import os

import pytest
import torch
import torch.nn.functional as F

import fastcrnn
from benchmarks.timing import devices, paired_ms, row, synchronized
from benchmarks.workloads import CTC_WORKLOADS, applicable, ctc_inputs, skip_unless_applicable

CTC_BENCH_WORKLOADS = ("ocr-en", "ocr-zh", "long", "gpu-big")
THP = os.environ.get("THP_MEM_ALLOC_ENABLE", "0")


def _inputs(name, device):
    logits, targets, il, tl = ctc_inputs(name, device)
    return logits, logits.log_softmax(-1), targets, il, tl


def _cases(name, device):
    """(case, fastcrnn fn, baseline name, baseline fn) for one workload."""
    logits, lp, targets, il, tl = _inputs(name, device)
    lp_g = lp.detach().requires_grad_()
    x_g = logits.detach().requires_grad_()

    def fwd_ours():
        return fastcrnn.ctc_loss(lp, targets, il, tl)

    def fwd_ref():
        return F.ctc_loss(lp, targets, il, tl)

    def fb_ours():
        torch.autograd.grad(fastcrnn.ctc_loss(lp_g, targets, il, tl), lp_g)

    def fb_ref():
        torch.autograd.grad(F.ctc_loss(lp_g, targets, il, tl), lp_g)

    def lfwd_ours():
        return fastcrnn.ctc_loss_from_logits(logits, targets, il, tl)

    def lfwd_ref():
        return F.ctc_loss(logits.log_softmax(-1), targets, il, tl)

    def lfb_ours():
        torch.autograd.grad(fastcrnn.ctc_loss_from_logits(x_g, targets, il, tl), x_g)

    def lfb_ref():
        torch.autograd.grad(F.ctc_loss(x_g.log_softmax(-1), targets, il, tl), x_g)

    cases = [
        ("forward", fwd_ours, "F.ctc_loss", fwd_ref),
        ("forward+backward", fb_ours, "F.ctc_loss", fb_ref),
        ("logits forward", lfwd_ours, "log_softmax + F.ctc_loss", lfwd_ref),
        ("logits forward+backward", lfb_ours, "log_softmax + F.ctc_loss", lfb_ref),
    ]
    if torch.device(device).type == "cuda":
        tl_cpu = tl.cpu()
        concat_cpu = torch.cat(
            [targets[n, : int(tl_cpu[n])].cpu() for n in range(targets.shape[0])]
        ).to(torch.int32)
        il_list, tl_list = il.cpu().tolist(), tl_cpu.tolist()

        def fb_cudnn():
            torch.autograd.grad(F.ctc_loss(lp_g, concat_cpu, il_list, tl_list), lp_g)

        def native(fn):
            def run():
                with torch.backends.cudnn.flags(enabled=False):
                    fn()

            return run

        cases = [
            (c, o, b + (" native" if b.endswith("ctc_loss") else " (native)"), native(r))
            for c, o, b, r in cases
        ]
        cases.append(("forward+backward", fb_ours, "F.ctc_loss cuDNN path", fb_cudnn))
    return cases


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("impl", ["fastcrnn", "torch"])
@pytest.mark.parametrize("case", ["forward", "forward+backward", "logits forward+backward"])
@pytest.mark.parametrize("workload", CTC_BENCH_WORKLOADS)
def test_ctc(benchmark, workload, case, impl, device):
    skip_unless_applicable(CTC_WORKLOADS[workload], device)
    chosen = [c for c in _cases(workload, device) if c[0] == case][0]
    fn = chosen[1] if impl == "fastcrnn" else chosen[3]
    benchmark(synchronized(fn, device))


def _peak_mb(fn, device):
    if torch.device(device).type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def report_rows(device):
    """Rows at the default thread count and, on the CPU, also single-threaded (robust to a
    loaded machine: both sides then run without OpenMP barriers)."""
    rows = []
    default_threads = torch.get_num_threads()
    thread_counts = [default_threads]
    if torch.device(device).type == "cpu" and default_threads != 1:
        thread_counts.append(1)
    for threads in thread_counts:
        torch.set_num_threads(threads)
        try:
            for name in CTC_BENCH_WORKLOADS:
                if not applicable(CTC_WORKLOADS[name], device):
                    continue
                for case, ours, baseline, ref in _cases(name, device):
                    ours_ms, ref_ms, ratio = paired_ms(
                        ours, ref, device, rounds=5, repeat=5, min_time_s=0.06
                    )
                    extra = dict(thp=THP, threads=threads, ratio=ratio)
                    peak, ref_peak = _peak_mb(ours, device), _peak_mb(ref, device)
                    if peak is not None:
                        extra.update(peak_mb=round(peak, 2), baseline_peak_mb=round(ref_peak, 2))
                    label = case if threads == default_threads else f"{case} ({threads} thr)"
                    rows.append(row("ctc", name, label, device, ours_ms, baseline, ref_ms, **extra))
        finally:
            torch.set_num_threads(default_threads)
    return rows
