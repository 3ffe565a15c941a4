"""CTC prefix beam search: fastcrnn vs the decoders people ship, each in the same run, on the
ocr-en and ocr-zh workloads (64 lines, beam 10, peaky log-probs like a trained model's).

Anchors (installed from PyPI in the benchmark environment; a row is skipped, with the reason
printed, when one is absent): fast-ctc-decode (Rust, one line per call), flashlight-text's
LexiconFreeDecoder with a ZeroLM (C++, the decoder under torchaudio's ctc_decoder; one line per
call), pyctcdecode (Python). Pruning is matched where the anchors have it: 40 tokens per frame
on ocr-zh (flashlight's beam_size_token, our max_tokens).

With a language model: a 4-gram character model (ARPA, trained by fastcrnn's make-lm on a
synthetic corpus) against pyctcdecode querying the same ARPA through kenlm, both with
pyctcdecode's default pruning (token_min_logp -5, beam_prune_logp -10), and the share of lines
whose top hypothesis is the same on both sides.

pytest-benchmark:  pytest benchmarks/bench_beam.py --benchmark-only
report rows:       python benchmarks/report.py --only beam   (ratios measured in the same run)
"""

import math
import os
import random
import sys
import tempfile
import warnings

import pytest
import torch

import fastcrnn
from benchmarks.timing import paired_ms, row
from benchmarks.workloads import CTC_WORKLOADS
from fastcrnn.ops.beam import pack_language_model

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


LM_ORDER = 4
LM_WEIGHT = 0.5
LM_PRUNING = dict(token_min_logp=-5.0, beam_prune_logp=-10.0)  # pyctcdecode's defaults
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"  # ocr-en's classes 1..36 (0: the blank)


def char_lm_arpa(directory, seed=0):
    """Writes a 4-gram character model of a synthetic corpus (lines of 2-4 words from a fixed
    300-word vocabulary, written without spaces) to directory/char4.arpa; returns the path."""
    rng = random.Random(seed)
    letters = ALPHABET[10:]
    words = ["".join(rng.choices(letters, k=rng.randint(3, 8))) for _ in range(300)]
    lines = ["".join(rng.choices(words, k=rng.randint(2, 4))) for _ in range(3000)]
    path = os.path.join(directory, "char4.arpa")
    with warnings.catch_warnings():
        # 26 letters: every unigram has many left contexts, so Kneser-Ney's order-1 discount
        # estimate has no count-1 n-grams and the trainer warns that it uses the fallback
        warnings.simplefilter("ignore", UserWarning)
        fastcrnn.lm.train_char_lm(lines, LM_ORDER).write_arpa(path)
    return path


def ours_with_lm(arpa):
    """Our decoder with the model loaded and packed once: log-probs (T, N, C) -> decoding."""
    packed = pack_language_model(fastcrnn.NGramLM.from_arpa(arpa))
    tokens = [""] + list(ALPHABET)
    return lambda lp: fastcrnn.ctc_beam_search_decode(
        lp, beam_width=BEAM, lm=packed, lm_tokens=tokens, lm_weight=LM_WEIGHT, **LM_PRUNING
    )


def pyctcdecode_with_lm(arpa):
    """pyctcdecode with kenlm on the same ARPA. pyctcdecode's own LanguageModel scores whole
    words; a line here is one word, so a character model enters through its partial-word
    score: the characters' log10 probabilities after <s> (cached per prefix, as pyctcdecode
    caches partial scores), plus </s> when the line ends; weighted as ours."""
    import kenlm
    from pyctcdecode import Alphabet, BeamSearchDecoderCTC
    from pyctcdecode.language_model import AbstractLanguageModel

    class CharacterKenLM(AbstractLanguageModel):
        def __init__(self, model):
            self._model = model
            start = kenlm.State()
            model.BeginSentenceWrite(start)
            self._start = start
            self._prefixes = {"": (start, 0.0)}  # text -> (state after it, log10 p)

        @property
        def order(self):
            return self._model.order

        def get_start_state(self):
            return [self._start]

        def _prefix(self, text):
            known = len(text)
            while text[:known] not in self._prefixes:
                known -= 1
            state, log10p = self._prefixes[text[:known]]
            for i in range(known, len(text)):
                after = kenlm.State()
                log10p += self._model.BaseScore(state, text[i], after)
                state = after
                self._prefixes[text[: i + 1]] = (state, log10p)
            return state, log10p

        def score_partial_token(self, partial_token):
            return LM_WEIGHT * math.log(10) * self._prefix(partial_token)[1]

        def score(self, prev_state, word, is_last_word=False):
            state, log10p = self._prefix(word)  # the line's only word: from <s>
            if is_last_word:
                log10p += self._model.BaseScore(state, "</s>", kenlm.State())
            return LM_WEIGHT * math.log(10) * log10p, state

    decoder = BeamSearchDecoderCTC(
        Alphabet.build_alphabet([""] + list(ALPHABET)), CharacterKenLM(kenlm.Model(arpa))
    )
    # log-probs (T, N, C) -> each line's text, one line per call (its API takes one sequence)
    return lambda lp: [
        decoder.decode(lp[:, n].numpy(), beam_width=BEAM, **LM_PRUNING) for n in range(lp.shape[1])
    ]


