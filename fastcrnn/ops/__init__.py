"""Python wrappers over torch.ops.fastcrnn: fake (meta) kernels, autograd, argument checks."""
# ---- CTC greedy decoding ----
from fastcrnn.ops.decode import GreedyDecoding, ctc_greedy_decode  # noqa: F401
# ---- CTC loss ----
from fastcrnn.ops.ctc import ctc_loss, ctc_loss_from_logits  # noqa: F401
# ---- LSTM ----
from fastcrnn.ops.lstm import lstm_cell, lstm_layer  # noqa: F401
