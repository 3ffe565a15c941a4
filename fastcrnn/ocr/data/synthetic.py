"""Synthetic text lines rendered with Pillow: no files or downloads needed.

Each sample is a random string from the charset drawn with Pillow's built-in scalable font
(``ImageFont.load_default(size=...)``, Pillow >= 10.1 with FreeType) or a TrueType font found on
the machine, with random size, letter spacing, contrast, noise, blur, small rotation and padding,
so the image width varies with the text. Sample ``i`` depends only on ``(seed, i)``: the dataset
is deterministic under a seed whatever the access order or number of DataLoader workers (on one
machine with the same fonts and Pillow version).
"""

import glob
import math
import os
import random
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from fastcrnn.ocr.data._index import wrap_index
from fastcrnn.text import Charset

__all__ = ["SyntheticTextLines", "find_fonts", "render_text_line"]

_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "C:/Windows/Fonts",
    os.path.expanduser("~/.fonts"),
)


@lru_cache(maxsize=None)
def _default_font_available() -> bool:
    try:
        ImageFont.load_default(size=20)
        return True
    except Exception:  # old Pillow or no FreeType: the bitmap font cannot scale
        return False


def find_fonts() -> List[str]:
    """Font specs usable for rendering: "default" (Pillow's scalable built-in font) when it can
    scale, then the .ttf files found in the usual font folders (sorted, for determinism)."""
    fonts = ["default"] if _default_font_available() else []
    found = set()
    for d in _FONT_DIRS:
        found.update(glob.glob(os.path.join(d, "**", "*.ttf"), recursive=True))
    fonts.extend(sorted(found))
    return fonts


@lru_cache(maxsize=256)
def _font(spec: str, size: int):
    if spec == "default":
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(spec, size=size)


def _covers(spec: str, chars: Sequence[str]) -> bool:
    """Whether a TTF renders every character (no tofu): compare against a missing-glyph box."""
    if spec == "default":
        return True
    try:
        font = _font(spec, 24)
        tofu = font.getmask("\uffff").getbbox()
        return all(font.getmask(c).getbbox() != tofu or c.isspace() for c in chars)
    except Exception:
        return False


