"""CRNN: a convolutional feature extractor, two bidirectional LSTMs and a per-frame classifier.

Two variants:

* ``"crnn.pytorch"`` (default): the widely used crnn.pytorch network. Width-preserving pools
  (2,2)/(2,1)/(0,1) (they halve the height only, so the width keeps enough frames), BatchNorm
  after conv2, conv4 and conv6,
  (N, 1, 32, 100) -> T = 26. Its state_dict keys are exactly crnn.pytorch's (cnn.conv0..conv6,
  cnn.batchnorm2/4/6, rnn.0.rnn.*, rnn.0.embedding.*, rnn.1.rnn.*, rnn.1.embedding.*), so its
  published checkpoints load unchanged.
* ``"seed"``: the tutorial's own network. ReLU then BatchNorm after conv4 and conv5 (keys
  cnn.BN4 / cnn.BN5), max-pools (2,2), (2,2), (1,2)/2, (1,2)/2 and a final 2x2 conv;
  (N, 1, 32, 200) -> T = 11.
"""

from numbers import Integral
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from fastcrnn.nn.rnn import make_lstm
from fastcrnn.ops._checks import check_backend, positive_int

__all__ = ["BiLSTM", "BidirectionalLSTM", "CRNN", "VARIANTS"]

VARIANTS = ("crnn.pytorch", "seed")
DEFAULT_CHANNELS = (64, 128, 256, 256, 512, 512, 512)


class BiLSTM(nn.Module):
    """A 1-layer bidirectional LSTM followed by a Linear on every frame (the tutorial's BiLSTM,
    crnn.pytorch's BidirectionalLSTM: attributes ``rnn`` and ``embedding``).

    forward(input (T, N, n_in)) -> (T, N, n_out).
    """

    def __init__(self, n_in: int, n_hidden: int, n_out: int, backend: Optional[str] = None):
        super().__init__()
        self.backend = check_backend(backend)
        self.rnn = make_lstm(
            self.backend,
            positive_int(n_in, "n_in"),
            positive_int(n_hidden, "n_hidden"),
            bidirectional=True,
        )
        self.embedding = nn.Linear(n_hidden * 2, positive_int(n_out, "n_out"))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() != 3:
            raise ValueError(f"input must have shape (T, N, n_in), got {tuple(input.shape)}")
        if input.shape[-1] != self.rnn.input_size:
            raise ValueError(
                f"input must have {self.rnn.input_size} features, got {input.shape[-1]}"
            )
        recurrent, _ = self.rnn(input)
        T, N, H = recurrent.shape
        return self.embedding(recurrent.reshape(T * N, H)).reshape(T, N, -1)


BidirectionalLSTM = BiLSTM

# Each layer of the feature extractor, for shapes: ("conv", i, kernel, pad) / ("pool", kernel,
# stride, pad) with (h, w) pairs.
_ConvSpec = Tuple[Literal["conv"], int, int, int]
_PoolSpec = Tuple[Literal["pool"], Tuple[int, int], Tuple[int, int], Tuple[int, int]]


def _layout(late_pool: _PoolSpec) -> List[Union[_ConvSpec, _PoolSpec]]:
    """The seven convolutions and four pools both variants share; they differ only in the pool
    after conv3 and after conv5 (``late_pool``, both the same)."""
    halve: _PoolSpec = ("pool", (2, 2), (2, 2), (0, 0))
    return [
        ("conv", 0, 3, 1),
        halve,
        ("conv", 1, 3, 1),
        halve,
        ("conv", 2, 3, 1),
        ("conv", 3, 3, 1),
        late_pool,
        ("conv", 4, 3, 1),
        ("conv", 5, 3, 1),
        late_pool,
        ("conv", 6, 2, 0),
    ]


_LAYOUT: Dict[str, List[Union[_ConvSpec, _PoolSpec]]] = {
    # width-preserving: halve the height only
    "crnn.pytorch": _layout(("pool", (2, 2), (2, 1), (0, 1))),
    # the tutorial's MaxPool2d((1, 2), 2)
    "seed": _layout(("pool", (1, 2), (2, 2), (0, 0))),
}
_BATCHNORM: Dict[str, Tuple[int, ...]] = {"crnn.pytorch": (2, 4, 6), "seed": (4, 5)}


