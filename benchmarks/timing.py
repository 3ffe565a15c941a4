"""Timing helpers shared by the benchmark modules and the report."""

import statistics
import time
from typing import Callable, Dict, Tuple

import torch


def median_ms(
    fn: Callable[[], object],
    device: torch.device,
    warmup: int = 3,
    repeat: int = 20,
    min_time_s: float = 0.2,
) -> float:
    """Median wall time of fn() in milliseconds (CUDA events on GPU, after warm-up).

    Repeats at least `repeat` times and until `min_time_s` has passed.
    """
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    times = []
    start_all = time.perf_counter()
    while len(times) < repeat or (
        time.perf_counter() - start_all < min_time_s and len(times) < 1000
    ):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def paired_ms(
    ours: Callable[[], object],
    ref: Callable[[], object],
    device: torch.device,
    rounds: int = 5,
    **median_kw,
) -> Tuple[float, float, float]:
    """Times `ours` and `ref` in `rounds` rounds of back-to-back blocks, alternating which goes
    first; returns (our median, reference median, median of the per-round ratios ref / ours).

    This VM's speed drifts within seconds (the same command's ratios swung by 1.7x between runs
    when each side was timed once, one after the other); interleaved rounds expose both sides
    to the same drift. ``median_kw`` goes to :func:`median_ms` for each block.
    """
    ours_t, ref_t, ratios = [], [], []
    for r in range(rounds):
        if r % 2 == 0:
            a = median_ms(ours, device, **median_kw)
            b = median_ms(ref, device, **median_kw)
        else:
            b = median_ms(ref, device, **median_kw)
            a = median_ms(ours, device, **median_kw)
        ours_t.append(a)
        ref_t.append(b)
        ratios.append(b / a)
    return statistics.median(ours_t), statistics.median(ref_t), statistics.median(ratios)


def row(
    family: str,
    workload: str,
    case: str,
    device,
    ours_ms: float,
    baseline: str,
    baseline_ms: float,
    **extra,
) -> Dict:
    """One report row: `ratio` is baseline time / our time (> 1 means fastcrnn is faster), or
    the median of paired per-round ratios when given in ``extra``."""
    out = dict(
        family=family,
        workload=workload,
        case=case,
        device=str(device),
        ours_ms=ours_ms,
        baseline=baseline,
        baseline_ms=baseline_ms,
        ratio=baseline_ms / ours_ms,
    )
    out.update(extra)
    return out


def devices():
    """The devices to benchmark here: the CPU, and CUDA when a GPU is present."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def synchronized(fn: Callable[[], object], device) -> Callable[[], None]:
    """fn followed by a wait for the device, so that pytest-benchmark times the work itself and
    not only its launch on CUDA."""
    cuda = torch.device(device).type == "cuda"

    def call() -> None:
        fn()
        if cuda:
            torch.cuda.synchronize()

    return call


def machine_name(device) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"
