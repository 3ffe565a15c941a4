"""Products with a weight packed once (fastcrnn.ops.packed) against F.linear and nn.LSTM."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close

from fastcrnn.ops import lstm_layer
from fastcrnn.ops import packed as packed_ops

TOL = {torch.float32: 2e-5, torch.float64: 1e-12}


def _randn(*shape, dtype, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# (M, in, out): empty, single rows, rows past one row block (120), depths past one k-block
# (512 rows of a panel) or a part-filled last one, outputs that leave a panel or a strip
# part-filled
LINEAR_SHAPES = [
    (0, 5, 3),
    (1, 1, 1),
    (1, 512, 256),
    (5, 7, 31),
    (26, 2048, 512),
    (13, 300, 33),
    (13, 600, 33),
    (130, 129, 70),
    (241, 16, 17),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("M, K, N", LINEAR_SHAPES)
def test_linear_packed_matches_linear(M, K, N, dtype):
    x = _randn(M, K, dtype=dtype, seed=M + K)
    w = _randn(N, K, dtype=dtype, seed=N) / K**0.5
    b = _randn(N, dtype=dtype, seed=1)
    packed = packed_ops.pack_linear_weight(w)
    panel = 32 if dtype == torch.float32 else 16
    assert (
        packed.packed.shape == (1, (N + panel - 1) // panel, K, panel) and packed.out_features == N
    )
    assert_close(
        packed_ops.linear_packed(x, packed, b), F.linear(x, w, b), TOL[dtype], what="with bias"
    )
    assert_close(
        packed_ops.linear_packed(x, packed), F.linear(x, w), TOL[dtype], what="without bias"
    )


def test_linear_packed_row_views_and_copies():
    """Rows apart in memory (a column slice) and non-contiguous rows give the same result; the
    packed weight is a copy that later changes to the weight do not reach."""
    wide = _randn(40, 90, dtype=torch.float64, seed=2)
    w = _randn(21, 45, dtype=torch.float64, seed=3)
    packed = packed_ops.pack_linear_weight(w)
    expected = F.linear(wide[:, 10:55], w)
    assert_close(packed_ops.linear_packed(wide[:, 10:55], packed), expected, 1e-12)
    assert_close(packed_ops.linear_packed(wide.t()[10:55].t(), packed), expected, 1e-12)
    w.add_(1.0)
    assert_close(packed_ops.linear_packed(wide[:, 10:55], packed), expected, 1e-12)


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize(
    "T, N, I, H", [(1, 1, 1, 1), (26, 1, 512, 256), (7, 3, 5, 11), (6, 30, 9, 70)]
)
def test_lstm_layer_packed_matches_lstm_layer(T, N, I, H, D, dtype, num_threads):
    x = _randn(T, N, I, dtype=dtype, seed=T)
    h0 = _randn(D, N, H, dtype=dtype, seed=1)
    c0 = _randn(D, N, H, dtype=dtype, seed=2)
    w_ih = _randn(D * 4 * H, I, dtype=dtype, seed=3) / H**0.5
    w_hh = _randn(D, 4 * H, H, dtype=dtype, seed=4) / H**0.5
    bias = _randn(D * 4 * H, dtype=dtype, seed=5)
    packed = packed_ops.pack_lstm_weights(w_ih, w_hh)
    for b in (bias, None):
        want = torch.ops.fastcrnn.lstm_layer(x, h0, c0, w_ih, w_hh, b, None, False)[:3]
        got = packed_ops.lstm_layer_packed(x, h0, c0, packed, b)
        for a, e, name in zip(got, want, ("output", "h_n", "c_n")):
            assert_close(a, e, TOL[dtype] * 10, what=name)


def test_lstm_layer_packed_matches_nn_lstm():
    torch.manual_seed(0)
    ref = torch.nn.LSTM(12, 20, bidirectional=True).double()
    x = torch.randn(9, 4, 12, dtype=torch.float64)
    w_ih = torch.cat([ref.weight_ih_l0, ref.weight_ih_l0_reverse]).detach()
    w_hh = torch.stack([ref.weight_hh_l0, ref.weight_hh_l0_reverse]).detach()
    bias = torch.cat(
        [ref.bias_ih_l0 + ref.bias_hh_l0, ref.bias_ih_l0_reverse + ref.bias_hh_l0_reverse]
    ).detach()
    h0 = torch.zeros(2, 4, 20, dtype=torch.float64)
    with torch.no_grad():
        want, (hn, cn) = ref(x)
        got = packed_ops.lstm_layer_packed(
            x, h0, h0, packed_ops.pack_lstm_weights(w_ih, w_hh), bias
        )
    for a, e in zip(got, (want, hn, cn)):
        assert_close(a, e, 1e-12)
    # and agrees with the unpacked op
    assert_close(lstm_layer(x, h0, h0, w_ih, w_hh, bias)[0], got[0], 1e-12)


def test_opcheck_and_compile():
    x = _randn(6, 3, 9, dtype=torch.float32, seed=0)
    w = _randn(13, 9, dtype=torch.float32, seed=1)
    b = _randn(13, dtype=torch.float32, seed=2)
    pl = packed_ops.pack_linear_weight(w)
    torch.library.opcheck(torch.ops.fastcrnn.pack_linear_weight, (w,))
    torch.library.opcheck(torch.ops.fastcrnn.linear_packed, (x[0], pl.packed, 13, b))
    torch.library.opcheck(torch.ops.fastcrnn.linear_packed, (x[0], pl.packed, 13, None))
    w_ih = _randn(2 * 4 * 5, 9, dtype=torch.float32, seed=3)
    w_hh = _randn(2, 4 * 5, 5, dtype=torch.float32, seed=4)
    h0 = torch.zeros(2, 3, 5)
    pw = packed_ops.pack_lstm_weights(w_ih, w_hh)
    head = packed_ops.pack_linear_weight(_randn(13, 10, dtype=torch.float32, seed=5))
    torch.library.opcheck(torch.ops.fastcrnn.pack_linear_weight, (w_hh,))
    torch.library.opcheck(
        torch.ops.fastcrnn.lstm_layer_packed, (x, h0, h0, pw.weight_ih, pw.weight_hh, None)
    )

    def net(x):
        out, _, _ = packed_ops.lstm_layer_packed(x, h0, h0, pw)
        return packed_ops.linear_packed(out.reshape(-1, 10), head, b)

    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        assert torch.equal(compiled(x), net(x))


def test_bad_arguments_raise():
    x = _randn(4, 9, dtype=torch.float32, seed=0)
    w = _randn(5, 9, dtype=torch.float32, seed=1)
    pl = packed_ops.pack_linear_weight(w)
    op = torch.ops.fastcrnn.linear_packed
    with pytest.raises(
        ValueError, match=r"weight must be a packed weight .* shape \[1, 1, 8, 32\]"
    ):
        op(x[:, :8], pl.packed, 5, None)
    with pytest.raises(ValueError, match="out_features must be positive"):
        op(x, pl.packed, 0, None)
    with pytest.raises(ValueError, match=r"shape \[1, 2, 9, 32\] for 40 outputs"):
        op(x, pl.packed, 40, None)
    with pytest.raises(TypeError, match="weight must have the dtype"):
        op(x.double(), pl.packed, 5, None)
    with pytest.raises(TypeError, match="input must be float32 or float64"):
        op(x.half(), pl.packed, 5, None)
    with pytest.raises(ValueError, match="bias must be a CPU tensor of shape"):
        op(x, pl.packed, 5, torch.zeros(4))
    with pytest.raises(TypeError, match="bias must have the input's dtype"):
        op(x, pl.packed, 5, torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="input must have shape"):
        op(x[0], pl.packed, 5, None)
    with pytest.raises(TypeError, match="PackedLinearWeight"):
        packed_ops.linear_packed(x, w)
    with pytest.raises(ValueError, match="weight must have shape"):
        packed_ops.pack_linear_weight(w[0])
    with pytest.raises(ValueError, match="weight must be a CPU tensor"):
        packed_ops.pack_linear_weight(w.to("meta"))
    with pytest.raises(RuntimeError, match="inference ops without a backward"):
        packed_ops.linear_packed(x.requires_grad_(), pl)
    x.requires_grad_(False)
    # the LSTM layer
    w_ih = _randn(8, 9, dtype=torch.float32, seed=3)
    w_hh = _randn(1, 8, 2, dtype=torch.float32, seed=4)
    pw = packed_ops.pack_lstm_weights(w_ih, w_hh)
    seq = x.view(4, 1, 9)
    h0 = torch.zeros(1, 1, 2)
    lop = torch.ops.fastcrnn.lstm_layer_packed
    with pytest.raises(ValueError, match="h0 must have shape"):
        lop(seq, h0[0], h0, pw.weight_ih, pw.weight_hh, None)
    with pytest.raises(ValueError, match="weight_ih must be a packed weight"):
        lop(seq[:, :, :8], h0, h0, pw.weight_ih, pw.weight_hh, None)
    with pytest.raises(ValueError, match="weight_hh must be a packed weight"):
        lop(seq, torch.zeros(1, 1, 3), torch.zeros(1, 1, 3), pw.weight_ih, pw.weight_hh, None)
    with pytest.raises(ValueError, match="c0 must have shape"):
        lop(seq, h0, torch.zeros(1, 2, 2), pw.weight_ih, pw.weight_hh, None)
    with pytest.raises(ValueError, match="bias must have shape"):
        lop(seq, h0, h0, pw.weight_ih, pw.weight_hh, torch.zeros(7))
    with pytest.raises(TypeError, match="input must be float32 or float64"):
        lop(seq.half(), h0.half(), h0.half(), pw.weight_ih, pw.weight_hh, None)
    with pytest.raises(ValueError, match=r"weight_hh must have shape \(D, 4H, H\)"):
        packed_ops.pack_lstm_weights(w_ih, w_hh[:, :7])
    with pytest.raises(ValueError, match=r"weight_ih must have shape \(8, input_size\)"):
        packed_ops.pack_lstm_weights(w_ih[:7], w_hh)
    with pytest.raises(TypeError, match="differ in dtype"):
        packed_ops.pack_lstm_weights(w_ih.double(), w_hh)
    with pytest.raises(TypeError, match="PackedLstmWeights"):
        packed_ops.lstm_layer_packed(seq, h0, h0, (w_ih, w_hh))
    assert isinstance(pw, packed_ops.PackedLstmWeights) and isinstance(
        pl, packed_ops.PackedLinearWeight
    )
