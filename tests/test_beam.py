"""fastcrnn.ctc_beam_search_decode against the readable prefix beam search in fastcrnn.reference,
brute force over every label sequence of tiny cases, and the greedy decoder on peaky inputs."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close

import fastcrnn
from fastcrnn import reference
from fastcrnn.ops.beam import pack_language_model


def _log_probs(seed, T, N, C, peaky=0.0, dtype=torch.float64):
    """(T, N, C) log-probs; `peaky` > 0 adds that much to one random class per frame."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, C, generator=g, dtype=torch.float64)
    if peaky:
        x.scatter_add_(
            2,
            torch.randint(0, C, (T, N, 1), generator=g),
            torch.full((T, N, 1), peaky, dtype=torch.float64),
        )
    return x.log_softmax(-1).to(dtype)


def _hypotheses(out, n):
    """[(prefix tuple, score)] of sequence n, padding dropped."""
    found = []
    for k in range(out.tokens.shape[1]):
        if out.scores[n, k] == -math.inf:
            continue
        L = int(out.lengths[n, k])
        found.append((tuple(out.tokens[n, k, :L].tolist()), float(out.scores[n, k])))
    return found


def _assert_matches_reference(out, lp, lengths, **options):
    for n in range(lp.shape[1]):
        want = reference.ctc_prefix_beam_search(lp[:, n], int(lengths[n]), **options)
        got = _hypotheses(out, n)
        assert [p for p, _ in got] == [p for p, _, _ in want], (n, got, want)
        for (_, a), (_, b, _) in zip(got, want):
            assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12), (n, a, b)


@pytest.mark.parametrize("seed", range(30))
def test_matches_the_reference(seed):
    g = torch.Generator().manual_seed(500 + seed)
    T = int(torch.randint(1, 12, (1,), generator=g))
    C = int(torch.randint(2, 7, (1,), generator=g))
    beam = int(torch.randint(1, 9, (1,), generator=g))
    nbest = int(torch.randint(1, beam + 1, (1,), generator=g))
    blank = int(torch.randint(0, C, (1,), generator=g))
    lp = _log_probs(seed, T, 5, C, peaky=3.0 if seed % 3 == 0 else 0.0)
    lengths = torch.randint(0, T + 1, (5,), generator=g)
    out = fastcrnn.ctc_beam_search_decode(lp, lengths, beam_width=beam, blank=blank, nbest=nbest)
    assert torch.equal(out.scores, out.ctc_scores)
    _assert_matches_reference(out, lp, lengths, beam_width=beam, blank=blank, nbest=nbest)


@pytest.mark.parametrize(
    "options",
    [
        dict(max_tokens=1),
        dict(max_tokens=2),
        dict(token_min_logp=-1.5),
        dict(beam_prune_logp=-2.0),
        dict(max_tokens=3, token_min_logp=-2.5, beam_prune_logp=-4.0),
    ],
    ids=str,
)
def test_pruning_matches_the_reference(options):
    lp = _log_probs(7, 15, 6, 8, peaky=2.0)
    lengths = torch.tensor([15, 14, 9, 3, 1, 0])
    out = fastcrnn.ctc_beam_search_decode(lp, lengths, beam_width=6, nbest=3, **options)
    _assert_matches_reference(out, lp, lengths, beam_width=6, nbest=3, **options)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", range(16))
def test_wide_frames_with_max_tokens_match_the_reference(case, dtype):
    """Frames of many classes (C >= 8 (max_tokens + 1)) take the kernel's shortcut through each
    block of 8 classes' largest value: it must still keep exactly the max_tokens best labels,
    ties to the smaller class, never NaN or -inf, also with token_min_logp and any blank."""
    g = torch.Generator().manual_seed(900 + case)
    T, N = 7, 4
    C = int(torch.randint(40, 300, (1,), generator=g))
    max_tokens = int(torch.randint(1, 5, (1,), generator=g))
    x = torch.randn(T, N, C, generator=g, dtype=torch.float64) * 2
    x[:, :, int(torch.randint(0, C, (1,), generator=g))] += 6.0
    if case % 4 == 0:
        x = (x * 2).round() / 2  # many equal values, so ties at the cut
    lp = x.log_softmax(-1).to(dtype)
    if case % 4 == 1:
        lp[:, :, 3::5] = -math.inf
        lp[1, 0, 10:30] = math.nan
        lp[2, 1] = -math.inf  # a frame with no label at all
    options = dict(beam_width=4, nbest=2, max_tokens=max_tokens)
    options["blank"] = int(torch.randint(0, C, (1,), generator=g))
    if case % 4 == 2:
        options["token_min_logp"] = -9.0
    lengths = torch.tensor([T, T - 1, 3, 1])
    out = fastcrnn.ctc_beam_search_decode(lp, lengths, **options)
    _assert_matches_reference(out, lp, lengths, **options)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_wide_logits_frames_take_the_same_labels_as_the_plain_scan(dtype):
    """With logits each frame is shifted by its log-sum-exp; the block shortcut (contiguous
    classes) must keep the same labels as the class-by-class scan (strided classes)."""
    g = torch.Generator().manual_seed(77)
    x = (torch.randn(9, 5, 400, generator=g, dtype=torch.float64) * 3).to(dtype)
    x[..., 17] += 10
    x[:, 2, ::3] = (x[:, 2, ::3] * 4).round() / 4  # ties
    strided = torch.empty(9, 5, 800, dtype=dtype)[..., ::2]
    strided.copy_(x)
    assert strided.stride(2) == 2
    for max_tokens in (1, 3, 12):
        options = dict(logits=True, beam_width=5, nbest=3, max_tokens=max_tokens)
        a = fastcrnn.ctc_beam_search_decode(x, **options)
        b = fastcrnn.ctc_beam_search_decode(strided, **options)
        for u, v in zip(a, b):
            assert torch.equal(u, v)


