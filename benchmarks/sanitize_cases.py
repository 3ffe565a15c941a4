"""One small case of every CUDA op, run under compute-sanitizer memcheck by gpu_check.sh.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python benchmarks/sanitize_cases.py
(without the caching allocator every tensor is its own allocation, so an out-of-bounds access
is caught instead of landing inside a cached block).
"""
import torch

import fastcrnn
import fastcrnn.nn


def decode_cases():
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for C in (37, 40, 1):   # unaligned, vector-load and single-class paths
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
        tl = torch.tensor([3, 1, 0, 3], device="cuda")   # the last row is impossible
        for fn in (fastcrnn.ctc_loss, fastcrnn.ctc_loss_from_logits):
            inp = x.log_softmax(-1) if fn is fastcrnn.ctc_loss else x
            fn(inp, targets, il, tl, reduction="sum", zero_infinity=True).backward()
    # unvalidated bad row: a length beyond T must be clamped and give NaN, never read past T
    x = torch.randn(6, 2, 5, device="cuda").log_softmax(-1)
    torch.ops.fastcrnn.ctc_loss_forward(x, torch.tensor([[1, 2], [3, 4]], device="cuda"),
                                        torch.tensor([6, 9], device="cuda"),
                                        torch.tensor([2, 2], device="cuda"), 0, False, False,
                                        False)


def lstm_cases():
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        lstm = fastcrnn.nn.LSTM(7, 5, num_layers=2, bidirectional=True).to("cuda", dtype)
        x = torch.randn(9, 3, 7, device="cuda", dtype=dtype, requires_grad=True)
        out, _ = lstm(x, lengths=torch.tensor([9, 4, 1], device="cuda"))
        out.float().sum().backward()
        cell = fastcrnn.nn.LSTMCell(7, 5).to("cuda", dtype)
        h, c = cell(x[0])
        (h.float().sum() + c.float().sum()).backward()


CASES = [decode_cases, ctc_cases, lstm_cases]


def main():
    for case in CASES:
        case()
        torch.cuda.synchronize()
        print(f"{case.__name__}: ok", flush=True)


if __name__ == "__main__":
    main()
