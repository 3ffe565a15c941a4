"""CTC greedy (best-path) decoding over torch.ops.fastcrnn.greedy_decode."""

from typing import NamedTuple

import torch

from fastcrnn._ext import _C  # noqa: F401  (defines the schemas registered against here)
from fastcrnn.ops._checks import (
    LengthsLike,
    decoder_scores,
    lengths_tensor,
    skip_value_checks,
)


class GreedyDecoding(NamedTuple):
    """Result of :func:`ctc_greedy_decode` (shapes for batched input; unbatched drops N).

    tokens:       (N, T) int64, the decoded labels, padded with -1.
    lengths:      (N,) int64, how many tokens each sequence has (-1 marks a row whose input
                  length was invalid and not validated; see ``validate``).
    token_probs:  (N, T) float32, for each token the highest probability over the frames of its
                  run (0 in padding).
    token_frames: (N, T) int64, the first frame of each token (-1 in padding).
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    token_probs: torch.Tensor
    token_frames: torch.Tensor


@torch.library.register_fake("fastcrnn::greedy_decode")
def _greedy_decode_fake(log_probs, input_lengths, blank, logits, validate):
    T, N, _ = log_probs.shape
    return (
        log_probs.new_empty((N, T), dtype=torch.int64),
        log_probs.new_empty((N,), dtype=torch.int64),
        log_probs.new_empty((N, T), dtype=torch.float32),
        log_probs.new_empty((N, T), dtype=torch.int64),
    )


def ctc_greedy_decode(
    log_probs: torch.Tensor,
    input_lengths: LengthsLike = None,
    blank: int = 0,
    logits: bool = False,
    validate: bool = True,
) -> GreedyDecoding:
    """Best-path CTC decoding: argmax per frame, collapse repeats, drop blanks.

    Args:
        log_probs: (T, N, C) or unbatched (T, C) scores, float32/float64/float16/bfloat16, any
            strides. Log-probabilities, or unnormalised scores when ``logits=True`` (then the
            per-frame softmax probabilities are computed in the same pass).
        input_lengths: (N,) int32/int64 tensor, list or tuple (an int for unbatched input);
            frames at or beyond a sequence's length are ignored. Default: T for all.
        blank: the blank class index, in [0, C).
        logits: whether ``log_probs`` holds unnormalised scores.
        validate: check tensor lengths lie in [0, T]. Always done for CPU tensors and lists; for
            CUDA tensors it needs a host sync, and it is skipped under torch.compile, during CUDA
            graph capture, or with ``validate=False`` — an invalid row then decodes to length -1.

    Ties and NaN follow torch.argmax (the first maximal index; NaN counts as maximal).
    Returns a :class:`GreedyDecoding` on the input's device.
    """
    scores, blank, unbatched = decoder_scores(log_probs, blank)
    T, N, _ = scores.shape
    lengths = lengths_tensor(
        input_lengths, N, T, scores.device, "input_lengths", unbatched=unbatched
    )
    validate = bool(validate) and not skip_value_checks(scores)
    out = torch.ops.fastcrnn.greedy_decode(scores, lengths, blank, bool(logits), validate)
    if unbatched:
        out = tuple(o[0] for o in out)
    return GreedyDecoding(*out)
