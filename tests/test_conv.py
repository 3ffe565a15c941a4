"""Winograd F(2x2, 3x3) convolution (fastcrnn.ops.winograd_conv3x3) against torch's conv2d."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, run_with_cpu_isa

from fastcrnn.ops.conv import conv3x3_direct, winograd_conv3x3, winograd_weight


def _reference(x, w, scale=None, shift=None, negative_slope=None):
    y = F.conv2d(x, w, padding=1)
    K = w.shape[0]
    if scale is not None:
        y = y * scale.view(1, K, 1, 1)
    if shift is not None:
        y = y + shift.view(1, K, 1, 1)
    if negative_slope is not None:
        y = F.leaky_relu(y, negative_slope)
    return y


def _case(N, C, H, W, K, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, generator=g, dtype=dtype)
    w = torch.randn(K, C, 3, 3, generator=g, dtype=dtype) / (3 * C**0.5)
    scale = torch.rand(K, generator=g, dtype=dtype) + 0.5
    shift = torch.randn(K, generator=g, dtype=dtype)
    return x, w, scale, shift


# (N, C, H, W, K): odd and even sizes, 1-pixel images, channel counts that are not a multiple
# of any vector width, and the CRNN's own layer shapes
SHAPES = [
    (1, 1, 1, 1, 1),
    (2, 3, 1, 5, 4),
    (1, 5, 7, 9, 6),
    (3, 17, 4, 26, 9),
    (2, 8, 2, 2, 33),
    (1, 64, 16, 50, 128),
    (2, 256, 4, 26, 512),
    (3, 3, 32, 100, 4),  # 2400 tiles: the tiles go in chunks, the last one shorter
    (1, 300, 5, 9, 20),  # a product deeper than one k-block; a part-filled last panel
    (2, 70, 12, 40, 17),  # 240 tiles: two row blocks of the product, the last one shorter
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("epilogue", ["none", "relu", "leaky", "affine_relu", "affine"])
def test_matches_conv2d_float64(shape, epilogue):
    x, w, scale, shift = _case(*shape, torch.float64)
    kwargs = {
        "none": {},
        "relu": {"negative_slope": 0.0},
        "leaky": {"negative_slope": 0.2},
        "affine_relu": {"scale": scale, "shift": shift, "negative_slope": 0.0},
        "affine": {"scale": scale, "shift": shift},
    }[epilogue]
    out = winograd_conv3x3(x, w, **kwargs)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_close(out, _reference(x, w, **kwargs), atol=1e-12, rtol=1e-12, what=str(shape))


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_conv2d_float32(shape):
    x, w, scale, shift = _case(*shape, torch.float32, seed=1)
    out = winograd_conv3x3(x, w, scale, shift, 0.0)
    expected = _reference(x.double(), w.double(), scale.double(), shift.double(), 0.0)
    # the transforms add and subtract up to 4 inputs before the products and 9 after: a few
    # float32 ulps of the sums' magnitude, which grows as sqrt(9 C)
    assert_close(
        out.double(),
        expected,
        atol=2e-5 * max(1.0, (9 * shape[1]) ** 0.25),
        rtol=1e-5,
        what=str(shape),
    )


@pytest.mark.parametrize("dtype, P", [(torch.float64, 16), (torch.float32, 32)])
@pytest.mark.parametrize("K", [7, 16, 40])
def test_transformed_weight_equals_raw_weight(K, dtype, P):
    """Panels of 128 bytes: P output channels each."""
    x, w, scale, shift = _case(2, 12, 6, 11, K, dtype)
    u = winograd_weight(w)
    assert u.packed.shape == (16, (K + P - 1) // P, 12, P) and u.out_channels == K
    assert torch.equal(
        winograd_conv3x3(x, u, scale, shift, 0.1), winograd_conv3x3(x, w, scale, shift, 0.1)
    )
    # the packing pads the last panel with zeros
    assert not u.packed[:, -1, :, K % P or P :].any()


def test_packed_weight_needs_its_out_channels():
    x, w, _, _ = _case(1, 5, 4, 4, 20, torch.float32)
    u = winograd_weight(w)
    op = torch.ops.fastcrnn.winograd_conv3x3
    with pytest.raises(ValueError, match="out_channels is needed"):
        op(x, u.packed, None, None, None)
    shape_error = r"for 40 output channels must have shape \(16, 2, C, 32\)"
    with pytest.raises(ValueError, match=shape_error):
        op(x, u.packed, None, None, None, 40)
    with pytest.raises(ValueError, match=r"out_channels \(21\) must equal weight's K \(20\)"):
        op(x, w, None, None, None, 21)
    # 20..32 output channels share the packed shape; the extra ones read the zero padding
    assert op(x, u.packed, None, None, None, 32)[:, 20:].abs().max() == 0


def test_any_input_layout():
    x, w, scale, shift = _case(2, 6, 5, 8, 4, torch.float64)
    expected = winograd_conv3x3(x.contiguous(memory_format=torch.channels_last), w)
    sliced = torch.randn(2, 12, 5, 16, dtype=torch.float64)[:, ::2, :, ::2]
    sliced.copy_(x)
    for variant in (x, x.contiguous(), sliced):
        assert torch.equal(winograd_conv3x3(variant, w), expected)


def test_empty_batch():
    x, w, _, _ = _case(1, 3, 4, 4, 5, torch.float32)
    out = winograd_conv3x3(x[:0], w)
    assert out.shape == (0, 5, 4, 4)


def test_every_cpu_isa_variant(cpu_isa):
    """The kernel is compiled per instruction set; each variant gives the float64 reference."""
    code = """
