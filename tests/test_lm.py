"""fastcrnn.lm: ARPA loading and back-off queries, decoder states, the flat arrays for C++,
modified Kneser-Ney training (hand-computed examples, normalization), `make-lm`, and KenLM."""

import gzip
import math
import random
import warnings
from collections import Counter

import numpy as np
import pytest

from fastcrnn.lm import (
    BOS,
    EOS,
    UNK,
    WORD_DELIMITER,
    NGramLM,
    kneser_ney_discounts,
    text_to_tokens,
    train_char_lm,
)

FALLBACK = (0.5, 1.0, 1.5)
WORDS = "the a quick brown fox jumps over lazy dog hello world text line reads fast".split()


def _corpus(n=40, seed=0, words=WORDS):
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(len(words))]  # Zipf-like, as text is
    return [" ".join(rng.choices(words, weights, k=rng.randint(1, 5))) for _ in range(n)]


def _train(lines, order, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small data: some orders fall back to fixed discounts
        return train_char_lm(lines, order, **kw)


def _predictable(lm):
    return [w for w in lm.vocab if w != BOS]


def _naive_log10_prob(entries, context, w):
    """The ARPA back-off rule on raw entries (tuples of str), independent of NGramLM."""
    N = len(entries)
    vocab = {k[0] for k in entries[0]}
    w = w if w in vocab else UNK
    context = tuple(t if t in vocab else UNK for t in context)[max(0, len(context) - (N - 1)) :]
    acc = 0.0
    for start in range(len(context) + 1):
        h = context[start:]
        key = h + (w,)
        if key in entries[len(key) - 1]:
            return acc + entries[len(key) - 1][key][0]
        if h and h in entries[len(h) - 1]:
            acc += entries[len(h) - 1][h][1] or 0.0
    raise AssertionError("no unigram")


# ---- training: hand-computed examples ----


def test_hand_computed_bigram():
    # corpus "ab", "b"; order 2; D = 0.5, 1, 1.5 at both orders.
    # bigrams (raw = adjusted at the top order): <s>a 1, ab 1, b</s> 2, <s>b 1
    # unigram continuation counts: a 1 ({<s>}), b 2 ({a, <s>}), </s> 1 ({b}), <unk> 0; |V| = 4
    # S = 4, gamma = (0.5 * 2 + 1 * 1) / 4 = 0.5, so p(w) = (a(w) - D) / 4 + 0.5 / 4:
    p1 = {"a": 0.25, "b": 0.375, EOS: 0.25, UNK: 0.125}
    # contexts: <s> {a:1, b:1} S=2 gamma=0.5; a {b:1} S=1 gamma=0.5; b {</s>:2} S=2 gamma=0.5
    p2 = {
        (BOS, "a"): 0.25 + 0.5 * 0.25,
        (BOS, "b"): 0.25 + 0.5 * 0.375,
        ("a", "b"): 0.5 + 0.5 * 0.375,
        ("b", EOS): 0.5 + 0.5 * 0.25,
    }
    lm = train_char_lm(["ab\n", "b"], 2, discounts=[FALLBACK] * 2)
    assert lm.vocab[0] == UNK and set(lm.vocab) == {UNK, BOS, EOS, "a", "b"}
    for w, p in p1.items():
        assert lm.log10_prob([], w) == pytest.approx(math.log10(p), abs=1e-12)
    for (h, w), p in p2.items():
        assert lm.log10_prob([h], w) == pytest.approx(math.log10(p), abs=1e-12)
    # unseen bigrams back off with gamma(h) = 0.5
    assert lm.log10_prob(["a"], "a") == pytest.approx(math.log10(0.5 * 0.25), abs=1e-12)
    assert lm.log10_prob([BOS], EOS) == pytest.approx(math.log10(0.5 * 0.25), abs=1e-12)
    assert lm.log10_prob([EOS], "a") == pytest.approx(math.log10(0.25), abs=1e-12)  # no back-off
    assert lm.log10_prob(["b"], "zz") == pytest.approx(math.log10(0.5 * 0.125), abs=1e-12)
    expect = math.log10(p2[(BOS, "a")] * p2[("a", "b")] * p2[("b", EOS)])
    assert lm.score(["a", "b"]) == pytest.approx(expect, abs=1e-12)
    assert lm.score(["a", "b"], bos=False, eos=False) == pytest.approx(
        math.log10(0.25 * p2[("a", "b")]), abs=1e-12
    )
    lines = list(lm.arpa_lines())
    assert "0.0\t<s>\t" + repr(math.log10(0.5)) in lines  # lmplz's <s>: log10 1
    assert any(line.endswith("\tb\t" + repr(math.log10(0.5))) for line in lines)
    assert f"{math.log10(0.25)!r}\t{EOS}" in lines  # no back-off: nothing follows </s>


def test_hand_computed_trigram_continuation_counts():
    # corpus "aba"; order 3; D = 0.5, 1, 1.5. Padded: <s> a b a </s>.
    # trigrams (raw): <s>ab, aba, ba</s>, 1 each.
    # bigrams: <s>a raw 1 (starts with <s>); ab, ba, a</s>: one left extension each.
    # unigrams: a 2 ({<s>, b}), b 1, </s> 1, <unk> 0: S=4, gamma=0.5, |V|=4
    p1 = {"a": 0.375, "b": 0.25, EOS: 0.25, UNK: 0.125}
    p2 = {
        (BOS, "a"): 0.5 + 0.5 * p1["a"],  # S=1, gamma=0.5
        ("a", "b"): 0.25 + 0.5 * p1["b"],  # context a: {b:1, </s>:1}, S=2, gamma=0.5
        ("a", EOS): 0.25 + 0.5 * p1[EOS],
        ("b", "a"): 0.5 + 0.5 * p1["a"],
    }
    p3 = {
        (BOS, "a", "b"): 0.5 + 0.5 * p2[("a", "b")],
        ("a", "b", "a"): 0.5 + 0.5 * p2[("b", "a")],
        ("b", "a", EOS): 0.5 + 0.5 * p2[("a", EOS)],
    }
    lm = train_char_lm(["aba"], 3, discounts=[FALLBACK] * 3)
    assert lm.counts == (5, 4, 3)
    for table in (p1, p2, p3):
        for key, p in table.items():
            key = key if isinstance(key, tuple) else (key,)
            assert lm.log10_prob(key[:-1], key[-1]) == pytest.approx(math.log10(p), abs=1e-12)
    expect = p2[(BOS, "a")] * p3[(BOS, "a", "b")] * p3[("a", "b", "a")] * p3[("b", "a", EOS)]
    assert lm.score(list("aba")) == pytest.approx(math.log10(expect), abs=1e-12)
    # back-off through two levels: bo(ab) * bo(b) * p(<unk>); (<s> b) is no context: p(a | b)
    assert 10 ** lm.log10_prob(["a", "b"], "q") == pytest.approx(0.5 * 0.5 * 0.125, rel=1e-12)
    assert 10 ** lm.log10_prob(["b", "a"], "b") == pytest.approx(0.5 * p2[("a", "b")], rel=1e-12)
    assert 10 ** lm.log10_prob([BOS, "b"], "a") == pytest.approx(p2[("b", "a")], rel=1e-12)
    # states: (a </s>) extends nothing and has no back-off, so after "a </s>" only </s> is left,
    # and </s> (no back-off, no extension) is no context either
    assert lm.advance(lm.context_state(["b", "a"]), EOS)[0] == ()
    assert lm.begin_state() == (lm.token_id(BOS),)


# lmplz's output for two toy corpora, from KenLM's test data (lm/common/test_data/generate.sh:
# `lmplz --discount_fallback -o 3` on the lines shown; toy0.arpa and toy1.arpa)
LMPLZ_TOYS = [
    (
        ["a a b a", "b a a b"],
        """\\data\\
ngram 1=5
ngram 2=7
ngram 3=7

\\1-grams:
-0.90309\t<unk>\t0
0\t<s>\t-0.30103
-0.46943438\ta\t-0.30103
-0.5720968\t</s>\t0
-0.5720968\tb\t-0.30103

\\2-grams:
-0.37712017\t<s> a\t-0.30103
-0.37712017\ta a\t-0.30103
-0.2984526\tb a\t-0.30103
-0.58682007\ta </s>\t0
-0.5220179\tb </s>\t0
-0.41574955\t<s> b\t-0.30103
-0.58682007\ta b\t-0.30103

\\3-grams:
-0.14885087\t<s> a a
-0.33741078\tb a a
-0.124077894\t<s> b a
-0.2997394\ta b a
-0.42082912\tb a </s>
-0.397617\ta b </s>
-0.20102891\ta a b

\\end\\
""",
    ),
    (
        ["a a b b b b b b b", "c"],
        """\\data\\
ngram 1=6
ngram 2=7
ngram 3=6

\\1-grams:
-1\t<unk>\t0
0\t<s>\t-0.30103
-0.6146491\ta\t-0.30103
-0.6146491\t</s>\t0
-0.7659168\tc\t-0.30103
-0.6146491\tb\t-0.30103

\\2-grams:
-0.4301247\t<s> a\t-0.30103
-0.4301247\ta a\t-0.30103
-0.20660876\tc </s>\t0
-0.5404639\tb </s>\t0
-0.4740302\t<s> c\t-0.30103
-0.4301247\ta b\t-0.30103
-0.3422159\tb b\t-0.47712123

\\3-grams:
-0.1638568\t<s> a a
-0.09113217\t<s> c </s>
-0.7462621\tb b </s>
-0.1638568\ta a b
-0.13823806\ta b b
-0.13375957\tb b b

\\end\\
""",
    ),
]


@pytest.mark.parametrize("toy", [0, 1])
def test_matches_lmplz(tmp_path, toy):
    lines, arpa = LMPLZ_TOYS[toy]
    path = tmp_path / "lmplz.arpa"
    path.write_text(arpa)
    theirs = NGramLM.from_arpa(path).entries()
    ours = _train(lines, 3, word_level=True).entries()
    for k in range(3):
        assert set(ours[k]) == set(theirs[k])
        for g, (p, b) in theirs[k].items():
            assert ours[k][g][0] == pytest.approx(p, abs=1e-6), g
            assert (ours[k][g][1] or 0.0) == pytest.approx(b or 0.0, abs=1e-6), g


def test_kneser_ney_discounts_formula():
    y = 10 / (10 + 2 * 4)
    d = kneser_ney_discounts(10, 4, 2, 1)
    assert d == pytest.approx((1 - 2 * y * 4 / 10, 2 - 3 * y * 2 / 4, 3 - 4 * y * 1 / 2))
    with pytest.raises(ValueError, match="adjusted count 3"):
        kneser_ney_discounts(10, 4, 0, 0)
    with pytest.raises(ValueError, match="outside"):
        kneser_ney_discounts(2, 1, 10, 0)  # D2 = 2 - 3 * 0.5 * 10 < 0


def test_estimated_discounts_are_used():
    # enough rare words that the count-of-counts n1..n4 of both orders are non-zero
    lines = _corpus(300, seed=1, words=[f"w{i}" for i in range(300)])
    # order 2, word level: bigram adjusted counts are raw counts, unigram ones count distinct
    # predecessors
    raw2 = Counter()
    for line in lines:
        toks = [BOS, *line.split(), EOS]
        raw2.update(zip(toks, toks[1:]))
    left = Counter(b for (_, b) in raw2)
    d = [
        kneser_ney_discounts(*[sum(1 for c in counts.values() if c == j) for j in (1, 2, 3, 4)])
        for counts in (left, raw2)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # estimates succeed: no fallback warning
        lm = train_char_lm(lines, 2, word_level=True)
    ref = train_char_lm(lines, 2, word_level=True, discounts=d)
    assert lm.entries() == ref.entries()
    other = train_char_lm(lines, 2, word_level=True, discounts=[FALLBACK] * 2)
    assert lm.entries() != other.entries()


def test_discount_fallback_warns_or_raises():
    with pytest.warns(UserWarning, match="order 1: .*fallback discounts D1=0.5"):
        lm = train_char_lm(["ab"], 1)
    assert lm.entries() == train_char_lm(["ab"], 1, discounts=[FALLBACK]).entries()
    with pytest.raises(ValueError, match="order 1: cannot compute"):
        train_char_lm(["ab"], 1, discount_fallback=None)


# ---- training: normalization, round trip ----


@pytest.mark.parametrize("word_level", [False, True], ids=["char", "word"])
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_trained_model_normalized_and_roundtrips(tmp_path, order, word_level):
    lines = _corpus(30 if word_level else 12, seed=order)
    lm = _train(lines, order, word_level=word_level)
    words = _predictable(lm)
    path = tmp_path / "lm.arpa"
    lm.write_arpa(path)
    again = NGramLM.from_arpa(path)
    assert again.entries() == lm.entries() and again.vocab == lm.vocab
    # every context seen in training (the model's n-grams below order N), and unseen ones
    rng = random.Random(order)
    contexts = [[]] + [list(k) for t in lm.entries()[: order - 1] for k in t]
    contexts += [rng.choices(words + ["unseen"], k=order - 1) for _ in range(20)]
    for ctx in contexts:
        for model in (lm, again):
            total = math.fsum(10 ** model.log10_prob(ctx, w) for w in words)
            assert total == pytest.approx(1.0, abs=1e-6), ctx
    for line in lines[:5]:
        toks = text_to_tokens(line, word_level=word_level)
        assert again.full_scores(toks) == lm.full_scores(toks)


def test_write_arpa_gzip(tmp_path):
    lm = _train(_corpus(10), 3)
    lm.write_arpa(tmp_path / "lm.arpa.gz")
    with gzip.open(tmp_path / "lm.arpa.gz", "rt") as f:
        assert f.readline() == "\\data\\\n"
    assert NGramLM.from_arpa(tmp_path / "lm.arpa.gz").entries() == lm.entries()


def test_text_to_tokens():
    assert text_to_tokens("a b\tc") == ["a", WORD_DELIMITER, "b", WORD_DELIMITER, "c"]
    assert text_to_tokens("a  b", word_delimiter="|") == ["a", "|", "|", "b"]
    assert text_to_tokens(" hello  world ", word_level=True) == ["hello", "world"]
    lm = _train(["hi there", "hi"], 2)
    assert WORD_DELIMITER in lm.vocab and " " not in lm.vocab
    assert lm.score(text_to_tokens("hi there")) > lm.score(text_to_tokens("hithere"))


# ---- loading ----

HAND_ARPA = """some tool wrote this line before the data

\\data\\
ngram 1=5
ngram  2 = 3

\\1-grams:
-1.0\t<s>\t-0.5
-0.5 </s>
-0.7\ta\t-0.25
-0.9   b   -0.1

-2.0\t<unk>
\\2-grams:
-0.2\t<s> a
-0.3\ta b
-0.4 b </s>

\\end\\

"""


def test_from_arpa_hand_written(tmp_path):
    path = tmp_path / "hand.arpa"
    path.write_text(HAND_ARPA)
    lm = NGramLM.from_arpa(str(path))
    assert lm.order == 2 and lm.counts == (5, 3)
    assert lm.log10_prob([BOS], "a") == -0.2
    assert lm.log10_prob(["a"], "a") == pytest.approx(-0.25 + -0.7)
    assert lm.log10_prob(["b"], "a") == pytest.approx(-0.1 + -0.7)
    assert lm.log10_prob([EOS], "a") == -0.7  # no back-off written: 0
    assert lm.log10_prob(["a"], "zzz") == pytest.approx(-0.25 + -2.0)  # unknown -> <unk>
    assert lm.log10_prob(["zzz"], "b") == -0.9  # <unk> has no back-off
    # KenLM: <s> context not scored, </s> scored
    assert lm.score(["a", "b"]) == pytest.approx(-0.2 - 0.3 - 0.4)
    assert lm.score(["a", "b"], bos=False) == pytest.approx(-0.7 - 0.3 - 0.4)
    assert lm.score(["a", "b"], eos=False) == pytest.approx(-0.2 - 0.3)
    scores = lm.full_scores(["a", "x", UNK])
    assert [(round(p, 9), n, o) for p, n, o in scores] == [
        (-0.2, 2, False),
        (round(-0.25 - 2.0, 9), 1, True),
        (-2.0, 1, True),
        (-0.5, 1, False),
    ]


def test_from_arpa_without_unk(tmp_path):
    text = HAND_ARPA.replace("ngram 1=5", "ngram 1=4").replace("-2.0\t<unk>\n", "")
    (tmp_path / "a.arpa").write_text(text)
    lm = NGramLM.from_arpa(tmp_path / "a.arpa")
    assert lm.vocab[0] == UNK and lm.log10_prob([], "zzz") == -100.0  # KenLM's value
    lm = NGramLM.from_arpa(tmp_path / "a.arpa", unk_log10_prob=-math.inf)
    assert lm.log10_prob([], "zzz") == -math.inf and lm.score(["zzz"]) == -math.inf


PRUNED_ARPA = """\\data\\
ngram 1=7
ngram 2=8
ngram 3=2

\\1-grams:
-1.0\t<s>\t-0.5
-0.6\t</s>\t-0.05
-0.7\ta\t-0.25
-0.9\tb\t-0.1
-1.1\tc\t-0.2
-1.3\td
-2.0\t<unk>

\\2-grams:
-0.2\t<s> a\t-0.3
-0.35\tb a\t-0.15
-0.4\tc d
-0.5\td c
-0.45\t<s> c
-0.6\ta a
-0.3\tc </s>
-0.5\tb b

\\3-grams:
-0.05\t<s> a b
-0.12\ta b a

\\end\\
"""


def _entries_from_text(text):
    entries, k = [], 0
    for line in text.splitlines():
        if line.startswith("\\") and line.endswith("-grams:"):
            k = int(line[1:].split("-")[0])
            entries.append({})
        elif k and line.strip() and not line.startswith("\\"):
            f = line.split("\t")
            entries[k - 1][tuple(f[1].split())] = (
                float(f[0]),
                float(f[2]) if len(f) > 2 else None,
            )
    return entries


def test_missing_contexts_are_filled_without_changing_queries(tmp_path):
    # (a b) is missing: the prefix of "a b a", the suffix of "<s> a b"
    path = tmp_path / "pruned.arpa"
    path.write_text(PRUNED_ARPA)
    lm = NGramLM.from_arpa(path)
    assert lm.counts == (7, 9, 2) and lm.num_filled == 1
    raw = _entries_from_text(PRUNED_ARPA)
    toks = [BOS, EOS, "a", "b", "c", "d", "e"]
    for ctx in [(), ("a",), (BOS, "a"), ("a", "b"), ("b", "a"), (EOS, "b"), ("c", "a")]:
        for w in toks[1:]:
            assert lm.log10_prob(ctx, w) == pytest.approx(_naive_log10_prob(raw, ctx, w), abs=1e-12)
    # the filled n-gram carries the back-off rule's value and makes (a b) a state
    filled = lm.entries()[1][("a", "b")]
    assert filled == (pytest.approx(-0.25 - 0.9), 0.0)
    assert lm.advance(lm.context_state(["a"]), "b")[0] == (lm.token_id("a"), lm.token_id("b"))
    _check_arrays(lm, np.float64, exact=True)


@pytest.mark.parametrize(
    "edit, line, match",
    [
        (lambda t: t.replace("\\data\\", "data"), None, "no \\\\data\\\\ line"),
        (lambda t: t.replace("ngram 2=3", "ngram 3=3"), 3, "count of order 2"),
        (lambda t: t.replace("ngram 1=5", "ngram 1=6"), 12, "announces 6 1-grams"),
        (lambda t: t.replace("-0.7\ta", "x.7\ta"), 8, "'x.7' is not a number"),
        (lambda t: t.replace("-0.7\ta", "0.7\ta"), 8, "not <= 0"),
        (lambda t: t.replace("-0.7\ta", "nan\ta"), 8, "not <= 0"),
        (lambda t: t.replace("-0.3\ta b", "-0.3\ta b c d"), 14, "got 5 field"),
        (lambda t: t.replace("-0.3\ta b", "-0.3\ta q"), 14, "'q' of this 2-gram is not a unigram"),
        (lambda t: t.replace("-0.4\tb </s>", "-0.4\ta b"), 15, "duplicate 2-gram 'a b'"),
        (lambda t: t.replace("-0.4\tb </s>", "-0.4\tb </s>\t-1"), 15, "highest order has no"),
        (lambda t: t.replace("-0.25", "inf"), 8, "back-off inf is not finite"),
        (lambda t: t.replace("\\2-grams:", "\\3-grams:"), 12, "expected \\\\2-grams:"),
        (lambda t: t.replace("\\end\\\n", ""), None, "ends inside the \\\\2-grams:"),
        (lambda t: t + "more\n", 18, "text after \\\\end\\\\"),
        (lambda t: t.split("\\1-grams:")[0], None, "ends after the \\\\data\\\\ header"),
        (lambda t: t.replace("</s>", "</S>"), None, "has no </s> unigram"),
    ],
)
def test_from_arpa_errors_name_file_and_line(tmp_path, edit, line, match):
    text = (
        "\\data\\\nngram 1=5\nngram 2=3\n\n\\1-grams:\n-1.0\t<s>\t-0.5\n-0.5\t</s>\n"
        "-0.7\ta\t-0.25\n-0.9\tb\t-0.1\n-2.0\t<unk>\n\n\\2-grams:\n-0.2\t<s> a\n-0.3\ta b\n"
        "-0.4\tb </s>\n\n\\end\\\n"
    )
    # the unedited text loads; line numbers below are 1-based lines of the edited file
    path = tmp_path / "x.arpa"
    path.write_text(text)
    NGramLM.from_arpa(path)
    path.write_text(edit(text))
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    with pytest.raises(ValueError, match=match) as info:
        NGramLM.from_arpa(path)
    assert str(info.value).startswith(where), str(info.value)


def test_from_arpa_not_utf8(tmp_path):
    path = tmp_path / "bad.arpa"
    path.write_bytes(b"\\data\\\nngram 1=1\n\n\\1-grams:\n-1\t\xff\n\\end\\\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        NGramLM.from_arpa(path)
    with pytest.raises(FileNotFoundError):
        NGramLM.from_arpa(tmp_path / "missing.arpa")


# ---- states and arrays ----


def test_states_are_minimal_and_exact():
    lm = _train(_corpus(20, seed=3), 4)
    words = _predictable(lm)
    rng = random.Random(0)
    for _ in range(30):
        toks = rng.choices(words[1:] + ["oov"], k=rng.randint(0, 8))
        state, hist, total = lm.begin_state(), [BOS], 0.0
        for t in toks + [EOS]:
            new, p = lm.advance(state, t)
            assert p == lm.log10_prob(hist, t)
            assert isinstance(new, tuple) and len(new) <= 3
            assert all(type(i) is int for i in new) and hash(new) is not None
            # the state is a suffix of the history and scores exactly as the full history does
            ids = tuple(lm.token_id(x) for x in hist + [t])
            assert ids[len(ids) - len(new) :] == new
            assert new == lm.context_state(hist + [t])
            for w in rng.sample(words, 5):
                assert lm.advance(new, w)[1] == lm.log10_prob(hist + [t], w)
            state, hist, total = new, hist + [t], total + p
        assert total == pytest.approx(lm.score(toks), abs=1e-12)
    assert lm.begin_state(bos=False) == ()
    with pytest.raises(ValueError, match="state"):
        lm.advance((10**6,), "a")
    with pytest.raises(TypeError, match="state"):
        lm.advance([1], "a")


def _arrays_state_tuples(arr):
    """Row -> the n-gram's token ids, decoded from the keys (row 0: the empty context)."""
    V = len(arr.vocab)
    tuples = [()]
    for row in range(1, len(arr.keys)):
        ctx, w = divmod(int(arr.keys[row]), V)
        tuples.append(tuples[ctx] + (w,))
    return tuples


def _check_arrays(lm, dtype, exact):
    arr = lm.to_arrays(dtype)
    V, R, N = len(arr.vocab), len(arr.keys), arr.order
    assert arr.vocab == lm.vocab and arr.unk_id == 0 and N == lm.order
    assert arr.offsets.dtype == np.int64 and arr.offsets.shape == (N + 2,)
    assert list(np.diff(arr.offsets)) == [1, *lm.counts] and arr.offsets[-1] == R
    for name in ("keys", "suffix", "next_state"):
        assert getattr(arr, name).dtype == np.int64 and getattr(arr, name).shape == (R,)
    for name in ("log10_probs", "log10_backoffs"):
        assert getattr(arr, name).dtype == dtype and getattr(arr, name).shape == (R,)
    assert arr.keys[0] == -1 and np.all(np.diff(arr.keys[1:]) > 0)  # strictly increasing
    assert np.array_equal(arr.keys[1 : V + 1], np.arange(V))  # unigram of id w is row 1 + w
    tuples = _arrays_state_tuples(arr)
    assert all(len(tuples[r]) == arr.row_order(r) for r in range(R))
    assert all(tuples[arr.suffix[r]] == tuples[r][1:] for r in range(1, R))
    for r in range(1, R):  # every stored value, as the model has it
        expect = lm._prob[tuples[r]]
        assert arr.log10_probs[r] == np.asarray(expect, dtype)
    assert tuples[arr.begin_state] == lm.begin_state()
    # walk random sentences in both representations
    rng = random.Random(1)
    ids = list(range(V))
    for _ in range(40):
        bos = rng.random() < 0.8
        s_lm, s_arr = lm.begin_state(bos), arr.begin_state if bos else 0
        for w in rng.choices(ids, k=rng.randint(1, 10)) + [arr.eos_id]:
            s_lm, p_lm = lm.advance(s_lm, w)
            s_arr, p_arr, n = arr.advance(s_arr, w)
            assert 1 <= n <= N
            assert tuples[s_arr] == s_lm
            if exact:
                assert p_arr == p_lm
            else:
                assert p_arr == pytest.approx(p_lm, abs=1e-5)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_arrays_lookup_equals_queries(order):
    lm = _train(_corpus(15, seed=order), order)
    _check_arrays(lm, np.float64, exact=True)
    _check_arrays(lm, np.float32, exact=False)
    word_lm = _train(_corpus(20, seed=order), order, word_level=True)
    _check_arrays(word_lm, np.float64, exact=True)


def test_arrays_find_and_errors():
    lm = train_char_lm(["ab", "b"], 2, discounts=[FALLBACK] * 2)
    arr = lm.to_arrays()
    a, b, bos = lm.token_id("a"), lm.token_id("b"), lm.token_id(BOS)
    row_a = 1 + a
    assert arr.find(0, a) == row_a
    assert arr.find(row_a, b) >= arr.offsets[2]
    assert arr.find(row_a, a) == -1
    assert arr.advance(arr.begin_state, a)[2] == 2
    assert arr.begin_state == 1 + bos
    with pytest.raises(ValueError, match="token_id"):
        arr.advance(0, len(arr.vocab))
    with pytest.raises(ValueError, match="state"):
        arr.advance(int(arr.offsets[-1]) - 1, a)  # a bigram row is no state of order-2 model
    with pytest.raises(ValueError, match="float_dtype"):
        lm.to_arrays(np.int32)


# ---- argument errors ----


def test_argument_errors():
    with pytest.raises(TypeError, match="lines"):
        train_char_lm("some text", 2)
    with pytest.raises(TypeError, match="lines: line 2"):
        train_char_lm(["ok", b"bytes"], 2)
    with pytest.raises(ValueError, match="order"):
        train_char_lm(["ab"], 0)
    with pytest.raises(TypeError, match="order"):
        train_char_lm(["ab"], 2.0)
    with pytest.raises(ValueError, match="word_delimiter"):
        train_char_lm(["ab"], 2, word_delimiter="a b")
    with pytest.raises(ValueError, match="word_delimiter"):
        train_char_lm(["ab"], 2, word_delimiter=UNK)
    with pytest.raises(ValueError, match="word_delimiter: '\\|' occurs in the text \\(line 2\\)"):
        train_char_lm(["a b", "a|b"], 2, word_delimiter="|")
    with pytest.raises(ValueError, match="line 1 contains the reserved token '<s>'"):
        train_char_lm(["<s> x"], 2, word_level=True)
    with pytest.raises(ValueError, match="no tokens"):
        train_char_lm(["", "\n", "   "], 2, word_level=True)
    with pytest.raises(ValueError, match="discounts: expected 2"):
        train_char_lm(["ab"], 2, discounts=[FALLBACK])
    with pytest.raises(ValueError, match=r"discounts\[0\]: D2 must be within \[0, 2\]"):
        train_char_lm(["ab"], 1, discounts=[(0.5, 2.5, 1.0)])
    lm = train_char_lm(["ab"], 2, discounts=[FALLBACK] * 2)
    with pytest.raises(TypeError, match="tokens: expected a sequence of tokens, got a str"):
        lm.score("ab")
    with pytest.raises(TypeError, match="context_tokens"):
        lm.log10_prob("ab", "a")
    with pytest.raises(ValueError, match="tokens: token: id 99"):
        lm.score([99])
    with pytest.raises(TypeError, match="token"):
        lm.advance((), 1.5)
    with pytest.raises(ValueError, match="entries: the model has no <s> unigram"):
        NGramLM([{("a",): (-1.0, None), (EOS,): (-1.0, None)}])
    with pytest.raises(ValueError, match="a token must be"):
        NGramLM([{("a b",): (-1.0, None)}])
    with pytest.raises(ValueError, match="unk_log10_prob"):
        NGramLM([{(BOS,): (-1.0, None), (EOS,): (-1.0, None)}], unk_log10_prob=1.0)


# ---- make-lm ----


def test_make_lm_cli(tmp_path, capsys):
    from fastcrnn.ocr.cli import main

    lines = _corpus(25, seed=7)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "lm.arpa"
    assert main(["make-lm", "--order", "3", "--text", str(corpus), "--output", str(out)]) == 0
    assert f"wrote {out}: order 3" in capsys.readouterr().out
    assert NGramLM.from_arpa(out).entries() == _train(lines, 3).entries()
    args = ["make-lm", "--order", "2", "--text", str(corpus), "--output", str(out)]
    assert main([*args, "--word-level"]) == 0
    assert NGramLM.from_arpa(out).entries() == _train(lines, 2, word_level=True).entries()
    assert main([*args, "--word-delimiter", "_"]) == 0
    assert "_" in NGramLM.from_arpa(out).vocab
    corpus.write_text("ab\n")  # too small for Kneser-Ney estimates
    assert main([*args, "--no-discount-fallback"]) == 2
    assert "cannot compute Kneser-Ney discounts" in capsys.readouterr().err
    assert main(args) == 0
    assert "warning: train_char_lm: order 1" in capsys.readouterr().err
    corpus.write_bytes(b"fine\nbad \xff byte\n")
    assert main(args) == 2
    assert f"{corpus}:2: not UTF-8" in capsys.readouterr().err
    corpus.write_text("ok\n<s> x\n")
    assert main([*args, "--word-level"]) == 2
    assert f"{corpus}: line 2 contains the reserved token" in capsys.readouterr().err
    nofile = ["--text", str(tmp_path / "no.txt"), "--output", str(out)]
    assert main(["make-lm", "--order", "2", *nofile]) == 2
    assert "is not a file" in capsys.readouterr().err
    assert main(["make-lm", "--order", "0", "--text", str(corpus), "--output", str(out)]) == 2
    assert "order: must be >= 1" in capsys.readouterr().err


# ---- KenLM ----


def _kenlm():
    try:
        import kenlm
    except ImportError:
        pytest.skip("kenlm is not installed (pip install kenlm builds it from source)")
    return kenlm


def _compare_with_kenlm(kenlm, path, lm, sentences):
    model = kenlm.Model(str(path))
    assert model.order == lm.order
    for toks in sentences:
        text = " ".join(toks)
        for bos, eos in ((True, True), (False, True), (True, False)):
            theirs = list(model.full_scores(text, bos=bos, eos=eos))
            ours = lm.full_scores(toks, bos=bos, eos=eos)
            assert len(theirs) == len(ours)
            for (pt, nt, ot), (po, no, oo) in zip(theirs, ours):
                assert po == pytest.approx(pt, abs=1e-4), (text, theirs, ours)
                assert (nt, ot) == (no, oo), (text, theirs, ours)
            assert lm.score(toks, bos=bos, eos=eos) == pytest.approx(
                model.score(text, bos=bos, eos=eos), abs=1e-4
            )


@pytest.mark.parametrize("word_level", [False, True], ids=["char", "word"])
@pytest.mark.parametrize("order", [2, 3, 4, 5])  # KenLM's models start at order 2
def test_kenlm_agrees(tmp_path, order, word_level):
    kenlm = _kenlm()
    lines = _corpus(40, seed=10 + order)
    lm = _train(lines, order, word_level=word_level)
    path = tmp_path / "lm.arpa"
    lm.write_arpa(path)
    rng = random.Random(order)
    sentences = [text_to_tokens(s, word_level=word_level) for s in lines[:8]]
    sentences += [text_to_tokens(s, word_level=word_level) for s in _corpus(8, seed=99)]
    sentences += [rng.choices(_predictable(lm)[3:] + ["zzz"], k=6) for _ in range(8)]
    _compare_with_kenlm(kenlm, path, NGramLM.from_arpa(path), sentences)


def _kenlm_strict(text):
    """KenLM reads a stricter ARPA than the format (and NGramLM.from_arpa) allows: no text
    before \\data\\, "ngram K=C" without spaces, tabs between probability, words, back-off."""
    out, k = [], 0
    for line in text[text.index("\\data\\") :].splitlines():
        f = line.split()
        if line.startswith("ngram"):
            line = "ngram " + "".join(f[1:])
        elif line.startswith("\\") and line.endswith("-grams:"):
            k = int(line[1:].split("-")[0])
        elif f and not line.startswith("\\"):
            line = "\t".join([f[0], " ".join(f[1 : k + 1]), *f[k + 1 :]])
        out.append(line)
    return "\n".join(out) + "\n"


def test_kenlm_agrees_on_pruned_and_hand_written(tmp_path):
    kenlm = _kenlm()
    for name, text in (("hand", HAND_ARPA), ("pruned", PRUNED_ARPA)):
        path = tmp_path / f"{name}.arpa"
        path.write_text(_kenlm_strict(text))
        lm = NGramLM.from_arpa(path)
        sentences = [list("aba"), list("baba"), list("acb"), list("cdcab"), ["b"], []]
        _compare_with_kenlm(kenlm, path, lm, sentences)
