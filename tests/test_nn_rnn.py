"""fastcrnn.nn.RNN (vanilla RNN from the step equations), the LSTM backend switch and the
one-hot / masking helpers of fastcrnn.functional."""

import pytest
import torch
from helpers import recurrent_sizes
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastcrnn
import fastcrnn.functional as FF
from fastcrnn import reference
from fastcrnn.nn import RNN
from fastcrnn.nn.rnn import make_lstm

FUSED = "fused"


# ---- one_hot / to_onehot ---------------------------------------------------------------------


def test_one_hot_tutorial_example():
    X = torch.arange(10).view(2, 5)
    inputs = FF.to_onehot(X, 10)
    assert len(inputs) == 5
    for t, x in enumerate(inputs):
        assert x.shape == (2, 10) and x.dtype == torch.float32
        assert torch.equal(x, reference.one_hot(X[:, t], 10))
        assert torch.equal(x.argmax(1), X[:, t])
        assert torch.equal(x.sum(1), torch.ones(2))


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=3),
    n_class=st.integers(1, 7),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int64]),
)
def test_one_hot_matches_reference(shape, n_class, dtype):
    x = torch.randint(0, n_class, shape)
    out = FF.one_hot(x, n_class, dtype)
    assert out.shape == (*shape, n_class) and out.dtype == dtype
    assert torch.equal(out, reference.one_hot(x, n_class, dtype))


def test_one_hot_rejects_bad_input():
    with pytest.raises(ValueError, match="x"):
        FF.one_hot(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="x"):
        FF.one_hot(torch.tensor([-1]), 3)
    with pytest.raises(TypeError, match="x"):
        FF.one_hot(torch.tensor([0.5]), 3)
    with pytest.raises(TypeError, match="x"):
        FF.one_hot([0, 1], 3)
    with pytest.raises(ValueError, match="n_class"):
        FF.one_hot(torch.tensor([0]), 0)
    with pytest.raises(TypeError, match="n_class"):
        FF.one_hot(torch.tensor([0]), 2.0)
    with pytest.raises(ValueError, match="X"):
        FF.to_onehot(torch.tensor([0, 1]), 3)


# ---- vanilla RNN vs nn.RNN and the reference ------------------------------------------------


def _pair(I, H, layers, bidir, nonlin="tanh", bias=True, batch_first=False, dtype=torch.float64):
    ours = RNN(
        I, H, layers, nonlinearity=nonlin, bias=bias, batch_first=batch_first, bidirectional=bidir
    ).to(dtype)
    theirs = nn.RNN(
        I, H, layers, nonlinearity=nonlin, bias=bias, batch_first=batch_first, bidirectional=bidir
    ).to(dtype)
    theirs.load_state_dict(ours.state_dict())  # the same names and shapes
    return ours, theirs


def test_state_dict_keys_are_nn_rnn():
    for layers, bidir, bias in [(1, False, True), (3, True, True), (2, True, False)]:
        ours = RNN(5, 7, layers, bias=bias, bidirectional=bidir)
        theirs = nn.RNN(5, 7, layers, bias=bias, bidirectional=bidir)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        for k, v in theirs.state_dict().items():
            assert ours.state_dict()[k].shape == v.shape
        ours.load_state_dict(theirs.state_dict())  # both directions load strictly
        theirs.load_state_dict(ours.state_dict())


@settings(max_examples=20, deadline=None)
@given(
    **recurrent_sizes(max_hidden=6, max_layers=3),
    nonlin=st.sampled_from(["tanh", "relu"]),
    bias=st.booleans(),
    batch_first=st.booleans(),
    with_h0=st.booleans(),
)
def test_matches_nn_rnn_values_and_grads(
    T, N, I, H, layers, bidirectional, nonlin, bias, batch_first, with_h0
):
    ours, theirs = _pair(I, H, layers, bidirectional, nonlin, bias, batch_first)
    shape = (N, T, I) if batch_first else (T, N, I)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    dirs = 2 if bidirectional else 1
    h0 = (
        torch.randn(layers * dirs, N, H, dtype=torch.float64, requires_grad=True)
        if with_h0
        else None
    )
    out, hn = ours(x, h0)
    out_t, hn_t = theirs(x, h0)
    torch.testing.assert_close(out, out_t)
    torch.testing.assert_close(hn, hn_t)
    g_out, g_h = torch.randn_like(out), torch.randn_like(hn)
    inputs = [x] + ([h0] if with_h0 else [])
    ga = torch.autograd.grad(
        (out * g_out).sum() + (hn * g_h).sum(), inputs + list(ours.parameters())
    )
    gb = torch.autograd.grad(
        (out_t * g_out).sum() + (hn_t * g_h).sum(), inputs + list(theirs.parameters())
    )
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


def test_matches_reference_rnn_tanh_with_lengths():
    ours = RNN(4, 6, 2, bidirectional=True).double()
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([7, 2, 5])
    params = dict(ours.named_parameters())
    out, hn = ours(x, lengths=lengths)
    ref_out, ref_hn = reference.rnn_tanh(x, params, 2, True, lengths=lengths)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(hn, ref_hn)
    # padded steps output zeros
    assert torch.all(out[2:, 1] == 0) and torch.all(out[5:, 2] == 0)


