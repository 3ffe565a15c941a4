"""The fixed benchmark workloads (README, "Benchmarks"): never change their shapes, so that
figures stay comparable across commits."""

import torch

# CTC and decoding: (T, N, C, min target length, max target length, GPU only)
CTC_WORKLOADS = {
    "ocr-en": dict(T=26, N=64, C=37, min_len=1, max_len=20, gpu_only=False),
    "ocr-zh": dict(T=50, N=64, C=5990, min_len=1, max_len=20, gpu_only=False),
    "long": dict(T=500, N=16, C=100, min_len=50, max_len=150, gpu_only=False),
    "gpu-big": dict(T=100, N=256, C=6000, min_len=1, max_len=20, gpu_only=True),
}
DECODE_WORKLOADS = ("ocr-en", "ocr-zh", "gpu-big")

# LSTM
BILSTM_2 = dict(input_size=512, hidden_size=256, num_layers=2, bidirectional=True, T=26, N=64)
CRNN_BLOCKS = dict(blocks=((512, 256, 256), (256, 256, 37)), T=26, N=64)
SEQ2SEQ = dict(input_size=256, hidden_size=256, num_layers=2, T=20, N=64)


def applicable(workload: dict, device) -> bool:
    return not workload.get("gpu_only") or torch.device(device).type == "cuda"


def skip_unless_applicable(workload: dict, device) -> None:
    """Skips a pytest-benchmark case whose workload runs only on a GPU."""
    if not applicable(workload, device):
        import pytest

        pytest.skip("GPU-only workload")


def ctc_inputs(name: str, device, dtype=torch.float32, seed: int = 0):
    """Random (logits (T, N, C), targets (N, S) padded, input_lengths, target_lengths)."""
    w = CTC_WORKLOADS[name]
    g = torch.Generator().manual_seed(seed)
    T, N, C = w["T"], w["N"], w["C"]
    logits = torch.randn(T, N, C, generator=g).to(device=device, dtype=dtype)
    target_lengths = torch.randint(w["min_len"], w["max_len"] + 1, (N,), generator=g)
    targets = torch.randint(1, C, (N, w["max_len"]), generator=g)
    input_lengths = torch.full((N,), T, dtype=torch.int64)
    return (logits, targets.to(device), input_lengths.to(device), target_lengths.to(device))
