"""Fused LSTM: fastcrnn.nn.LSTM / LSTMCell and the lstm_layer / lstm_cell ops against torch's
nn.LSTM / nn.LSTMCell (identical weights) and fastcrnn.reference."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, grads, recurrent_sizes, run_with_cpu_isa
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastcrnn
from fastcrnn import reference
from fastcrnn.nn import LSTM, LSTMCell


def _pair(
    I,
    H,
    layers=1,
    bidirectional=False,
    batch_first=False,
    bias=True,
    dtype=torch.float64,
    device="cpu",
    dropout=0.0,
):
    """torch.nn.LSTM and fastcrnn.nn.LSTM of the same arguments and weights."""
    args = dict(
        num_layers=layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        bias=bias,
        dropout=dropout,
    )
    ref = torch.nn.LSTM(I, H, **args).to(device, dtype)
    ours = LSTM(I, H, **args).to(device, dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _assert_same_grads(ref, ours, ref_out, ours_out, leaves, g=None, atol=1e-11, rtol=0.0):
    """ours' gradients (of ``ours_out``, with respect to ``leaves`` and its own parameters)
    equal ref's (of ``ref_out``, with ref's parameters) within atol / rtol; ``g`` weights the
    outputs (None: they are scalars). A mismatch names its input or parameter."""
    names = [f"input {k}" for k in range(len(leaves))] + [n for n, _ in ref.named_parameters()]
    ga = grads(ref_out, list(leaves) + list(ref.parameters()), g)
    gb = grads(ours_out, list(leaves) + list(ours.parameters()), g)
    for a, b, name in zip(ga, gb, names):
        assert_close(b, a, atol, rtol, what=f"grad {name}")


# ---------------------------------------------------------------------------------------------
# nn.LSTM drop-in: values and every gradient
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_lstm_matches_torch(device, layers, bidirectional, batch_first, with_state):
    T, N, I, H = 7, 5, 6, 9
    ref, ours = _pair(I, H, layers, bidirectional, batch_first, device=device)
    D = 2 if bidirectional else 1
    shape = (N, T, I) if batch_first else (T, N, I)
    x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
    leaves = [x]
    hx = None
    if with_state:
        h0 = torch.randn(layers * D, N, H, dtype=torch.float64, device=device, requires_grad=True)
        c0 = torch.randn(layers * D, N, H, dtype=torch.float64, device=device, requires_grad=True)
        hx = (h0, c0)
        leaves += [h0, c0]
    o1, (h1, c1) = ref(x, hx)
    o2, (h2, c2) = ours(x, hx)
    for a, b, name in ((o1, o2, "output"), (h1, h2, "h_n"), (c1, c2, "c_n")):
        assert_close(b, a, 1e-12, what=name)
    g = [torch.randn_like(t) for t in (o1, h1, c1)]
    _assert_same_grads(ref, ours, (o1, h1, c1), (o2, h2, c2), leaves, g)


@pytest.mark.parametrize("bias", [True, False])
def test_lstm_float32_and_no_bias(device, bias):
    ref, ours = _pair(16, 32, 2, True, bias=bias, dtype=torch.float32, device=device)
    x = torch.randn(11, 4, 16, device=device, requires_grad=True)
    o1, (h1, c1) = ref(x)
    o2, (h2, c2) = ours(x)
    assert_close(o2, o1, 2e-5, what="output")
    assert_close(c2, c1, 2e-5, what="c_n")
    loss1, loss2 = o1.sum() + h1.sum() + c1.sum(), o2.sum() + h2.sum() + c2.sum()
    _assert_same_grads(ref, ours, loss1, loss2, [x], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_sequence_matches_torch(device, bidirectional, enforce_sorted):
    T, N, I, H, layers = 8, 5, 4, 6, 2
    ref, ours = _pair(I, H, layers, bidirectional, device=device)
    D = 2 if bidirectional else 1
    lengths = torch.tensor([8, 6, 6, 3, 1]) if enforce_sorted else torch.tensor([3, 8, 1, 6, 5])
    x = torch.randn(T, N, I, dtype=torch.float64, device=device, requires_grad=True)
    h0 = torch.randn(layers * D, N, H, dtype=torch.float64, device=device, requires_grad=True)
    c0 = torch.randn(layers * D, N, H, dtype=torch.float64, device=device, requires_grad=True)
    leaves = [x, h0, c0]
    outs = []
    for mod in (ref, ours):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
        out, (h, c) = mod(packed, (h0, c0))
        outs.append((out, h, c))
    (p1, h1, c1), (p2, h2, c2) = outs
    assert isinstance(p2, torch.nn.utils.rnn.PackedSequence)
    assert torch.equal(p2.batch_sizes, p1.batch_sizes)
    for a, b in (
        (p1.sorted_indices, p2.sorted_indices),
        (p1.unsorted_indices, p2.unsorted_indices),
    ):
        assert (a is None and b is None) or torch.equal(a, b)
    assert_close(p2.data, p1.data, 1e-12, what="packed output")
    assert_close(h2, h1, 1e-12, what="h_n")
    assert_close(c2, c1, 1e-12, what="c_n")
    g = [torch.randn_like(t) for t in (p1.data, h1, c1)]
    _assert_same_grads(ref, ours, (p1.data, h1, c1), (p2.data, h2, c2), leaves, g)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_argument_matches_packed_torch(device, bidirectional):
    T, N, I, H = 9, 4, 5, 7
    ref, ours = _pair(I, H, 2, bidirectional, batch_first=True, device=device)
    lengths = torch.tensor([4, 9, 1, 6])
    x = torch.randn(N, T, I, dtype=torch.float64, device=device, requires_grad=True)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    p1, (h1, c1) = ref(packed)
    o1, _ = pad_packed_sequence(p1, batch_first=True, total_length=T)
    o2, (h2, c2) = ours(x, lengths=lengths.to(device))
    assert_close(o2, o1, 1e-12, what="padded output")
    for n in range(N):  # padded steps output exactly zero
        assert torch.count_nonzero(o2[n, lengths[n] :]) == 0
    assert_close(h2, h1, 1e-12)
    assert_close(c2, c1, 1e-12)
    g = [torch.randn_like(t) for t in (o1, h1, c1)]
    _assert_same_grads(ref, ours, (o1, h1, c1), (o2, h2, c2), [x], g)
    # a list works too
    o3, _ = ours(x, lengths=lengths.tolist())
    assert_close(o3, o2, 0.0)


def test_zero_lengths_keep_state_against_reference(device):
    T, N, I, H = 5, 4, 3, 4
    _, ours = _pair(I, H, 1, True, device=device)
    lengths = torch.tensor([0, 5, 2, 0], device=device)
    x = torch.randn(T, N, I, dtype=torch.float64, device=device)
    h0 = torch.randn(2, N, H, dtype=torch.float64, device=device)
    c0 = torch.randn(2, N, H, dtype=torch.float64, device=device)
    out, (h, c) = ours(x, (h0, c0), lengths=lengths)
    params = dict(ours.named_parameters())
    ro, (rh, rc) = reference.lstm(x, params, 1, True, (h0, c0), lengths)
    assert_close(out, ro, 1e-12)
    assert_close(h, rh, 1e-12)
    assert_close(c, rc, 1e-12)
    for n in (0, 3):
        assert torch.count_nonzero(out[:, n]) == 0
        assert_close(h[:, n], h0[:, n], 0.0)
        assert_close(c[:, n], c0[:, n], 0.0)


def test_unbatched_input(device):
    ref, ours = _pair(4, 5, 2, True, device=device)
    x = torch.randn(6, 4, dtype=torch.float64, device=device, requires_grad=True)
    h0 = torch.randn(4, 5, dtype=torch.float64, device=device)
    c0 = torch.randn(4, 5, dtype=torch.float64, device=device)
    o1, (h1, c1) = ref(x, (h0, c0))
    o2, (h2, c2) = ours(x, (h0, c0))
    assert o2.shape == o1.shape == (6, 10) and h2.shape == h1.shape == (4, 5)
    assert_close(o2, o1, 1e-12)
    assert_close(h2, h1, 1e-12)
    assert_close(c2, c1, 1e-12)
    (ga,) = grads(o1.sum(), [x], None)
    (gb,) = grads(o2.sum(), [x], None)
    assert_close(gb, ga, 1e-12)


def test_non_contiguous_input(device):
    ref, ours = _pair(6, 5, 1, True, device=device)
    base = torch.randn(12, 3, 13, dtype=torch.float64, device=device, requires_grad=True)
    x = base[::2, :, 1::2]  # strided in time and features
    assert not x.is_contiguous()
    o1, _ = ref(x)
    o2, _ = ours(x)
    assert_close(o2, o1, 1e-12)
    (ga,) = grads(o1.square().sum(), [base], None)
    (gb,) = grads(o2.square().sum(), [base], None)
    assert_close(gb, ga, 1e-12)


def test_dropout_only_between_layers_and_in_training(device):
    T, N, I, H = 6, 3, 4, 5
    _, ours = _pair(I, H, 2, True, dropout=0.5, device=device)
    x = torch.randn(T, N, I, dtype=torch.float64, device=device)
    ours.eval()
    o_eval, _ = ours(x)
    ours.train()
    torch.manual_seed(123)
    o_train, (h_train, _) = ours(x)
    assert not torch.allclose(o_train, o_eval)
    # by hand: layer 0, dropout with the same RNG state, layer 1
    l0 = torch.nn.LSTM(I, H, bidirectional=True).to(device, torch.float64)
    l1 = torch.nn.LSTM(2 * H, H, bidirectional=True).to(device, torch.float64)
    sd = ours.state_dict()
    l0.load_state_dict({k.replace("_l0", "_l0"): v for k, v in sd.items() if "_l0" in k})
    l1.load_state_dict({k.replace("_l1", "_l0"): v for k, v in sd.items() if "_l1" in k})
    torch.manual_seed(123)
    y0, (h0, _) = l0(x)
    y1, (h1, _) = l1(F.dropout(y0, 0.5, True))
    assert_close(o_train, y1, 1e-12)
    assert_close(h_train, torch.cat([h0, h1]), 1e-12)
    # a single layer never drops out (torch warns about dropout there; we just apply none)
    _, single = _pair(I, H, 1, False, device=device)
    single.dropout = 0.5
    single.train()
    a, _ = single(x)
    single.eval()
    b, _ = single(x)
    assert_close(a, b, 0.0)


def test_state_dict_both_ways_and_names():
    ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    ours = LSTM(3, 4, num_layers=2, bidirectional=True)
    assert [n for n, _ in ref.named_parameters()] == [n for n, _ in ours.named_parameters()]
    assert all(a.shape == b.shape for a, b in zip(ref.parameters(), ours.parameters()))
    ours.load_state_dict(ref.state_dict())
    ref2 = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    ref2.load_state_dict(ours.state_dict())
    for a, b in zip(ref.parameters(), ref2.parameters()):
        assert torch.equal(a, b)
    ours.flatten_parameters()
    torch.manual_seed(5)
    a = torch.nn.LSTM(3, 4, 2)
    torch.manual_seed(5)
    b = LSTM(3, 4, 2)
    for p, q in zip(a.parameters(), b.parameters()):  # same initialisation
        assert torch.equal(p, q)


def test_backend_torch_agrees(device):
    _, fused = _pair(5, 6, 2, True, device=device)
    torch_backend = LSTM(5, 6, 2, bidirectional=True, backend="torch").to(device, torch.float64)
    torch_backend.load_state_dict(fused.state_dict())
    x = torch.randn(7, 3, 5, dtype=torch.float64, device=device)
    lengths = torch.tensor([7, 2, 5], device=device)
    for kw in ({}, {"lengths": lengths}):
        a = fused(x, **kw)
        b = torch_backend(x, **kw)
        assert_close(a[0], b[0], 1e-12)
        assert_close(a[1][0], b[1][0], 1e-12)
        assert_close(a[1][1], b[1][1], 1e-12)


# ---------------------------------------------------------------------------------------------
# LSTMCell drop-in
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_lstm_cell_matches_torch(device, bias, with_state):
    N, I, H = 6, 7, 5
    ref = torch.nn.LSTMCell(I, H, bias=bias).to(device, torch.float64)
    ours = LSTMCell(I, H, bias=bias).to(device, torch.float64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(N, I, dtype=torch.float64, device=device, requires_grad=True)
    leaves = [x]
    hx = None
    if with_state:
        hx = (
            torch.randn(N, H, dtype=torch.float64, device=device, requires_grad=True),
            torch.randn(N, H, dtype=torch.float64, device=device, requires_grad=True),
        )
        leaves += list(hx)
    h1, c1 = ref(x, hx)
    h2, c2 = ours(x, hx)
    assert_close(h2, h1, 1e-12)
    assert_close(c2, c1, 1e-12)
    g = [torch.randn_like(h1), torch.randn_like(c1)]
    _assert_same_grads(ref, ours, (h1, c1), (h2, c2), leaves, g, atol=1e-12)
    # only h used: c's gradient is None and must be treated as zeros
    ga = grads(ref(x, hx)[0].sum(), [x], None)
    gb = grads(ours(x, hx)[0].sum(), [x], None)
    assert_close(gb[0], ga[0], 1e-12)


def test_lstm_cell_unbatched_and_float32(device):
    ref = torch.nn.LSTMCell(8, 16).to(device)
    ours = LSTMCell(8, 16).to(device)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(8, device=device)
    hx = (torch.randn(16, device=device), torch.randn(16, device=device))
    a, b = ref(x, hx), ours(x, hx)
    assert b[0].shape == (16,)
    assert_close(b[0], a[0], 1e-6, 1e-5)
    assert_close(b[1], a[1], 1e-6, 1e-5)
    xb = torch.randn(33, 8, device=device)  # odd H multiples / tails of the vector loop
    a, b = ref(xb), ours(xb)
    assert_close(b[0], a[0], 1e-6, 1e-5)


# ---------------------------------------------------------------------------------------------
# ops: gradcheck, opcheck, compile
# ---------------------------------------------------------------------------------------------


def _layer_args(T, N, I, H, D, device="cpu", dtype=torch.float64, lengths=None, bias=True):
    g = lambda *s: torch.randn(*s, dtype=dtype, device=device) * 0.5  # noqa: E731
    args = [
        g(T, N, I),
        g(D, N, H),
        g(D, N, H),
        g(D * 4 * H, I),
        g(D, 4 * H, H),
        g(D * 4 * H) if bias else None,
        None if lengths is None else torch.tensor(lengths, device=device),
    ]
    return args


@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("lengths", [None, [4, 1, 3]])
def test_layer_gradcheck(D, lengths):
    args = _layer_args(4, 3, 3, 2, D, lengths=lengths)
    for a in args[:6]:
        a.requires_grad_(True)
    fn = lambda *a: fastcrnn.lstm_layer(*a[:6], lengths=args[6])  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(args[:6]))


def test_cell_gradcheck():
    g = lambda *s: torch.randn(*s, dtype=torch.float64, requires_grad=True)  # noqa: E731
    assert torch.autograd.gradcheck(
        fastcrnn.lstm_cell, (g(3, 4), g(3, 2), g(3, 2), g(8, 4), g(8, 2), g(8))
    )


@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("lengths", [None, [3, 1]])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_opcheck(D, lengths, bias):
    args = _layer_args(3, 2, 3, 4, D, lengths=lengths, bias=bias)
    for a in args[:6]:
        if a is not None:
            a.requires_grad_(True)
    torch.library.opcheck(torch.ops.fastcrnn.lstm_layer.default, tuple(args))


@pytest.mark.parametrize("bias", [True, False])
def test_cell_opcheck(bias):
    g = lambda *s: torch.randn(*s, dtype=torch.float64, requires_grad=True)  # noqa: E731
    torch.library.opcheck(
        torch.ops.fastcrnn.lstm_cell.default,
        (g(3, 4), g(3, 2), g(3, 2), g(8, 4), g(8, 2), g(8) if bias else None),
    )


def test_compile_fullgraph_padded_with_lengths():
    torch._dynamo.reset()
    ref, ours = _pair(4, 5, 2, True, batch_first=True, dtype=torch.float32)
    x = torch.randn(3, 6, 4, requires_grad=True)
    lengths = torch.tensor([6, 2, 4])

    def run(x, lengths):
        out, (h, c) = ours(x, lengths=lengths)
        return out, h, c

    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    o1, h1, c1 = compiled(x, lengths)
    o2, h2, c2 = run(x, lengths)
    assert_close(o1, o2, 1e-6)
    assert_close(h1, h2, 1e-6)
    (ga,) = grads(o1.sum() + c1.sum(), [x], None)
    (gb,) = grads(o2.sum() + c2.sum(), [x], None)
    assert_close(ga, gb, 1e-5)


@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("lengths", [None, [3, 1]])
def test_layer_without_saving_matches_and_opcheck(D, lengths):
    args = _layer_args(3, 2, 3, 4, D, lengths=lengths)
    full = torch.ops.fastcrnn.lstm_layer(*args)
    lean = torch.ops.fastcrnn.lstm_layer(*args, False)
    for a, b in zip(full[:3], lean[:3]):
        assert_close(b, a, 0.0)
    assert all(t.numel() == 0 for t in lean[3:])
    torch.library.opcheck(torch.ops.fastcrnn.lstm_layer.default, tuple(args) + (False,))
    # the public wrapper saves exactly when a gradient may be needed
    for a in args[:6]:
        a.requires_grad_(True)
    out, _, _ = fastcrnn.lstm_layer(*args[:6], lengths=args[6])
    assert_close(
        grads(out.sum(), [args[0]], None)[0],
        grads(torch.ops.fastcrnn.lstm_layer(*args)[0].sum(), [args[0]], None)[0],
        1e-12,
    )
    with torch.no_grad():
        out2, _, _ = fastcrnn.lstm_layer(*args[:6], lengths=args[6])
    assert_close(out2, out.detach(), 0.0)
    with pytest.raises(RuntimeError, match="save_for_backward"):
        torch.ops.fastcrnn.lstm_layer(*args, False)[0].sum().backward()


def _ulps(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """|got - want| in units in the last place of float32 at want (float64 want)."""
    w32 = want.float().abs()
    ulp = (torch.nextafter(w32, torch.tensor(float("inf"))) - w32).double()
    return (got.double() - want).abs() / ulp


@pytest.mark.parametrize("save", [True, False])
def test_float32_step_tanh_within_2_ulp(save):
    """The float32 step kernel's own tanh (a polynomial below |x| = 0.55, exp-based above):
    with the input and output gates saturated (sigmoid(30) is 1 in float32), no forget term
    and identity weights, one step's c_n is tanh(g) and h_n is tanh(c_n), each within 2 ulp of
    float64 tanh, over tiny, mid-range, branch-edge and saturating values of both signs."""
    mags = torch.cat(
        [
            torch.logspace(-30, 1.5, 600, dtype=torch.float64),
            torch.linspace(0.5, 0.6, 200, dtype=torch.float64),
            torch.tensor([0.0, 0.55, 1e30], dtype=torch.float64),
        ]
    ).float()
    g = torch.cat([mags, -mags])
    H = 32  # whole vectors: the vectorized path on every instruction set
    g = torch.cat([g, g[: (-g.numel()) % H]]).view(-1, H)  # (N, H)
    N = g.shape[0]
    gates = torch.cat([torch.full((N, H), 30.0), torch.zeros(N, H), g, torch.full((N, H), 30.0)], 1)
    x = gates.unsqueeze(0)  # (T=1, N, 4H): the identity input weight passes it through exactly
    zeros = torch.zeros(1, N, H)
    _, h_n, c_n, *_ = torch.ops.fastcrnn.lstm_layer(
        x, zeros, zeros, torch.eye(4 * H), torch.zeros(1, 4 * H, H), None, None, save
    )
    assert _ulps(c_n[0], g.double().tanh()).max() <= 2
    assert _ulps(h_n[0], c_n[0].double().tanh()).max() <= 2


@pytest.mark.parametrize(
    "num_threads, N", [(1, 4), (2, 4), (4, 40), (3, 40)], indirect=["num_threads"]
)
def test_bidirectional_on_one_to_four_threads(num_threads, N):
    """Two threads run the directions side by side (with inference mode's thread state), one
    thread runs them in turn, four threads split 40 sequences into two lanes per direction
    (three: one lane per direction and a thread left over): all match torch, values and
    gradients, with lengths."""
    ref, ours = _pair(5, 6, 2, True)
    x = torch.randn(7, N, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.randint(1, 8, (N,))
    lengths[0] = 7
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    a, _ = pad_packed_sequence(ref(packed)[0], total_length=7)
    b, (bh, bc) = ours(x, lengths=lengths)
    assert_close(b, a, 1e-12)
    g = torch.randn_like(a)
    _assert_same_grads(ref, ours, a, b, [x], g, atol=1e-10)
    with torch.inference_mode():
        c, _ = ours(x, lengths=lengths)
    assert_close(c, b.detach(), 0.0)


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True)
@pytest.mark.parametrize("N, H", [(16, 128), (16, 129), (130, 70)])
def test_one_direction_recurrent_gemm_on_one_or_two_threads(num_threads, N, H):
    """One direction's per-step recurrent products against the packed W_hh (csrc/kernels/gemm.h),
    split over two threads or not, at sizes that cross the kernel's blocks: odd H (a part-filled
    column panel), N above one row block, 4H above one depth block backward. Values and
    gradients match torch, with lengths and 2 layers."""
    ref, ours = _pair(7, H, 2, False)
    x = torch.randn(6, N, 7, dtype=torch.float64, requires_grad=True)
    lengths = torch.randint(1, 7, (N,))
    lengths[0] = 6
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    a, (ah, ac) = ref(packed)
    a, _ = pad_packed_sequence(a, total_length=6)
    b, (bh, bc) = ours(x, lengths=lengths)
    for u, v, name in ((a, b, "output"), (ah, bh, "h_n"), (ac, bc, "c_n")):
        assert_close(v, u, 1e-12, what=name)
    g = [torch.randn_like(t) for t in (a, ah, ac)]
    _assert_same_grads(ref, ours, (a, ah, ac), (b, bh, bc), [x], g, atol=1e-10)


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("N", [16, 40])
def test_one_direction_split_gemm_in_reduced_precision(num_threads, dtype, N):
    """CPU bfloat16 / float16 layers keep ATen's GEMMs: on two threads 16 sequences split each
    step's products into two column halves side by side (odd H: unequal halves backward), 40
    run as two lanes of 20 sequences each; both thread counts agree with the float64
    computation on the same rounded weights."""
    H = 129
    ref, ours = _pair(7, H, 1, False)
    low = LSTM(7, H).to(dtype)
    low.load_state_dict(ours.state_dict())
    ours.load_state_dict(low.state_dict())  # the weights as rounded to dtype
    x = torch.randn(6, N, 7, dtype=torch.float64).to(dtype)
    xl = x.clone().requires_grad_(True)
    xd = x.double().requires_grad_(True)
    out_low, _ = low(xl)
    out_ref, _ = ours(xd)
    assert_close(out_low.double(), out_ref, 2e-2, 2e-2, what="output")
    g = torch.randn_like(out_ref)
    (gl,) = torch.autograd.grad(out_low, xl, g.to(dtype))
    (gd,) = torch.autograd.grad(out_ref, xd, g)
    assert_close(gl.double(), gd, 5e-2, 5e-2, what="grad input")


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True)
@pytest.mark.parametrize("bias", [False, True])
def test_cell_split_gemm_on_two_threads(num_threads, bias):
    """A cell step with >= 1M multiply-adds (N*4H*(I+H)) on two threads computes its gates as
    two column halves side by side (with and without bias): values and every gradient match
    nn.LSTMCell; on one thread it is one GEMM."""
    N, I, H = 16, 100, 131
    ref = torch.nn.LSTMCell(I, H, bias=bias).double()
    x, h, c = (torch.randn(N, k, dtype=torch.float64, requires_grad=True) for k in (I, H, H))
    w_ih, w_hh = ref.weight_ih, ref.weight_hh
    b = ref.bias_ih + ref.bias_hh if bias else None
    h1, c1 = ref(x, (h, c))
    h2, c2 = fastcrnn.lstm_cell(x, h, c, w_ih, w_hh, b)
    assert_close(h2, h1, 1e-12, what="h")
    assert_close(c2, c1, 1e-12, what="c")
    g = [torch.randn_like(h1), torch.randn_like(c1)]
    leaves = [x, h, c] + list(ref.parameters())
    for u, v in zip(grads((h1, c1), leaves, g), grads((h2, c2), leaves, g)):
        assert_close(v, u, 1e-11)


def _cell_pair(dtype=torch.float64):
    ref = torch.nn.LSTMCell(4, 3).to(dtype)
    ours = LSTMCell(4, 3).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _check_cell(ref, ours, atol=1e-12):
    x = torch.randn(5, 4, dtype=ref.weight_ih.dtype)
    hx = (torch.randn(5, 3, dtype=x.dtype), torch.randn(5, 3, dtype=x.dtype))
    for a, b in zip(ref(x, hx), ours(x, hx)):
        assert_close(b, a, atol)


def _check_lstm(ref, ours, atol=1e-12):
    x = torch.randn(4, 2, ref.input_size, dtype=ref.weight_ih_l0.dtype)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            a, (ah, ac) = ref(x)
            b, (bh, bc) = ours(x)
        assert_close(b, a, atol)
        assert_close(bc, ac, atol)


@pytest.mark.parametrize("kind", ["cell", "lstm"])
def test_deepcopy_and_pickle_have_their_own_parameters(kind):
    import copy
    import io

    ref, ours = _cell_pair() if kind == "cell" else _pair(3, 4, 2, True)
    check = _check_cell if kind == "cell" else _check_lstm
    check(ref, ours)
    clone = copy.deepcopy(ours)
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    with torch.no_grad():
        for p in ours.parameters():
            p.mul_(-1)
    check(ref, clone)  # the copies have their own parameters
    check(ref, loaded)
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(-1)
    check(ref, ours)


def test_cell_under_compile_fullgraph_sees_updates():
    torch._dynamo.reset()
    ref, ours = _cell_pair(torch.float32)
    x = torch.randn(5, 4, requires_grad=True)
    hx = (torch.randn(5, 3), torch.randn(5, 3))
    compiled = torch.compile(lambda x, hx: ours(x, hx), fullgraph=True, backend="aot_eager")
    for _ in range(2):  # the second call after an update: no stale weights in or out of the graph
        h1, c1 = compiled(x, hx)
        h2, c2 = ref(x, hx)
        assert_close(h1, h2, 1e-6)
        assert_close(c1, c2, 1e-6)
        _assert_same_grads(ref, ours, h2.sum() + c2.sum(), h1.sum() + c1.sum(), [x], atol=1e-5)
        with torch.no_grad():
            for p, q in zip(ref.parameters(), ours.parameters()):
                p.add_(0.1)
                q.add_(0.1)
        _check_cell(ref, ours, 1e-6)


# ---------------------------------------------------------------------------------------------
# dtypes, autocast, instruction sets, random shapes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_reduced_precision_layer(dtype):
    ref64, ours = _pair(8, 16, 1, True)
    ours = ours.to(dtype)
    x = torch.randn(5, 3, 8, dtype=torch.float64)
    o, (h, c) = ours(x.to(dtype))
    assert o.dtype == h.dtype == c.dtype == dtype
    ref = LSTM(8, 16, bidirectional=True).double()
    ref.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    ro, (rh, rc) = ref(x.to(dtype).double())
    tol = 3e-2 if dtype == torch.bfloat16 else 5e-3
    assert_close(o.double(), ro, tol)
    assert_close(c.double(), rc, tol)


def test_cpu_autocast_runs_in_bfloat16():
    _, ours = _pair(8, 16, 2, True, dtype=torch.float32)
    x = torch.randn(5, 3, 8, requires_grad=True)
    # (nn.LSTM itself runs CPU autocast through oneDNN's bf16 LSTM, which this CPU's oneDNN
    # rejects; we compare against our own float32 result instead)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o, (h, c) = ours(x)
    assert o.dtype == h.dtype == c.dtype == torch.bfloat16
    full, _ = ours(x)
    assert_close(o.float(), full, 3e-2)
    o.float().sum().backward()  # gradients reach the float32 leaves
    assert x.grad is not None and x.grad.dtype == torch.float32
    assert ours.weight_ih_l0.grad is not None
    cell = LSTMCell(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h1, c1 = cell(x[0])
    assert h1.dtype == torch.bfloat16


def test_every_cpu_isa_variant(cpu_isa):
    """Each compiled instruction-set variant of the step and product kernels, in a fresh
    process: float32 and float64 against nn.LSTM, at sizes that take the packed-weight input
    product (T * N >= 128 rows) with a part-filled last column strip (4H = 44) and the depth
    blocks backward (4H = 520)."""
    code = (
        "import torch, fastcrnn\n"
        "from fastcrnn.nn import LSTM\n"
        f"assert fastcrnn.build_info()['cpu_isa'] == {cpu_isa!r}\n"
        "torch.manual_seed(0)\n"
        "for H, N, dtype, tol in [(11, 3, torch.float32, 2e-5), (11, 40, torch.float32, 2e-5),\n"
        "                         (130, 40, torch.float64, 1e-10)]:\n"
        "    ref = torch.nn.LSTM(5, H, 2, bidirectional=True).to(dtype)\n"
        "    m = LSTM(5, H, 2, bidirectional=True).to(dtype); m.load_state_dict(ref.state_dict())\n"
        "    x = torch.randn(6, N, 5, dtype=dtype, requires_grad=True)\n"
        "    a, b = ref(x)[0], m(x)[0]\n"
        "    torch.testing.assert_close(b, a, atol=tol, rtol=0)\n"
        "    ga, = torch.autograd.grad(a.sum(), [x]); gb, = torch.autograd.grad(b.sum(), [x])\n"
        "    torch.testing.assert_close(gb, ga, atol=tol, rtol=0)\n"
    )
    run_with_cpu_isa(cpu_isa, code)


@settings(max_examples=12, deadline=None)
@given(**recurrent_sizes(max_hidden=9, max_layers=2), seed=st.integers(0, 1000))
def test_random_shapes_with_lengths(T, N, I, H, layers, bidirectional, seed):
    torch.manual_seed(seed)
    _, ours = _pair(I, H, layers, bidirectional)
    D = 2 if bidirectional else 1
    x = torch.randn(T, N, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(layers * D, N, H, dtype=torch.float64)
    c0 = torch.randn(layers * D, N, H, dtype=torch.float64)
    lengths = torch.randint(0, T + 1, (N,))
    out, (h, c) = ours(x, (h0, c0), lengths=lengths)
    params = dict(ours.named_parameters())
    ro, (rh, rc) = reference.lstm(x, params, layers, bidirectional, (h0, c0), lengths)
    assert_close(out, ro, 1e-12)
    assert_close(h, rh, 1e-12)
    assert_close(c, rc, 1e-12)
    ga = grads(out.sum() + c.sum(), [x] + list(params.values()), None)
    gb = grads(ro.sum() + rc.sum(), [x] + list(params.values()), None)
    for a, b in zip(ga, gb):
        assert_close(a, b, 1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    T, N, I, H = 10, 7, 24, 32
    torch.manual_seed(1)
    cpu = LSTM(I, H, 2, bidirectional=True).double()
    gpu = LSTM(I, H, 2, bidirectional=True).to("cuda", dtype)
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(T, N, I, dtype=torch.float64)
    lengths = torch.tensor([10, 3, 7, 1, 10, 0, 5])
    xg = x.to("cuda", dtype).requires_grad_(True)
    xc = xg.detach().double().cpu().requires_grad_(True)
    oc, (hc, cc) = cpu(xc, lengths=lengths)
    og, (hg, cg) = gpu(xg, lengths=lengths.cuda())
    tol = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    assert og.dtype == cg.dtype == dtype
    assert_close(og.double().cpu(), oc, tol)
    assert_close(cg.double().cpu(), cc, tol)
    (oc.sum() + cc.sum()).backward()
    (og.float().sum() + cg.float().sum()).backward()
    assert_close(xg.grad.double().cpu(), xc.grad, tol * 10)
    for a, b in zip(cpu.parameters(), gpu.parameters()):
        assert_close(b.grad.double().cpu(), a.grad, tol * 20 * max(1.0, a.grad.abs().max().item()))


def test_cuda_autocast_and_cell():
    ref, ours = _pair(16, 32, 2, True, dtype=torch.float32, device="cuda")
    x = torch.randn(9, 4, 16, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        o, (h, c) = ours(x)
        ro, _ = ref(x)
    assert o.dtype == ro.dtype == torch.float16
    assert_close(o.float(), ro.float(), 1e-2)
    cref = torch.nn.LSTMCell(16, 32).cuda()
    cell = LSTMCell(16, 32).cuda()
    cell.load_state_dict(cref.state_dict())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = cref(x[0]), cell(x[0])
    assert b[0].dtype == torch.bfloat16
    assert_close(b[0].float(), a[0].float(), 3e-2)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def test_bad_input_raises():
    m = LSTM(4, 5, 2, bidirectional=True)
    x = torch.randn(6, 3, 4)
    with pytest.raises(ValueError, match="input_size"):
        m(torch.randn(6, 3, 7))
    with pytest.raises(ValueError, match="input"):
        m(torch.randn(2, 6, 3, 4))
    with pytest.raises(ValueError, match="h0"):
        m(x, (torch.zeros(4, 2, 5), torch.zeros(4, 3, 5)))
    with pytest.raises(ValueError, match="c0"):
        m(x, (torch.zeros(4, 3, 5), torch.zeros(2, 3, 5)))
    with pytest.raises(TypeError, match="h0"):
        m(x, (torch.zeros(4, 3, 5, dtype=torch.float64), torch.zeros(4, 3, 5)))
    with pytest.raises(ValueError, match="h0"):
        m(x, (torch.zeros(4, 3, 5, device="meta"), torch.zeros(4, 3, 5)))
    with pytest.raises(TypeError, match="dtype"):
        m(x.double())
    with pytest.raises(TypeError, match="input"):
        m(x.long())
    with pytest.raises(ValueError, match="lengths"):
        m(x, lengths=[7, 1, 1])
    with pytest.raises(ValueError, match="lengths"):
        m(x, lengths=torch.tensor([7, 1, 1]))
    with pytest.raises(ValueError, match="lengths"):
        m(x, lengths=torch.tensor([-1, 1, 1]))
    with pytest.raises(ValueError, match="lengths"):
        m(x, lengths=torch.tensor([1, 1]))
    with pytest.raises(TypeError, match="lengths"):
        m(x, lengths=torch.tensor([1.0, 1.0, 1.0]))
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 1]))
    with pytest.raises(ValueError, match="lengths"):
        m(packed, lengths=[6, 2, 1])
    with pytest.raises(NotImplementedError, match="proj_size"):
        LSTM(4, 5, proj_size=2)
    with pytest.raises(ValueError, match="dropout"):
        LSTM(4, 5, dropout=1.5)
    with pytest.raises(ValueError, match="hidden_size"):
        LSTM(4, 0)
    with pytest.raises(ValueError, match="backend"):
        LSTM(4, 5, backend="cudnn")


def test_bad_op_and_cell_input_raises():
    args = _layer_args(3, 2, 3, 4, 2, dtype=torch.float32)
    with pytest.raises(ValueError, match="weight_ih"):
        fastcrnn.lstm_layer(args[0], args[1], args[2], args[3][:, :2], args[4], args[5])
    with pytest.raises(ValueError, match="weight_hh"):
        fastcrnn.lstm_layer(args[0], args[1], args[2], args[3], args[4][:, :, :3], args[5])
    with pytest.raises(ValueError, match="bias"):
        fastcrnn.lstm_layer(args[0], args[1], args[2], args[3], args[4], args[5][:3])
    with pytest.raises(TypeError, match="weight_ih"):
        fastcrnn.lstm_layer(args[0], args[1], args[2], args[3].double(), args[4], args[5])
    # the C++ op checks too (what the Python wrapper relies on)
    with pytest.raises(ValueError, match="lengths"):
        torch.ops.fastcrnn.lstm_layer(*args[:6], torch.tensor([4, 1]))
    with pytest.raises(ValueError, match="h0"):
        torch.ops.fastcrnn.lstm_layer(args[0], args[1][:, :1], *args[2:6], None)
    with pytest.raises(TypeError, match="input"):
        torch.ops.fastcrnn.lstm_layer(args[0].long(), *args[1:6], None)
    cell = LSTMCell(4, 5)
    with pytest.raises(ValueError, match="input_size"):
        cell(torch.randn(3, 6))
    with pytest.raises(ValueError, match="hx"):
        cell(torch.randn(3, 4), (torch.randn(2, 5), torch.randn(3, 5)))
    with pytest.raises(TypeError, match="dtype"):
        cell(torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="1D or 2D"):
        cell(torch.randn(2, 3, 4))