def test_packed_sequence_matches_nn_rnn():
    ours, theirs = _pair(3, 5, 2, True)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([3, 6, 1, 4])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    h0 = torch.randn(4, 4, 5, dtype=torch.float64)
    out, hn = ours(packed, h0)
    out_t, hn_t = theirs(packed, h0)
    assert torch.equal(out.batch_sizes, out_t.batch_sizes)
    assert torch.equal(out.sorted_indices, out_t.sorted_indices)
    torch.testing.assert_close(out.data, out_t.data)
    torch.testing.assert_close(hn, hn_t)
    # lengths= gives the same as the packed path
    out_l, hn_l = ours(x, h0, lengths=lengths)
    torch.testing.assert_close(out_l, pad_packed_sequence(out, total_length=6)[0])
    torch.testing.assert_close(hn_l, hn)


def test_unbatched_and_output_layer():
    torch.manual_seed(1)
    ours = RNN(10, 16, output_size=10)
    x = FF.one_hot(torch.arange(5) % 10, 10)  # the tutorial's (1, 5) sequence
    y, h = ours(x)
    assert y.shape == (5, 10) and h.shape == (1, 16)
    # the output layer is applied per step to the hidden states
    rnn_only = RNN(10, 16)
    rnn_only.load_state_dict(
        {k: v for k, v in ours.state_dict().items() if not k.startswith("output.")}
    )
    hs, hn = rnn_only(x)
    torch.testing.assert_close(y, ours.output(hs))
    torch.testing.assert_close(h, hn)
    assert set(ours.state_dict()) - set(rnn_only.state_dict()) == {"output.weight", "output.bias"}


def test_gradcheck_float64():
    ours = RNN(3, 4, 2, bidirectional=True).double()
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ours(a, b, lengths=[4, 2]), (x, h0))


def test_dropout_between_layers_only_in_training():
    ours = RNN(3, 4, 3, dropout=0.5)
    x = torch.randn(5, 2, 3)
    ours.eval()
    a, _ = ours(x)
    b, _ = ours(x)
    assert torch.equal(a, b)
    ours.train()
    torch.manual_seed(0)
    c, _ = ours(x)
    torch.manual_seed(1)
    d, _ = ours(x)
    assert not torch.equal(c, d)


def test_rnn_rejects_bad_arguments():
    with pytest.raises(ValueError, match="hidden_size"):
        RNN(3, 0)
    with pytest.raises(TypeError, match="input_size"):
        RNN(3.0, 4)
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="dropout"):
        RNN(3, 4, dropout=1.5)
    m = RNN(3, 4)
    with pytest.raises(ValueError, match="input"):
        m(torch.randn(2, 2, 5))
    with pytest.raises(ValueError, match="input"):
        m(torch.randn(2, 2, 3, 1))
    with pytest.raises(TypeError, match="input"):
        m(torch.ones(2, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="hx"):
        m(torch.randn(2, 2, 3), torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match="lengths"):
        m(torch.randn(2, 2, 3), lengths=[3, 1])
    with pytest.raises(ValueError, match="lengths"):
        m(torch.randn(2, 2, 3), lengths=[1])
    with pytest.raises(ValueError, match="input"):
        m(torch.randn(2, 2, 3, dtype=torch.float64))


# ---- the LSTM backend switch ----------------------------------------------------------------


def test_make_lstm_torch_and_errors():
    lstm = make_lstm("torch", 4, 5, 2, bidirectional=True)
    assert isinstance(lstm, nn.LSTM) and lstm.num_layers == 2
    with pytest.raises(ValueError, match="backend"):
        make_lstm("cudnn", 4, 5)
    with pytest.raises(TypeError, match="backend"):
        make_lstm(3, 4, 5)


@pytest.mark.parametrize("backend", [FUSED])
def test_make_lstm_fused_is_drop_in(backend):
    torch.manual_seed(0)
    ref = make_lstm("torch", 4, 5, 2, bidirectional=True)
    fused = make_lstm(backend, 4, 5, 2, bidirectional=True)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(6, 3, 4)
    torch.testing.assert_close(fused(x)[0], ref(x)[0], rtol=1e-5, atol=1e-5)


def test_public_exports():
    assert fastcrnn.nn.RNN is RNN
    assert FF.masked_softmax is fastcrnn.functional.masked_softmax


def test_rnn_on_device_matches_nn_rnn(device):
    ours, theirs = _pair(3, 5, 2, True, dtype=torch.float32)
    ours, theirs = ours.to(device), theirs.to(device)
    x = torch.randn(6, 4, 3, device=device, requires_grad=True)
    out, hn = ours(x, lengths=torch.tensor([6, 2, 3, 1], device=device))
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 3, 1]), enforce_sorted=False)
    out_t, hn_t = theirs(packed)
    torch.testing.assert_close(out, pad_packed_sequence(out_t, total_length=6)[0])
    torch.testing.assert_close(hn, hn_t)
    assert out.device.type == device.type
