"""BLEU, the n-gram precision score of a predicted token sequence against a reference."""

import math
from collections import Counter
from typing import Sequence, Union

import torch

from fastcrnn.ops._checks import positive_int

__all__ = ["bleu"]


def bleu(pred_seq: Union[str, Sequence], label_seq: Union[str, Sequence], k: int) -> float:
    """BLEU as in d2l: exp(min(0, 1 - len_label / len_pred)) * prod_n p_n ** (1 / 2**n).

    pred_seq, label_seq: space-separated strings or sequences of tokens. k: the largest n-gram
    order (>= 1). p_n is the clipped n-gram precision; orders n longer than the prediction are
    skipped (the brevity penalty already charges a short prediction). An empty prediction scores
    0 (1 if the label is empty too). Returns a float in [0, 1].
    """
    k = positive_int(k, "k")

    def split(seq, name):
        if isinstance(seq, str):
            return seq.split()
        if isinstance(seq, torch.Tensor):
            return seq.tolist()
        if isinstance(seq, (list, tuple)):
            return list(seq)
        raise TypeError(
            f"{name} must be a string or a sequence of tokens, got {type(seq).__name__}"
        )

    pred, label = split(pred_seq, "pred_seq"), split(label_seq, "label_seq")
    len_pred, len_label = len(pred), len(label)
    if len_pred == 0:
        return 1.0 if len_label == 0 else 0.0
    score = math.exp(min(0.0, 1.0 - len_label / len_pred))
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
