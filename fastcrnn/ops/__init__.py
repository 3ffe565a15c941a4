"""Python wrappers over torch.ops.fastcrnn: fake (meta) kernels, autograd, argument checks."""
# ---- CTC greedy decoding ----
from fastcrnn.ops.decode import GreedyDecoding, ctc_greedy_decode  # noqa: F401
# ---- CTC loss ----
# ---- LSTM ----
from fastcrnn.ops.lstm import lstm_cell, lstm_layer  # noqa: F401
