"""sequence_mask / masked_softmax (fastcrnn.functional) and the attention layers."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcrnn.functional as FF
from fastcrnn import reference
from fastcrnn.nn import AdditiveAttention, DotProductAttention, MLPAttention

# ---- sequence_mask --------------------------------------------------------------------------


def test_sequence_mask_tutorial_example_and_no_mutation():
    X = torch.tensor([[1.0, 2, 3], [4, 5, 6]])
    before = X.clone()
    out = FF.sequence_mask(X, torch.tensor([2, 3]))  # d2l passes float lengths too
    assert torch.equal(out, torch.tensor([[1.0, 2, 0], [4, 5, 6]]))
    assert torch.equal(X, before)  # the input is untouched
    out = FF.sequence_mask(X, torch.FloatTensor([1, 0]), value=-1)
    assert torch.equal(out, torch.tensor([[1.0, -1, -1], [-1, -1, -1]]))
    assert torch.equal(X, before)


@settings(max_examples=25, deadline=None)
@given(
    N=st.integers(1, 4),
    T=st.integers(0, 6),
    extra=st.lists(st.integers(1, 3), max_size=2),
    value=st.floats(-5, 5),
)
def test_sequence_mask_matches_reference(N, T, extra, value):
    X = torch.randn(N, T, *extra)
    lens = torch.randint(0, T + 2, (N,))
    out = FF.sequence_mask(X, lens, value)
    assert torch.equal(out, reference.sequence_mask(X, lens, value))
    assert torch.equal(out, FF.sequence_mask(X, lens.tolist(), value))


def test_sequence_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="valid_len"):
        FF.sequence_mask(torch.zeros(2, 3), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="X"):
        FF.sequence_mask(torch.zeros(3), torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="valid_len"):
        FF.sequence_mask(torch.zeros(2, 3), "ab")
    with pytest.raises(TypeError, match="X"):
        FF.sequence_mask([[1.0]], torch.tensor([1]))


# ---- masked_softmax -------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    B=st.integers(1, 4),
    Q=st.integers(1, 4),
    K=st.integers(1, 7),
    per_query=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_masked_softmax_matches_reference_values_and_grads(B, Q, K, per_query, dtype):
    X = torch.randn(B, Q, K, dtype=dtype, requires_grad=True)
    lens = torch.randint(0, K + 1, (B, Q) if per_query else (B,))
    before = X.detach().clone()
    out = FF.masked_softmax(X, lens)
    ref = reference.masked_softmax(X, lens)
    torch.testing.assert_close(out, ref)
    assert torch.equal(X.detach(), before)  # never modifies its input
    full = lens[:, None].expand(B, Q) if lens.dim() == 1 else lens
    valid = full > 0
    # rows sum to one where a key is valid, zero where none is; masked keys get exactly 0
    torch.testing.assert_close(out.sum(-1), valid.to(dtype))
    mask = torch.arange(K)[None, None] >= full[..., None]
    assert torch.all(out[mask] == 0)
    # gradients: finite everywhere, zero at masked keys; equal to the reference's on valid rows
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * g).sum(), X)
    assert torch.isfinite(grad).all()
    assert torch.all(grad[mask] == 0)
    (grad_ref,) = torch.autograd.grad((ref * g).sum(), X)
    torch.testing.assert_close(grad[valid], grad_ref[valid])


def test_masked_softmax_none_lengths_and_float_lengths():
    X = torch.randn(2, 3, 4)
    torch.testing.assert_close(FF.masked_softmax(X, None), torch.softmax(X, -1))
    torch.testing.assert_close(
        FF.masked_softmax(X, torch.tensor([2.0, 3.0])), FF.masked_softmax(X, torch.tensor([2, 3]))
    )
    # the classic example: valid lengths [2, 3] over 4 keys
    out = FF.masked_softmax(torch.rand(2, 2, 4), torch.tensor([2, 3]))
    assert torch.all(out[0, :, 2:] == 0) and torch.all(out[1, :, 3:] == 0)


def test_masked_softmax_gradcheck():
    X = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    lens = torch.tensor([[1, 5, 0], [3, 2, 4]])
    assert torch.autograd.gradcheck(lambda x: FF.masked_softmax(x, lens), (X,))


def test_masked_softmax_rejects_bad_input():
    with pytest.raises(ValueError, match="valid_lens"):
        FF.masked_softmax(torch.randn(2, 3, 4), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="valid_lens"):
        FF.masked_softmax(torch.randn(2, 3, 4), torch.ones(2, 2))
    with pytest.raises(ValueError, match="X"):
        FF.masked_softmax(torch.randn(2, 3), torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="X"):
        FF.masked_softmax(torch.ones(2, 3, 4, dtype=torch.long), None)


# ---- attention layers -----------------------------------------------------------------------


def test_mlp_attention_tutorial_example():
    keys = torch.ones((2, 10, 2))
    values = torch.arange(40, dtype=torch.float).view(1, 10, 4).repeat(2, 1, 1)
    atten = MLPAttention(key_size=2, query_size=2, units=8, dropout=0)
    out = atten(torch.ones((2, 1, 2)), keys, values, torch.tensor([2, 6]))
    assert out.shape == (2, 1, 4)
    # equal keys -> uniform weights over the valid ones -> the mean of the first 2 / 6 rows
    torch.testing.assert_close(out[0, 0], values[0, :2].mean(0))
    torch.testing.assert_close(out[1, 0], values[1, :6].mean(0))
    w = atten.attention_weights
    assert w.shape == (2, 1, 10)
    torch.testing.assert_close(w[0, 0, :2], torch.full((2,), 0.5))
    assert torch.all(w[0, 0, 2:] == 0) and torch.all(w[1, 0, 6:] == 0)
    assert AdditiveAttention is MLPAttention


@settings(max_examples=20, deadline=None)
@given(
    B=st.integers(1, 3),
    Q=st.integers(1, 3),
    K=st.integers(1, 6),
    dq=st.integers(1, 5),
    dk=st.integers(1, 5),
    dv=st.integers(1, 4),
    units=st.integers(1, 6),
    use_lens=st.booleans(),
)
def test_mlp_attention_matches_reference(B, Q, K, dq, dk, dv, units, use_lens):
    att = MLPAttention(dk, dq, units, 0.0).double()
    q = torch.randn(B, Q, dq, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, K, dk, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, K, dv, dtype=torch.float64, requires_grad=True)
    lens = torch.randint(1, K + 1, (B,)) if use_lens else None
    out = att(q, k, v, lens)
    ref, ref_w = reference.additive_attention(
        q, k, v, lens, att.W_q.weight, att.W_k.weight, att.v.weight
    )
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(att.attention_weights, ref_w)
    g = torch.randn_like(out)
    ga = torch.autograd.grad((out * g).sum(), [q, k, v] + list(att.parameters()))
    gb = torch.autograd.grad((ref * g).sum(), [q, k, v] + list(att.parameters()))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


@settings(max_examples=20, deadline=None)
@given(
    B=st.integers(1, 3),
    Q=st.integers(1, 4),
    K=st.integers(1, 6),
    d=st.integers(1, 6),
    dv=st.integers(1, 4),
)
def test_dot_product_attention_matches_reference_and_torch(B, Q, K, d, dv):
    att = DotProductAttention(0.0)
    q, k, v = torch.randn(B, Q, d), torch.randn(B, K, d), torch.randn(B, K, dv)
    lens = torch.randint(1, K + 1, (B,))
    out = att(q, k, v, lens)
    ref, ref_w = reference.dot_product_attention(q, k, v, lens)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(att.attention_weights, ref_w)
    mask = torch.arange(K)[None, None, :] < lens[:, None, None]  # True = attend
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_attention_gradcheck():
    att = MLPAttention(3, 2, 4).double()
    q = torch.randn(2, 2, 2, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)
    lens = torch.tensor([[2, 5], [0, 3]])  # a zero-length row included
    assert torch.autograd.gradcheck(lambda a, b, c: att(a, b, c, lens), (q, k, v))
    out = att(q, k, v, lens)
    assert torch.all(out[1, 0] == 0)


def test_attention_dropout_only_in_training():
    att = DotProductAttention(dropout=0.5)
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 3)
    att.eval()
    assert torch.equal(att(q, k, v), att(q, k, v))
    att.train()
    outs = {att(q, k, v).sum().item() for _ in range(5)}
    assert len(outs) > 1


def test_attention_rejects_bad_input():
    att = MLPAttention(3, 2, 4)
    q, k, v = torch.randn(2, 1, 2), torch.randn(2, 5, 3), torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="query"):
        att(torch.randn(2, 1, 3), k, v)
    with pytest.raises(ValueError, match="key"):
        att(q, torch.randn(2, 5, 2), v)
    with pytest.raises(ValueError, match="value"):
        att(q, k, torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="batch"):
        att(q, k, torch.randn(3, 5, 4))
    with pytest.raises(ValueError, match="query"):
        att(torch.randn(2, 2), k, v)
    with pytest.raises(ValueError, match="valid_lens"):
        att(q, k, v, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="units"):
        MLPAttention(3, 2, 0)
    with pytest.raises(ValueError, match="dropout"):
        DotProductAttention(2.0)
    with pytest.raises(ValueError, match="features"):
        DotProductAttention()(torch.randn(1, 1, 3), torch.randn(1, 2, 4), torch.randn(1, 2, 1))


def test_on_device_matches_cpu(device):
    X = torch.randn(3, 2, 5)
    lens = torch.tensor([[1, 5], [0, 3], [2, 2]])
    out = FF.masked_softmax(X.to(device), lens.to(device))
    assert out.device.type == device.type
    torch.testing.assert_close(out.cpu(), reference.masked_softmax(X, lens))
    att = MLPAttention(4, 3, 6)
    q, k, v = torch.randn(3, 2, 3), torch.randn(3, 5, 4), torch.randn(3, 5, 2)
    ref = att(q, k, v, lens)
    dev = att.to(device)(q.to(device), k.to(device), v.to(device), lens.to(device))
    torch.testing.assert_close(dev.cpu(), ref, rtol=1e-5, atol=1e-5)
