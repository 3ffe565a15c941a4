"""Modules built on the fused ops (each with a `backend="torch"` path for export)."""
# ---- loss (CTC) ----
from fastcrnn.nn.loss import CTCLoss  # noqa: F401
# ---- LSTM ----
from fastcrnn.nn.lstm import LSTM, LSTMCell  # noqa: F401
# ---- networks: RNN, attention, Seq2Seq, CRNN, fine-tuning ----
from fastcrnn.nn.rnn import RNN, make_lstm  # noqa: F401
from fastcrnn.nn.attention import MLPAttention, AdditiveAttention, DotProductAttention  # noqa: F401,E501
from fastcrnn.nn.seq2seq import (Encoder, Decoder, Seq2SeqEncoder, Seq2SeqDecoder,  # noqa: F401
                                 Seq2SeqAttentionDecoder, EncoderDecoder, MaskedSoftmaxCELoss)
from fastcrnn.nn.seq2seq_predict import predict, predict_seq2seq  # noqa: F401
from fastcrnn.bleu import bleu  # noqa: F401
from fastcrnn.nn.crnn import CRNN, BiLSTM, BidirectionalLSTM  # noqa: F401
from fastcrnn.nn.finetune import (ExpandedLinear, expand_classifier, merge_classifier,  # noqa: F401
                                  load_with_new_classes)
