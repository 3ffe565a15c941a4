"""fastcrnn: fused CTC, CTC decoding and LSTM kernels (CPU and CUDA) for text recognition."""
from fastcrnn._ext import build_info  # noqa: F401  (loads fastcrnn._C first)
from fastcrnn import reference  # noqa: F401
# ---- CTC greedy decoding ----
from fastcrnn.ops.decode import GreedyDecoding, ctc_greedy_decode  # noqa: F401
# ---- CTC loss ----
from fastcrnn.ops.ctc import ctc_loss, ctc_loss_from_logits  # noqa: F401
# ---- LSTM ----
from fastcrnn.ops.lstm import lstm_cell, lstm_layer  # noqa: F401
# ---- the ops' CPU buffer cache ----
from fastcrnn.memory import cpu_cache_info, empty_cpu_cache, set_cpu_cache_limit  # noqa: F401

from fastcrnn import functional, nn  # noqa: F401,E402  (modules; the application is fastcrnn.ocr)

from fastcrnn.version import __version__  # noqa: E402
