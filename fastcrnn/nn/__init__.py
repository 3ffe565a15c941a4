"""Modules built on the fused ops (each with a `backend="torch"` path for export)."""
# ---- loss (CTC) ----
# ---- LSTM ----
# ---- networks: RNN, attention, Seq2Seq, CRNN, fine-tuning ----
