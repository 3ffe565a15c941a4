"""A CRNN frozen for CPU inference: a snapshot of an eval-mode network, prepared once.

``FrozenCRNN(model)`` copies a :class:`~fastcrnn.nn.CRNN`'s weights and prepares them for
serving: each BatchNorm that precedes its activation is folded into its convolution, the
activation runs in the convolution's epilogue, the wide 3x3 convolutions run by Winograd
F(2x2, 3x3) (:func:`fastcrnn.ops.winograd_conv3x3`) on weights transformed once, the first
(grey-image) convolution runs in a direct kernel with its 2x2 max-pool fused in
(:func:`fastcrnn.ops.conv3x3_direct`), images stay
channels-last from the first convolution to the last, both BiLSTMs run the fused LSTM op with
their weights concatenated once, and :meth:`FrozenCRNN.decode` feeds the classifier's logits
straight to the greedy decoder, which reads each frame's scores once (no log_softmax pass).

It is a snapshot, not a cache: it never looks at the source model again, so training the
source further (or loading new weights into it) does not change the frozen copy. Freeze again
to serve new weights. The outputs are the source's eval-mode outputs up to float rounding.
"""

from typing import List, NamedTuple, Optional, Tuple, Union, cast

import torch
import torch.nn.functional as F
from torch import nn

from fastcrnn.nn.crnn import CRNN, BiLSTM, output_length
from fastcrnn.ops import packed
from fastcrnn.ops._checks import require_tensor
from fastcrnn.ops.conv import WinogradWeight, conv3x3_direct, winograd_conv3x3, winograd_weight
from fastcrnn.ops.decode import GreedyDecoding, ctc_greedy_decode

__all__ = ["FrozenCRNN", "freezable"]

# Winograd pays for its input and output transforms only when the channel counts make the 16
# products the bulk of the work, as they do from the default CRNN's 64 -> 128 layer on;
# narrower 3x3 convolutions go to oneDNN's direct method.
WINOGRAD_MIN_CHANNELS = 64
# Inputs this narrow (a grey or colour image) go to the direct kernel: per output pixel there
# are too few multiplies for a GEMM, and oneDNN's layout for them is slow.
DIRECT_MAX_CHANNELS = 4


class _Affine(NamedTuple):
    scale: torch.Tensor  # (K,)
    shift: torch.Tensor  # (K,)


