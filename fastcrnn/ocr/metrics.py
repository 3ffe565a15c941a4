"""Recognition metrics over (prediction, reference) string pairs; edit distance by rapidfuzz."""

from typing import Dict, Sequence

__all__ = ["edit_distance", "recognition_metrics"]


def _levenshtein():
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError as exc:
        raise ImportError("metrics need rapidfuzz: pip install 'fastcrnn[ocr]'") from exc
    return Levenshtein


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions of one character each)."""
    return int(_levenshtein().distance(a, b))


def recognition_metrics(predictions: Sequence[str], references: Sequence[str]) -> Dict[str, float]:
    """Returns a dict with

    - ``word_accuracy``: fraction of predictions equal to their reference;
    - ``cer``: Σ edit distance / Σ reference length (character error rate; 0 when both sums
      are 0, inf when only the reference lengths sum to 0);
    - ``norm_edit_distance``: mean over samples of edit distance / max(len(ref), len(pred), 1);
    - ``num_samples``.

    With no samples, the three rates are NaN.
    """
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be sequences of str, not str")
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions has {len(predictions)} entries but references has {len(references)}"
        )
    for name, seq in (("predictions", predictions), ("references", references)):
        for s in seq:
            if not isinstance(s, str):
                raise TypeError(f"{name} must hold str, got {type(s).__name__}")
    n = len(predictions)
    if n == 0:
        nan = float("nan")
        return dict(word_accuracy=nan, cer=nan, norm_edit_distance=nan, num_samples=0)
    lev = _levenshtein()
    correct = total_dist = total_ref = 0
    ned = 0.0
    for p, r in zip(predictions, references):
        d = lev.distance(p, r)
        correct += p == r
        total_dist += d
        total_ref += len(r)
        ned += d / max(len(r), len(p), 1)
    if total_ref:
        cer = total_dist / total_ref
    else:
        cer = 0.0 if total_dist == 0 else float("inf")
    return dict(word_accuracy=correct / n, cer=cer, norm_edit_distance=ned / n, num_samples=n)
