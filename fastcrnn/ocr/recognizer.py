"""The Recognizer: a trained CRNN with its charset and preprocessing, reading text lines.

::

    from fastcrnn.ocr import Recognizer

    rec = Recognizer.from_checkpoint("expr/best.pth")          # or crnn.pytorch's crnn.pth
    for r in rec.recognize(["a.png", pil_image, numpy_array]):
        print(r.text, r.confidence, r.char_probs, r.char_frames)

Images go through exactly the preprocessing of training and evaluation
(:class:`fastcrnn.ocr.data.AlignCollate`: grey, height ``imgH``, the checkpoint's width rule,
values ``x / 127.5 - 1``). A list is read in batches of images of similar width: the images are
sorted by their width after resizing, cut into batches of ``batch_size``, each batch padded on
the right to its widest image with each image's background value (as the training collate pads),
and the results returned in the input order. Frames that come from padding are ignored by the
decoder; the recurrent layers do see them, as in training and ``eval``, so an image's scores can
differ slightly from those of the same image read alone (``batch_size=1``). Checkpoints without
``keep_ratio`` resize every image to ``imgW``: nothing is padded, and the batch only changes the
float rounding of the convolutions and matrix products.

Slightly past 400 lines on purpose: loading, batching by width and reading results are one
object's life cycle.
"""

import math
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

import fastcrnn
from fastcrnn.lexicon import Lexicon, lexicon_decode
from fastcrnn.nn.frozen_crnn import FrozenCRNN, freezable
from fastcrnn.ocr.checkpoint import CheckpointError, load_model_weights
from fastcrnn.ocr.data.collate import AlignCollate
from fastcrnn.ocr.engine import batch_scores, decode_options, decode_scores, model_device
from fastcrnn.ocr.model import build_model
from fastcrnn.ops._checks import positive_int
from fastcrnn.text import Charset, LabelConverter

__all__ = ["Recognition", "Recognizer", "load_image", "DEFAULT_BATCH_SIZE"]

DEFAULT_BATCH_SIZE = 32


class Recognition(NamedTuple):
    """What :meth:`Recognizer.recognize` reads from one image.

    text:        the decoded string (case-folded when the charset is case-insensitive).
    confidence:  the product of ``char_probs``: the probability of the best path's characters,
                 a sequence probability (``python -m fastcrnn predict``'s confidence; 1.0 for an
                 empty text). It falls with the text's length; ``min(char_probs)`` tells the least
                 certain character.
    char_probs:  per character, its highest softmax probability over the frames of its run
                 (``fastcrnn.ctc_greedy_decode``'s ``token_probs``), floats in (0, 1].
    char_frames: per character, the first frame of its run (``token_frames``), ints in
                 [0, num_frames).
    num_frames:  the image's number of output frames T. Frame t covers about the horizontal
                 span [t, t + 1) * image width / T of the image (the receptive fields overlap).
    char_spans:  per character, the frames [start, end) of its run on the most probable CTC path
                 that spells ``text`` (``fastcrnn.ctc_forced_align`` of the text on the model's
                 scores); :meth:`pixel_spans` turns them into image columns.
    """

    text: str
    confidence: float
    char_probs: List[float]
    char_frames: List[int]
    num_frames: int
    char_spans: List[Tuple[int, int]]

    def pixel_spans(self, image_width: int) -> List[Tuple[int, int]]:
        """Each character's columns [x0, x1) in an image ``image_width`` pixels wide (the
        image as given, before resizing): its frames scaled by image_width / num_frames."""
        scale = image_width / max(self.num_frames, 1)
        return [(math.floor(a * scale), math.ceil(b * scale)) for a, b in self.char_spans]


def load_image(path, name: str = "image") -> Image.Image:
    """The image at ``path`` (str or os.PathLike) as a grey ("L") PIL image, loaded now.

    Raises FileNotFoundError or ValueError (an unreadable file) naming ``name`` and the path."""
    try:
        with Image.open(path) as im:
            return im.convert("L")
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: image file {os.fspath(path)!r} not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{name}: {os.fspath(path)!r} is not a readable image ({exc})") from None


