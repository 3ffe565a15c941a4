"""BLEU, the n-gram precision score of a predicted token sequence against a reference."""

import math
from collections import Counter
from typing import Sequence, Union

import torch

from fastcrnn.ops._checks import positive_int

__all__ = ["bleu"]


def _tokens(seq, name: str) -> list:
    if isinstance(seq, str):
        # d2l's tokenization exactly: one space separates tokens, so "a  b" has an empty middle
        # token, "" is one empty token, and tabs / newlines belong to the tokens.
        return seq.split(" ")
    if isinstance(seq, torch.Tensor):
        if seq.dim() != 1:
            raise ValueError(f"{name} must be a 1-D tensor of tokens, got {tuple(seq.shape)}")
        return seq.tolist()
    if isinstance(seq, (list, tuple)):
        for token in seq:
            try:
                hash(token)
            except TypeError:
                # n-grams are counted in a dict, so a token must be hashable
                raise TypeError(
                    f"{name} must hold hashable tokens, got a {type(token).__name__}"
                ) from None
        return list(seq)
    raise TypeError(f"{name} must be a string or a sequence of tokens, got {type(seq).__name__}")


def bleu(pred_seq: Union[str, Sequence], label_seq: Union[str, Sequence], k: int) -> float:
    """BLEU as d2l defines it: exp(min(0, 1 - len_label / len_pred)) * prod_n p_n ** (1 / 2**n).

    pred_seq, label_seq: strings, split into tokens with ``str.split(" ")`` as d2l does (so two
    consecutive spaces make an empty token and ``""`` is one empty token; tabs and newlines do
    not separate), or sequences of hashable tokens (lists, tuples, 1-D tensors), taken as they
    are: pass ``s.split()`` to split on any whitespace. k: the largest n-gram order (an int >= 0;
    0 gives the brevity penalty alone, as in d2l). p_n, n = 1..k, is the clipped n-gram
    precision: matches / (len_pred - n + 1). Returns a float in [0, 1].

    Wherever d2l returns a value this returns the same float (the same operations in the same
    order). Where d2l raises ZeroDivisionError this returns a value instead:

    - an order n > len_pred (d2l divides by len_pred - n + 1 = 0 at n = len_pred + 1): that
      order is skipped; the brevity penalty already charges a short prediction.
    - an empty token sequence as pred_seq (only reachable with a sequence: a string has at
      least one token): 0.0, or 1.0 when label_seq is empty too.

    A negative k is a ValueError (d2l returns the brevity penalty for it).
    """
    k = positive_int(k, "k", 0)
    pred, label = _tokens(pred_seq, "pred_seq"), _tokens(label_seq, "label_seq")
    len_pred, len_label = len(pred), len(label)
    if len_pred == 0:
        return 1.0 if len_label == 0 else 0.0
    score = math.exp(min(0, 1 - len_label / len_pred))
    for n in range(1, min(k, len_pred) + 1):
        label_grams = Counter(tuple(label[i : i + n]) for i in range(len_label - n + 1))
        matches = 0
        for i in range(len_pred - n + 1):
            gram = tuple(pred[i : i + n])
            if label_grams[gram] > 0:
                matches += 1
                label_grams[gram] -= 1
        score *= math.pow(matches / (len_pred - n + 1), math.pow(0.5, n))
    return score
