"""CTC prefix beam search: fastcrnn vs the decoders people ship, each in the same run, on the
ocr-en and ocr-zh workloads (64 lines, beam 10, peaky log-probs like a trained model's).

Anchors (installed from PyPI in the benchmark environment; a row is skipped, with the reason
printed, when one is absent): fast-ctc-decode (Rust, one line per call), flashlight-text's
LexiconFreeDecoder with a ZeroLM (C++, the decoder under torchaudio's ctc_decoder; one line per
call), pyctcdecode (Python). Pruning is matched where the anchors have it: 40 tokens per frame
on ocr-zh (flashlight's beam_size_token, our max_tokens).

pytest-benchmark:  pytest benchmarks/bench_beam.py --benchmark-only
report rows:       python benchmarks/report.py --only beam   (ratios measured in the same run)
"""

import sys

import pytest
import torch

import fastcrnn
from benchmarks.timing import paired_ms, row
from benchmarks.workloads import CTC_WORKLOADS

BEAM = 10
CASES = {  # workload: tokens per frame (None: all)
    "ocr-en": None,
    "ocr-zh": 40,
}


def peaky_log_probs(name, seed=0):
    """(T, N, C) float32 log-probs whose frames each put most mass on one class, as a trained
    recognizer's do (uniform random scores would make every beam search slow alike)."""
    w = CTC_WORKLOADS[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(w["T"], w["N"], w["C"], generator=g)
    peak = torch.randint(0, w["C"], (w["T"], w["N"], 1), generator=g)
    x.scatter_add_(2, peak, torch.full(peak.shape, 8.0))
    return x.log_softmax(-1)


def ours(lp, max_tokens):
    return lambda: fastcrnn.ctc_beam_search_decode(lp, beam_width=BEAM, max_tokens=max_tokens)


class NotComparable(Exception):
    """An anchor that cannot run this case (the reason is printed)."""


def fast_ctc_decode_anchor(lp, max_tokens):
    from fast_ctc_decode import beam_search

    if max_tokens is not None:
        # it prunes only by a probability cut below 1/C, which at C = 5990 keeps nearly every
        # class, and it then runs out of this machine's 24 GB
        raise NotComparable("no per-frame token limit; its 1/C cut exhausts memory at C=5990")
    C = lp.shape[2]
    alphabet = ["-"] + [chr(0x4E00 + c) for c in range(C - 1)]
    probs = [lp[:, n].exp().numpy() for n in range(lp.shape[1])]
    return lambda: [beam_search(p, alphabet, BEAM, 0.0) for p in probs]


def flashlight_anchor(lp, max_tokens):
    from flashlight.lib.text import decoder as fl

    T, N, C = lp.shape
    options = fl.LexiconFreeDecoderOptions(
        beam_size=BEAM,
        beam_size_token=C if max_tokens is None else max_tokens,
        beam_threshold=1e9,
        lm_weight=0.0,
        sil_score=0.0,
        log_add=True,
        criterion_type=fl.CriterionType.CTC,
    )
    dec = fl.LexiconFreeDecoder(options, fl.ZeroLM(), 0, 0, [])
    rows = [lp[:, n].contiguous() for n in range(N)]
    return lambda: [dec.decode(r.data_ptr(), T, C) for r in rows]


def pyctcdecode_anchor(lp, max_tokens):
    from pyctcdecode import build_ctcdecoder

    C = lp.shape[2]
    decoder = build_ctcdecoder([""] + [chr(0x4E00 + c) for c in range(C - 1)])
    rows = [lp[:, n].numpy() for n in range(lp.shape[1])]
    return lambda: [decoder.decode(r, beam_width=BEAM) for r in rows]


ANCHORS = {
    "fast-ctc-decode": fast_ctc_decode_anchor,
    "flashlight-text": flashlight_anchor,
    "pyctcdecode": pyctcdecode_anchor,
}


@pytest.mark.parametrize("impl", ["fastcrnn", *ANCHORS])
@pytest.mark.parametrize("workload", list(CASES))
def test_beam(benchmark, workload, impl):
    lp = peaky_log_probs(workload)
    fn = ours(lp, CASES[workload]) if impl == "fastcrnn" else _anchor(impl, lp, CASES[workload])
    benchmark(fn)


def _anchor(name, lp, max_tokens):
    try:
        return ANCHORS[name](lp, max_tokens)
    except ImportError as error:
        pytest.skip(f"{name} is not installed ({error})")
    except NotComparable as reason:
        pytest.skip(f"{name}: {reason}")


def report_rows(device):
    if torch.device(device).type != "cpu":
        return []  # the search runs on the host; the CUDA path only adds the device pruning
    rows = []
    for name, max_tokens in CASES.items():
        lp = peaky_log_probs(name)
        case = f"beam {BEAM}" + ("" if max_tokens is None else f", {max_tokens} tokens/frame")
        for anchor, make in ANCHORS.items():
            try:
                theirs = make(lp, max_tokens)
            except ImportError as error:
                print(f"beam {name}: {anchor} skipped: not installed ({error})", file=sys.stderr)
                continue
            except NotComparable as reason:
                print(f"beam {name}: {anchor} skipped: {reason}", file=sys.stderr)
                continue
            slow = anchor == "pyctcdecode"
            ours_ms, ref_ms, ratio = paired_ms(
                ours(lp, max_tokens),
                theirs,
                device,
                rounds=3 if slow else 5,
                warmup=1,
                repeat=2 if slow else 5,
                min_time_s=0.0 if slow else 0.1,
            )
            rows.append(row("beam", name, case, device, ours_ms, anchor, ref_ms, ratio=ratio))
    return rows
