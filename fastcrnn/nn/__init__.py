"""Modules built on the fused ops (each with a `backend="torch"` path for export)."""

from fastcrnn.bleu import bleu
from fastcrnn.nn.attention import AdditiveAttention, DotProductAttention, MLPAttention
from fastcrnn.nn.crnn import CRNN, BidirectionalLSTM, BiLSTM
from fastcrnn.nn.finetune import (
    ExpandedLinear,
    expand_classifier,
    load_with_new_classes,
    merge_classifier,
)
from fastcrnn.nn.frozen_crnn import FrozenCRNN
from fastcrnn.nn.loss import CTCLoss
from fastcrnn.nn.lstm import LSTM, LSTMCell
from fastcrnn.nn.rnn import RNN, make_lstm
from fastcrnn.nn.seq2seq import (
    Decoder,
    Encoder,
    EncoderDecoder,
    MaskedSoftmaxCELoss,
    Seq2SeqAttentionDecoder,
    Seq2SeqDecoder,
    Seq2SeqEncoder,
)
from fastcrnn.nn.seq2seq_predict import predict, predict_seq2seq

__all__ = [
    "CRNN",
    "LSTM",
    "RNN",
    "AdditiveAttention",
    "BiLSTM",
    "BidirectionalLSTM",
    "CTCLoss",
    "Decoder",
    "DotProductAttention",
    "Encoder",
    "EncoderDecoder",
    "ExpandedLinear",
    "FrozenCRNN",
    "LSTMCell",
    "MLPAttention",
    "MaskedSoftmaxCELoss",
    "Seq2SeqAttentionDecoder",
    "Seq2SeqDecoder",
    "Seq2SeqEncoder",
    "bleu",
    "expand_classifier",
    "load_with_new_classes",
    "make_lstm",
    "merge_classifier",
    "predict",
    "predict_seq2seq",
]
