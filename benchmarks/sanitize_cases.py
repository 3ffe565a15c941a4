"""One small case of every CUDA op, run under compute-sanitizer memcheck by gpu_check.sh.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python benchmarks/sanitize_cases.py
(without the caching allocator every tensor is its own allocation, so an out-of-bounds access
is caught instead of landing inside a cached block).
"""
import torch

import fastcrnn


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


CASES = [decode_cases]


def main():
    for case in CASES:
        case()
        torch.cuda.synchronize()
        print(f"{case.__name__}: ok", flush=True)


if __name__ == "__main__":
    main()