def text_of(out, n):
    L = int(out.lengths[n, 0])
    return "".join(ALPHABET[c - 1] for c in out.tokens[n, 0, :L].tolist())


def objective(lp, text, lm):
    """What both searches maximise: the CTC log-probability of `text` under lp (T, C) plus
    LM_WEIGHT * ln 10 * log10 p_LM(text </s>)."""
    target = torch.tensor([[ALPHABET.index(ch) + 1 for ch in text]], dtype=torch.long)
    ctc = -torch.nn.functional.ctc_loss(
        lp.double().unsqueeze(1), target, [lp.shape[0]], [len(text)], reduction="sum"
    )
    state, log10p = lm.begin_state(), 0.0
    for token in [*text, "</s>"]:
        state, step = lm.advance(state, token)
        log10p += step
    return float(ctc) + LM_WEIGHT * math.log(10) * log10p


def agreement(arpa, ours, theirs, seeds=8):
    """Over seeds x 64 lines: (lines, same top text, lines where ours scores higher under the
    shared objective, lines where theirs does)."""
    lm = fastcrnn.NGramLM.from_arpa(arpa)
    lines = same = ours_better = theirs_better = 0
    for seed in range(seeds):
        lp = peaky_log_probs("ocr-en", seed)
        ours_out, theirs_out = ours(lp), theirs(lp)
        for n, their_text in enumerate(theirs_out):
            lines += 1
            mine = text_of(ours_out, n)
            if mine == their_text:
                same += 1
            elif objective(lp[:, n], mine, lm) > objective(lp[:, n], their_text, lm):
                ours_better += 1
            else:
                theirs_better += 1
    return lines, same, ours_better, theirs_better


@pytest.mark.parametrize("impl", ["fastcrnn", "pyctcdecode"])
def test_beam_with_char_lm(benchmark, impl, tmp_path):
    lp = peaky_log_probs("ocr-en")
    arpa = char_lm_arpa(tmp_path)
    if impl == "fastcrnn":
        benchmark(ours_with_lm(arpa), lp)
        return
    try:
        benchmark(pyctcdecode_with_lm(arpa), lp)
    except ImportError as error:
        pytest.skip(f"pyctcdecode with kenlm is not installed ({error})")


def lm_rows(device):
    lp = peaky_log_probs("ocr-en")
    with tempfile.TemporaryDirectory() as directory:
        arpa = char_lm_arpa(directory)
        ours = ours_with_lm(arpa)
        try:
            theirs = pyctcdecode_with_lm(arpa)
        except ImportError as error:
            print(f"beam with LM: pyctcdecode + kenlm skipped ({error})", file=sys.stderr)
            return []
        lines, same, ours_better, theirs_better = agreement(arpa, ours, theirs)
        ours_ms, ref_ms, ratio = paired_ms(
            lambda: ours(lp),
            lambda: theirs(lp),
            device,
            rounds=3,
            warmup=1,
            repeat=2,
            min_time_s=0.0,
        )
    case = (
        f"beam {BEAM}, {LM_ORDER}-gram char LM; top text same on {same}/{lines} lines, "
        f"higher objective ours {ours_better} / theirs {theirs_better}"
    )
    anchor = "pyctcdecode + kenlm"
    return [row("beam", "ocr-en", case, device, ours_ms, anchor, ref_ms, ratio=ratio)]


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
    return rows + lm_rows(device)
