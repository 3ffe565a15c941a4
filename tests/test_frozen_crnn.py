"""FrozenCRNN: the CPU inference snapshot of a CRNN equals the eval-mode network (both variants,
activations, backends, widths, batches, dtypes), decodes as ctc_greedy_decode does, never
follows later changes to its source, and rejects what it cannot serve."""

import pytest
import torch
from helpers import assert_close, randomise_batchnorm
from torch import nn

import fastcrnn
from fastcrnn.nn import CRNN, FrozenCRNN

SMALL = (8, 16, 16, 16, 24, 24, 24)
CONFIGS = [
    # (variant, leaky_relu, output, backend, channels, winograd_min_channels)
    ("crnn.pytorch", False, "log_probs", "fused", None, 128),
    ("crnn.pytorch", True, "logits", "torch", SMALL, 16),
    ("crnn.pytorch", False, "logits", "fused", SMALL, 1),
    ("seed", False, "log_probs", "fused", SMALL, 1),
    ("seed", True, "log_probs", "torch", SMALL, 10**9),
]


def _model(variant, leaky, output, backend, channels, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = CRNN(
        32,
        1,
        11,
        16,
        variant=variant,
        leaky_relu=leaky,
        output=output,
        backend=backend,
        channels=channels,
    ).to(dtype)
    randomise_batchnorm(model)
    return model.eval()


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("N,W", [(1, 100), (3, 57), (2, 200), (4, 32)])
def test_equals_eval_model(config, N, W):
    *spec, min_channels = config
    model = _model(*spec)
    frozen = FrozenCRNN(model, winograd_min_channels=min_channels)
    images = torch.rand(N, 1, 32, W)
    with torch.no_grad():
        expected = model(images)
    out = frozen(images)
    assert_close(out, expected, atol=1e-5, rtol=1e-5, what=str(config))
    with torch.inference_mode():
        assert torch.equal(frozen(images), out)


def test_default_crnn_float32_within_1e5():
    """The full-size default network (the one served), every 3x3 layer from 64 channels by
    Winograd: eval outputs within 1e-5."""
    model = _model("crnn.pytorch", False, "log_probs", "fused", None)
    frozen = FrozenCRNN(model)
    methods = [(step.method, step.fused_pool) for step in frozen.cnn if hasattr(step, "method")]
    assert methods == [("direct", True)] + [("winograd", False)] * 5 + [("onednn", False)]
    for N, W in ((1, 100), (5, 160)):
        images = torch.rand(N, 1, 32, W)
        with torch.no_grad():
            assert_close(frozen(images), model(images), atol=1e-5, rtol=0, what=f"{N}x{W}")


def test_float64_matches_tightly():
    model = _model("crnn.pytorch", True, "logits", "fused", SMALL, dtype=torch.float64)
    frozen = FrozenCRNN(model, winograd_min_channels=1)
    images = torch.rand(3, 1, 32, 64, dtype=torch.float64)
    with torch.no_grad():
        assert_close(frozen(images), model(images), atol=1e-11, rtol=1e-11)


def test_decode_equals_greedy_decode_of_the_model():
    model = _model("crnn.pytorch", False, "log_probs", "fused", SMALL)
    frozen = FrozenCRNN(model)
    images = torch.rand(4, 1, 32, 90)
    decoded, logits = frozen.decode(images)
    with torch.no_grad():
        log_probs = model(images)
    assert_close(logits.log_softmax(2), log_probs, atol=1e-5, rtol=1e-5)
    expected = fastcrnn.ctc_greedy_decode(log_probs)
    assert torch.equal(decoded.tokens, expected.tokens)
    assert torch.equal(decoded.lengths, expected.lengths)
    assert torch.equal(decoded.token_frames, expected.token_frames)
    assert_close(decoded.token_probs, expected.token_probs, atol=1e-5, rtol=1e-5)


def test_snapshot_does_not_follow_the_source():
    """Freezing copies: training the source afterwards (fused optimizer steps, p.data writes,
    load_state_dict, BatchNorm statistics) leaves the frozen outputs exactly as they were."""
    model = _model("crnn.pytorch", False, "log_probs", "fused", SMALL)
    frozen = FrozenCRNN(model)
    images = torch.rand(2, 1, 32, 64)
    before = frozen(images)
    with torch.no_grad():
        old = model(images)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    model.train()
    model(images).sum().backward()
    opt.step()
    with torch.no_grad():
        for p in model.parameters():
            p.data.mul_(1.5)
    model.load_state_dict({k: v + 0.25 for k, v in model.state_dict().items()})
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(images), old)
    assert torch.equal(frozen(images), before)
    refreshed = FrozenCRNN(model)
    with torch.no_grad():
        assert_close(refreshed(images), model(images), atol=1e-5, rtol=1e-5)


def test_frozen_holds_no_reference_to_source_tensors():
    model = _model("crnn.pytorch", False, "log_probs", "fused", SMALL)
    frozen = FrozenCRNN(model)
    sources = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
    for name, buf in frozen.named_buffers():
        assert buf.untyped_storage().data_ptr() not in sources, name


def test_output_length_and_shapes():
    model = _model("crnn.pytorch", False, "log_probs", "fused", SMALL)
    frozen = FrozenCRNN(model)
    for W in (4, 7, 100, 333):
        out = frozen(torch.rand(2, 1, 32, W))
        assert out.shape == (model.output_length(W), 2, 11)
        assert frozen.output_length(W) == model.output_length(W)
    assert frozen(torch.rand(0, 1, 32, 50)).shape == (model.output_length(50), 0, 11)


def test_bad_arguments_raise():
    model = _model("crnn.pytorch", False, "log_probs", "fused", SMALL)
    with pytest.raises(TypeError, match="model must be a fastcrnn.nn.CRNN"):
        FrozenCRNN(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="winograd_min_channels must be an int"):
        FrozenCRNN(model, winograd_min_channels=1.5)
    with pytest.raises(TypeError, match="float32 or float64"):
        FrozenCRNN(_model("crnn.pytorch", False, "log_probs", "fused", SMALL).half())
    frozen = FrozenCRNN(model)
    cases = [
        (torch.rand(2, 1, 32), ValueError, "images must have shape"),
        (torch.rand(2, 3, 32, 50), ValueError, "images must have shape"),
        (torch.rand(2, 1, 16, 50), ValueError, "images must have shape"),
        (torch.rand(2, 1, 32, 50, dtype=torch.float64), TypeError, "images must be torch.float32"),
        (torch.rand(2, 1, 32, 3), ValueError, "too small"),
        ([[0.0]], TypeError, "images must be a torch.Tensor"),
    ]
    for images, error, match in cases:
        with pytest.raises(error, match=match):
            frozen(images)
