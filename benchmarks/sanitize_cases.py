"""Small cases of every CUDA op, run under compute-sanitizer by benchmarks/gpu_check.sh.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \
        python benchmarks/sanitize_cases.py
    python benchmarks/sanitize_cases.py --cases ctc        (one family: decode, ctc, lstm, align)
    python benchmarks/sanitize_cases.py --list             (names the cases; needs no GPU)
(without the caching allocator every tensor is its own allocation, so an out-of-bounds access
is caught instead of landing inside a cached block). The cases cover each kernel's edge paths:
empty and full lengths, unvalidated bad rows (clamped, never read past), 1-D concatenated
targets with the workspace sized from the longest target, every dtype.
"""

import argparse
import sys

import torch

import fastcrnn
import fastcrnn.nn


def decode_cases():
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for C in (37, 40, 1):  # unaligned, vector-load and single-class paths
            x = torch.randn(9, 5, C, device="cuda", dtype=dtype)
            lengths = torch.tensor([9, 0, 4, 1, 8], device="cuda")
            for logits in (False, True):
                fastcrnn.ctc_greedy_decode(x, lengths, logits=logits)
            fastcrnn.ctc_greedy_decode(x.transpose(0, 1).contiguous().transpose(0, 1), lengths)
    bad = torch.tensor([9, 10, -1, 3, 2], device="cuda")
    fastcrnn.ctc_greedy_decode(torch.randn(9, 5, 7, device="cuda"), bad, validate=False)


def ctc_cases():
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        x = torch.randn(12, 4, 6, device="cuda", dtype=dtype, requires_grad=True)
        targets = torch.tensor([[1, 2, 2], [3, 0, 0], [5, 4, 1], [1, 1, 1]], device="cuda")
        il = torch.tensor([12, 5, 0, 2], device="cuda")
        tl = torch.tensor([3, 1, 0, 3], device="cuda")  # the last row is impossible
        for fn in (fastcrnn.ctc_loss, fastcrnn.ctc_loss_from_logits):
            inp = x.log_softmax(-1) if fn is fastcrnn.ctc_loss else x
            fn(inp, targets, il, tl, reduction="sum", zero_infinity=True).backward()
    # unvalidated bad row: a length beyond T must be clamped and give NaN, never read past T
    x = torch.randn(6, 2, 5, device="cuda").log_softmax(-1)
    torch.ops.fastcrnn.ctc_loss_forward(
        x,
        torch.tensor([[1, 2], [3, 4]], device="cuda"),
        torch.tensor([6, 9], device="cuda"),
        torch.tensor([2, 2], device="cuda"),
        0,
        False,
        False,
        False,
    )
    # 1-D concatenated targets: validated, the workspace is sized from the longest target (3
    # states wide rows here, not 2 * len(targets) + 1); the backward reads exactly those rows
    x = torch.randn(20, 3, 6, device="cuda", requires_grad=True)
    flat = torch.tensor([1, 2, 3, 4, 5, 1, 1], device="cuda")
    il = torch.tensor([20, 7, 3], device="cuda")
    tl = torch.tensor([3, 4, 0], device="cuda")
    fastcrnn.ctc_loss_from_logits(x, flat, il, tl, reduction="sum").backward()
    # a backward handed a log_alpha narrower than a row needs marks that row bad (NaN), never
    # reads past it (the op checks only the width's bounds it can see without a sync)
    lp = x.detach().log_softmax(-1)
    nll, alpha, norms = torch.ops.fastcrnn.ctc_loss_forward(lp, flat, il, tl, 0, False, False, True)
    torch.ops.fastcrnn.ctc_loss_backward(
        torch.ones_like(nll),
        lp,
        flat,
        il,
        tl,
        nll,
        alpha[:, :, :3].contiguous(),
        norms,
        0,
        False,
        False,
    )


def lstm_cases():
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        lstm = fastcrnn.nn.LSTM(7, 5, num_layers=2, bidirectional=True).to("cuda", dtype)
        x = torch.randn(9, 3, 7, device="cuda", dtype=dtype, requires_grad=True)
        out, _ = lstm(x, lengths=torch.tensor([9, 4, 1], device="cuda"))
        out.float().sum().backward()
        cell = fastcrnn.nn.LSTMCell(7, 5).to("cuda", dtype)
        h, c = cell(x[0])
        (h.float().sum() + c.float().sum()).backward()


def align_cases():
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        lp = torch.randn(12, 5, 6, device="cuda", dtype=dtype).log_softmax(-1)
        targets = torch.tensor(
            [[1, 2, 2], [3, 0, 0], [5, 4, 1], [1, 1, 1], [2, 3, 4]], device="cuda"
        )
        il = torch.tensor([12, 5, 0, 4, 7], device="cuda")
        tl = torch.tensor([3, 1, 0, 3, 3], device="cuda")  # row 3 is impossible (1 _ 1 _ 1)
        fastcrnn.ctc_forced_align(lp, targets, il, tl)
    # 1-D concatenated targets (validated: rows sized from the longest target), and a long one
    # whose states span several thread groups of the block
    lp = torch.randn(400, 2, 30, device="cuda").log_softmax(-1)
    flat = torch.randint(1, 30, (160,), device="cuda")
    fastcrnn.ctc_forced_align(lp, flat, [400, 300], [150, 10])
    # unvalidated bad rows (a blank target, a length beyond T): flagged, never read past
    lp = torch.randn(6, 3, 4, device="cuda").log_softmax(-1)
    bad_targets = torch.tensor([[1, 2], [3, 0], [2, 2]], device="cuda")
    il = torch.tensor([6, 6, 9], device="cuda")
    fastcrnn.ctc_forced_align(
        lp, bad_targets, il, torch.tensor([2, 2, 2], device="cuda"), validate=False
    )


CASES = {"decode": decode_cases, "ctc": ctc_cases, "lstm": lstm_cases, "align": align_cases}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated families to run (default: all)"
    )
    ap.add_argument("--list", action="store_true", help="print the families and exit")
    args = ap.parse_args(argv)
    chosen = [c for c in args.cases.split(",") if c]
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        ap.error(f"unknown case family {unknown[0]!r} (known: {', '.join(CASES)})")
    if args.list:
        print("\n".join(chosen))
        return 0
    for name in chosen:
        CASES[name]()
        torch.cuda.synchronize()
        print(f"{name}: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