def test_ties_are_broken_toward_the_smaller_prefix():
    """Uniform scores make every prefix of a length tie: both sides must pick the same ones."""
    lp = torch.full((4, 2, 4), -math.log(4), dtype=torch.float64)
    out = fastcrnn.ctc_beam_search_decode(lp, beam_width=5, nbest=5)
    _assert_matches_reference(out, lp, [4, 4], beam_width=5, nbest=5)
    again = fastcrnn.ctc_beam_search_decode(lp, beam_width=5, nbest=5)
    assert torch.equal(out.tokens, again.tokens)


def _sequence_log_prob(lp, labels):
    """log p(labels | lp) by the CTC forward (torch's loss)."""
    targets = torch.tensor([list(labels)], dtype=torch.int64).reshape(1, len(labels))
    nll = F.ctc_loss(lp[:, None], targets, [lp.shape[0]], [len(labels)], reduction="none")
    return -float(nll[0])


@pytest.mark.parametrize("seed", range(8))
def test_wide_beam_finds_the_most_probable_labeling(seed):
    """Without pruning and with a beam wider than the number of prefixes, the result is the
    most probable label sequence: every sequence of length <= T is scored by the CTC forward."""
    g = torch.Generator().manual_seed(seed)
    T = int(torch.randint(1, 5, (1,), generator=g))
    C = int(torch.randint(2, 4, (1,), generator=g))
    lp = _log_probs(seed, T, 1, C)[:, 0]
    scored = []
    for L in range(T + 1):
        for labels in itertools.product(range(1, C), repeat=L):
            scored.append((_sequence_log_prob(lp, labels), labels))
    scored.sort(key=lambda s: (-s[0], s[1]))
    out = fastcrnn.ctc_beam_search_decode(lp, beam_width=len(scored) + 1, nbest=3)
    got = [
        (tuple(out.tokens[k, : int(out.lengths[k])].tolist()), float(out.scores[k]))
        for k in range(3)
    ]
    for (labels, score), (want_score, want_labels) in zip(got, scored):
        if score == -math.inf:
            continue
        assert labels == want_labels
        assert math.isclose(score, want_score, rel_tol=1e-9, abs_tol=1e-9)


def test_beam_one_on_peaky_input_equals_greedy():
    """Where one class holds nearly all of each frame's mass, beam 1 follows the best path."""
    lp = _log_probs(11, 30, 16, 12, peaky=12.0)
    lengths = torch.randint(0, 31, (16,), generator=torch.Generator().manual_seed(3))
    beam = fastcrnn.ctc_beam_search_decode(lp, lengths, beam_width=1)
    greedy = fastcrnn.ctc_greedy_decode(lp, lengths)
    assert torch.equal(beam.lengths[:, 0], greedy.lengths)
    assert torch.equal(beam.tokens[:, 0], greedy.tokens)
    assert torch.equal(beam.token_frames[:, 0], greedy.token_frames)
    assert_close(beam.token_probs[:, 0], greedy.token_probs, 1e-6, what="token_probs")


def test_logits_and_reduced_precision():
    x = _log_probs(12, 12, 4, 6, peaky=4.0) * 1.7 + 0.3  # unnormalised
    lp = x.log_softmax(-1)
    want = fastcrnn.ctc_beam_search_decode(lp, beam_width=4, nbest=2)
    from_logits = fastcrnn.ctc_beam_search_decode(x, beam_width=4, nbest=2, logits=True)
    assert torch.equal(from_logits.tokens, want.tokens)
    assert_close(from_logits.scores, want.scores, 1e-9, what="scores")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        low = fastcrnn.ctc_beam_search_decode(lp.to(dtype), beam_width=4, nbest=1)
        assert torch.equal(low.tokens[:, 0], want.tokens[:, 0]), dtype
        assert_close(low.scores[:, 0], want.scores[:, 0], 0.1, what=str(dtype))


def test_unbatched_padding_and_empty_input():
    lp = _log_probs(13, 6, 1, 4)
    batched = fastcrnn.ctc_beam_search_decode(lp, beam_width=3, nbest=2)
    single = fastcrnn.ctc_beam_search_decode(lp[:, 0], beam_width=3, nbest=2)
    assert single.tokens.shape == (2, 6) and single.scores.shape == (2,)
    for a, b in zip(single, batched):
        assert torch.equal(a, b[0])
    # an empty input has one hypothesis, the empty prefix with probability 1
    empty = fastcrnn.ctc_beam_search_decode(lp, [0], beam_width=3, nbest=3)
    assert empty.lengths[0].tolist() == [0, 0, 0]
    assert empty.scores[0].tolist() == [0.0, -math.inf, -math.inf]
    assert (empty.tokens == -1).all() and (empty.token_frames == -1).all()


def test_frames_and_probs_describe_the_hypothesis():
    lp = _log_probs(14, 20, 3, 7, peaky=3.0)
    out = fastcrnn.ctc_beam_search_decode(lp, beam_width=5, nbest=2)
    for n, k in itertools.product(range(3), range(2)):
        L = int(out.lengths[n, k])
        frames = out.token_frames[n, k, :L]
        assert (frames[1:] > frames[:-1]).all() and (out.token_frames[n, k, L:] == -1).all()
        for i in range(L):
            end = int(frames[i + 1]) if i + 1 < L else 20
            c = int(out.tokens[n, k, i])
            best = lp[int(frames[i]) : end, n, c].exp().max()
            assert math.isclose(float(out.token_probs[n, k, i]), float(best), rel_tol=1e-6)


