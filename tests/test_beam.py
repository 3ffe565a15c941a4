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


def test_opcheck():
    lp = _log_probs(16, 8, 3, 5, dtype=torch.float32)
    lengths = torch.tensor([8, 3, 0])
    op = torch.ops.fastcrnn.ctc_beam_search
    no_lm = (None, None, None, None, 0, 0, 0, 0.0, 0.0)
    torch.library.opcheck(op, (lp, lengths, 0, False, 4, 2, 0, None, None, *no_lm))
    torch.library.opcheck(op, (lp, lengths, 1, True, 3, 1, 2, -3.0, -5.0, *no_lm))
    from fastcrnn.ops.beam import _language_model_args

    lm_args = _language_model_args(_char_lm(), LM_TOKENS, 0.5, 0.1, 5, 0)
    torch.library.opcheck(op, (lp, lengths, 0, False, 4, 2, 0, None, None, *lm_args))


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
