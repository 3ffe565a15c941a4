"""fastcrnn.text: Charset / LabelConverter round trips and errors."""

import random

import pytest
import torch

import fastcrnn
from fastcrnn.text import Charset, LabelConverter

ALPHA = "0123456789abcdefghijklmnopqrstuvwxyz"


def _decoding_from_texts(conv, texts, probs=None, T=None):
    """A GreedyDecoding produced by the real decoder from one-hot scores spelling `texts`."""
    enc = [conv.encode_one(t) for t in texts]
    T = T or max(2 * len(e) + 1 for e in enc)
    C = conv.num_classes
    scores = torch.full((T, len(texts), C), -10.0, dtype=torch.float64)
    scores[:, :, 0] = 0.0
    for n, ids in enumerate(enc):
        for i, k in enumerate(ids):  # token on frame 2i, blank on 2i+1 (repeats stay apart)
            scores[2 * i, n, 0] = -10.0
            scores[2 * i, n, k] = 0.0 if probs is None else probs[n][i]
    return fastcrnn.ctc_greedy_decode(scores, logits=True)


def test_encode_layout_and_blank():
    conv = LabelConverter(ALPHA)
    targets, lengths = conv.encode(["ab", "", "0z"])
    assert targets.dtype == torch.int64 and lengths.dtype == torch.int64
    assert targets.tolist() == [11, 12, 1, 36]
    assert lengths.tolist() == [2, 0, 2]
    assert conv.blank == 0 and conv.num_classes == 37


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_through_decoder(seed):
    rng = random.Random(seed)
    conv = LabelConverter(ALPHA + " -")
    texts = [
        "".join(rng.choice(conv.charset.chars) for _ in range(rng.randint(0, 12)))
        for _ in range(rng.randint(1, 9))
    ]
    dec = _decoding_from_texts(conv, texts)
    assert conv.decode(dec) == texts
    with_conf = conv.decode(dec, with_confidence=True)
    assert [t for t, _ in with_conf] == texts


def test_confidence_is_product_of_token_probs():
    conv = LabelConverter("abc")
    # logit 0 for the token vs -10 for others, blank at -10 on the token frame
    logit = [[2.0, 0.5, 1.0], [0.3]]
    dec = _decoding_from_texts(conv, ["abc", "b"], probs=logit)
    out = conv.decode(dec, with_confidence=True)
    for (_text, conf), row in zip(out, range(2)):
        n = int(dec.lengths[row])
        expected = float(torch.prod(dec.token_probs[row, :n].double()))
        assert conf == pytest.approx(expected, rel=1e-6)
        assert 0 < conf < 1
    # reference: softmax prob of each token on its frame
    ref = 1.0
    for v in logit[0]:
        p = torch.softmax(torch.tensor([-10.0, v if True else 0, -10.0, -10.0]), 0)[1]
        ref *= float(p)
    assert out[0][1] == pytest.approx(ref, rel=1e-5)


def test_empty_string_confidence_one_and_unbatched():
    conv = LabelConverter("ab")
    scores = torch.zeros(4, 3)
    scores[:, 0] = 5.0
    dec = fastcrnn.ctc_greedy_decode(scores, logits=True)
    assert conv.decode(dec) == ""
    assert conv.decode(dec, with_confidence=True) == ("", 1.0)


def test_unknown_character_error_and_skip():
    conv = LabelConverter("abc")
    with pytest.raises(ValueError, match=r"'z'.*'abz'"):
        conv.encode(["ab", "abz"])
    skip = LabelConverter("abc", unknown="skip")
    t, l = skip.encode(["abz", "zz"])
    assert t.tolist() == [1, 2] and l.tolist() == [2, 0]
    with pytest.raises(ValueError, match="unknown"):
        LabelConverter("abc", unknown="ignore")


def test_case_insensitive():
    conv = LabelConverter("aBc", case_insensitive=True)
    assert conv.charset.chars == ("a", "b", "c")
    t, _ = conv.encode(["ABC", "abc"])
    assert t.tolist() == [1, 2, 3, 1, 2, 3]
    with pytest.raises(ValueError, match="'B'"):
        LabelConverter("abc").encode(["aB"])
    # "aA" fold to two classes of "a" (crnn.pytorch's layout): encoding uses the last
    folded = Charset("aAb", case_insensitive=True)
    assert folded.chars == ("a", "a", "b") and folded.num_classes == 4
    assert folded.index("A") == folded.index("a") == 2 and folded.to_string() == "aAb"
    assert folded.folded_duplicates() == ["a"]
    with pytest.raises(ValueError, match="ignores case"):
        folded.extended("B")


def test_encode_rejects_bad_types():
    conv = LabelConverter("abc")
    with pytest.raises(TypeError, match="texts"):
        conv.encode("abc")
    with pytest.raises(TypeError, match="texts"):
        conv.encode([b"abc"])
    with pytest.raises(TypeError, match="texts"):
        conv.encode(5)


def test_charset_string_errors():
    with pytest.raises(ValueError, match="duplicate.*'a'.*position 2"):
        Charset("aba")
    with pytest.raises(ValueError, match="empty"):
        Charset("")
    with pytest.raises(ValueError, match="one character"):
        Charset(["a", "bc"])
    with pytest.raises(TypeError, match="chars"):
        Charset(5)


def test_charset_file(tmp_path):
    p = tmp_path / "alpha.txt"
    p.write_text("a\nb\n \n字\r\n\n", encoding="utf-8")
    cs = Charset.from_file(p)
    assert cs.chars == ("a", "b", " ", "字")
    assert Charset.load(str(p)) == cs
    assert Charset.load("ab").chars == ("a", "b")
    bad = tmp_path / "dup.txt"
    bad.write_text("a\nb\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3.*duplicate.*line 1"):
        Charset.from_file(bad)
    multi = tmp_path / "multi.txt"
    multi.write_text("a\nbc\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2.*exactly one character"):
        Charset.from_file(multi)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("é\n".encode("latin-1"))
    with pytest.raises(ValueError, match="UTF-8"):
        Charset.from_file(latin)
    with pytest.raises(FileNotFoundError, match="nope"):
        Charset.from_file(tmp_path / "nope.txt")
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffx\ny\n".encode("utf-8"))
    assert Charset.from_file(bom).chars == ("x", "y")


def test_decode_errors():
    conv = LabelConverter("ab")
    scores = torch.zeros(4, 1, 5)
    scores[0, 0, 4] = 9.0
    dec = fastcrnn.ctc_greedy_decode(scores, logits=True)
    with pytest.raises(ValueError, match="class 4"):
        conv.decode(dec)
    bad = fastcrnn.GreedyDecoding(dec.tokens, torch.tensor([-1]), dec.token_probs, dec.token_frames)
    with pytest.raises(ValueError, match="invalid"):
        conv.decode(bad)
    with pytest.raises(TypeError, match="decoding"):
        conv.decode([1, 2])


def test_extended():
    cs = Charset("abc")
    ext = cs.extended("xy")
    assert ext.chars == ("a", "b", "c", "x", "y")
    assert ext.index("a") == 1 and ext.index("y") == 5
    with pytest.raises(ValueError, match="already"):
        cs.extended("ax")
