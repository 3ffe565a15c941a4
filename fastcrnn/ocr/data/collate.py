"""Batching text-line images for CTC training and decoding.

Images are resized to a fixed height keeping their aspect ratio (``keep_ratio=True``) or to a fixed
``(imgH, imgW)``, normalised to [-1, 1] (``(x / 255 - 0.5) / 0.5`` as crnn.pytorch), and padded on
the right to the batch's widest image with each image's own background value (the median of its
border pixels). Each sample keeps its own width; with an ``output_length`` function (the model's
width -> frames mapping) the batch also carries each sample's number of output frames, which is
passed to the CTC loss and the decoder so that frames coming from padding are ignored by both.
"""

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

__all__ = ["Batch", "AlignCollate", "resize_image", "image_to_tensor"]


class Batch(NamedTuple):
    """images: (N, 1, H, W) float32 in [-1, 1]; widths: (N,) int64, each sample's width before
    padding; texts: the N labels; input_lengths: (N,) int64 output frames per sample, or None
    when the collate has no ``output_length`` function."""

    images: torch.Tensor
    widths: torch.Tensor
    texts: List[str]
    input_lengths: Optional[torch.Tensor]


def resize_image(
    img: Image.Image,
    imgH: int,
    imgW: int,
    keep_ratio: bool,
    min_width: int = 1,
    max_width: Optional[int] = None,
) -> Image.Image:
    """The image as grayscale, height ``imgH``; width ``imgW`` or, with keep_ratio, the width
    that keeps the aspect ratio, clamped to [min_width, max_width]."""
    if not isinstance(img, Image.Image):
        raise TypeError(f"image must be a PIL image, got {type(img).__name__}")
    if img.width == 0 or img.height == 0:
        raise ValueError(f"image is empty ({img.width}x{img.height})")
    if img.mode != "L":
        img = img.convert("L")
    if keep_ratio:
        w = max(int(round(img.width * imgH / img.height)), min_width, 1)
        if max_width is not None:
            w = min(w, max_width)
    else:
        w = imgW
    if (w, imgH) != img.size:
        img = img.resize((w, imgH), Image.BILINEAR)
    return img


def image_to_tensor(img: Image.Image) -> Tuple[torch.Tensor, float]:
    """(1, H, W) float32 in [-1, 1] from an "L" image, and its background value (border median)."""
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return torch.from_numpy(arr.copy())[None], float(np.median(border))


class AlignCollate:
    """DataLoader ``collate_fn`` turning ``[(PIL image, str), ...]`` into a :class:`Batch`.

    Args:
        imgH: output height (> 0).
        imgW: output width without keep_ratio (> 0); ignored with keep_ratio.
        keep_ratio: resize to height imgH keeping the aspect ratio, then pad to the widest.
        min_width: smallest width with keep_ratio (a model needs a minimum input width);
            default ``imgH // 2``.
        max_width: optional largest width with keep_ratio.
        output_length: optional callable mapping an (N,) int64 tensor of widths to (N,) output
            frame counts (e.g. a CRNN's ``output_length``).
    """

    def __init__(
        self,
        imgH: int = 32,
        imgW: int = 100,
        keep_ratio: bool = True,
        min_width: Optional[int] = None,
        max_width: Optional[int] = None,
        output_length: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    ):
        for name, v in (("imgH", imgH), ("imgW", imgW)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if min_width is None:
            min_width = max(imgH // 2, 1)
        if not isinstance(min_width, int) or min_width <= 0:
            raise ValueError(f"min_width must be a positive int, got {min_width!r}")
        if max_width is not None and (not isinstance(max_width, int) or max_width < min_width):
            raise ValueError(
                f"max_width must be an int >= min_width ({min_width}), got {max_width!r}"
            )
        if output_length is not None and not callable(output_length):
            raise TypeError("output_length must be callable")
        self.imgH, self.imgW, self.keep_ratio = imgH, imgW, bool(keep_ratio)
        self.min_width, self.max_width = min_width, max_width
        self.output_length = output_length

    def prepare(self, img) -> Tuple[torch.Tensor, float]:
        """One image as a (1, imgH, W) tensor and its background value. A tensor is taken as
        already prepared (float, shape (1, imgH, W), values in [-1, 1])."""
        if isinstance(img, torch.Tensor):
            if (
                img.dim() != 3
                or img.shape[0] != 1
                or img.shape[1] != self.imgH
                or not img.dtype.is_floating_point
            ):
                raise ValueError(
                    f"a prepared image must be a float tensor of shape (1, "
                    f"{self.imgH}, W), got {img.dtype} {tuple(img.shape)}"
                )
            border = torch.cat([img[0, 0], img[0, -1], img[0, :, 0], img[0, :, -1]])
            return img.float(), float(border.median())
        return image_to_tensor(
            resize_image(img, self.imgH, self.imgW, self.keep_ratio, self.min_width, self.max_width)
        )

    def __call__(self, samples: Sequence[Tuple[Image.Image, str]]) -> Batch:
        if len(samples) == 0:
            raise ValueError("cannot collate an empty batch")
        tensors, backgrounds, texts = [], [], []
        for i, sample in enumerate(samples):
            if not isinstance(sample, (tuple, list)) or len(sample) != 2:
                raise TypeError(f"sample {i} must be an (image, text) pair")
            t, bg = self.prepare(sample[0])
            tensors.append(t)
            backgrounds.append(bg)
            texts.append(sample[1])
        return self.pad(tensors, backgrounds, texts)

    def pad(
        self, tensors: Sequence[torch.Tensor], backgrounds: Sequence[float], texts: Sequence[str]
    ) -> Batch:
        """Pads prepared (1, H, W_i) tensors on the right to the widest, with each background."""
        widths = torch.tensor([t.shape[-1] for t in tensors], dtype=torch.int64)
        W = int(widths.max())
        images = torch.empty(len(tensors), 1, self.imgH, W, dtype=torch.float32)
        for i, (t, bg) in enumerate(zip(tensors, backgrounds)):
            w = t.shape[-1]
            images[i, :, :, :w] = t
            images[i, :, :, w:] = bg
        lengths = None
        if self.output_length is not None:
            lengths = torch.as_tensor(self.output_length(widths), dtype=torch.int64)
            if lengths.shape != widths.shape:
                raise ValueError(
                    f"output_length returned shape {tuple(lengths.shape)} for "
                    f"{tuple(widths.shape)} widths"
                )
        return Batch(images, widths, list(texts), lengths)
