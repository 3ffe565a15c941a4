"""CTC loss module: fastcrnn.nn.CTCLoss mirrors torch.nn.CTCLoss."""

import torch
from torch import nn

from fastcrnn.ops._checks import LengthsLike, check_backend
from fastcrnn.ops.ctc import ctc_loss, ctc_loss_from_logits


class CTCLoss(nn.Module):
    """Drop-in for ``torch.nn.CTCLoss`` backed by :func:`fastcrnn.ctc_loss`.

    Args:
        blank: the blank class index (default 0).
        reduction: 'none' | 'sum' | 'mean' (as torch: 'mean' divides each loss by its clamped
            target length, then averages over the batch).
        zero_infinity: impossible alignments give loss 0 and zero gradient.
        from_logits: the input is unnormalised logits (T, N, C); the log_softmax is fused in
            (:func:`fastcrnn.ctc_loss_from_logits`). Default False: log-probabilities.
        backend: 'fused' (our kernels) or 'torch' (``F.ctc_loss``, with a log_softmax when
            from_logits): the path for export; the two agree numerically.

    forward(input, targets, input_lengths, target_lengths) takes the shapes and dtypes of
    :func:`fastcrnn.ctc_loss` and returns the loss (float32, or float64 for float64 input).
    """

    def __init__(
        self,
        blank: int = 0,
        reduction: str = "mean",
        zero_infinity: bool = False,
        from_logits: bool = False,
        backend: str = "fused",
    ):
        super().__init__()
        if reduction not in ("none", "sum", "mean"):
            raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
        self.blank = blank
        self.reduction = reduction
        self.zero_infinity = zero_infinity
        self.from_logits = from_logits
        self.backend = check_backend(backend)

    def forward(
        self,
        input: torch.Tensor,
        targets: torch.Tensor,
        input_lengths: LengthsLike,
        target_lengths: LengthsLike,
    ) -> torch.Tensor:
        if self.backend == "torch":
            x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
            log_probs = x.log_softmax(-1) if self.from_logits else x
            # torch's annotation says Tensor for the lengths, but F.ctc_loss takes (and documents)
            # tuples / lists of ints too: its stub is narrower than the function
            return torch.nn.functional.ctc_loss(
                log_probs,
                targets,
                input_lengths,  # type: ignore[arg-type]
                target_lengths,  # type: ignore[arg-type]
                self.blank,
                self.reduction,
                self.zero_infinity,
            )
        fn = ctc_loss_from_logits if self.from_logits else ctc_loss
        return fn(
            input,
            targets,
            input_lengths,
            target_lengths,
            blank=self.blank,
            reduction=self.reduction,
            zero_infinity=self.zero_infinity,
        )

    def extra_repr(self) -> str:
        return (
            f"blank={self.blank}, reduction={self.reduction!r}, "
            f"zero_infinity={self.zero_infinity}, from_logits={self.from_logits}, "
            f"backend={self.backend!r}"
        )
