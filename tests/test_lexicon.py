"""fastcrnn.Lexicon (BK-tree queries against a scan) and fastcrnn.lexicon_decode (the most probable
word near the greedy reading, against scoring every word with torch's CTC loss)."""

import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F

import fastcrnn
from fastcrnn.lexicon import edit_distance
from fastcrnn.text import Charset

ALPHABET = "abcde"


def _words(seed, count=200):
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 6))) for _ in range(count)]


def test_edit_distance_by_brute_force():
    """Levenshtein distance: the fewest edits, checked by breadth-first search over edits."""
    letters = (1, 2)

    def neighbours(s):
        for i in range(len(s) + 1):
            for c in letters:
                yield s[:i] + (c,) + s[i:]
        for i in range(len(s)):
            yield s[:i] + s[i + 1 :]
            for c in letters:
                yield s[:i] + (c,) + s[i + 1 :]

    for a, b in itertools.product(
        [(), (1,), (1, 2), (2, 1, 1), (1, 1, 2, 2)], [(), (2,), (1, 2, 1), (2, 2, 2, 1)]
    ):
        frontier, seen, d = {a}, {a}, 0
        while b not in frontier:
            frontier = {n for s in frontier for n in neighbours(s)} - seen
            seen |= frontier
            d += 1
        assert edit_distance(a, b) == d, (a, b)


@pytest.mark.parametrize("max_distance", [0, 1, 2, 4])
def test_nearby_equals_a_scan(max_distance):
    lexicon = fastcrnn.Lexicon(_words(1), ALPHABET)
    rng = random.Random(2)
    for _ in range(30):
        query = [rng.randint(1, 5) for _ in range(rng.randint(0, 7))]
        scan = [i for i, w in enumerate(lexicon.classes) if edit_distance(query, w) <= max_distance]
        assert lexicon.nearby(query, max_distance) == scan


def test_lexicon_spelling_duplicates_and_errors():
    lexicon = fastcrnn.Lexicon(["ab", "ba", "ab", "e"], Charset(ALPHABET))
    assert lexicon.words == ["ab", "ba", "e"] and lexicon.classes == [(1, 2), (2, 1), (5,)]
    folded = fastcrnn.Lexicon(["AB"], Charset("ab", case_insensitive=True))
    assert folded.words == ["ab"]
    with pytest.raises(ValueError, match="words\\[1\\]"):
        fastcrnn.Lexicon(["ab", "az"], ALPHABET)
    with pytest.raises(ValueError, match="at least one word"):
        fastcrnn.Lexicon([], ALPHABET)
    with pytest.raises(TypeError, match="words"):
        fastcrnn.Lexicon("abc", ALPHABET)
    with pytest.raises(TypeError, match="words\\[0\\]"):
        fastcrnn.Lexicon([3], ALPHABET)
    with pytest.raises(ValueError, match="max_distance"):
        lexicon.nearby([1], -1)


def _word_log_probs(lp, lexicon, n, length):
    """Every word's CTC log-probability for sequence n, by torch's loss."""
    out = []
    for spelled in lexicon.classes:
        targets = torch.tensor([list(spelled)], dtype=torch.int64).reshape(1, len(spelled))
        nll = F.ctc_loss(lp[:, n : n + 1], targets, [length], [len(spelled)], reduction="none")
        out.append(-float(nll[0]))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_decode_picks_the_most_probable_word_near_the_greedy_reading(seed):
    g = torch.Generator().manual_seed(seed)
    lexicon = fastcrnn.Lexicon(_words(seed, 60), ALPHABET)
    T, N, C = 12, 6, len(ALPHABET) + 1
    lp = torch.randn(T, N, C, generator=g, dtype=torch.float64).mul(2).log_softmax(-1)
    lengths = torch.tensor([12, 11, 9, 7, 5, 12])
    for distance in (1, 3):
        out = fastcrnn.lexicon_decode(lp, lexicon, lengths, max_edit_distance=distance)
        greedy = fastcrnn.ctc_greedy_decode(lp, lengths)
        for n in range(N):
            reading = greedy.tokens[n, : int(greedy.lengths[n])].tolist()
            near = lexicon.nearby(reading, distance)
            scores = _word_log_probs(lp, lexicon, n, int(lengths[n]))
            if not near:
                assert int(out.indices[n]) == -1 and out.log_probs[n] == -math.inf
                assert out.words[n] == ""
                continue
            want = max(near, key=lambda i: (scores[i], -i))
            assert int(out.indices[n]) == want and out.words[n] == lexicon.words[want]
            assert math.isclose(float(out.log_probs[n]), scores[want], rel_tol=1e-9)
    # a distance beyond every word and reading: the lexicon's most probable word
    wide = fastcrnn.lexicon_decode(lp, lexicon, lengths, max_edit_distance=30)
    for n in range(N):
        scores = _word_log_probs(lp, lexicon, n, int(lengths[n]))
        assert int(wide.indices[n]) == max(range(len(scores)), key=lambda i: (scores[i], -i))


def test_decode_unbatched_and_errors():
    lexicon = fastcrnn.Lexicon(["abc", "abd", "cab"], ALPHABET)
    lp = torch.randn(8, 6).log_softmax(-1)
    single = fastcrnn.lexicon_decode(lp, lexicon, max_edit_distance=5)
    batched = fastcrnn.lexicon_decode(lp[:, None], lexicon, max_edit_distance=5)
    assert single.indices.shape == () and int(single.indices) == int(batched.indices[0])
    assert single.words == batched.words
    shorter = fastcrnn.lexicon_decode(lp, lexicon, 5, max_edit_distance=5)
    assert int(shorter.indices) == int(fastcrnn.lexicon_decode(lp[:5], lexicon, None, 5).indices)
    with pytest.raises(ValueError, match="classes"):
        fastcrnn.lexicon_decode(torch.randn(8, 2, 9).log_softmax(-1), lexicon)
    with pytest.raises(TypeError, match="lexicon"):
        fastcrnn.lexicon_decode(lp, ["abc"])
    with pytest.raises(ValueError, match="input_lengths"):
        fastcrnn.lexicon_decode(lp[:, None], lexicon, [9])