def _batchnorm_affine(bn: nn.Module) -> _Affine:
    """An eval-mode BatchNorm as scale * x + shift (per channel)."""
    assert isinstance(bn, nn.BatchNorm2d)
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "FrozenCRNN needs BatchNorm layers with running statistics (track_running_stats=True)"
        )
    scale = torch.rsqrt(bn.running_var.detach() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach()
    shift = -bn.running_mean.detach() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach()
    return _Affine(scale, shift)


class _FrozenConv(nn.Module):
    """conv -> (BatchNorm folded) -> activation -> (BatchNorm after the activation).

    forward((N, C, H, W) channels-last) -> (N, K, H', W') channels-last (H' = H / 2 and
    W' = W / 2, floored, when the following 2x2 max-pool is fused in: ``fused_pool``).
    """

    weight: torch.Tensor  # (16, ceil(K / P), C, P) packed Winograd-domain, or (K, C, kh, kw)
    bias: torch.Tensor  # (K,): conv bias and folded BatchNorm shift
    window_weight: Optional[torch.Tensor]  # the weight as one (K, kh * kw * C) matrix, packed
    post_scale: Optional[torch.Tensor]  # (1, K, 1, 1): a BatchNorm after the activation
    post_shift: Optional[torch.Tensor]

    def __init__(
        self,
        conv: nn.Conv2d,
        pre_bn: Optional[nn.Module],
        negative_slope: Optional[float],
        post_bn: Optional[nn.Module],
        winograd_min_channels: int,
        fuse_pool: bool = False,
    ):
        super().__init__()
        weight = conv.weight.detach().clone()
        K = weight.shape[0]
        bias = conv.bias.detach().clone() if conv.bias is not None else weight.new_zeros(K)
        if pre_bn is not None:
            fold = _batchnorm_affine(pre_bn)
            weight = weight * fold.scale.view(K, 1, 1, 1)
            bias = bias * fold.scale + fold.shift
        self.negative_slope = negative_slope
        self.padding = cast(Tuple[int, int], conv.padding)
        self.stride = conv.stride
        self.dilation = conv.dilation
        self.groups = conv.groups
        if conv.padding_mode != "zeros":
            raise ValueError(f"FrozenCRNN supports zero padding only, got {conv.padding_mode!r}")
        plain_3x3 = (
            conv.kernel_size == (3, 3)
            and conv.stride == (1, 1)
            and conv.padding == (1, 1)
            and conv.dilation == (1, 1)
            and conv.groups == 1
        )
        C = weight.shape[1]
        if plain_3x3 and min(K, C) >= winograd_min_channels:
            self.method = "winograd"
        elif plain_3x3 and C <= DIRECT_MAX_CHANNELS:
            self.method = "direct"
        else:
            self.method = "onednn"
        # the 2x2 max-pool that follows, computed in the direct kernel (which writes only the
        # pooled image); a BatchNorm after the activation would have to come before it
        self.fused_pool = self.method == "direct" and fuse_pool and post_bn is None
        self.out_channels = K
        if self.method == "winograd":
            weight = winograd_weight(weight).packed
        elif self.method == "onednn":
            weight = weight.contiguous(memory_format=torch.channels_last)
        else:
            weight = weight.contiguous()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        # The last convolution's kernel covers the whole (remaining) image height, so each
        # output column is one matrix product of a flattened input window: (K, kh * kw * C) in
        # the window's channels-last order.
        self.window = conv.kernel_size
        self.register_buffer(
            "window_weight",
            packed.pack_linear_weight(weight.permute(0, 2, 3, 1).reshape(K, -1)).packed
            if self.method == "onednn"
            else None,
        )
        post = _batchnorm_affine(post_bn) if post_bn is not None else None
        self.register_buffer("post_scale", post.scale.view(1, K, 1, 1) if post else None)
        self.register_buffer("post_shift", post.shift.view(1, K, 1, 1) if post else None)

    def _activate(self, y: torch.Tensor) -> torch.Tensor:
        if self.negative_slope == 0.0:
            return y.relu_()
        if self.negative_slope is not None:
            return F.leaky_relu(y, self.negative_slope, inplace=True)
        return y

    def to_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolution, straight to the LSTM's layout: (N, C, H, W) channels-last
        whose output height is 1 -> (T, N, K) with T the output width."""
        kh, kw = self.window
        gemm = (
            self.window_weight is not None
            and self.post_scale is None
            and x.shape[2] == kh
            and self.padding == (0, 0)
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
        )
        if not gemm or self.window_weight is None:
            return self(x).squeeze(2).permute(2, 0, 1)
        T = x.shape[3] - kw + 1
        rows = x.permute(0, 2, 3, 1)  # (N, kh, W, C), a view of channels-last memory
        windows = torch.cat(
            [rows[:, i, j : j + T].transpose(0, 1) for i in range(kh) for j in range(kw)], 2
        )  # (T, N, kh * kw * C)
        y = packed.linear_packed(
            windows.view(T * x.shape[0], windows.shape[2]),
            packed.PackedLinearWeight(self.window_weight, self.out_channels),
            self.bias,
        )
        return self._activate(y).view(T, x.shape[0], y.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "winograd":
            y = winograd_conv3x3(
                x,
                WinogradWeight(self.weight, self.out_channels),
                None,
                self.bias,
                self.negative_slope,
            )
        elif self.method == "direct":
            y = conv3x3_direct(
                x, self.weight, None, self.bias, self.negative_slope, self.fused_pool
            )
        else:
            y = F.conv2d(
                x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
            )
            # a 1-channel input leaves conv2d free to answer in NCHW; the pools and the
            # next convolutions are fast on channels-last
            y = self._activate(y.contiguous(memory_format=torch.channels_last))
        if self.post_scale is not None and self.post_shift is not None:
            y = torch.addcmul(self.post_shift, y, self.post_scale)
        return y


def _is_plain_2x2_pool(layer: nn.Module) -> bool:
    """MaxPool2d(2, 2): the pool the direct conv kernel can fuse."""

    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    return (
        isinstance(layer, nn.MaxPool2d)
        and pair(layer.kernel_size) == (2, 2)
        and pair(layer.stride) == (2, 2)
        and pair(layer.padding) == (0, 0)
        and pair(layer.dilation) == (1, 1)
        and not layer.ceil_mode
        and not layer.return_indices
    )


def _activation_slope(layer: nn.Module) -> Optional[float]:
    if isinstance(layer, nn.ReLU):
        return 0.0
    if isinstance(layer, nn.LeakyReLU):
        return float(layer.negative_slope)
    return None


def _freeze_cnn(cnn: nn.Sequential, winograd_min_channels: int) -> nn.Sequential:
    """The CRNN's feature extractor as frozen steps: each conv with the BatchNorm and activation
    that follow it in one _FrozenConv; pools as they are."""
    layers = list(cnn.children())
    steps: List[nn.Module] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        i += 1
        if isinstance(layer, nn.MaxPool2d):
            steps.append(layer)
            continue
        if not isinstance(layer, nn.Conv2d):
            raise ValueError(f"FrozenCRNN cannot freeze a {type(layer).__name__} in the CNN")
        pre_bn = post_bn = None
        slope = None
        if i < len(layers) and isinstance(layers[i], nn.BatchNorm2d):
            pre_bn = layers[i]
            i += 1
        if i < len(layers) and _activation_slope(layers[i]) is not None:
            slope = _activation_slope(layers[i])
            i += 1
            if pre_bn is None and i < len(layers) and isinstance(layers[i], nn.BatchNorm2d):
                post_bn = layers[i]
                i += 1
        fuse_pool = i < len(layers) and _is_plain_2x2_pool(layers[i])
        step = _FrozenConv(layer, pre_bn, slope, post_bn, winograd_min_channels, fuse_pool)
        steps.append(step)
        if step.fused_pool:
            i += 1
    if not steps or not isinstance(steps[-1], _FrozenConv):
        raise ValueError("FrozenCRNN needs a CNN that ends in a convolution")
    return nn.Sequential(*steps)


class _FrozenBiLSTM(nn.Module):
    """One BiLSTM (bidirectional LSTM + per-frame Linear) with its weights concatenated and
    packed once (fastcrnn.ops.packed).

    forward(input (T, N, n_in)) -> (T, N, n_out), or the logits' inputs' product with the
    classifier when it is the last.
    """

    weight_ih: torch.Tensor  # (2 * 4H, n_in) (forward then reverse), packed
    weight_hh: torch.Tensor  # (2, 4H, H), packed
    lstm_bias: Optional[torch.Tensor]  # (2 * 4H,): bias_ih + bias_hh
    linear_weight: torch.Tensor  # (n_out, 2H), packed
    linear_bias: torch.Tensor  # (n_out,)

    def __init__(self, block: BiLSTM):
        super().__init__()
        rnn = block.rnn

        def param(name: str) -> torch.Tensor:
            return cast(torch.Tensor, getattr(rnn, name)).detach()

        self.hidden_size = int(cast(int, rnn.hidden_size))
        w_ih = torch.cat([param("weight_ih_l0"), param("weight_ih_l0_reverse")], 0)
        w_hh = torch.stack([param("weight_hh_l0"), param("weight_hh_l0_reverse")], 0)
        lstm = packed.pack_lstm_weights(w_ih, w_hh)
        self.register_buffer("weight_ih", lstm.weight_ih)
        self.register_buffer("weight_hh", lstm.weight_hh)
        if rnn.bias:
            biases = [
                param("bias_ih_l0") + param("bias_hh_l0"),
                param("bias_ih_l0_reverse") + param("bias_hh_l0_reverse"),
            ]
            self.register_buffer("lstm_bias", torch.cat(biases, 0))
        else:
            self.register_buffer("lstm_bias", None)
        linear = packed.pack_linear_weight(block.embedding.weight.detach())
        self.register_buffer("linear_weight", linear.packed)
        self.out_features = linear.out_features
        self.register_buffer("linear_bias", block.embedding.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, N, _ = x.shape
        h0 = x.new_zeros((2, N, self.hidden_size))
        weights = packed.PackedLstmWeights(self.weight_ih, self.weight_hh)
        out, _, _ = packed.lstm_layer_packed(x, h0, h0, weights, self.lstm_bias)
        flat = packed.linear_packed(
            out.reshape(T * N, out.shape[2]),
            packed.PackedLinearWeight(self.linear_weight, self.out_features),
            self.linear_bias,
        )
        return flat.view(T, N, self.out_features)


def freezable(model: nn.Module) -> bool:
    """Whether :class:`FrozenCRNN` serves ``model``: a CRNN with float32 / float64 CPU weights."""
    if not isinstance(model, CRNN):
        return False
    params = list(model.parameters())
    return bool(params) and all(
        p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64) for p in params
    )


class FrozenCRNN(nn.Module):
    """A snapshot of a CRNN, prepared for fast CPU inference (see the module doc).

    Args:
        model: the :class:`~fastcrnn.nn.CRNN` to freeze (either backend, either variant; its
            BatchNorm layers contribute their running statistics, as in eval mode).
        winograd_min_channels: 3x3 convolutions whose input and output channel counts both
            reach this run by Winograd; the others by oneDNN (torch's conv2d).

    forward(images (N, nc, imgH, W) float32/float64 CPU) -> (T, N, nclass): log-probabilities
    or logits, as ``model.output`` says. ``decode(images)`` -> the greedy decoding
    (:class:`fastcrnn.ops.GreedyDecoding`) and the logits it read. No autograd: call under
    ``torch.no_grad()`` or ``torch.inference_mode()`` (both forward and decode do so).
    """

    def __init__(self, model: CRNN, winograd_min_channels: int = WINOGRAD_MIN_CHANNELS):
        super().__init__()
        if not isinstance(model, CRNN):
            raise TypeError(f"model must be a fastcrnn.nn.CRNN, got {type(model).__name__}")
        if isinstance(winograd_min_channels, bool) or not isinstance(winograd_min_channels, int):
            raise TypeError(
                f"winograd_min_channels must be an int, got {type(winograd_min_channels).__name__}"
            )
        if any(p.device.type != "cpu" for p in model.parameters()):
            raise ValueError("FrozenCRNN runs on the CPU: move the model there first")
        dtype = next(model.parameters()).dtype
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"FrozenCRNN needs float32 or float64 weights, got {dtype}")
        self.imgH, self.nc, self.nclass = model.imgH, model.nc, model.nclass
        self.output = model.output
        self.variant = model.variant
        with torch.no_grad():
            self.cnn = _freeze_cnn(model.cnn, winograd_min_channels)
            self.rnn = nn.Sequential(*(_FrozenBiLSTM(cast(BiLSTM, b)) for b in model.rnn))
        self.dtype = dtype

    def output_length(self, width: Union[int, torch.Tensor]):
        """Frames T for an input of width ``width`` (as :meth:`CRNN.output_length`)."""
        return output_length(self.variant, width)

    def _check_images(self, images: torch.Tensor) -> None:
        require_tensor(images, "images")
        if images.dim() != 4 or images.shape[1] != self.nc or images.shape[2] != self.imgH:
            raise ValueError(
                f"images must have shape (N, {self.nc}, {self.imgH}, W), got {tuple(images.shape)}"
            )
        if images.dtype != self.dtype:
            raise TypeError(f"images must be {self.dtype} (the model's dtype), got {images.dtype}")
        if images.device.type != "cpu":
            raise ValueError(f"images must be a CPU tensor, got {images.device}")
        if self.output_length(images.shape[3]) < 1:
            raise ValueError(
                f"images width {images.shape[3]} is too small: the network needs a width "
                "that gives at least one frame"
            )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(N, nc, imgH, W) -> the classifier's raw scores (T, N, nclass)."""
        self._check_images(images)
        with torch.no_grad():
            x = images.contiguous(memory_format=torch.channels_last)
            for step in self.cnn[:-1]:
                x = step(x)
            return self.rnn(cast(_FrozenConv, self.cnn[-1]).to_sequence(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.logits(images)
        if self.output == "log_probs":
            return torch.log_softmax(out, dim=2)
        return out

    def decode(self, images: torch.Tensor, blank: int = 0) -> Tuple[GreedyDecoding, torch.Tensor]:
        """Greedy CTC decoding of ``images`` (N, nc, imgH, W): (the decoding, logits (T, N,
        nclass)). The decoder computes each frame's softmax from the logits in its one pass."""
        logits = self.logits(images)
        return ctc_greedy_decode(logits, blank=blank, logits=True), logits
