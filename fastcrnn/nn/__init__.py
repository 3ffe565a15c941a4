"""Modules built on the fused ops (each with a `backend="torch"` path for export)."""
# ---- loss (CTC) ----
from fastcrnn.nn.loss import CTCLoss  # noqa: F401
# ---- LSTM ----
# ---- networks: RNN, attention, Seq2Seq, CRNN, fine-tuning ----
