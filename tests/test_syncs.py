"""GPU readiness of the suite. Host synchronisations of the CUDA ops' value checks: as many as
the docs say, and none unvalidated (CUDA-graph capture and torch.compile need none); the CTC loss
is in tests/test_ctc.py. And the float32 settings of tests/conftest.py."""

import pytest
import torch

import fastcrnn
import fastcrnn.nn
import fastcrnn.nn.lstm as nn_lstm


def test_lstm_module_validates_lengths_in_its_first_layer_only(monkeypatch):
    """Every layer gets the same lengths; only the first checks them (on CUDA: one sync)."""
    seen = []
    real = nn_lstm.lstm_layer

    def spy(*args, validate=True, **kw):
        seen.append(validate)
        return real(*args, validate=validate, **kw)

    monkeypatch.setattr(nn_lstm, "lstm_layer", spy)
    lstm = fastcrnn.nn.LSTM(4, 3, num_layers=3, bidirectional=True)
    lstm(torch.randn(5, 2, 4), lengths=torch.tensor([5, 2]))
    assert seen == [True, False, False]
    # the check still happens: a bad length is rejected (the CPU op checks its own tensors)
    with pytest.raises(ValueError, match="lengths"):
        lstm(torch.randn(5, 2, 4), lengths=torch.tensor([6, 2]))


def test_cuda_lstm_syncs(count_syncs):
    lstm = fastcrnn.nn.LSTM(4, 3, num_layers=3, bidirectional=True).cuda()
    x = torch.randn(5, 2, 4, device="cuda")
    lengths = torch.tensor([5, 2], device="cuda")
    lstm(x, lengths=lengths)  # warm up (cuBLAS handles)
    assert count_syncs(lambda: lstm(x, lengths=lengths)) == 1
    assert count_syncs(lambda: lstm(x)) == 0
    w_ih, w_hh = lstm.weight_ih_l0, lstm.weight_hh_l0
    h0 = torch.zeros(1, 2, 3, device="cuda")
    call = fastcrnn.lstm_layer
    assert count_syncs(lambda: call(x, h0, h0, w_ih, w_hh[None], None, lengths)) == 1
    assert (
        count_syncs(lambda: call(x, h0, h0, w_ih, w_hh[None], None, lengths, validate=False)) == 0
    )
    with pytest.raises(ValueError, match="lengths"):
        lstm(x, lengths=torch.tensor([6, 2], device="cuda"))


def test_cuda_greedy_decode_syncs(count_syncs):
    lp = torch.randn(8, 3, 5, device="cuda").log_softmax(-1)
    lengths = torch.tensor([8, 3, 0], device="cuda")
    assert count_syncs(lambda: fastcrnn.ctc_greedy_decode(lp, lengths)) == 1
    assert count_syncs(lambda: fastcrnn.ctc_greedy_decode(lp, lengths, validate=False)) == 0


def test_tf32_is_off_for_cudnn_and_cublas():
    """tests/conftest.py: float32 comparisons against cuDNN / cuBLAS need IEEE float32, and the
    flags must stay readable (torch.jit.trace / export read cudnn.allow_tf32)."""
    assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cuda.matmul.allow_tf32 is False
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "rnn") and hasattr(cudnn.rnn, "fp32_precision"):
        assert cudnn.rnn.fp32_precision != "tf32" and cudnn.conv.fp32_precision != "tf32"
