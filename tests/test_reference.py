"""The references themselves, checked against torch's own modules and ops where they exist."""

import pytest
import torch
import torch.nn.functional as F

from fastcrnn import reference


def test_one_hot_and_to_onehot():
    x = torch.tensor([[0, 2], [1, 3]])
    oh = reference.one_hot(x, 4)
    assert torch.equal(oh, F.one_hot(x, 4).float())
    steps = reference.to_onehot(x, 4)
    assert len(steps) == 2 and steps[1].shape == (2, 4)
    assert torch.equal(steps[1], F.one_hot(x[:, 1], 4).float())


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_lstm_reference_matches_nn_lstm(bidirectional, num_layers):
    torch.manual_seed(0)
    T, N, I, H = 7, 3, 5, 4
    lstm = torch.nn.LSTM(I, H, num_layers, bidirectional=bidirectional).double()
    x = torch.randn(T, N, I, dtype=torch.float64)
    dirs = 2 if bidirectional else 1
    h0 = torch.randn(num_layers * dirs, N, H, dtype=torch.float64)
    c0 = torch.randn_like(h0)
    want, (hn, cn) = lstm(x, (h0, c0))
    params = dict(lstm.named_parameters())
    got, (gh, gc) = reference.lstm(x, params, num_layers, bidirectional, (h0, c0))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(gh, hn)
    torch.testing.assert_close(gc, cn)


def test_lstm_reference_variable_lengths_matches_packed():
    torch.manual_seed(1)
    T, N, I, H = 6, 4, 3, 5
    lstm = torch.nn.LSTM(I, H, 2, bidirectional=True).double()
    x = torch.randn(T, N, I, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4, 1])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, (hn, cn) = lstm(packed)
    want, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    got, (gh, gc) = reference.lstm(x, dict(lstm.named_parameters()), 2, True, lengths=lengths)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(gh, hn)
    torch.testing.assert_close(gc, cn)


def test_rnn_reference_matches_nn_rnn():
    torch.manual_seed(2)
    rnn = torch.nn.RNN(5, 6, 2, bidirectional=True).double()
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    h0 = torch.randn(4, 3, 6, dtype=torch.float64)
    want, hn = rnn(x, h0)
    got, gh = reference.rnn_tanh(x, dict(rnn.named_parameters()), 2, True, h0)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(gh, hn)


def test_masked_softmax_leaves_input_and_zero_rows():
    X = torch.randn(2, 3, 5)
    before = X.clone()
    out = reference.masked_softmax(X, torch.tensor([2, 0]))
    assert torch.equal(X, before)
    torch.testing.assert_close(out[0, :, :2].sum(-1), torch.ones(3))
    assert (out[0, :, 2:] == 0).all()
    assert (out[1] == 0).all()
    per_query = reference.masked_softmax(X, torch.tensor([[1, 2, 5], [3, 3, 3]]))
    torch.testing.assert_close(per_query[0, 2], torch.softmax(X[0, 2], -1))
    masked = reference.sequence_mask(X, torch.tensor([1, 4]), value=-1.0)
    assert torch.equal(X, before)
    assert (masked[0, 1:] == -1).all() and torch.equal(masked[1], X[1])


def test_dot_product_attention_uniform_keys():
    q = torch.randn(2, 1, 4)
    k = torch.ones(2, 10, 4)
    v = torch.arange(40.0).reshape(1, 10, 4).repeat(2, 1, 1)
    out, w = reference.dot_product_attention(q, k, v, torch.tensor([2, 6]))
    torch.testing.assert_close(out[0, 0], v[0, :2].mean(0))
    torch.testing.assert_close(out[1, 0], v[1, :6].mean(0))


def _ctc_case(T, N, C, S, seed, blank=0):
    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(T, N, C, generator=g, dtype=torch.float64).log_softmax(-1)
    labels = [c for c in range(C) if c != blank]
    targets = torch.tensor(labels)[torch.randint(0, len(labels), (N, S), generator=g)]
    target_lengths = torch.randint(0, S + 1, (N,), generator=g)
    input_lengths = torch.randint(0, T + 1, (N,), generator=g)
    return lp, targets, input_lengths, target_lengths


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("blank", [0, 2])
@pytest.mark.parametrize("seed", range(4))
def test_ctc_reference_matches_torch(reduction, blank, seed):
    lp, targets, il, tl = _ctc_case(T=9, N=4, C=4, S=4, seed=seed, blank=blank)
    for zero_infinity in (False, True):
        want = F.ctc_loss(lp, targets, il, tl, blank, reduction, zero_infinity)
        got = reference.ctc_loss(lp, targets, il, tl, blank, reduction, zero_infinity)
        torch.testing.assert_close(got, want)


def test_ctc_reference_gradient_after_log_softmax_matches_torch():
    lp, targets, il, tl = _ctc_case(T=8, N=3, C=5, S=3, seed=7)
    il = torch.full_like(il, 8)
    tl = torch.tensor([3, 1, 2])
    x = lp.clone().requires_grad_()
    F.ctc_loss(x.log_softmax(-1), targets, il, tl).backward()
    y = lp.clone().requires_grad_()
    reference.ctc_loss(y.log_softmax(-1), targets, il, tl).backward()
    torch.testing.assert_close(y.grad, x.grad)


def test_ctc_reference_concatenated_targets():
    lp, targets, il, tl = _ctc_case(T=10, N=3, C=6, S=4, seed=3)
    flat = torch.cat([targets[n, : tl[n]] for n in range(3)])
    torch.testing.assert_close(
        reference.ctc_loss(lp, flat, il, tl, reduction="none"),
        F.ctc_loss(lp, targets, il, tl, reduction="none"),
    )


@pytest.mark.parametrize("logits", [False, True])
def test_greedy_references_agree(logits):
    x = torch.randn(40, 6, 9)
    x[::3, :, 0] += 3  # plenty of blanks and repeats
    lp = x if logits else x.log_softmax(-1)
    lengths = [40, 0, 13, 39, 1, 20]
    loop = reference.ctc_greedy_decode_loop(lp, lengths, 0, logits)
    vec = reference.ctc_greedy_decode_torch(lp, lengths, 0, logits)
    for a, b in zip(loop, vec):
        assert torch.equal(a, b)
