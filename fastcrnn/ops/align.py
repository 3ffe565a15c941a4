"""CTC forced alignment over torch.ops.fastcrnn.ctc_forced_align: the most probable CTC path
(Viterbi) that spells a given target, batched, for any target length.

The op takes its arguments exactly as the CTC loss does (padded or concatenated targets, the
same checks); see csrc/kernels/align.h for the recursion and the tie rule.
"""

from typing import NamedTuple, Optional

import torch

from fastcrnn._ext import _C  # noqa: F401  (defines the schemas registered against here)
from fastcrnn.ops._checks import LengthsLike, skip_value_checks
from fastcrnn.ops.ctc import call_checked, ctc_inputs

__all__ = ["CtcAlignment", "ctc_forced_align"]


@torch.library.register_fake("fastcrnn::ctc_forced_align")
def _ctc_forced_align_fake(log_probs, targets, input_lengths, target_lengths, blank, validate):
    T, N, _ = log_probs.shape
    acc = torch.float64 if log_probs.dtype == torch.float64 else torch.float32
    if targets.dim() == 2:
        columns = targets.shape[1]
    elif validate:  # the longest target: a value only the data holds
        columns = torch.library.get_ctx().new_dynamic_size()
    else:
        columns = targets.numel()
    return (
        log_probs.new_empty((N, T), dtype=torch.int64),
        log_probs.new_empty((N, T), dtype=acc),
        log_probs.new_empty((N, columns), dtype=torch.int64),
        log_probs.new_empty((N, columns), dtype=torch.int64),
        log_probs.new_empty((N, columns), dtype=acc),
        log_probs.new_empty((N,), dtype=acc),
        log_probs.new_empty((N,), dtype=torch.bool),
    )


class CtcAlignment(NamedTuple):
    """The best CTC path of each sequence that spells its target (batched shapes; an unbatched
    call drops the N axis). L is the targets' padded width, or for 1-D concatenated targets the
    longest target length.

    labels: (N, T) int64, the path's class at each frame (the blank or a target token); -1 at
        frames t >= input_length and everywhere in a sequence that has no alignment.
    frame_log_probs: (N, T) float32 (float64 for float64 input), log_probs[t, n, labels[n, t]];
        0 where labels is -1.
    token_starts, token_ends: (N, L) int64, the frames [start, end) of each target token (its
        run of frames on the path; a repeated label is two runs with a blank between); -1 past
        the target length and in sequences without an alignment.
    token_log_probs: (N, L) the mean log-probability of each token's frames; 0 as padding.
    scores: (N,) the path's total log-probability, the sum of frame_log_probs; -inf when no
        alignment exists (target too long for the input, counting a blank between repeated
        labels, or every path through a zero-probability frame); NaN when the scores hold NaN
        on the way or, with validation skipped, the row's lengths or targets were invalid.
    aligned: (N,) bool, whether the sequence has an alignment (scores is finite).
    """

    labels: torch.Tensor
    frame_log_probs: torch.Tensor
    token_starts: torch.Tensor
    token_ends: torch.Tensor
    token_log_probs: torch.Tensor
    scores: torch.Tensor
    aligned: torch.Tensor


def ctc_forced_align(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: LengthsLike = None,
    target_lengths: LengthsLike = None,
    blank: int = 0,
    validate: Optional[bool] = None,
) -> CtcAlignment:
    """Aligns each target to its frames: the most probable CTC path that collapses to it.

    Args:
        log_probs: (T, N, C) or unbatched (T, C) log-probabilities (a log_softmax output),
            float32 / float64 (float16 / bfloat16: computed in float32 on the CPU, read
            directly on CUDA). Any strides. CPU or CUDA.
        targets: (N, S) padded or 1-D concatenated class indices (unbatched: (S,)), int32 or
            int64, never the blank. A CPU tensor is accepted with CUDA log_probs.
        input_lengths: (N,) tensor, list or tuple in [0, T]; None: T for every sequence.
        target_lengths: (N,) in [0, S]; None: the whole row of padded (or unbatched) targets.
        blank: the blank class, in [0, C).
        validate: check lengths and target values on CUDA (one host synchronisation per call;
            None: yes, except under torch.compile and CUDA-graph capture). CPU tensors are
            always checked. Unchecked invalid rows get scores NaN and aligned False, never an
            out-of-bounds access.

    Returns a :class:`CtcAlignment`. Ties between paths of equal score are broken the same way
    every time: going back from the end (the final blank before the final label), each frame
    stays in the path's current state where that scores as well as stepping back, so each state
    starts as early as the tie allows.
    Memory: the backpointers take N * T * ceil((2 L + 1) / 4) bytes (2 bits per state).
    """
    inputs = ctc_inputs(
        log_probs,
        targets,
        input_lengths,
        target_lengths,
        blank,
        "log_probs",
        full_length_default=True,
    )
    scores = inputs.scores
    if scores.device.type == "cpu" and scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    if validate is None:
        validate = not skip_value_checks(scores)
    elif not isinstance(validate, bool):
        raise TypeError(f"validate must be a bool or None, got {type(validate).__name__}")
    out = call_checked(
        torch.ops.fastcrnn.ctc_forced_align,
        scores,
        inputs.targets,
        inputs.input_lengths,
        inputs.target_lengths,
        inputs.blank,
        validate,
    )
    result = CtcAlignment(*out)
    if inputs.unbatched:
        return CtcAlignment(*(t[0] for t in result))
    return result