def test_bad_arguments_raise_naming_them():
    lp = _log_probs(15, 5, 2, 4)
    with pytest.raises(ValueError, match="beam_width"):
        fastcrnn.ctc_beam_search_decode(lp, beam_width=0)
    with pytest.raises(TypeError, match="beam_width"):
        fastcrnn.ctc_beam_search_decode(lp, beam_width=2.0)
    with pytest.raises(ValueError, match="nbest"):
        fastcrnn.ctc_beam_search_decode(lp, beam_width=2, nbest=3)
    with pytest.raises(ValueError, match="blank"):
        fastcrnn.ctc_beam_search_decode(lp, blank=4)
    with pytest.raises(ValueError, match="input_lengths"):
        fastcrnn.ctc_beam_search_decode(lp, [6, 5])
    with pytest.raises(ValueError, match="input_lengths"):
        fastcrnn.ctc_beam_search_decode(lp, torch.tensor([6, 5]))
    with pytest.raises(TypeError, match="input_lengths"):
        fastcrnn.ctc_beam_search_decode(lp, torch.tensor([5.0, 5.0]))
    with pytest.raises(ValueError, match="beam_prune_logp"):
        fastcrnn.ctc_beam_search_decode(lp, beam_prune_logp=1.0)
    with pytest.raises(TypeError, match="token_min_logp"):
        fastcrnn.ctc_beam_search_decode(lp, token_min_logp="low")
    with pytest.raises(ValueError, match="max_tokens"):
        fastcrnn.ctc_beam_search_decode(lp, max_tokens=0)
    with pytest.raises(TypeError, match="logits"):
        fastcrnn.ctc_beam_search_decode(lp, logits=1)
    with pytest.raises(TypeError, match="log_probs"):
        fastcrnn.ctc_beam_search_decode(lp.long())
    with pytest.raises(ValueError, match="log_probs"):
        fastcrnn.ctc_beam_search_decode(lp[0, 0])


def test_candidates_op_rejects_a_class_listed_twice():
    """The candidate-only op (what a CUDA input's pruning sends to the host) grows a prefix
    once per listed class: a frame listing a class twice is refused, not searched twice."""
    from fastcrnn.ops.beam import _language_model_args, _trie_args

    tokens = torch.tensor([[[1, 2, -1, -1]], [[2, 1, 3, 2]]])
    logp = torch.full(tokens.shape, -1.0, dtype=torch.float64)
    blank_lp = torch.full(tokens.shape[:2], -3.0, dtype=torch.float64)
    lm, word_ids = _language_model_args(None, None, 0.5, 0.0, 4, 0)
    args = (*lm, *_trie_args(None, None, None, 0.0, None, 4, 0), word_ids)
    run = torch.ops.fastcrnn.ctc_beam_search_candidates
    with pytest.raises(ValueError, match="candidate_tokens must list each class"):
        run(tokens, logp, blank_lp, torch.tensor([2]), 4, 0, 3, 1, None, None, *args)
    # padding (-1) may repeat
    out = run(tokens[:1], logp[:1], blank_lp[:1], torch.tensor([1]), 4, 0, 3, 1, None, None, *args)
    assert out[1].tolist() == [[1]] and out[0][0, 0, 0] == 1  # the tie goes to the smaller


def test_opcheck():
    lp = _log_probs(16, 8, 3, 5, dtype=torch.float32)
    lengths = torch.tensor([8, 3, 0])
    op = torch.ops.fastcrnn.ctc_beam_search
    none = (None, None, None, None, 0, 0, 0, 0.0, 0.0, None, None, -1, None, None, 0.0, None)
    torch.library.opcheck(op, (lp, lengths, 0, False, 4, 2, 0, None, None, *none))
    torch.library.opcheck(op, (lp, lengths, 1, True, 3, 1, 2, -3.0, -5.0, *none))
    from fastcrnn.ops.beam import _language_model_args, _trie_args

    lexicon = fastcrnn.Lexicon(["ab", "c"], "abc")
    trie_args = _trie_args(lexicon, 4, [[1, 2]], 1.5, None, 5, 0)
    lm_args, _ = _language_model_args(_char_lm(), LM_TOKENS, 0.5, 0.1, 5, 0)
    head = (lp, lengths, 0, False, 4, 2, 0, None, None)
    torch.library.opcheck(op, (*head, *lm_args, *trie_args, None))
    word_lm = _language_model_args(_word_lm(), None, 0.5, 0.1, 5, 0, "word", lexicon)
    torch.library.opcheck(op, (*head, *word_lm[0], *trie_args, word_lm[1]))


@pytest.mark.parametrize("max_tokens", [None, 3])
def test_cuda_matches_cpu(max_tokens):
    lp = _log_probs(17, 20, 8, 9, peaky=3.0, dtype=torch.float32)
    lengths = torch.tensor([20, 19, 10, 5, 1, 0, 20, 7])
    want = fastcrnn.ctc_beam_search_decode(
        lp, lengths, beam_width=6, nbest=2, max_tokens=max_tokens
    )
    got = fastcrnn.ctc_beam_search_decode(
        lp.cuda(), lengths.cuda(), beam_width=6, nbest=2, max_tokens=max_tokens
    )
    assert torch.equal(got.tokens, want.tokens)
    assert_close(got.scores, want.scores, 1e-5, what="scores")


def test_cuda_lexicon_and_hotwords_match_cpu():
    lp = _log_probs(18, 20, 8, 5, peaky=3.0, dtype=torch.float32)
    lengths = torch.tensor([20, 19, 10, 5, 1, 0, 20, 7])
    options = dict(
        beam_width=6, nbest=2, max_tokens=3, lexicon=fastcrnn.Lexicon(["ab", "ba", "c"], "abc"),
        word_delimiter=4, hotwords=["ba"], lm=_word_lm(), lm_level="word",
    )  # fmt: skip
    want = fastcrnn.ctc_beam_search_decode(lp, lengths, **options)
    got = fastcrnn.ctc_beam_search_decode(lp.cuda(), lengths.cuda(), **options)
    assert torch.equal(got.tokens, want.tokens)
    assert_close(got.scores, want.scores, 1e-5, what="scores")


# ---- with a language model ---------------------------------------------------------------------


