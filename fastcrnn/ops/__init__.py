"""Python wrappers over torch.ops.fastcrnn: fake (meta) kernels, autograd, argument checks."""

from fastcrnn.ops.align import CtcAlignment, ctc_forced_align
from fastcrnn.ops.beam import BeamSearchDecoding, ctc_beam_search_decode
from fastcrnn.ops.conv import WinogradWeight, conv3x3_direct, winograd_conv3x3, winograd_weight
from fastcrnn.ops.ctc import ctc_loss, ctc_loss_from_logits
from fastcrnn.ops.decode import GreedyDecoding, ctc_greedy_decode
from fastcrnn.ops.lstm import lstm_cell, lstm_layer

__all__ = [
    "conv3x3_direct",
    "BeamSearchDecoding",
    "ctc_beam_search_decode",
    "CtcAlignment",
    "ctc_forced_align",
    "GreedyDecoding",
    "ctc_greedy_decode",
    "ctc_loss",
    "ctc_loss_from_logits",
    "lstm_cell",
    "lstm_layer",
    "winograd_conv3x3",
    "winograd_weight",
    "WinogradWeight",
]
