"""Python wrappers over torch.ops.fastcrnn: fake (meta) kernels, autograd, argument checks."""

from fastcrnn.ops.align import CtcAlignment, ctc_forced_align
from fastcrnn.ops.beam import BeamSearchDecoding, ctc_beam_search_decode
from fastcrnn.ops.conv import WinogradWeight, conv3x3_direct, winograd_conv3x3, winograd_weight
from fastcrnn.ops.ctc import ctc_loss, ctc_loss_from_logits
from fastcrnn.ops.decode import GreedyDecoding, ctc_greedy_decode
from fastcrnn.ops.lstm import lstm_cell, lstm_layer
from fastcrnn.ops.packed import (
    PackedLinearWeight,
    PackedLstmWeights,
    linear_packed,
    lstm_layer_packed,
    pack_linear_weight,
    pack_lstm_weights,
)

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
    "lstm_layer_packed",
    "linear_packed",
    "pack_linear_weight",
    "pack_lstm_weights",
    "PackedLinearWeight",
    "PackedLstmWeights",
    "winograd_conv3x3",
    "winograd_weight",
    "WinogradWeight",
]