def _char_lm(order=3):
    import warnings

    from fastcrnn.lm import train_char_lm

    lines = ["ab ab", "abc", "cab", "abab", "bca", "ab", "cc ab", "aab"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small corpora use the fallback discounts
        return train_char_lm(lines, order)


LM_TOKENS = ["", "a", "b", "c", "<space>"]


@pytest.mark.parametrize("seed", range(6))
def test_language_model_matches_the_reference(seed):
    lm = _char_lm(order=2 + seed % 3)
    lp = _log_probs(seed, 9, 4, 5, peaky=2.0 if seed % 2 else 0.0)
    lengths = torch.tensor([9, 7, 3, 0])
    options = dict(beam_width=5, nbest=3, lm_weight=0.8, word_bonus=0.3)
    out = fastcrnn.ctc_beam_search_decode(lp, lengths, lm=lm, lm_tokens=LM_TOKENS, **options)
    for n in range(4):
        want = reference.ctc_prefix_beam_search(
            lp[:, n], int(lengths[n]), lm=lm, lm_tokens=LM_TOKENS, **options
        )
        got = [
            (tuple(out.tokens[n, k, : int(out.lengths[n, k])].tolist()), out.scores[n, k], c)
            for k, c in enumerate(out.ctc_scores[n].tolist())
            if out.scores[n, k] > -math.inf
        ]
        assert [g[0] for g in got] == [w[0] for w in want], (n, got, want)
        for (_, score, ctc), (_, want_score, want_ctc) in zip(got, want):
            assert math.isclose(float(score), want_score, rel_tol=1e-12, abs_tol=1e-12)
            assert math.isclose(ctc, want_ctc, rel_tol=1e-12, abs_tol=1e-12)


def test_language_model_decides_between_acoustic_ties():
    """Two frames that cannot tell a from b: without a model "ab" and "ba" tie and the smaller
    label sequence goes first; a model that has only seen "ba" puts "ba" first."""
    import warnings

    from fastcrnn.lm import train_char_lm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = train_char_lm(["ba", "ba ba", "bab", "ba"], 2)
    row = torch.tensor([0.1, 0.45, 0.45, 1e-9, 1e-9], dtype=torch.float64).log()
    lp = torch.stack([row, row])[:, None]

    def ranked(out):
        return [tuple(t[: int(n)].tolist()) for t, n in zip(out.tokens[0], out.lengths[0])]

    plain = fastcrnn.ctc_beam_search_decode(lp, beam_width=8, nbest=4)
    assert ranked(plain).index((1, 2)) < ranked(plain).index((2, 1))
    assert torch.equal(plain.ctc_scores, plain.scores)
    with_lm = fastcrnn.ctc_beam_search_decode(lp, beam_width=8, nbest=4, lm=lm, lm_tokens=LM_TOKENS)
    assert ranked(with_lm).index((2, 1)) < ranked(with_lm).index((1, 2))
    zero = fastcrnn.ctc_beam_search_decode(
        lp, beam_width=8, nbest=4, lm=lm, lm_tokens=LM_TOKENS, lm_weight=0.0
    )
    assert ranked(zero) == ranked(plain) and torch.equal(zero.scores, plain.scores)
    # the flat arrays, converted once, give the same result as the model
    arrays = fastcrnn.ctc_beam_search_decode(
        lp, beam_width=8, nbest=4, lm=lm.to_arrays(np.float64), lm_tokens=LM_TOKENS
    )
    assert torch.equal(arrays.tokens, with_lm.tokens) and torch.equal(arrays.scores, with_lm.scores)
    packed = fastcrnn.ctc_beam_search_decode(
        lp, beam_width=8, nbest=4, lm=pack_language_model(lm), lm_tokens=LM_TOKENS
    )
    assert torch.equal(packed.tokens, with_lm.tokens) and torch.equal(packed.scores, with_lm.scores)


def test_language_model_arguments_are_checked():
    lm = _char_lm()
    lp = _log_probs(20, 4, 2, 5)
    with pytest.raises(ValueError, match="lm_tokens"):
        fastcrnn.ctc_beam_search_decode(lp, lm=lm, lm_tokens=LM_TOKENS[:3])
    with pytest.raises(ValueError, match="lm_tokens"):
        fastcrnn.ctc_beam_search_decode(lp, lm=lm)
    with pytest.raises(ValueError, match="lm_tokens"):
        fastcrnn.ctc_beam_search_decode(lp, lm_tokens=LM_TOKENS)
    with pytest.raises(TypeError, match="lm"):
        fastcrnn.ctc_beam_search_decode(lp, lm="lm.arpa", lm_tokens=LM_TOKENS)
    with pytest.raises(TypeError, match="lm_weight"):
        fastcrnn.ctc_beam_search_decode(lp, lm=lm, lm_tokens=LM_TOKENS, lm_weight="high")


# ---- lexicon-constrained search ----------------------------------------------------------------

LETTERS = "abcde"  # classes 1..5 of a Lexicon over this charset (blank 0)


def _random_lexicon(g, letters, count, max_len=4):
    words = set()
    while len(words) < count:
        L = int(torch.randint(1, max_len + 1, (1,), generator=g))
        words.add(
            "".join(letters[int(i)] for i in torch.randint(0, len(letters), (L,), generator=g))
        )
    return sorted(words)


def _assert_matches(out, lp, lengths, **options):
    """Hypotheses, scores and CTC scores of every sample equal the reference's."""
    for n in range(lp.shape[1]):
        want = reference.ctc_prefix_beam_search(lp[:, n], int(lengths[n]), **options)
        got = [
            (
                tuple(out.tokens[n, k, : int(out.lengths[n, k])].tolist()),
                float(out.scores[n, k]),
                float(out.ctc_scores[n, k]),
            )
            for k in range(out.tokens.shape[1])
            if out.scores[n, k] > -math.inf
        ]
        assert [g[0] for g in got] == [w[0] for w in want], (n, got, want)
        for (_, score, ctc), (_, want_score, want_ctc) in zip(got, want):
            assert math.isclose(score, want_score, rel_tol=1e-12, abs_tol=1e-12), (n, got, want)
            assert math.isclose(ctc, want_ctc, rel_tol=1e-12, abs_tol=1e-12), (n, got, want)
        for k in range(len(got), out.tokens.shape[1]):  # padding
            assert int(out.lengths[n, k]) == 0 and out.scores[n, k] == -math.inf


@pytest.mark.parametrize("delimited", [False, True], ids=["words", "lines"])
@pytest.mark.parametrize("seed", range(40))
def test_lexicon_matches_the_reference(seed, delimited):
    """40 seeds x 6 samples x (one word, delimited lines): 480 random small cases."""
    g = torch.Generator().manual_seed(900 + seed)
    T = int(torch.randint(1, 11, (1,), generator=g))
    letters = LETTERS[: int(torch.randint(2, 5, (1,), generator=g))]
    C = len(letters) + 1 + delimited  # the delimiter is the last class
    lexicon = fastcrnn.Lexicon(
        _random_lexicon(g, letters, int(torch.randint(1, 7, (1,), generator=g))), letters
    )
    beam = int(torch.randint(1, 9, (1,), generator=g))
    nbest = int(torch.randint(1, beam + 1, (1,), generator=g))
    lp = _log_probs(seed, T, 6, C, peaky=3.0 if seed % 3 == 0 else 0.0)
    lengths = torch.randint(0, T + 1, (6,), generator=g)
    delimiter = C - 1 if delimited else None
    pruning = dict(max_tokens=2, beam_prune_logp=-6.0) if seed % 4 == 1 else {}
    options = dict(beam_width=beam, nbest=nbest, word_delimiter=delimiter, **pruning)
    out = fastcrnn.ctc_beam_search_decode(lp, lengths, lexicon=lexicon, **options)
    _assert_matches(out, lp, lengths, lexicon=lexicon.classes, **options)


def _allowed_lines(lexicon, T, C, delimiter):
    """Every label sequence of length <= T that the lexicon allows, by enumeration."""
    words = set(lexicon.classes)
    for L in range(T + 1):
        for labels in itertools.product(range(1, C), repeat=L):
            parts = [()]
            for c in labels:
                if c == delimiter:
                    parts.append(())
                else:
                    parts[-1] += (c,)
            if all(p in words for p in parts) and (delimiter is not None or len(parts) == 1):
                yield labels


@pytest.mark.parametrize("delimited", [False, True], ids=["words", "lines"])
@pytest.mark.parametrize("seed", range(10))
def test_lexicon_wide_beam_finds_the_most_probable_allowed_labeling(seed, delimited):
    """Without pruning and with a beam wider than every prefix, the result is the most probable
    label sequence the lexicon allows, scored by the CTC forward."""
    g = torch.Generator().manual_seed(300 + seed)
    T = int(torch.randint(1, 6, (1,), generator=g))
    letters = LETTERS[: int(torch.randint(2, 4, (1,), generator=g))]
    C = len(letters) + 1 + delimited
    delimiter = C - 1 if delimited else None
    lexicon = fastcrnn.Lexicon(_random_lexicon(g, letters, 4, max_len=3), letters)
    lp = _log_probs(seed, T, 1, C)[:, 0]
    scored = sorted(
        ((_sequence_log_prob(lp, s), s) for s in _allowed_lines(lexicon, T, C, delimiter)),
        key=lambda s: (-s[0], s[1]),
    )
    scored = [s for s in scored if s[0] > -math.inf]
    out = fastcrnn.ctc_beam_search_decode(
        lp, beam_width=C**T + 1, nbest=3, lexicon=lexicon, word_delimiter=delimiter
    )
    got = [
        (tuple(out.tokens[k, : int(out.lengths[k])].tolist()), float(out.scores[k]))
        for k in range(3)
        if out.scores[k] > -math.inf
    ]
    assert len(got) == min(3, len(scored))
    for (labels, score), (want_score, want_labels) in zip(got, scored):
        assert labels == want_labels
        assert math.isclose(score, want_score, rel_tol=1e-9, abs_tol=1e-9)


def _frames(*rows, classes):
    """(T, C) log-probs, each frame a dict {class: probability} (the rest share 1e-6)."""
    lp = torch.full((len(rows), classes), 1e-6, dtype=torch.float64)
    for t, row in enumerate(rows):
        for c, p in row.items():
            lp[t, c] = p
    return (lp / lp.sum(-1, keepdim=True)).log()


def _text(out, k=0, letters="abcdefghijklmnopqrstuvwxyz "):
    return "".join(letters[c - 1] for c in out.tokens[k, : int(out.lengths[k])].tolist())


def test_lexicon_corrects_a_misread_word():
    """Greedy reads "hellq"; constrained to a lexicon holding "hello", the search reads that."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    idx = {ch: i + 1 for i, ch in enumerate(letters)}
    rows = [{idx[ch]: 0.9} for ch in "hel"] + [{0: 0.9}, {idx["l"]: 0.9}]
    rows += [{idx["q"]: 0.6, idx["o"]: 0.35}]
    lp = _frames(*rows, classes=27)
    greedy = fastcrnn.ctc_greedy_decode(lp)
    assert "".join(letters[c - 1] for c in greedy.tokens[: int(greedy.lengths)].tolist()) == (
        "hellq"
    )
    assert _text(fastcrnn.ctc_beam_search_decode(lp, beam_width=5)) == "hellq"
    lexicon = fastcrnn.Lexicon(["hello", "help", "world"], letters)
    out = fastcrnn.ctc_beam_search_decode(lp, beam_width=5, lexicon=lexicon)
    assert _text(out) == "hello"
    assert out.scores[0] == out.ctc_scores[0]
    assert math.isclose(float(out.ctc_scores[0]), _sequence_log_prob(lp, [8, 5, 12, 12, 15]))


def test_lexicon_lines_of_words_and_empty_results():
    letters = "ab"
    lexicon = fastcrnn.Lexicon(["ab", "b"], letters)
    # frames reading "a b _ b" with class 3 the delimiter: "ab" + delimiter + "b"
    lp = _frames({1: 0.9}, {2: 0.9}, {3: 0.9}, {2: 0.9}, classes=4)
    out = fastcrnn.ctc_beam_search_decode(lp, beam_width=8, lexicon=lexicon, word_delimiter=3)
    assert out.tokens[0, : int(out.lengths[0])].tolist() == [1, 2, 3, 2]
    # without the delimiter a line is one word: "abb" and "ab3b" are out of reach
    one = fastcrnn.ctc_beam_search_decode(lp[:, :3].log_softmax(-1), beam_width=8, lexicon=lexicon)
    assert _text(one) == "ab"
    # no hypothesis ends on a word: one frame cannot spell "ab"
    short = _frames({1: 0.9}, classes=3)
    lexicon_ab = fastcrnn.Lexicon(["ab"], letters)
    empty = fastcrnn.ctc_beam_search_decode(short, beam_width=4, nbest=2, lexicon=lexicon_ab)
    assert empty.lengths.tolist() == [0, 0] and empty.scores.tolist() == [-math.inf] * 2
    assert (empty.tokens == -1).all()
    # an empty input ends on no word either
    batch = torch.stack([lp[:, :3].log_softmax(-1)] * 2, 1)
    none = fastcrnn.ctc_beam_search_decode(batch, [4, 0], beam_width=4, lexicon=lexicon)
    assert none.scores[1, 0] == -math.inf and none.scores[0, 0] > -math.inf


def test_lexicon_trie_is_packed_once():
    lexicon = fastcrnn.Lexicon(["ab", "abc", "b"], "abc")
    trie = lexicon.token_trie()
    assert lexicon.token_trie() is trie
    # root -> a -> b (end) -> c (end); root -> b (end)
    assert trie.nodes.shape == (5, 5) and trie.edges.shape == (4, 2)
    assert trie.nodes[:, 2].tolist() == [0, 0, 1, 2, 3]  # the word's index + 1
    assert trie.nodes[:, 4].tolist() == [0, 1, 2, 3, 1]


def test_lexicon_on_the_candidate_path():
    """The CUDA input's path (prune on the device, search the candidates on the host) runs the
    same search: driven here with CPU tensors, it agrees with the dense op."""
    from fastcrnn.ops.beam import _language_model_args, _search_cuda, _trie_args

    lp = _log_probs(40, 10, 5, 5, peaky=2.0)
    lengths = torch.tensor([10, 9, 5, 2, 0])
    lexicon = fastcrnn.Lexicon(["ab", "ba", "abc", "c"], "abc")
    trie = _trie_args(lexicon, 4, [[1, 2], [3]], 0.7, None, 5, 0)
    lm, word_ids = _language_model_args(_word_lm(), None, 0.5, 0.3, 5, 0, "word", lexicon)
    for max_tokens in (0, 3):
        args = (*lm, *trie, word_ids)
        got = _search_cuda(lp, lengths, 0, False, 6, 3, max_tokens, None, None, args)
        want = fastcrnn.ctc_beam_search_decode(
            lp, lengths, beam_width=6, nbest=3, max_tokens=max_tokens or None, lexicon=lexicon,
            word_delimiter=4, hotwords=[[1, 2], [3]], hotword_weight=0.7, lm=_word_lm(),
            lm_level="word", word_bonus=0.3,
        )  # fmt: skip
        for a, b in zip(got, want):
            assert torch.equal(a, b)


def test_lexicon_arguments_are_checked():
    lp = _log_probs(41, 5, 2, 4)
    lexicon = fastcrnn.Lexicon(["ab", "c"], "abc")  # classes 1..3
    with pytest.raises(TypeError, match="lexicon"):
        fastcrnn.ctc_beam_search_decode(lp, lexicon=["ab"])
    with pytest.raises(ValueError, match="lexicon"):  # class 4 >= C
        fastcrnn.ctc_beam_search_decode(lp, lexicon=fastcrnn.Lexicon(["ad"], "abcd"))
    with pytest.raises(ValueError, match="lexicon"):  # class 2 is the blank
        fastcrnn.ctc_beam_search_decode(lp, blank=2, lexicon=lexicon)
    for bad in (4, -1, 0):
        with pytest.raises(ValueError, match="word_delimiter"):
            fastcrnn.ctc_beam_search_decode(lp, lexicon=lexicon, word_delimiter=bad)
    with pytest.raises(ValueError, match="word_delimiter"):  # inside "c"
        fastcrnn.ctc_beam_search_decode(lp, lexicon=lexicon, word_delimiter=3)
    with pytest.raises(ValueError, match="word_delimiter"):
        fastcrnn.ctc_beam_search_decode(lp, word_delimiter=3)
    with pytest.raises(TypeError, match="word_delimiter"):
        fastcrnn.ctc_beam_search_decode(lp, lexicon=lexicon, word_delimiter=2.0)
    # the op checks the packed trie itself, so a corrupt one cannot lead the search astray
    nodes, edges = lexicon.token_trie()
    op_args = (lp, torch.tensor([5, 5]), 0, False, 3, 1, 0, None, None)
    no_lm = (None, None, None, None, 0, 0, 0, 0.0, 0.0)
    no_hot = (None, None, 0.0, None)
    bad_child = edges.clone()
    bad_child[0, 1] = 7
    with pytest.raises(ValueError, match="lexicon"):
        torch.ops.fastcrnn.ctc_beam_search(*op_args, *no_lm, nodes, bad_child, -1, *no_hot)
    bad_token = edges.clone()
    bad_token[0, 0] = 9
    with pytest.raises(ValueError, match="lexicon"):
        torch.ops.fastcrnn.ctc_beam_search(*op_args, *no_lm, nodes, bad_token, -1, *no_hot)


# ---- hotwords ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_hotwords_match_the_reference(seed):
    """Random hotwords and weights, alone and with a lexicon (lines delimited by class 4) and a
    character language model."""
    g = torch.Generator().manual_seed(700 + seed)
    T = int(torch.randint(1, 11, (1,), generator=g))
    C = 5
    hotwords = [
        tuple(
            int(c)
            for c in torch.randint(
                1, C, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g
            )
        )
        for _ in range(int(torch.randint(1, 4, (1,), generator=g)))
    ]
    weight = float(torch.rand(1, generator=g)) * 4 - 1
    beam = int(torch.randint(1, 9, (1,), generator=g))
    nbest = int(torch.randint(1, beam + 1, (1,), generator=g))
    lp = _log_probs(seed, T, 6, C, peaky=3.0 if seed % 3 == 0 else 0.0)
    lengths = torch.randint(0, T + 1, (6,), generator=g)
    options = dict(beam_width=beam, nbest=nbest, hotwords=hotwords, hotword_weight=weight)
    extra, ref_extra = {}, {}
    if seed % 3 >= 1:
        lexicon = fastcrnn.Lexicon(_random_lexicon(g, "abc", 5, max_len=3), "abc")
        extra = dict(lexicon=lexicon, word_delimiter=4)
        ref_extra = dict(lexicon=lexicon.classes, word_delimiter=4)
    if seed % 3 == 2:
        lm = dict(lm=_char_lm(), lm_tokens=LM_TOKENS, lm_weight=0.7, word_bonus=0.2)
        extra.update(lm)
        ref_extra.update(lm)
    out = fastcrnn.ctc_beam_search_decode(lp, lengths, **options, **extra)
    _assert_matches(out, lp, lengths, **options, **ref_extra)


def test_hotword_step_banks_completed_words_and_gives_partial_matches_back():
    """The matcher's bonus along prefixes (reference and op share these semantics)."""
    hot = {(1, 2), (1, 2, 3, 4), (2, 3)}
    starts = {h[:i] for h in hot for i in range(len(h) + 1)}
    state, bonuses = ((), 0, 0.0), []
    for c in (1, 2, 3, 5, 2, 3, 1):
        state = reference._hotword_step(hot, starts, 1.0, state, c)
        match, done, banked = state
        bonuses.append((banked + len(match) - done, banked))
    # a: partial 1; ab: "ab" banked (2); abc: partial of "abcd" on top (3); then 5 breaks it:
    # "ab" stays banked, the c's bonus goes back; bc: "bc" completes (4); a: partial (5)
    assert bonuses == [(1, 0), (2, 2), (3, 2), (2, 2), (3, 2), (4, 4), (5, 4)]


def test_a_hotword_flips_a_close_call():
    # "a", then b (0.45) or c (0.5): "ac" reads best; hotword "ab" (2 labels x 1.5) turns it
    lp = _frames({1: 0.9}, {2: 0.45, 3: 0.5}, classes=4)
    plain = fastcrnn.ctc_beam_search_decode(lp, beam_width=4)
    assert _text(plain) == "ac"
    hot = fastcrnn.ctc_beam_search_decode(lp, beam_width=4, hotwords=[[1, 2]])
    assert _text(hot) == "ab"
    assert float(hot.scores[0]) == float(hot.ctc_scores[0]) + 2 * 1.5
    assert math.isclose(float(hot.ctc_scores[0]), _sequence_log_prob(lp, [1, 2]))
    # spelled with a charset, or with the lexicon's: the same
    chars = fastcrnn.ctc_beam_search_decode(lp, beam_width=4, hotwords=["ab"], charset="abc")
    assert torch.equal(chars.tokens, hot.tokens) and torch.equal(chars.scores, hot.scores)
    lexicon = fastcrnn.Lexicon(["ab", "ac"], "abc")
    both = fastcrnn.ctc_beam_search_decode(lp, beam_width=4, hotwords=["ab"], lexicon=lexicon)
    assert torch.equal(both.tokens, hot.tokens) and torch.equal(both.scores, hot.scores)
    # a small weight does not flip it
    weak = fastcrnn.ctc_beam_search_decode(lp, beam_width=4, hotwords=["ab"], charset="abc",
                                           hotword_weight=0.01)  # fmt: skip
    assert _text(weak) == "ac"


def test_an_abandoned_partial_match_gives_its_bonus_back():
    """ "abd" is read clearly; hotword "abc" matches "ab" on the way and then breaks off: the
    result and its score are those without the hotword."""
    lp = _frames({1: 0.9}, {2: 0.9}, {4: 0.9}, classes=5)
    plain = fastcrnn.ctc_beam_search_decode(lp, beam_width=5, nbest=3)
    hot = fastcrnn.ctc_beam_search_decode(lp, beam_width=5, nbest=3, hotwords=["abc"],
                                          charset="abcd")  # fmt: skip
    assert _text(hot) == "abd"
    assert torch.equal(hot.tokens[0], plain.tokens[0])
    assert float(hot.scores[0]) == float(plain.scores[0])
    assert float(hot.ctc_scores[0]) == float(plain.ctc_scores[0])
    # a partial match at the end of the input gives its bonus back too: "ab" of "abc"
    lp2 = _frames({1: 0.9}, {2: 0.9}, classes=5)
    plain2 = fastcrnn.ctc_beam_search_decode(lp2, beam_width=5)
    hot2 = fastcrnn.ctc_beam_search_decode(lp2, beam_width=5, hotwords=[[1, 2, 3]])
    assert _text(hot2) == "ab" and float(hot2.scores[0]) == float(plain2.scores[0])


def test_hotword_arguments_are_checked():
    lp = _log_probs(42, 5, 2, 4)
    with pytest.raises(TypeError, match="hotwords"):
        fastcrnn.ctc_beam_search_decode(lp, hotwords="ab", charset="abc")
    with pytest.raises(ValueError, match=r"hotwords\[1\]"):
        fastcrnn.ctc_beam_search_decode(lp, hotwords=[[1], []])
    with pytest.raises(ValueError, match=r"hotwords\[0\]"):
        fastcrnn.ctc_beam_search_decode(lp, hotwords=[[1, 4]])
    with pytest.raises(ValueError, match=r"hotwords\[0\]"):
        fastcrnn.ctc_beam_search_decode(lp, hotwords=[[1, 0]])
    with pytest.raises(ValueError, match=r"hotwords\[0\]"):
        fastcrnn.ctc_beam_search_decode(lp, hotwords=[[1, 2]], blank=2)
    with pytest.raises(TypeError, match=r"hotwords\[0\]"):
        fastcrnn.ctc_beam_search_decode(lp, hotwords=[[1.0]])
    with pytest.raises(ValueError, match=r"hotwords\[0\]"):  # a string needs a charset
        fastcrnn.ctc_beam_search_decode(lp, hotwords=["ab"])
    with pytest.raises(ValueError, match=r"hotwords\[0\]"):  # "z" is not in the charset
        fastcrnn.ctc_beam_search_decode(lp, hotwords=["az"], charset="abc")
    with pytest.raises(ValueError, match=r"hotwords\[0\]"):  # "d" is class 4 >= C
        fastcrnn.ctc_beam_search_decode(lp, hotwords=["ad"], charset="abcd")
    with pytest.raises(ValueError, match="charset"):
        fastcrnn.ctc_beam_search_decode(lp, charset="abc")
    with pytest.raises(TypeError, match="charset"):
        fastcrnn.ctc_beam_search_decode(lp, hotwords=["ab"], charset=3)
    for bad in (math.inf, None):
        with pytest.raises(ValueError, match="hotword_weight"):
            fastcrnn.ctc_beam_search_decode(lp, hotwords=[[1]], hotword_weight=bad)
    for bad in (math.nan, "high"):
        with pytest.raises(TypeError, match="hotword_weight"):
            fastcrnn.ctc_beam_search_decode(lp, hotwords=[[1]], hotword_weight=bad)
    # no hotwords at all is no hotword
    plain = fastcrnn.ctc_beam_search_decode(lp, beam_width=3)
    empty = fastcrnn.ctc_beam_search_decode(lp, beam_width=3, hotwords=[])
    assert torch.equal(plain.scores, empty.scores)
    with pytest.raises(TypeError, match=r"sequences\[1\]"):
        fastcrnn.ops.beam.pack_token_trie([[1], "ab"])
    with pytest.raises(TypeError, match=r"sequences\[0\]"):
        fastcrnn.ops.beam.pack_token_trie([[1, True]])
    # the op checks the trie: a failure link to a deeper node would never reach the root
    nodes, edges = fastcrnn.ops.beam.pack_token_trie([[1, 2], [2]])
    bad_fail = nodes.clone()
    bad_fail[1, 3] = 2
    op_args = (lp, torch.tensor([5, 5]), 0, False, 3, 1, 0, None, None)
    no_lm = (None, None, None, None, 0, 0, 0, 0.0, 0.0)
    with pytest.raises(ValueError, match="hotword"):
        torch.ops.fastcrnn.ctc_beam_search(
            *op_args, *no_lm, None, None, -1, bad_fail, edges, 1.0, None
        )


# ---- word-level language model -----------------------------------------------------------------


def _word_lm(lines=("ab ba", "ab ba c", "ba ab", "c ab ba", "ab c"), order=2):
    import warnings

    from fastcrnn.lm import train_char_lm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small corpora use the fallback discounts
        return train_char_lm(list(lines), order, word_level=True)


@pytest.mark.parametrize("seed", range(24))
def test_word_language_model_matches_the_reference(seed):
    """Random lexicons over "abc" (lines delimited by class 4, or one word), a word bigram or
    trigram model (some lexicon words unknown to it), with hotwords on some seeds."""
    g = torch.Generator().manual_seed(1100 + seed)
    T = int(torch.randint(1, 11, (1,), generator=g))
    words = _random_lexicon(g, "abc", int(torch.randint(1, 6, (1,), generator=g)), max_len=3)
    lexicon = fastcrnn.Lexicon(sorted(set(words) | {"ab", "ba"}), "abc")
    delimited = seed % 2 == 0
    C = 5 if delimited else 4
    lm = _word_lm(order=2 + seed % 3 // 2)
    beam = int(torch.randint(1, 9, (1,), generator=g))
    nbest = int(torch.randint(1, beam + 1, (1,), generator=g))
    lp = _log_probs(seed, T, 6, C, peaky=3.0 if seed % 3 == 0 else 0.0)
    lengths = torch.randint(0, T + 1, (6,), generator=g)
    options = dict(
        beam_width=beam, nbest=nbest, lm=lm, lm_level="word", lm_weight=0.9, word_bonus=0.4,
        word_delimiter=4 if delimited else None,
    )  # fmt: skip
    if seed % 4 == 1:
        options.update(hotwords=[[2, 1]], hotword_weight=0.8)
    out = fastcrnn.ctc_beam_search_decode(lp, lengths, lexicon=lexicon, **options)
    _assert_matches(
        out, lp, lengths, lexicon=lexicon.classes, lm_word_tokens=lexicon.words, **options
    )


def test_word_language_model_picks_the_word_its_context_predicts():
    """ "ab", a delimiter, then two frames that cannot tell "ab" from "ba": the acoustics alone
    choose "ab" (the smaller labels); a word bigram model that has seen "ab ba" chooses "ba"."""
    ambiguous = {1: 0.45, 2: 0.45}
    lp = _frames({1: 0.9}, {2: 0.9}, {4: 0.9}, ambiguous, ambiguous, classes=5)
    lexicon = fastcrnn.Lexicon(["ab", "ba"], "abc")
    options = dict(beam_width=8, lexicon=lexicon, word_delimiter=4)
    plain = fastcrnn.ctc_beam_search_decode(lp, **options)
    assert plain.tokens[0, : int(plain.lengths[0])].tolist() == [1, 2, 4, 1, 2]
    lm = _word_lm(["ab ba", "ab ba", "ba ab ba"])
    with_lm = fastcrnn.ctc_beam_search_decode(lp, lm=lm, lm_level="word", **options)
    assert with_lm.tokens[0, : int(with_lm.lengths[0])].tolist() == [1, 2, 4, 2, 1]
    # the score: the CTC part plus lm_weight (0.5) times the model's "<s> ab ba </s>"
    want = lm.score(["ab", "ba"]) * 0.5 * math.log(10)
    got = float(with_lm.scores[0] - with_lm.ctc_scores[0])
    assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)


def test_word_language_model_arguments_are_checked():
    lp = _log_probs(43, 5, 2, 5)
    lexicon = fastcrnn.Lexicon(["ab", "c"], "abc")
    lm = _word_lm()
    with pytest.raises(ValueError, match="lm_level"):
        fastcrnn.ctc_beam_search_decode(lp, lm=lm, lm_level="char", lexicon=lexicon)
    with pytest.raises(ValueError, match="lm_level"):
        fastcrnn.ctc_beam_search_decode(lp, lm=lm, lm_level="word")
    with pytest.raises(ValueError, match="lm_level"):
        fastcrnn.ctc_beam_search_decode(lp, lm_level="word", lexicon=lexicon)
    with pytest.raises(ValueError, match="lm_tokens"):
        fastcrnn.ctc_beam_search_decode(
            lp, lm=lm, lm_level="word", lexicon=lexicon, lm_tokens=LM_TOKENS
        )
