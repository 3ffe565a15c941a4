"""fastcrnn.ctc_loss / ctc_loss_from_logits / nn.CTCLoss against torch.nn.functional.ctc_loss."""

import functools

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close_nan, run_with_cpu_isa, value_and_grad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastcrnn
import fastcrnn.nn
from fastcrnn import reference

HSET = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def make_case(
    T,
    N,
    C,
    blank=0,
    max_len=None,
    gen=None,
    repeats=False,
    dtype=torch.float64,
    device="cpu",
    min_il=0,
    impossible_ok=True,
):
    """Random log_probs (from random logits, never constant), padded targets, lengths."""
    g = gen or torch.Generator().manual_seed(0)
    max_len = T if max_len is None else max_len
    logits = torch.randn(T, N, C, generator=g, dtype=torch.float64) * 2
    labels = [c for c in range(C) if c != blank]
    pool = torch.tensor(labels[:2] if repeats else labels)
    S = max(max_len, 1)
    targets = pool[torch.randint(0, len(pool), (N, S), generator=g)]
    il = torch.randint(min_il, T + 1, (N,), generator=g)
    tl = torch.randint(0, max_len + 1, (N,), generator=g)
    if not impossible_ok:
        tl = torch.minimum(tl, il // 2)
    return (logits.to(device=device, dtype=dtype), targets.to(device), il.to(device), tl.to(device))


def concat(targets, tl):
    return (
        torch.cat([targets[n, : int(tl[n])] for n in range(targets.shape[0])])
        if targets.shape[0]
        else targets.new_zeros(0)
    )


# ---------------------------------------------------------------- values and gradients vs torch


@HSET
@given(data=st.data())
def test_matches_torch_float64_hypothesis(data):
    T = data.draw(st.integers(1, 200), label="T")
    N = data.draw(st.integers(1, 16), label="N")
    C = data.draw(st.integers(2, 100), label="C")
    blank = data.draw(st.integers(0, C - 1), label="blank")
    max_len = data.draw(st.integers(0, min(T, 60)), label="max_len")
    repeats = data.draw(st.booleans(), label="repeats")
    reduction = data.draw(st.sampled_from(["none", "sum", "mean"]), label="reduction")
    zero_inf = data.draw(st.booleans(), label="zero_infinity")
    layout = data.draw(st.sampled_from(["padded", "concat"]), label="layout")
    itype = data.draw(st.sampled_from([torch.int32, torch.int64]), label="int dtype")
    as_list = data.draw(st.booleans(), label="lengths as lists")
    noncontig = data.draw(st.booleans(), label="non-contiguous")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    logits, targets, il, tl = make_case(
        T, N, C, blank, max_len, torch.Generator().manual_seed(seed), repeats
    )
    lp = logits.log_softmax(-1)
    if noncontig:
        lp = lp.transpose(0, 1).contiguous().transpose(0, 1)  # (T, N, C) with n outermost
    tg = (concat(targets, tl) if layout == "concat" else targets).to(itype)
    il_, tl_ = (il.tolist(), tl.tolist()) if as_list else (il.to(itype), tl.to(itype))
    kw = dict(blank=blank, reduction=reduction, zero_infinity=zero_inf)
    ours, g_ours = value_and_grad(fastcrnn.ctc_loss, lp, tg, il_, tl_, **kw)
    ref, g_ref = value_and_grad(F.ctc_loss, lp, tg, il_, tl_, **kw)
    assert ours.dtype == torch.float64
    assert_close_nan(ours, ref, 1e-9, 1e-9)
    assert_close_nan(g_ours, g_ref, 1e-8, 1e-9)
    # the fused variant from the logits themselves
    ours_l, g_ours_l = value_and_grad(fastcrnn.ctc_loss_from_logits, logits, tg, il_, tl_, **kw)
    ref_l, g_ref_l = value_and_grad(
        lambda x, *a, **k: F.ctc_loss(x.log_softmax(-1), *a, **k), logits, tg, il_, tl_, **kw
    )
    assert_close_nan(ours_l, ref_l, 1e-9, 1e-9)
    assert_close_nan(g_ours_l, g_ref_l, 1e-8, 1e-9)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("shape", [(26, 8, 37, 20), (50, 4, 600, 20), (120, 3, 10, 40)])
def test_matches_torch_float32(shape, reduction):
    """float32 against torch's float64 result; float32 torch itself is held to the same bound."""
    T, N, C, L = shape
    logits, targets, il, tl = make_case(T, N, C, 0, L, dtype=torch.float32, min_il=T // 2)
    lp = logits.log_softmax(-1)
    kw = dict(reduction=reduction)
    ours, g_ours = value_and_grad(fastcrnn.ctc_loss, lp, targets, il, tl, **kw)
    ref32, g_ref32 = value_and_grad(F.ctc_loss, lp, targets, il, tl, **kw)
    ref, g_ref = value_and_grad(F.ctc_loss, lp.double(), targets, il, tl, **kw)
    assert ours.dtype == torch.float32
    for value, grad in ((ours, g_ours), (ref32, g_ref32)):
        assert_close_nan(value.double(), ref, 1e-5, 1e-5)
        assert_close_nan(grad.double(), g_ref, 1e-3, 4e-4)
    ours_l, g_l = value_and_grad(fastcrnn.ctc_loss_from_logits, logits, targets, il, tl, **kw)
    _, g_ref_l = value_and_grad(
        lambda x, *a, **k: F.ctc_loss(x.log_softmax(-1), *a, **k),
        logits.double(),
        targets,
        il,
        tl,
        **kw,
    )
    assert_close_nan(ours_l.double(), ref, 1e-5, 1e-4)
    assert_close_nan(g_l.double(), g_ref_l, 1e-3, 4e-4)


def test_matches_readable_reference():
    logits, targets, il, tl = make_case(12, 3, 6, blank=2, max_len=5, repeats=True)
    lp = logits.log_softmax(-1)
    for red in ("none", "sum", "mean"):
        assert_close_nan(
            fastcrnn.ctc_loss(lp, targets, il, tl, blank=2, reduction=red),
            reference.ctc_loss(lp, targets, il, tl, blank=2, reduction=red),
            1e-9,
            1e-9,
        )


def test_edge_cases_against_torch():
    g = torch.Generator().manual_seed(3)
    lp = torch.randn(6, 5, 4, generator=g, dtype=torch.float64).log_softmax(-1)
    targets = torch.tensor([[1, 1, 2], [1, 2, 3], [3, 3, 3], [1, 2, 1], [2, 2, 2]])
    il = torch.tensor([0, 6, 5, 2, 6])  # empty input, full, repeats need blanks, too short
    tl = torch.tensor([0, 3, 3, 3, 0])  # empty target(s)
    for zi in (False, True):
        ours, g1 = value_and_grad(
            fastcrnn.ctc_loss, lp, targets, il, tl, reduction="none", zero_infinity=zi
        )
        ref, g2 = value_and_grad(
            F.ctc_loss, lp, targets, il, tl, reduction="none", zero_infinity=zi
        )
        assert_close_nan(ours, ref, 1e-10, 1e-10)
        assert_close_nan(g1, g2, 1e-10, 1e-10)
        assert torch.isinf(ours[3]) != zi and (ours[3] == 0) == zi
    # impossible without zero_infinity: inf loss and NaN gradient on the valid frames, like torch
    _, g1 = value_and_grad(fastcrnn.ctc_loss, lp, targets, il, tl, reduction="none")
    assert torch.isnan(g1[:2, 3]).all() and (g1[2:, 3] == 0).all()


def test_frames_beyond_input_length_get_zero_gradient_and_are_ignored():
    logits, targets, il, tl = make_case(20, 4, 7, max_len=4, min_il=10)
    il = torch.tensor([10, 20, 15, 12])
    lp = logits.log_softmax(-1)
    base, g = value_and_grad(fastcrnn.ctc_loss, lp, targets, il, tl, reduction="none")
    for n in range(4):
        assert (g[il[n] :, n] == 0).all()
        assert (g[: il[n], n] != 0).any()
    poisoned = lp.clone()
    for n in range(4):
        poisoned[il[n] :, n] = float("nan")
    assert_close_nan(fastcrnn.ctc_loss(poisoned, targets, il, tl, reduction="none"), base, 0, 0)


def test_nan_inside_input_length_gives_nan_for_that_sample():
    logits, targets, il, tl = make_case(10, 3, 5, max_len=3, min_il=10)
    lp = logits.log_softmax(-1)
    lp[2, 1, 0] = float("nan")
    loss = fastcrnn.ctc_loss(lp, targets, il, tl, reduction="none")
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lane_groups_mix_lengths_and_dead_samples(dtype):
    """The CPU kernels run samples in groups of SIMD lanes, sorted by state count: a group then
    mixes input lengths, target lengths and samples without a recursion (empty input, empty
    target, impossible, zero_infinity), and the last group is partial. Every sample must come
    out as it does alone, in value and gradient."""
    g = torch.Generator().manual_seed(11)
    T, C, N = 30, 9, 21
    lp = torch.randn(T, N, C, generator=g, dtype=torch.float64).log_softmax(-1).to(dtype)
    tl = torch.tensor([0, 1, 5, 14, 3, 15, 2, 9, 0, 7, 12, 4, 6, 13, 1, 8, 10, 11, 3, 2, 15])
    il = torch.tensor(
        [30, 0, 30, 28, 3, 15, 17, 30, 0, 12, 25, 30, 5, 26, 1, 30, 19, 22, 9, 30, 30]
    )
    targets = torch.randint(1, C, (N, 15), generator=g)
    targets[3, :4] = 4  # repeated labels
    for zi in (False, True):
        ours, g_ours = value_and_grad(
            fastcrnn.ctc_loss, lp, targets, il, tl, reduction="none", zero_infinity=zi
        )
        ref, g_ref = value_and_grad(
            F.ctc_loss, lp.double(), targets, il, tl, reduction="none", zero_infinity=zi
        )
        tol = 1e-9 if dtype == torch.float64 else 1e-5
        assert_close_nan(ours.double(), ref, tol, tol)
        assert_close_nan(g_ours.double(), g_ref, 100 * tol, 100 * tol)
        for n in (0, 5, 12, 20):  # alone, each in a group of its own
            alone = fastcrnn.ctc_loss(
                lp[:, n : n + 1],
                targets[n : n + 1],
                il[n : n + 1],
                tl[n : n + 1],
                reduction="none",
                zero_infinity=zi,
            )
            assert_close_nan(alone, ours[n : n + 1], 0, 0)


def test_long_sequence_float32_accuracy():
    g = torch.Generator().manual_seed(7)
    T, L, C = 2000, 500, 30
    lp = torch.randn(T, 1, C, generator=g, dtype=torch.float64).log_softmax(-1)
    targets = torch.randint(1, C, (1, L), generator=g)
    il, tl = torch.tensor([T]), torch.tensor([L])
    ref = F.ctc_loss(lp, targets, il, tl, reduction="sum")
    ours32, g32 = value_and_grad(fastcrnn.ctc_loss, lp.float(), targets, il, tl, reduction="sum")
    assert abs(ours32.double() - ref) / ref < 1e-4
    # the gradient is exp(alpha + beta + nll - lp): at |nll| ~ 5e3 float32 rounding of the
    # exponent costs ~1e-3 relative, for torch's float32 kernel just as for ours
    _, g64 = value_and_grad(F.ctc_loss, lp, targets, il, tl, reduction="sum")
    _, g_torch32 = value_and_grad(F.ctc_loss, lp.float(), targets, il, tl, reduction="sum")
    torch_err = (g_torch32.double() - g64).abs().max()
    assert (g32.double() - g64).abs().max() <= 1.5 * torch_err + 1e-4


def test_unbatched_and_lists():
    logits, targets, il, tl = make_case(15, 1, 6, max_len=5, min_il=15)
    lp = logits.log_softmax(-1)
    for red in ("none", "sum", "mean"):
        ours = fastcrnn.ctc_loss(
            lp[:, 0], targets[0, : int(tl[0])], int(il[0]), int(tl[0]), reduction=red
        )
        ref = F.ctc_loss(lp[:, 0], targets[0, : int(tl[0])], il[0], tl[0], reduction=red)
        assert ours.shape == ref.shape == ()
        assert_close_nan(ours, ref, 1e-10, 1e-10)
    ours = fastcrnn.ctc_loss(lp, targets, tuple(il.tolist()), tuple(tl.tolist()))
    assert_close_nan(ours, F.ctc_loss(lp, targets, il, tl), 1e-10, 1e-10)


def test_strided_class_axis():
    logits, targets, il, tl = make_case(12, 3, 9, max_len=4, min_il=8)
    lp = logits.log_softmax(-1)
    wide = torch.zeros(12, 3, 18, dtype=lp.dtype)
    wide[..., ::2] = lp
    view = wide[..., ::2]
    assert view.stride(2) == 2
    ours, g1 = value_and_grad(fastcrnn.ctc_loss, view, targets, il, tl)
    ref, g2 = value_and_grad(F.ctc_loss, lp, targets, il, tl)
    assert_close_nan(ours, ref, 1e-10, 1e-10)
    assert_close_nan(g1, g2, 1e-10, 1e-10)


def test_half_and_bfloat16_on_cpu_compute_in_float32():
    logits, targets, il, tl = make_case(20, 4, 8, max_len=5, dtype=torch.float32, min_il=12)
    for dt in (torch.float16, torch.bfloat16):
        lp = logits.log_softmax(-1).to(dt)
        ours, g = value_and_grad(fastcrnn.ctc_loss, lp, targets, il, tl)
        assert ours.dtype == torch.float32 and g.dtype == dt
        ref = F.ctc_loss(lp.float(), targets, il, tl)
        assert_close_nan(ours, ref, 1e-5, 1e-5)


def test_autocast_computes_in_float32():
    logits, targets, il, tl = make_case(20, 4, 8, max_len=5, dtype=torch.float32, min_il=12)
    lin = torch.nn.Linear(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp = lin(logits).log_softmax(-1)
        ours = fastcrnn.ctc_loss(lp, targets, il, tl)
        ref = F.ctc_loss(lp, targets, il, tl)
        h = lin(logits)
        assert h.dtype == torch.bfloat16
        ours_l = fastcrnn.ctc_loss_from_logits(h, targets, il, tl)
    assert ours.dtype == ref.dtype == torch.float32
    assert_close_nan(ours, ref, 1e-5, 1e-5)
    ref_l = F.ctc_loss(h.float().log_softmax(-1), targets, il, tl)
    assert ours_l.dtype == torch.float32
    assert_close_nan(ours_l, ref_l, 1e-4, 1e-4)
    ours.backward()


# ---------------------------------------------------------------- autograd machinery


def test_gradcheck_composite_and_from_logits():
    logits, targets, il, tl = make_case(7, 3, 5, max_len=3, min_il=5, impossible_ok=False)
    x = logits.detach().requires_grad_()
    for red in ("none", "mean", "sum"):
        assert torch.autograd.gradcheck(
            lambda v: fastcrnn.ctc_loss(v.log_softmax(-1), targets, il, tl, reduction=red), (x,)
        )
        assert torch.autograd.gradcheck(
            lambda v: fastcrnn.ctc_loss_from_logits(v, targets, il, tl, reduction=red), (x,)
        )


def test_gradcheck_zero_infinity_int32_lengths_and_concatenated():
    logits, targets, il, tl = make_case(7, 4, 5, max_len=4, min_il=2)
    il, tl = il.to(torch.int32), tl.to(torch.int32)
    tl[0], il[0] = 4, 2  # impossible: zeroed by zero_infinity
    x = logits.detach().requires_grad_()
    for red in ("none", "mean", "sum"):
        for tg in (targets, concat(targets, tl)):
            assert torch.autograd.gradcheck(
                lambda v: fastcrnn.ctc_loss_from_logits(
                    v, tg, il, tl, reduction=red, zero_infinity=True
                ),
                (x,),
            )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("from_logits", [False, True])
def test_double_backward_raises(reduction, from_logits):
    logits, targets, il, tl = make_case(6, 2, 4, max_len=2, min_il=6)
    x = logits.detach().requires_grad_()
    fn = fastcrnn.ctc_loss_from_logits if from_logits else fastcrnn.ctc_loss
    loss = fn(x if from_logits else x.log_softmax(-1), targets, il, tl, reduction=reduction)
    (g,) = torch.autograd.grad(loss.sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        g.sum().backward()


def test_autograd_node_reaches_log_probs_only():
    logits, targets, il, tl = make_case(8, 3, 5, max_len=3, min_il=6)
    lp = logits.log_softmax(-1).detach().requires_grad_()
    loss = fastcrnn.ctc_loss(lp, targets, il, tl)
    # one node for forward, zero_infinity and reduction, with one edge: to log_probs
    assert loss.grad_fn is not None and "CtcLossFunction" in loss.grad_fn.name()
    edges = [fn for fn, _ in loss.grad_fn.next_functions if fn is not None]
    assert len(edges) == 1 and edges[0].variable is lp
    (g,) = torch.autograd.grad(loss, lp)
    assert g.shape == lp.shape and g.dtype == lp.dtype


def test_no_grad_paths_record_nothing():
    logits, targets, il, tl = make_case(8, 3, 5, max_len=3, dtype=torch.float32, min_il=6)
    lp = logits.log_softmax(-1)
    ref = F.ctc_loss(lp, targets, il, tl)
    plain = fastcrnn.ctc_loss(lp, targets, il, tl)  # requires_grad=False input
    assert plain.grad_fn is None and not plain.requires_grad
    lp_g = lp.detach().requires_grad_()
    with torch.no_grad():
        quiet = fastcrnn.ctc_loss(lp_g, targets, il, tl)
        outs = torch.ops.fastcrnn.ctc_loss_forward(lp_g, targets, il, tl, 0, False, False, True)
    assert quiet.grad_fn is None and all(o.grad_fn is None for o in outs)
    assert_close_nan(plain, ref, 1e-6, 1e-6)
    assert_close_nan(quiet, ref, 1e-6, 1e-6)
    with torch.inference_mode():
        assert_close_nan(fastcrnn.ctc_loss(lp_g, targets, il, tl), ref, 1e-6, 1e-6)


def test_forward_op_autograd_matches_loss():
    """torch.ops.fastcrnn.ctc_loss_forward keeps its own autograd (nll differentiable only)."""
    logits, targets, il, tl = make_case(9, 3, 6, max_len=4, min_il=5)
    x = logits.detach().requires_grad_()
    nll, alpha, norms = torch.ops.fastcrnn.ctc_loss_forward(
        x, targets, il, tl, 0, True, False, True
    )
    assert not alpha.requires_grad and not norms.requires_grad
    (g_op,) = torch.autograd.grad(nll.sum(), x)
    _, g_loss = value_and_grad(
        fastcrnn.ctc_loss_from_logits, logits, targets, il, tl, reduction="sum"
    )
    assert_close_nan(g_op, g_loss, 0, 0)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_reductions_match_torch_with_zero_infinity(reduction):
    logits, targets, il, tl = make_case(10, 6, 5, max_len=6, min_il=3)
    for dtype, tol, gtol in ((torch.float64, 1e-10, 1e-10), (torch.float32, 1e-5, 1e-4)):
        lp = logits.to(dtype).log_softmax(-1)
        for zi in (False, True):
            ours, g1 = value_and_grad(
                fastcrnn.ctc_loss, lp, targets, il, tl, reduction=reduction, zero_infinity=zi
            )
            ref, g2 = value_and_grad(
                F.ctc_loss, lp, targets, il, tl, reduction=reduction, zero_infinity=zi
            )
            assert ours.dtype == dtype and ours.shape == ref.shape
            assert_close_nan(ours, ref, tol, tol)
            assert_close_nan(g1, g2, gtol, gtol)


def test_deterministic():
    logits, targets, il, tl = make_case(
        40, 16, 50, max_len=15, dtype=torch.float32, impossible_ok=False
    )
    a = value_and_grad(fastcrnn.ctc_loss_from_logits, logits, targets, il, tl)
    b = value_and_grad(fastcrnn.ctc_loss_from_logits, logits, targets, il, tl)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("from_logits", [False, True])
def test_opcheck(device, from_logits):
    logits, targets, il, tl = make_case(
        9, 3, 6, max_len=4, dtype=torch.float32, device=device, min_il=5
    )
    x = logits if from_logits else logits.log_softmax(-1)
    x = x.detach().requires_grad_()
    torch.library.opcheck(
        torch.ops.fastcrnn.ctc_loss_forward, (x, targets, il, tl, 0, from_logits, False, True)
    )
    nll, alpha, norms = torch.ops.fastcrnn.ctc_loss_forward(
        x.detach(), targets, il, tl, 0, from_logits, False, True
    )
    torch.library.opcheck(
        torch.ops.fastcrnn.ctc_loss_backward,
        (
            torch.rand(3, device=device),
            x.detach(),
            targets,
            il,
            tl,
            nll,
            alpha,
            norms,
            0,
            from_logits,
            True,
        ),
        test_utils=("test_schema", "test_faketensor"),
    )
    for reduction in (0, 1, 2):  # the composite: at::Reduction none, mean, sum
        for zero_infinity in (False, True):
            torch.library.opcheck(
                torch.ops.fastcrnn.ctc_loss,
                (x, targets, il, tl, 0, reduction, zero_infinity, from_logits, True),
            )


def test_torch_compile_fullgraph():
    logits, targets, il, tl = make_case(16, 4, 7, max_len=5, dtype=torch.float32, min_il=10)

    def f(x):
        return fastcrnn.ctc_loss(
            x.log_softmax(-1), targets, il, tl
        ) + fastcrnn.ctc_loss_from_logits(x, targets, il, tl, reduction="sum")

    x1 = logits.detach().requires_grad_()
    x2 = logits.detach().requires_grad_()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(x1)
    out.backward()
    ref = f(x2)
    ref.backward()
    assert_close_nan(out, ref, 1e-6, 1e-6)
    assert_close_nan(x1.grad, x2.grad, 1e-6, 1e-6)


def test_module_matches_torch_module():
    logits, targets, il, tl = make_case(20, 5, 9, blank=3, max_len=6, dtype=torch.float64)
    lp = logits.log_softmax(-1)
    for red in ("none", "sum", "mean"):
        ours = fastcrnn.nn.CTCLoss(blank=3, reduction=red, zero_infinity=True)
        ref = torch.nn.CTCLoss(blank=3, reduction=red, zero_infinity=True)
        assert_close_nan(ours(lp, targets, il, tl), ref(lp, targets, il, tl), 1e-10, 1e-10)
        fused = fastcrnn.nn.CTCLoss(blank=3, reduction=red, zero_infinity=True, from_logits=True)
        backend = fastcrnn.nn.CTCLoss(
            blank=3, reduction=red, zero_infinity=True, from_logits=True, backend="torch"
        )
        assert_close_nan(
            fused(logits, targets, il, tl), backend(logits, targets, il, tl), 1e-10, 1e-10
        )
    assert "from_logits=True" in repr(fused)


def test_cpu_isa_variants_agree():
    code = (
        "import torch, fastcrnn, torch.nn.functional as F\n"
        "g = torch.Generator().manual_seed(1)\n"
        "x = torch.randn(30, 5, 40, generator=g)\n"
        "t = torch.randint(1, 40, (5, 10), generator=g)\n"
        "il = torch.full((5,), 30); tl = torch.randint(0, 11, (5,), generator=g)\n"
        "x.requires_grad_()\n"
        "a = fastcrnn.ctc_loss_from_logits(x, t, il, tl, reduction='sum'); a.backward()\n"
        "y = x.detach().requires_grad_()\n"
        "b = F.ctc_loss(y.log_softmax(-1), t, il, tl, reduction='sum'); b.backward()\n"
        "assert fastcrnn.build_info()['cpu_isa'] == 'default'\n"
        "torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)\n"
        "torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-5)\n"
    )
    run_with_cpu_isa("default", code)


# ---------------------------------------------------------------- bad input


def _bad_cases():
    lp = torch.randn(10, 2, 5).log_softmax(-1)
    t = torch.tensor([[1, 2, 3], [1, 1, 4]])
    il = torch.tensor([10, 8])
    tl = torch.tensor([3, 2])
    f = fastcrnn.ctc_loss
    return [
        ("negative input length", lambda: f(lp, t, torch.tensor([-1, 8]), tl), "input_lengths"),
        ("input length > T", lambda: f(lp, t, torch.tensor([11, 8]), tl), "input_lengths"),
        ("input length > T list", lambda: f(lp, t, [11, 8], tl), "input_lengths"),
        ("negative target length", lambda: f(lp, t, il, torch.tensor([-1, 2])), "target_lengths"),
        ("target length > S", lambda: f(lp, t, il, torch.tensor([4, 2])), "target_lengths"),
        ("target < 0", lambda: f(lp, torch.tensor([[1, -2, 3], [1, 1, 4]]), il, tl), "targets"),
        ("target >= C", lambda: f(lp, torch.tensor([[1, 5, 3], [1, 1, 4]]), il, tl), "targets"),
        ("target == blank", lambda: f(lp, torch.tensor([[1, 0, 3], [1, 1, 4]]), il, tl), "targets"),
        ("target == blank 2", lambda: f(lp, t, il, tl, blank=3), "targets"),
        ("wrong dims", lambda: f(lp[0, 0], t, il, tl), "log_probs"),
        ("wrong target dims", lambda: f(lp, t[None], il, tl), "targets"),
        ("batch mismatch input_lengths", lambda: f(lp, t, torch.tensor([10]), tl), "input_lengths"),
        ("batch mismatch target_lengths", lambda: f(lp, t, il, [3, 2, 1]), "target_lengths"),
        ("batch mismatch targets", lambda: f(lp, t[:1], il, tl), "targets"),
        ("short concatenated", lambda: f(lp, torch.tensor([1, 2, 3, 1]), il, tl), "targets"),
        (
            "short concatenated list",
            lambda: f(lp, torch.tensor([1, 2, 3, 1]), il, [3, 2]),
            "targets",
        ),
        ("int log_probs", lambda: f(lp.long(), t, il, tl), "log_probs"),
        ("float targets", lambda: f(lp, t.float(), il, tl), "targets"),
        ("float lengths", lambda: f(lp, t, il.float(), tl), "input_lengths"),
        ("unknown reduction", lambda: f(lp, t, il, tl, reduction="avg"), "reduction"),
        ("blank out of range", lambda: f(lp, t, il, tl, blank=5), "blank"),
        ("non-tensor", lambda: f(lp.tolist(), t, il, tl), "log_probs"),
        ("meta targets", lambda: f(lp, t.to("meta"), il, tl), "targets"),
        (
            "logits variant",
            lambda: fastcrnn.ctc_loss_from_logits(lp, t, il, [4, 2]),
            "target_lengths",
        ),
    ]


@pytest.mark.parametrize("name,call,arg", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_input_raises(name, call, arg):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=arg):
        call()


def test_bad_module_arguments():
    with pytest.raises(ValueError, match="backend"):
        fastcrnn.nn.CTCLoss(backend="cudnn")
    with pytest.raises(ValueError, match="reduction"):
        fastcrnn.nn.CTCLoss(reduction="avg")


# ---------------------------------------------------------------- workspace width and the
# value checks the CUDA op runs (one device flag, one host sync); logic tested here on the CPU


def _width_case():
    g = torch.Generator().manual_seed(11)
    T, N, C = 80, 8, 20
    lp = torch.randn(T, N, C, generator=g, dtype=torch.float64).log_softmax(-1)
    tl = torch.tensor([30, 5, 0, 17, 30, 2, 9, 12])
    targets = torch.randint(1, C, (N, 40), generator=g)
    il = torch.full((N,), T)
    return lp, targets, il, tl


def test_workspace_width_concatenated_equals_padded():
    """log_alpha's width comes from ctc_workspace_width (csrc/ops/ctc.cpp), the function both the
    CPU and the CUDA op call: 2 * min(longest target, T) + 1 when the values are validated, so
    1-D concatenated targets (whose static bound, the sum of the lengths, can reach 2T + 1
    states) take exactly the padded case's memory."""
    lp, targets, il, tl = _width_case()
    T = lp.shape[0]
    cat = concat(targets, tl)
    assert cat.numel() == int(tl.sum()) > T  # the static bound would give 2T + 1
    fwd = torch.ops.fastcrnn.ctc_loss_forward
    longest = int(tl.max())
    widths = {}
    for name, tg in (("padded", targets[:, :longest]), ("concatenated", cat)):
        nll, alpha, _ = fwd(lp, tg, il, tl, 0, False, False, True)
        widths[name] = alpha.shape[2]
        assert alpha.shape == (lp.shape[1], T, 2 * longest + 1)
        assert_close_nan(nll, F.ctc_loss(lp, tg, il, tl, reduction="none"), 1e-10, 1e-10)
    assert widths["padded"] == widths["concatenated"] == 2 * longest + 1
    # unvalidated (traced) calls keep the static width, which the fake kernel computes
    _, alpha, _ = fwd(lp, cat, il, tl, 0, False, False, False)
    assert alpha.shape[2] == 2 * min(cat.numel(), T) + 1
    _, alpha, _ = fwd(lp, targets, il, tl, 0, False, False, False)
    assert alpha.shape[2] == 2 * targets.shape[1] + 1
    # and the gradients are the same either way
    _, g_pad = value_and_grad(fastcrnn.ctc_loss, lp, targets, il, tl, reduction="sum")
    _, g_cat = value_and_grad(fastcrnn.ctc_loss, lp, cat, il, tl, reduction="sum")
    assert_close_nan(g_cat, g_pad, 0, 0)


def test_workspace_width_short_input_and_backward_checks_the_width():
    lp, targets, il, tl = _width_case()
    short = lp[:10]  # T = 10 < longest target: the width is capped at 2T + 1
    il10 = torch.full_like(il, 10)
    nll, alpha, norms = torch.ops.fastcrnn.ctc_loss_forward(
        short, targets, il10, tl, 0, False, False, True
    )
    assert alpha.shape[2] == 21
    assert_close_nan(nll, F.ctc_loss(short, targets, il10, tl, reduction="none"), 1e-10, 1e-10)
    bwd = torch.ops.fastcrnn.ctc_loss_backward
    g = torch.ones(lp.shape[1], dtype=lp.dtype)
    nll, alpha, norms = torch.ops.fastcrnn.ctc_loss_forward(
        lp, targets, il, tl, 0, False, False, True
    )
    want = bwd(g, lp, targets, il, tl, nll, alpha, norms, 0, False, False)
    # a log_alpha too narrow for the longest target (or even-width, or wider than the static
    # bound) is refused instead of read past its rows
    for bad in (alpha[:, :, :-2], alpha[:, :, :-1], torch.cat([alpha] * 3, 2)):
        with pytest.raises(ValueError, match="log_alpha"):
            bwd(g, lp, targets, il, tl, nll, bad.contiguous(), norms, 0, False, False)
    # the backward of an unvalidated (static-width) forward gives the same gradient
    nll_s, alpha_s, norms_s = torch.ops.fastcrnn.ctc_loss_forward(
        lp, targets, il, tl, 0, False, False, False
    )
    assert alpha_s.shape[2] > alpha.shape[2]
    assert_close_nan(
        bwd(g, lp, targets, il, tl, nll_s, alpha_s, norms_s, 0, False, False), want, 0, 0
    )


def _value_cases():
    """(targets, input_lengths, target_lengths, blank, message) on lp (T=10, N=2, C=5)."""
    t = torch.tensor([[1, 2, 3], [1, 1, 4]])
    il, tl = torch.tensor([10, 8]), torch.tensor([3, 2])
    return [
        ("negative input length", t, torch.tensor([-1, 8]), tl, 0, "input_lengths"),
        ("input length > T", t, torch.tensor([11, 8]), tl, 0, "input_lengths"),
        ("negative target length", t, il, torch.tensor([-1, 2]), 0, "target_lengths"),
        ("target length > S", t, il, torch.tensor([4, 2]), 0, "target_lengths"),
        (
            "target length > len(targets)",
            torch.tensor([1, 2, 3]),
            il,
            torch.tensor([4, 0]),
            0,
            "target_lengths",
        ),
        ("short concatenated", torch.tensor([1, 2, 3, 1]), il, tl, 0, "concatenated targets"),
        ("target < 0", torch.tensor([[1, -2, 3], [1, 1, 4]]), il, tl, 0, "targets must lie"),
        ("target >= C", torch.tensor([[1, 5, 3], [1, 1, 4]]), il, tl, 0, "targets must lie"),
        ("target == blank", torch.tensor([[1, 0, 3], [1, 1, 4]]), il, tl, 0, "targets must lie"),
        ("target == blank 2", t, il, tl, 3, "targets must lie"),
        (
            "concatenated target == blank",
            torch.tensor([1, 2, 3, 1, 0]),
            il,
            tl,
            0,
            "targets must lie",
        ),
    ]


@pytest.mark.parametrize("case", _value_cases(), ids=[c[0] for c in _value_cases()])
def test_device_value_checks_agree_with_the_cpu_checks(case):
    """torch.ops.fastcrnn._ctc_check_values is check_ctc_values, the CUDA op's validation (every
    check folded into one device flag fetched in one copy), run here on CPU tensors: it must
    reject exactly what the CPU op's loops reject, with the same message."""
    _, t, il, tl, blank, msg = case
    lp = torch.randn(10, 2, 5).log_softmax(-1)
    with pytest.raises(ValueError, match=msg):
        torch.ops.fastcrnn.ctc_loss_forward(lp, t, il, tl, blank, False, False, True)
    with pytest.raises(ValueError, match=msg):
        torch.ops.fastcrnn._ctc_check_values(il, t, tl, 10, 5, blank)


def test_device_value_checks_accept_valid_input_and_return_the_longest_target():
    check = torch.ops.fastcrnn._ctc_check_values
    t = torch.tensor([[1, 2, 3], [1, 0, 0]])  # padding beyond a length is never read
    assert check(torch.tensor([10, 8]), t, torch.tensor([3, 1]), 10, 5, 0) == 3
    assert (
        check(
            torch.tensor([10, 8], dtype=torch.int32),
            torch.tensor([4, 1, 2]),
            torch.tensor([1, 2], dtype=torch.int32),
            10,
            5,
            0,
        )
        == 2
    )
    assert check(torch.tensor([0, 0]), t, torch.tensor([0, 0]), 10, 5, 0) == 0
    assert (
        check(
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, 3, dtype=torch.long),
            torch.zeros(0, dtype=torch.long),
            10,
            5,
            0,
        )
        == 0
    )


# ---------------------------------------------------------------- CUDA
# Float32 tolerances. The gradient is p - exp(alpha + beta - lp + nll): the exponent is a sum of
# terms as large as the loss (nll ~ T * log C), each float32 lse step rounding at |value| * 2^-24,
# and over T frames those errors add like a random walk, so the exponent, and with it each
# posterior (at most 1), is off by about 2^-24 * nll * sqrt(T). At (T, N, C) = (300, 4, 60), nll
# ~ 1.8e3: about 2e-3, where a fixed 1e-4 would fail for rounding alone. A wrong recursion is off
# by a whole posterior (0.01 to 1), so these bounds still catch it.


def _f32_grad_atol(nll, T, floor=1e-4):
    finite = nll[torch.isfinite(nll)].abs()
    big = float(finite.max()) if finite.numel() else 0.0
    return max(floor, 2.0**-24 * big * T**0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("from_logits", [False, True])
def test_cuda_matches_cpu(dtype, from_logits):
    for shape in [(26, 16, 37, 20), (50, 8, 5990, 20), (300, 4, 60, 120), (5, 3, 4, 5)]:
        T, N, C, L = shape
        logits, targets, il, tl = make_case(
            T, N, C, blank=1, max_len=L, dtype=torch.float64, repeats=(C == 4)
        )
        x = logits if from_logits else logits.log_softmax(-1)
        x = x.to(dtype)
        fn = fastcrnn.ctc_loss_from_logits if from_logits else fastcrnn.ctc_loss
        for zi in (False, True):
            kw = dict(blank=1, reduction="none", zero_infinity=zi)
            # the CPU reference in float64 from the same (rounded) input
            cpu, g_cpu = value_and_grad(fn, x.double(), targets, il, tl, **kw)
            gpu, g_gpu = value_and_grad(fn, x.cuda(), targets.cuda(), il.cuda(), tl.cuda(), **kw)
            assert gpu.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
            assert g_gpu.dtype == dtype
            if dtype == torch.float64:
                rtol, atol = 1e-9, 1e-9
            else:
                # float32 arithmetic (above), then for half / bfloat16 the gradient's storage
                # rounding (2^-11 / 2^-8 relative, on values up to 1)
                store = {torch.float32: 0.0, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
                rtol, atol = 1e-5 + store, _f32_grad_atol(cpu, T) + store
            assert_close_nan(gpu.double().cpu(), cpu, rtol, max(atol, rtol * 10))
            assert_close_nan(g_gpu.double().cpu(), g_cpu, rtol, atol)


def test_cuda_matches_torch_and_is_deterministic():
    """Possible rows only: with an impossible row (target longer than its input) torch's CUDA
    kernel, on its large-problem path, leaves finite values in that row's non-target classes
    where torch's CPU kernel and ours put NaN (see the next test)."""
    logits, targets, il, tl = make_case(
        100, 64, 600, max_len=30, dtype=torch.float32, device="cuda", impossible_ok=False
    )
    assert (tl <= il).all()
    lp = logits.log_softmax(-1)
    nll = F.ctc_loss(lp.double(), targets, il, tl, reduction="none")
    # two float32 implementations, each within the bound above of the exact gradient
    atol = 2 * _f32_grad_atol(nll, lp.shape[0])
    for red in ("none", "sum", "mean"):
        ours, g1 = value_and_grad(fastcrnn.ctc_loss, lp, targets, il, tl, reduction=red)
        ref, g2 = value_and_grad(F.ctc_loss, lp, targets, il, tl, reduction=red)
        assert_close_nan(ours, ref, 1e-5, 1e-4)
        # mean divides each sample's gradient by N * max(target length, 1)
        scale = 1.0 / lp.shape[1] if red == "mean" else 1.0
        assert_close_nan(g1, g2, 1e-4, atol * scale)
    a = value_and_grad(fastcrnn.ctc_loss_from_logits, logits, targets, il, tl)
    b = value_and_grad(fastcrnn.ctc_loss_from_logits, logits, targets, il, tl)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_cuda_impossible_rows_follow_the_documented_behaviour():
    """An impossible row (target longer than its input): loss inf and NaN gradient on its frames
    t < input_length (zeros beyond), as torch's CPU kernel; with zero_infinity loss 0 and a zero
    gradient. The other rows of the batch are unaffected."""
    logits, targets, il, tl = make_case(100, 64, 600, max_len=30, dtype=torch.float64, min_il=20)
    il[:8] = torch.arange(1, 9)  # rows 0..7 impossible
    tl[:8] = torch.arange(2, 10)
    lp = logits.log_softmax(-1)
    for zi in (False, True):
        kw = dict(reduction="none", zero_infinity=zi)
        ours, g = value_and_grad(
            fastcrnn.ctc_loss, lp.float().cuda(), targets.cuda(), il.cuda(), tl.cuda(), **kw
        )
        ref, g_ref = value_and_grad(F.ctc_loss, lp, targets, il, tl, **kw)  # torch's CPU kernel
        ours, g = ours.double().cpu(), g.double().cpu()
        for n in range(8):
            assert ours[n] == (0 if zi else float("inf"))
            Tn = int(il[n])
            if zi:
                assert (g[:, n] == 0).all()
            else:
                assert torch.isnan(g[:Tn, n]).all() and (g[Tn:, n] == 0).all()
        assert_close_nan(g[:, :8], g_ref[:, :8], 0, 0)
        atol = _f32_grad_atol(ref[8:], lp.shape[0])
        assert_close_nan(ours[8:], ref[8:], 1e-5, 1e-4)
        assert_close_nan(g[:, 8:], g_ref[:, 8:], 1e-4, atol)


def test_cuda_long_labels_and_concatenated_and_cpu_targets():
    g = torch.Generator().manual_seed(5)
    T, L, C = 2000, 700, 50  # beyond warp-ctc's 639 and cuDNN's 256 label limits
    lp = torch.randn(T, 2, C, generator=g, dtype=torch.float64).log_softmax(-1)
    targets = torch.randint(1, C, (2, L), generator=g)
    il, tl = torch.tensor([T, T - 100]), torch.tensor([L, L - 50])
    ref = F.ctc_loss(lp, targets, il, tl, reduction="none")
    ours = fastcrnn.ctc_loss(
        lp.float().cuda(), concat(targets, tl), il.cuda(), tl.cuda(), reduction="none"
    )
    assert ((ours.double().cpu() - ref).abs() / ref).max() < 1e-4
    ours_cpu_t = fastcrnn.ctc_loss(lp.cuda(), targets, il, tl, reduction="none")
    assert_close_nan(ours_cpu_t.cpu(), ref, 1e-9, 1e-9)


def test_cuda_workspace_width_follows_the_longest_target():
    """The CUDA op sizes log_alpha as the CPU one does (test_workspace_width_*): concatenated
    targets take the padded case's memory, not 2T + 1 states per sample."""
    lp, targets, il, tl = _width_case()
    cat = concat(targets, tl)
    fwd = torch.ops.fastcrnn.ctc_loss_forward
    for tg in (targets, cat):
        nll, alpha, _ = fwd(lp.cuda(), tg.cuda(), il.cuda(), tl.cuda(), 0, False, False, True)
        assert alpha.shape[2] == 2 * int(tl.max()) + 1
        assert_close_nan(nll.cpu(), F.ctc_loss(lp, tg, il, tl, reduction="none"), 1e-9, 1e-9)
        _, g = value_and_grad(
            fastcrnn.ctc_loss, lp.cuda(), tg.cuda(), il.cuda(), tl.cuda(), reduction="sum"
        )
        _, g_ref = value_and_grad(F.ctc_loss, lp, tg, il, tl, reduction="sum")
        assert_close_nan(g.cpu(), g_ref, 1e-9, 1e-9)
    _, alpha, _ = fwd(lp.cuda(), cat.cuda(), il.cuda(), tl.cuda(), 0, False, False, False)
    assert alpha.shape[2] == 2 * min(cat.numel(), lp.shape[0]) + 1


def test_cuda_validation_syncs_once(count_syncs):
    """As documented in fastcrnn/ops/ctc.py: a validated CUDA call (tensor lengths on the GPU)
    synchronises once, forward and backward together; an unvalidated one never."""
    logits, targets, il, tl = make_case(26, 16, 37, max_len=10, dtype=torch.float32, device="cuda")
    cat = concat(targets, tl).cuda()

    def validated(fn, x, tg):
        fn(x, tg, il, tl).backward()

    def unvalidated(x, tg, from_logits):  # what torch.compile / graph capture pass
        torch.ops.fastcrnn.ctc_loss(x, tg, il, tl, 0, 1, False, from_logits, False).backward()

    for tg in (targets, cat):
        for from_logits in (False, True):
            x = (logits if from_logits else logits.log_softmax(-1)).detach().requires_grad_()
            fn = fastcrnn.ctc_loss_from_logits if from_logits else fastcrnn.ctc_loss
            assert count_syncs(functools.partial(validated, fn, x, tg)) == 1
            assert count_syncs(functools.partial(unvalidated, x, tg, from_logits)) == 0
    # the check itself: one copy
    assert (
        count_syncs(lambda: torch.ops.fastcrnn._ctc_check_values(il, targets, tl, 26, 37, 0)) == 1
    )


def test_cuda_validation_and_unvalidated_bad_rows():
    lp = torch.randn(10, 2, 5, device="cuda").log_softmax(-1)
    t = torch.tensor([[1, 2, 3], [1, 0, 4]], device="cuda")
    il = torch.tensor([10, 8], device="cuda")
    tl = torch.tensor([3, 2], device="cuda")
    with pytest.raises(ValueError, match="targets"):
        fastcrnn.ctc_loss(lp, t, il, tl)
    with pytest.raises(ValueError, match="input_lengths"):
        fastcrnn.ctc_loss(lp, t.clamp(min=1), torch.tensor([11, 8], device="cuda"), tl)
    with pytest.raises(ValueError, match="targets"):
        fastcrnn.ctc_loss(lp, t.cpu(), il.cpu(), tl.cpu())
    for case in _value_cases():  # the CUDA op rejects what the CPU op rejects
        _, tg, il_, tl_, blank, msg = case
        with pytest.raises(ValueError, match=msg):
            torch.ops.fastcrnn.ctc_loss_forward(
                lp, tg.cuda(), il_.cuda(), tl_.cuda(), blank, False, False, True
            )
    nll, _, _ = torch.ops.fastcrnn.ctc_loss_forward(
        lp, t, torch.tensor([12, 8], device="cuda"), tl, 0, False, False, False
    )
    assert torch.isnan(nll).all()  # row 0: bad input length, row 1: target equal to blank


def test_cuda_graph_capture():
    """No host sync and no data-dependent size while capturing: validation is skipped (the
    wrapper passes validate=False; the op also skips it under capture when asked to validate)."""
    logits, targets, il, tl = make_case(
        26, 8, 37, max_len=10, dtype=torch.float32, device="cuda", impossible_ok=False
    )
    x = logits.clone()
    fastcrnn.ctc_loss_from_logits(x, targets, il, tl)  # warm up outside the graph
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = fastcrnn.ctc_loss_from_logits(x, targets, il, tl, reduction="none")
        nll, _, _ = torch.ops.fastcrnn.ctc_loss_forward(
            x.log_softmax(-1), targets, il, tl, 0, False, False, True
        )
    new = torch.randn_like(x)
    x.copy_(new)
    graph.replay()
    torch.cuda.synchronize()
    want = fastcrnn.ctc_loss_from_logits(new, targets, il, tl, reduction="none")
    assert torch.equal(loss, want)
    assert_close_nan(nll, want, 1e-5, 1e-5)


def test_cuda_compile_and_autocast():
    logits, targets, il, tl = make_case(
        16, 4, 7, max_len=5, dtype=torch.float32, device="cuda", min_il=10
    )
    compiled = torch.compile(
        lambda x: fastcrnn.ctc_loss_from_logits(x, targets, il, tl), fullgraph=True
    )
    assert_close_nan(
        compiled(logits), fastcrnn.ctc_loss_from_logits(logits, targets, il, tl), 1e-6, 1e-6
    )
    with torch.autocast("cuda", dtype=torch.float16):
        lp = torch.nn.functional.linear(logits, torch.eye(7, device="cuda")).log_softmax(-1)
        ours = fastcrnn.ctc_loss(lp, targets, il, tl)
    assert ours.dtype == torch.float32