def _trace(variant: str, size, axis: int):
    """Feature size along an axis (0: height, 1: width) and whether every layer had room."""
    ok = None
    for layer in _LAYOUT[variant]:
        if layer[0] == "conv":
            k, s, p = layer[2], 1, layer[3]
        else:
            k, s, p = layer[1][axis], layer[2][axis], layer[3][axis]
        fits = size + 2 * p >= k
        ok = fits if ok is None else ok & fits
        size = (size + 2 * p - k) // s + 1
    return size, ok


def output_length(
    variant: str, width: Union[int, torch.SymInt, torch.Tensor]
) -> Union[int, torch.SymInt, torch.Tensor]:
    """Number of frames T a CRNN of ``variant`` gives an input of width ``width`` (int, integer
    tensor, or the SymInt a traced dynamic width is).

    Widths too small for the network give 0 (forward rejects them). For a tensor the result
    is an int64 tensor of the same shape and device.
    """
    if isinstance(width, torch.Tensor):
        if width.dtype.is_floating_point or width.dtype == torch.bool:
            raise TypeError(f"width must be an integer tensor, got {width.dtype}")
        w = width.long()
        size, ok = _trace(variant, w, 1)
        return torch.where(ok & (size > 0), size, torch.zeros_like(size))
    if isinstance(width, torch.SymInt):
        # a dynamic width under torch.export / torch.compile: int() would specialise it
        size, ok = _trace(variant, width, 1)
        return size if ok and size > 0 else 0
    if isinstance(width, bool) or not isinstance(width, Integral):
        raise TypeError(f"width must be an int or an integer tensor, got {type(width).__name__}")
    size, ok = _trace(variant, int(width), 1)
    return int(size) if ok and size > 0 else 0


