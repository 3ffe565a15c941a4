"""Modules built on the fused ops (each with a `backend="torch"` path for export)."""
# ---- loss (CTC) ----
# ---- LSTM ----
from fastcrnn.nn.lstm import LSTM, LSTMCell  # noqa: F401
# ---- networks: RNN, attention, Seq2Seq, CRNN, fine-tuning ----