import torch, torch.nn.functional as F
from fastcrnn.ops.conv import winograd_conv3x3
g = torch.Generator().manual_seed(3)
x = torch.randn(2, 19, 7, 13, generator=g, dtype=torch.float64)
w = torch.randn(11, 19, 3, 3, generator=g, dtype=torch.float64)
s = torch.rand(11, generator=g, dtype=torch.float64)
out = winograd_conv3x3(x, w, s, -s, 0.3)
ref = F.leaky_relu(F.conv2d(x, w, padding=1) * s.view(1, -1, 1, 1) - s.view(1, -1, 1, 1), 0.3)
assert (out - ref).abs().max().item() < 1e-11, (out - ref).abs().max().item()
x32, w32, s32 = x.float(), w.float(), s.float()
out32 = winograd_conv3x3(x32, w32, s32, -s32, 0.3)
assert (out32.double() - ref).abs().max().item() < 1e-4
from fastcrnn.ops.conv import conv3x3_direct
xd = x[:, :3]
wd = w[:, :3]
ref = F.max_pool2d(F.relu(F.conv2d(xd, wd, s, padding=1)), 2, 2)
assert (conv3x3_direct(xd, wd, None, s, 0.0, True) - ref).abs().max().item() < 1e-11
print("ok")
"""
    assert run_with_cpu_isa(cpu_isa, code).strip() == "ok"


def test_opcheck_and_compile():
    x, w, scale, shift = _case(2, 5, 6, 7, 3, torch.float32)
    op = torch.ops.fastcrnn.winograd_conv3x3
    torch.library.opcheck(op, (x, w, scale, shift, 0.0))
    torch.library.opcheck(op, (x, w, None, None, None))
    torch.library.opcheck(torch.ops.fastcrnn.winograd_weight, (w,))
    u = winograd_weight(w)
    torch.library.opcheck(op, (x, u.packed, None, shift, 0.2, u.out_channels))

    compiled = torch.compile(
        lambda a, b, c, d: winograd_conv3x3(a, b, c, d, 0.0), fullgraph=True, backend="aot_eager"
    )
    with torch.no_grad():
        assert torch.equal(compiled(x, w, scale, shift), winograd_conv3x3(x, w, scale, shift, 0.0))


def test_bad_arguments_raise():
    x, w, scale, shift = _case(2, 4, 5, 5, 3, torch.float32)
    cases = [
        ((x.double(), w), TypeError, "weight must have the dtype of input"),
        ((x.half(), w.half()), TypeError, "input must be float32 or float64"),
        ((x[0], w), ValueError, "input must have shape"),
        ((x, w[:, :2]), ValueError, "input channels"),
        ((x, w[..., :2]), ValueError, r"weight must have shape \(K, C, 3, 3\)"),
        ((x, w.reshape(3, 4, 9)), ValueError, r"packed Winograd weight \(16, ceil\(K / 32\)"),
        ((x[:, :, :0], w), ValueError, "non-empty image"),
        ((x, w, scale[:2]), ValueError, "scale must have shape"),
        ((x, w, None, shift.double()), TypeError, "shift must have the dtype"),
        ((x, w, None, None, float("nan")), ValueError, "negative_slope must be finite"),
        ((x, w, None, None, "relu"), TypeError, "negative_slope must be a float"),
        ((x.numpy(), w), TypeError, "input must be a torch.Tensor"),
        ((x, w.to("meta")), ValueError, "weight must be a CPU tensor"),
    ]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            winograd_conv3x3(*args)
    with pytest.raises(ValueError, match="weight must have at least one"):
        winograd_weight(w[:0])
    leaf = w.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="no_grad"):
        winograd_conv3x3(x, leaf)
    with torch.no_grad():
        winograd_conv3x3(x, leaf)


@pytest.mark.parametrize("H,W", list(itertools.product((1, 2, 3, 8), (1, 2, 5, 26))))
def test_border_tiles(H, W):
    """Partial tiles at the bottom and right border are cut, never written past the image."""
    x, w, scale, shift = _case(2, 3, H, W, 4, torch.float64, seed=H * 31 + W)
    out = winograd_conv3x3(x, w, scale, shift, 0.0)
    assert_close(out, _reference(x, w, scale, shift, 0.0), atol=1e-12, rtol=1e-12)


# ---- the direct kernel for narrow inputs, with the fused 2x2 max-pool -------------------------

DIRECT_SHAPES = [
    (1, 1, 1, 1, 1),
    (2, 1, 32, 100, 64),
    (3, 1, 32, 57, 64),
    (2, 3, 5, 7, 9),
    (1, 4, 2, 3, 33),
    (2, 2, 9, 4, 70),
]


@pytest.mark.parametrize(
    "shape,max_pool",
    [(s, pool) for s in DIRECT_SHAPES for pool in (False, True) if not pool or min(s[2:4]) >= 2],
)
@pytest.mark.parametrize("epilogue", ["none", "relu", "affine_leaky"])
def test_direct_matches_conv2d_and_pool_float64(shape, max_pool, epilogue):
    x, w, scale, shift = _case(*shape, torch.float64, seed=7)
    kwargs = {
        "none": {},
        "relu": {"shift": shift, "negative_slope": 0.0},
        "affine_leaky": {"scale": -scale, "shift": shift, "negative_slope": 0.2},
    }[epilogue]
    expected = _reference(x, w, **kwargs)
    if max_pool:
        expected = F.max_pool2d(expected, 2, 2)
    out = conv3x3_direct(x, w, max_pool=max_pool, **kwargs)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_close(out, expected, atol=1e-12, rtol=1e-12, what=f"{shape} {epilogue}")


def test_direct_float32_crnn_first_layer():
    x, w, scale, shift = _case(4, 1, 32, 100, 64, torch.float32, seed=2)
    out = conv3x3_direct(x, w, None, shift, 0.0, True)
    expected = F.max_pool2d(F.relu(F.conv2d(x, w, shift, padding=1)), 2, 2)
    assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_direct_nan_propagates_through_the_pool():
    x, w, _, _ = _case(1, 1, 4, 4, 3, torch.float32)
    x[0, 0, 1, 1] = float("nan")
    out = conv3x3_direct(x, w, max_pool=True)
    expected = F.max_pool2d(F.conv2d(x, w, padding=1), 2, 2)
    assert torch.equal(out.isnan(), expected.isnan())


def test_direct_bad_arguments_raise():
    x, w, scale, shift = _case(2, 1, 5, 5, 3, torch.float32)
    cases = [
        ((x.double(), w), {}, TypeError, "weight must have the dtype of input"),
        ((x, w[..., :2]), {}, ValueError, r"weight must have shape \(K, C, 3, 3\)"),
        ((x, winograd_weight(w).packed), {}, ValueError, r"weight must have shape \(K, C, 3, 3\)"),
        ((x[:, :, :1], w), {"max_pool": True}, ValueError, "at least 2 x 2"),
        ((x, w), {"max_pool": 1}, TypeError, "max_pool must be a bool"),
        ((x, w, scale[:1]), {}, ValueError, "scale must have shape"),
    ]
    for args, kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            conv3x3_direct(*args, **kwargs)


def test_direct_opcheck():
    x, w, scale, shift = _case(2, 2, 6, 7, 5, torch.float32)
    op = torch.ops.fastcrnn.conv3x3_direct
    torch.library.opcheck(op, (x, w, scale, shift, 0.0, True))
    torch.library.opcheck(op, (x, w, None, None, None, False))