class CRNN(nn.Module):
    """CRNN for text-line recognition.

    Args:
        imgH: input height: 32 (the only height that reduces to a 1-pixel feature map in both
            layouts; crnn.pytorch also requires imgH % 16 == 0).
        nc: input channels (1 for grey images).
        nclass: output classes, blank included.
        nh: hidden size of each LSTM direction.
        variant: "crnn.pytorch" (default) or "seed" (see the module doc).
        leaky_relu: LeakyReLU(0.2) instead of ReLU (crnn.pytorch's leakyRelu).
        output: "log_probs" (default: log_softmax over classes, as the tutorial) or "logits"
            (raw scores for ``fastcrnn.ctc_loss_from_logits``).
        backend: "fused" (fastcrnn.nn.LSTM) or "torch" (torch.nn.LSTM, the export path);
            both have nn.LSTM's parameter names, so a state_dict moves between them.
        channels: the seven conv channel counts (default 64, 128, 256, 256, 512, 512, 512);
            a smaller tuple trains faster on a CPU (state_dict keys stay the same, shapes change).

    forward(input (N, nc, imgH, W) float) -> (T, N, nclass), T = ``output_length(W)``; W must
    give T >= 1 (crnn.pytorch: W >= 4; seed: W >= 32). ``classifier_name`` is the dotted name
    of the final Linear (used by :func:`fastcrnn.nn.expand_classifier`).
    """

    classifier_name = "rnn.1.embedding"

    def __init__(
        self,
        imgH: int,
        nc: int,
        nclass: int,
        nh: int,
        variant: str = "crnn.pytorch",
        leaky_relu: bool = False,
        output: str = "log_probs",
        backend: Optional[str] = None,
        channels: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        if not isinstance(variant, str) or variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if output not in ("log_probs", "logits"):
            raise ValueError(f"output must be 'log_probs' or 'logits', got {output!r}")
        self.imgH = positive_int(imgH, "imgH")
        if variant == "crnn.pytorch" and self.imgH % 16:
            raise ValueError(
                f"imgH must be a multiple of 16 for variant 'crnn.pytorch' "
                f"(it must be 32), got {self.imgH}"
            )
        h, ok = _trace(variant, self.imgH, 0)
        if not ok or h != 1:
            raise ValueError(
                f"imgH must be 32 for variant {variant!r} (the feature map must "
                f"have height 1), got {self.imgH}"
            )
        self.nc = positive_int(nc, "nc")
        self.nclass = positive_int(nclass, "nclass")
        self.nh = positive_int(nh, "nh")
        if channels is None:
            channels = DEFAULT_CHANNELS
        if not isinstance(channels, (list, tuple)) or len(channels) != 7:
            raise ValueError(f"channels must be a sequence of 7 ints, got {channels!r}")
        self.channels = tuple(positive_int(c, "channels") for c in channels)
        self.variant = variant
        self.leaky_relu = bool(leaky_relu)
        self.output = output
        self.backend = check_backend(backend)

        cnn = nn.Sequential()
        bn_layers = _BATCHNORM[variant]
        pool_i = 0
        k: Union[int, Tuple[int, int]]
        p: Union[int, Tuple[int, int]]
        for layer in _LAYOUT[variant]:
            if layer[0] == "pool":
                _, k, s, p = layer
                if variant == "crnn.pytorch":
                    pool = nn.MaxPool2d(k, s, p) if p != (0, 0) else nn.MaxPool2d(2, 2)
                else:
                    pool = nn.MaxPool2d(k, 2) if k != (2, 2) else nn.MaxPool2d(2, 2)
                # module index: after conv0, conv1, conv3, conv5 (crnn.pytorch numbers pools
                # 0..3; the tutorial names them after the conv they follow)
                name = (
                    f"pooling{pool_i}"
                    if variant == "crnn.pytorch"
                    else f"pooling{(0, 1, 3, 5)[pool_i]}"
                )
                cnn.add_module(name, pool)
                pool_i += 1
                continue
            _, i, k, p = layer
            n_in = self.nc if i == 0 else self.channels[i - 1]
            n_out = self.channels[i]
            cnn.add_module(f"conv{i}", nn.Conv2d(n_in, n_out, k, 1, p))
            act = nn.LeakyReLU(0.2, inplace=True) if self.leaky_relu else nn.ReLU(True)
            if variant == "crnn.pytorch":
                if i in bn_layers:
                    cnn.add_module(f"batchnorm{i}", nn.BatchNorm2d(n_out))
                cnn.add_module(f"relu{i}", act)
            else:
                cnn.add_module(f"relu{i}", act)
                if i in bn_layers:
                    cnn.add_module(f"BN{i}", nn.BatchNorm2d(n_out))
        self.cnn = cnn
        self.rnn = nn.Sequential(
            BiLSTM(self.channels[6], nh, nh, self.backend), BiLSTM(nh, nh, nclass, self.backend)
        )

    def extra_repr(self) -> str:
        return (
            f"imgH={self.imgH}, nc={self.nc}, nclass={self.nclass}, nh={self.nh}, "
            f"variant={self.variant!r}, output={self.output!r}, backend={self.backend!r}"
        )

    def output_length(
        self, width: Union[int, torch.SymInt, torch.Tensor]
    ) -> Union[int, torch.SymInt, torch.Tensor]:
        """Number of frames T for an input of width ``width`` (int, integer tensor, or the
        SymInt a traced dynamic width is).

        Widths too small for the network give 0 (forward rejects them). For a tensor the result
        is an int64 tensor of the same shape and device.
        """
        return output_length(self.variant, width)

    def features(self, input: torch.Tensor) -> torch.Tensor:
        """The CNN features as a sequence: (N, nc, imgH, W) -> (T, N, channels[6])."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if not input.dtype.is_floating_point:
            raise TypeError(f"input must be a floating-point image tensor, got {input.dtype}")
        if input.dim() != 4:
            raise ValueError(
                f"input must have shape (N, {self.nc}, {self.imgH}, W), got {tuple(input.shape)}"
            )
        N, C, H, W = input.shape
        if C != self.nc:
            raise ValueError(
                f"input must have {self.nc} channels, got {C} (shape {tuple(input.shape)})"
            )
        if H != self.imgH:
            raise ValueError(f"input height must be imgH={self.imgH}, got {H}")
        if self.output_length(W) < 1:
            raise ValueError(
                f"input width {W} is too small: the network needs a width that "
                f"gives at least one frame (variant {self.variant!r})"
            )
        conv = self.cnn(input)
        assert conv.shape[2] == 1, conv.shape
        return conv.squeeze(2).permute(2, 0, 1)  # (T, N, C)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = self.rnn(self.features(input))  # (T, N, nclass)
        if self.output == "log_probs":
            return F.log_softmax(out, dim=2)
        return out
