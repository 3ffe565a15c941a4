"""fastcrnn: fused CTC, CTC decoding and LSTM kernels (CPU and CUDA) for text recognition.

The modules are ``fastcrnn.ops`` (the ops), ``fastcrnn.nn`` (networks), ``fastcrnn.functional``,
``fastcrnn.reference`` and ``fastcrnn.export`` (ONNX export); the OCR application is
``fastcrnn.ocr`` (imported on demand).
"""

from fastcrnn import functional, nn, reference
from fastcrnn._ext import build_info
from fastcrnn.export import export_onnx
from fastcrnn.lexicon import Lexicon, LexiconDecoding, lexicon_decode
from fastcrnn.lm import NGramLM
from fastcrnn.memory import cpu_cache_info, empty_cpu_cache, set_cpu_cache_limit
from fastcrnn.ops.align import CtcAlignment, ctc_forced_align
from fastcrnn.ops.beam import BeamSearchDecoding, ctc_beam_search_decode
from fastcrnn.ops.ctc import ctc_loss, ctc_loss_from_logits
from fastcrnn.ops.decode import GreedyDecoding, ctc_greedy_decode
from fastcrnn.ops.lstm import lstm_cell, lstm_layer
from fastcrnn.version import __version__

__all__ = [
    "Lexicon",
    "LexiconDecoding",
    "lexicon_decode",
    "NGramLM",
    "BeamSearchDecoding",
    "ctc_beam_search_decode",
    "CtcAlignment",
    "ctc_forced_align",
    "GreedyDecoding",
    "__version__",
    "build_info",
    "cpu_cache_info",
    "ctc_greedy_decode",
    "ctc_loss",
    "ctc_loss_from_logits",
    "empty_cpu_cache",
    "export_onnx",
    "functional",
    "lstm_cell",
    "lstm_layer",
    "nn",
    "reference",
    "set_cpu_cache_limit",
]
