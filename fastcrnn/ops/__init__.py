"""Python wrappers over torch.ops.fastcrnn: fake (meta) kernels, autograd, argument checks."""

from fastcrnn.ops.ctc import ctc_loss, ctc_loss_from_logits
from fastcrnn.ops.decode import GreedyDecoding, ctc_greedy_decode
from fastcrnn.ops.lstm import lstm_cell, lstm_layer

__all__ = [
    "GreedyDecoding",
    "ctc_greedy_decode",
    "ctc_loss",
    "ctc_loss_from_logits",
    "lstm_cell",
    "lstm_layer",
]