def _array_to_image(arr: np.ndarray, name: str) -> Image.Image:
    """A PIL image from an (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA array, uint8
    (0..255) or floating point (0..1; rounded to 0..255, the resolution of the image files the
    model was trained on)."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(
            f"{name} must be an array of shape (H, W), (H, W, 1), (H, W, 3) (RGB) or "
            f"(H, W, 4) (RGBA), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype == np.uint8:
        data = arr
    elif arr.dtype.kind == "f":
        wide = arr.astype(np.float64)
        if not np.isfinite(wide).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        lo, hi = float(wide.min()), float(wide.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name}: a floating-point image must hold values in [0, 1], got values in "
                f"[{lo:g}, {hi:g}] (divide 0..255 data by 255, or pass it as uint8)"
            )
        data = np.rint(wide * 255.0).astype(np.uint8)
    else:
        raise TypeError(f"{name} must be a uint8 or floating-point array, got dtype {arr.dtype}")
    return Image.fromarray(np.ascontiguousarray(data))


class Recognizer:
    """A trained CTC model with its charset and preprocessing, ready to read images.

    Args:
        net: a :class:`fastcrnn.nn.CRNN` (or a model with its ``output_length``) emitting
            (T, N, C) logits or log-probabilities for (N, 1, imgH, W) float32 images; put in
            eval mode.
        converter: the :class:`fastcrnn.text.LabelConverter` of its charset.
        config: the checkpoint's model config (``imgH``, ``imgW``, ``keep_ratio``, optional
            ``min_width`` / ``max_width``): the preprocessing.
        beam_width: 1, greedy decoding; wider, CTC prefix beam search
            (:func:`fastcrnn.ctc_beam_search_decode`), reporting its best hypothesis.
        lm: an optional character language model (:class:`fastcrnn.NGramLM`, e.g.
            ``NGramLM.from_arpa(path)``) for the beam search, each character one LM token;
            converted once, here. lm_weight, word_bonus: its weight and a score per character.
        lexicon, max_edit_distance: a :class:`fastcrnn.Lexicon` of the model's charset: each
            reading is replaced by the most probable lexicon word within max_edit_distance edits
            of it (:func:`fastcrnn.lexicon_decode`), when there is one; its characters'
            probabilities are their highest over the frames the forced alignment gives them.
        batch_size: how many images :meth:`recognize` runs at once (default 32).
        freeze: serve a CPU CRNN through :class:`fastcrnn.nn.FrozenCRNN` (default True): its
            fast inference path, on a snapshot of ``net``'s weights taken here. Later changes
            to ``net`` do not reach the Recognizer; build a new one to serve new weights.
            Other models (and CUDA ones) run as they are.

    Use :meth:`from_checkpoint` to build one from a file.
    """

    def __init__(
        self,
        net,
        converter: LabelConverter,
        config: Dict[str, Any],
        beam_width: int = 1,
        batch_size: int = DEFAULT_BATCH_SIZE,
        lm=None,
        lm_weight: float = 0.5,
        word_bonus: float = 0.0,
        lexicon: Optional[Lexicon] = None,
        max_edit_distance: int = 3,
        freeze: bool = True,
    ):
        if not isinstance(converter, LabelConverter):
            raise TypeError(f"converter must be a LabelConverter, got {type(converter).__name__}")
        self.beam_width = positive_int(beam_width, "beam_width")
        self.decoding = decode_options(
            converter.charset, self.beam_width, lm, lm_weight, word_bonus
        )
        self.batch_size = positive_int(batch_size, "batch_size")
        if lexicon is not None and not isinstance(lexicon, Lexicon):
            raise TypeError(f"lexicon must be a fastcrnn.Lexicon, got {type(lexicon).__name__}")
        if lexicon is not None and lexicon.charset != converter.charset:
            raise ValueError("lexicon must be built on the model's charset")
        self.lexicon = lexicon
        self.max_edit_distance = positive_int(max_edit_distance, "max_edit_distance", 0)
        if not isinstance(freeze, bool):
            raise TypeError(f"freeze must be a bool, got {type(freeze).__name__}")
        self.net = FrozenCRNN(net) if freeze and freezable(net) else net.eval()
        self.converter = converter
        self.config = config
        self.collate = AlignCollate(
            config["imgH"],
            config["imgW"],
            keep_ratio=config["keep_ratio"],
            min_width=config.get("min_width"),
            max_width=config.get("max_width"),
        )

    @classmethod
    def from_checkpoint(
        cls,
        path,
        device="cpu",
        beam_width: int = 1,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        backend: Optional[str] = None,
        alphabet: Optional[str] = None,
        ignore_case: Optional[bool] = None,
        imgH: Optional[int] = None,
        imgW: Optional[int] = None,
        keep_ratio: Optional[bool] = None,
        nc: Optional[int] = None,
        nh: Optional[int] = None,
        leaky_relu: Optional[bool] = None,
        lm=None,
        lm_weight: float = 0.5,
        word_bonus: float = 0.0,
        lexicon_words: Optional[Sequence[str]] = None,
        max_edit_distance: int = 3,
        freeze: bool = True,
    ) -> "Recognizer":
        """A Recognizer from a checkpoint written by train / demo / finetune, or from a bare
        crnn.pytorch state dict (e.g. its published ``crnn.pth``), as ``python -m fastcrnn
        predict`` reads them.

        Args:
            path: the checkpoint file (str or os.PathLike).
            device: where the model runs ("cpu", "cuda", a torch.device).
            beam_width: 1 (greedy) or wider (beam search); lm, lm_weight, word_bonus: a
                language model for it; lexicon_words, max_edit_distance: the words of a
                lexicon (built on the checkpoint's charset); see the class.
            batch_size: images per batch in :meth:`recognize`.
            freeze: serve a CPU model through its FrozenCRNN snapshot (see the class).
            backend: the LSTM backend, "fused" (default) or "torch".
            alphabet, ignore_case, imgH, imgW, keep_ratio, nc, nh, leaky_relu: the state-dict
                flags (:mod:`fastcrnn.ocr.crnn_pytorch`): for a bare state dict they say what
                it cannot (None: crnn.pytorch's value: its alphabet, ignore_case=True,
                32 x 100 inputs); for a fastcrnn checkpoint, a value given must agree with it.

        Raises CheckpointError for a file that is not a checkpoint or whose weights do not fit
        it, ValueError naming the flag that contradicts it."""
        from fastcrnn.ocr.crnn_pytorch import load_model_checkpoint

        positive_int(beam_width, "beam_width")
        positive_int(batch_size, "batch_size")
        path = os.fspath(path)
        ck = load_model_checkpoint(
            path,
            dict(
                alphabet=alphabet,
                ignore_case=ignore_case,
                imgH=imgH,
                imgW=imgW,
                keep_ratio=keep_ratio,
                nc=nc,
                nh=nh,
                leaky_relu=leaky_relu,
            ),
        )
        try:
            charset = Charset(
                ck["charset"], case_insensitive=bool(ck.get("case_insensitive", False))
            )
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {path!r} holds an invalid charset: {exc}") from None
        net = build_model(ck["config"], charset.num_classes, backend=backend)
        load_model_weights(
            net,
            ck["model"],
            f"checkpoint {path!r}: the weights do not fit its own config and charset "
            f"({len(charset)} characters)",
        )
        return cls(
            net.to(device),
            LabelConverter(charset),
            ck["config"],
            beam_width=beam_width,
            batch_size=batch_size,
            lm=lm,
            lm_weight=lm_weight,
            word_bonus=word_bonus,
            lexicon=None if lexicon_words is None else Lexicon(lexicon_words, charset),
            max_edit_distance=max_edit_distance,
            freeze=freeze,
        )

    @property
    def device(self) -> torch.device:
        return model_device(self.net)

    def prepare(self, image, name: str = "image") -> Tuple[torch.Tensor, float]:
        """One image as the model's input: a (1, imgH, W) float32 tensor in [-1, 1] and its
        background value (the median of its border, the padding value).

        ``image``: a PIL image (any mode; converted to grey), a numpy array (H, W) grey or
        (H, W, 3) RGB / (H, W, 4) RGBA (the alpha is dropped, as for PIL images), uint8 0..255
        or floating point 0..1, or a path to an image file. Errors name ``name``."""
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image, name)
        elif isinstance(image, np.ndarray):
            image = _array_to_image(image, name)
        elif isinstance(image, torch.Tensor):
            raise TypeError(
                f"{name} is a torch.Tensor: pass a numpy array (tensor.cpu().numpy(), "
                f"(H, W) or (H, W, C)), a PIL image or a path"
            )
        elif not isinstance(image, Image.Image):
            raise TypeError(
                f"{name} must be a PIL image, a numpy array or a path, got {type(image).__name__}"
            )
        try:
            return self.collate.prepare(image)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{name}: {exc}") from None

    def recognize(
        self, images: Sequence[Any], batch_size: Optional[int] = None
    ) -> List[Recognition]:
        """Reads a list of text-line images (of any widths): one :class:`Recognition` per
        image, in the input order.

        Args:
            images: a list or tuple of images, each a PIL image, a numpy array (H, W) or
                (H, W, C), uint8 or float in [0, 1], or a path (see :meth:`prepare`). A single
                image must be wrapped: ``[image]``. An empty list gives an empty list.
            batch_size: images per batch (default: the Recognizer's ``batch_size``); the
                batches are made of images of similar widths (see the module doc).

        Runs the model in eval mode under ``torch.inference_mode``. All images are prepared
        before the first batch runs: for very long lists, call it on slices (``python -m
        fastcrnn predict`` does). Raises TypeError / ValueError naming ``images[i]`` for an
        image it cannot read, FileNotFoundError for a missing file."""
        if isinstance(images, (str, os.PathLike, np.ndarray, Image.Image, torch.Tensor)):
            raise TypeError(
                f"images must be a list or tuple of images, got one "
                f"{type(images).__name__}: wrap a single image as [image]"
            )
        if not isinstance(images, (list, tuple)):
            raise TypeError(f"images must be a list or tuple, got {type(images).__name__}")
        batch_size = (
            self.batch_size if batch_size is None else positive_int(batch_size, "batch_size")
        )
        prepared = [self.prepare(img, f"images[{i}]") for i, img in enumerate(images)]
        # sorted by width (stable: equal widths keep their order), so a batch pads little
        order = sorted(range(len(prepared)), key=lambda i: prepared[i][0].shape[-1])
        results: List[Optional[Recognition]] = [None] * len(prepared)
        self.net.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = self.collate.pad(
                    [prepared[i][0] for i in idx], [prepared[i][1] for i in idx], [""] * len(idx)
                )
                for i, rec in zip(idx, self.read_batch(batch.images, batch.widths)):
                    results[i] = rec
        return [r for r in results if r is not None]

    def read_batch(self, images: torch.Tensor, widths: torch.Tensor) -> List[Recognition]:
        """Reads a prepared, padded batch: images (N, 1, imgH, W) float32 (as the collate pads
        them), widths (N,) int64 before padding. Call under torch.inference_mode."""
        scores, frames = batch_scores(self.net, images, widths)
        log_probs = scores.log_softmax(-1)
        dec = decode_scores(scores, frames, self.decoding)
        tokens, lengths = dec.tokens.cpu(), dec.lengths.cpu()
        probs, starts = dec.token_probs.cpu(), dec.token_frames.cpu()
        from_lexicon = []
        if self.lexicon is not None:
            # the lexicon word near each reading replaces it, where there is one
            words = lexicon_decode(log_probs, self.lexicon, frames, self.max_edit_distance)
            tokens, lengths = tokens.clone(), lengths.clone()
            for row, index in enumerate(words.indices.tolist()):
                if index >= 0:
                    spelled = self.lexicon.classes[index]
                    tokens[row] = -1
                    tokens[row, : len(spelled)] = torch.tensor(spelled, dtype=torch.int64)
                    lengths[row] = len(spelled)
                    from_lexicon.append(row)
        # each character's frames: the best path that spells the text read (the tokens, padding
        # replaced by any label: only the first lengths[n] count)
        align = fastcrnn.ctc_forced_align(
            log_probs, tokens.clamp(min=1), frames, lengths, validate=False
        )
        spans = torch.stack([align.token_starts, align.token_ends], -1).cpu()
        if from_lexicon:
            # a lexicon word's characters: their highest probability over their aligned frames
            probs, starts = torch.zeros_like(probs), starts.clone()
            lp = log_probs.cpu()
            for row in from_lexicon:
                for k in range(int(lengths[row])):
                    a, b = spans[row, k].tolist()
                    probs[row, k] = lp[a:b, row, tokens[row, k]].exp().max()
                    starts[row, k] = a
        texts = self.converter.decode(
            fastcrnn.GreedyDecoding(tokens, lengths, probs, starts), with_confidence=True
        )
        frames_list = frames.tolist()
        counts, span_list = lengths.tolist(), spans.tolist()
        probs_list, starts_list = probs.tolist(), starts.tolist()
        out = []
        for row, ((text, conf), n) in enumerate(zip(texts, counts)):
            char_spans = [(a, b) for a, b in span_list[row][:n]]
            out.append(
                Recognition(
                    text,
                    conf,
                    probs_list[row][:n],
                    starts_list[row][:n],
                    frames_list[row],
                    char_spans,
                )
            )
        return out

    def read(self, images: Sequence[Any]) -> List[Tuple[str, float]]:
        """(text, confidence) per image, each image run alone (``batch_size=1``: no padding);
        see :meth:`recognize`."""
        return [(r.text, r.confidence) for r in self.recognize(images, batch_size=1)]