def render_text_line(
    text: str,
    rng: random.Random,
    font_spec: str = "default",
    size_range: Tuple[int, int] = (20, 34),
    max_rotation: float = 2.0,
    noise: float = 12.0,
    blur: float = 0.8,
    min_contrast: int = 90,
    light_on_dark: float = 0.5,
) -> Image.Image:
    """Renders one text line as a grayscale ("L") image with random appearance from ``rng``.

    Randomised: font size in ``size_range``, letter spacing, foreground/background gray levels at
    least ``min_contrast`` apart (light text on a dark background with probability
    ``light_on_dark``, else dark on light), rotation in
    ±``max_rotation`` degrees, Gaussian blur up to ``blur`` pixels, Gaussian noise with std up to
    ``noise``, margins. The width follows the text; the height is about 1.3x the font size.
    """
    size = rng.randint(*size_range)
    font = _font(font_spec, size)
    spacing = rng.uniform(-0.03, 0.15) * size
    if not 0 <= min_contrast <= 255:
        raise ValueError(f"min_contrast must be in [0, 255], got {min_contrast}")
    if not 0.0 <= light_on_dark <= 1.0:
        raise ValueError(f"light_on_dark must be a probability, got {light_on_dark}")
    # background and foreground gray levels at least min_contrast apart
    if rng.random() < light_on_dark:
        bg = rng.randint(0, 255 - min_contrast)
        fg = rng.randint(bg + min_contrast, 255)
    else:
        bg = rng.randint(min_contrast, 255)
        fg = rng.randint(0, bg - min_contrast)
    ascent, descent = font.getmetrics()
    widths = [max(font.getlength(c), 1.0) for c in text]
    total = sum(widths) + spacing * max(len(text) - 1, 0)
    margin_x = [rng.randint(2, max(3, size // 3)) for _ in range(2)]
    margin_y = [rng.randint(1, max(2, size // 6)) for _ in range(2)]
    W = int(math.ceil(total)) + sum(margin_x) + 2
    H = ascent + descent + sum(margin_y)
    img = Image.new("L", (max(W, 4), max(H, 4)), color=bg)
    draw = ImageDraw.Draw(img)
    x = float(margin_x[0])
    jitter = max(1, size // 12)
    for c, w in zip(text, widths):
        draw.text((x, margin_y[0] + rng.randint(-jitter, jitter) * 0.5), c, fill=fg, font=font)
        x += w + spacing
    angle = rng.uniform(-max_rotation, max_rotation)
    if abs(angle) > 0.1:
        img = img.rotate(angle, resample=Image.BILINEAR, expand=True, fillcolor=bg)
    radius = rng.uniform(0, blur)
    if radius > 0.2:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    std = rng.uniform(0, noise)
    if std > 0.5:
        nrng = np.random.default_rng(rng.getrandbits(32))
        arr = np.asarray(img, dtype=np.float32) + nrng.normal(0, std, (img.height, img.width))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    return img


class SyntheticTextLines:
    """A map-style dataset of ``num_samples`` synthetic (image, text) pairs.

    Args:
        charset: the alphabet texts are drawn from (Charset, string or alphabet file).
        num_samples: dataset length (>= 0).
        min_len, max_len: text length range (inclusive), 0 <= min_len <= max_len.
        seed: sample ``i`` is generated from ``(seed, i)`` only.
        fonts: font specs ("default" or TTF paths); default: Pillow's built-in font plus up to
            ``max_fonts - 1`` upright regular/bold TTFs found by :func:`find_fonts` that cover the
            charset (italic, oblique, light and symbol faces only when nothing else is found).
        max_fonts: how many fonts the default choice takes (>= 1).
        texts: optional fixed list of texts (then ``num_samples`` defaults to its length and the
            lengths/charset only serve validation).
        **render_kwargs: passed to :func:`render_text_line` (size_range, max_rotation, noise,
            blur, min_contrast).

    ``dataset[i]`` returns ``(PIL.Image in mode "L", str)``.
    """

    def __init__(
        self,
        charset: Union[Charset, str],
        num_samples: Optional[int] = None,
        min_len: int = 4,
        max_len: int = 10,
        seed: int = 0,
        fonts: Optional[Sequence[str]] = None,
        texts: Optional[Sequence[str]] = None,
        max_fonts: int = 4,
        **render_kwargs,
    ):
        self.charset = Charset.load(charset)
        for name, v in (("min_len", min_len), ("max_len", max_len), ("seed", seed)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if not 0 <= min_len <= max_len:
            raise ValueError(
                f"need 0 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}"
            )
        if texts is not None:
            texts = list(texts)
            for t in texts:
                if not isinstance(t, str):
                    raise TypeError(f"texts must hold str, got {type(t).__name__}")
            if num_samples is None:
                num_samples = len(texts)
            elif num_samples != len(texts):
                raise ValueError(f"num_samples={num_samples} but {len(texts)} texts given")
        if num_samples is None:
            raise ValueError("num_samples is required when texts is not given")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
            raise ValueError(f"num_samples must be an int >= 0, got {num_samples!r}")
        self.num_samples, self.min_len, self.max_len, self.seed = (
            num_samples,
            min_len,
            max_len,
            seed,
        )
        self.texts = texts
        if isinstance(max_fonts, bool) or not isinstance(max_fonts, int) or max_fonts < 1:
            raise ValueError(f"max_fonts must be an int >= 1, got {max_fonts!r}")
        if fonts is None:
            found = find_fonts()
            odd = ("italic", "oblique", "light", "thin", "math", "symbol", "condensed")
            plain = [f for f in found if not any(w in os.path.basename(f).lower() for w in odd)]
            fonts = [
                f
                for f in plain + [f for f in found if f not in plain]
                if _covers(f, self.charset.chars)
            ][:max_fonts]
        else:
            fonts = list(fonts)
        if not fonts:
            raise RuntimeError(
                "no usable font: Pillow's built-in scalable font needs Pillow >= "
                "10.1 with FreeType, and no .ttf covering the charset was found"
            )
        self.fonts = fonts
        render_text_line("a", random.Random(0), fonts[0], **render_kwargs)  # validates kwargs
        self.render_kwargs = render_kwargs

    def __len__(self) -> int:
        return self.num_samples

    def text(self, index: int) -> str:
        """The text of sample ``index`` (without rendering it)."""
        return self._text(self._rng(index))

    def _rng(self, index: int) -> random.Random:
        return random.Random((self.seed * 1_000_003 + index) * 2_654_435_761 % (2**63))

    def _text(self, rng: random.Random) -> str:
        n = rng.randint(self.min_len, self.max_len)
        chars = self.charset.chars
        return "".join(rng.choice(chars) for _ in range(n))

    def __getitem__(self, index: int) -> Tuple[Image.Image, str]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        index = wrap_index(int(index), self.num_samples)
        rng = self._rng(index)
        text = self.texts[index] if self.texts is not None else self._text(rng)
        font = self.fonts[rng.randrange(len(self.fonts))]
        return render_text_line(text, rng, font, **self.render_kwargs), text
