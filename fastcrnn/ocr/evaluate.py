"""`python -m fastcrnn eval` / `predict`: load a checkpoint, recognise, report."""

import json
from typing import Any, Dict, List, Optional, Tuple

import torch

from fastcrnn.ocr.checkpoint import CheckpointError
from fastcrnn.ocr.data.collate import AlignCollate
from fastcrnn.ocr.model import build_model
from fastcrnn.text import Charset, LabelConverter

__all__ = ["load_recognizer", "Recognizer", "eval_main", "predict_main", "format_metrics_table"]


class Recognizer:
    """A trained model with its charset and preprocessing, ready to read images."""

    def __init__(self, net, converter: LabelConverter, config: Dict[str, Any]):
        self.net = net.eval()
        self.converter = converter
        self.config = config
        self.collate = AlignCollate(
            config["imgH"],
            config["imgW"],
            keep_ratio=config["keep_ratio"],
            min_width=config.get("min_width"),
            max_width=config.get("max_width"),
        )

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def read(self, images) -> List[Tuple[str, float]]:
        """(text, confidence) per PIL image; each image is run alone (no padding effects)."""
        from fastcrnn.ocr.engine import predict_batch

        out = []
        for img in images:
            batch = self.collate([(img, "")])
            out.extend(predict_batch(self.net, batch.images, batch.widths, self.converter))
        return out


def load_recognizer(
    path: str,
    device="cpu",
    backend=None,
    *,
    alphabet: Optional[str] = None,
    ignore_case: Optional[bool] = None,
    imgH: Optional[int] = None,
    imgW: Optional[int] = None,
    keep_ratio: Optional[bool] = None,
    nc: Optional[int] = None,
    nh: Optional[int] = None,
    leaky_relu: Optional[bool] = None,
) -> Recognizer:
    """A :class:`Recognizer` from a checkpoint written by train / demo / finetune, or from a
    bare crnn.pytorch state dict (e.g. its published ``crnn.pth``).

    The keyword arguments are the state-dict flags (see :mod:`fastcrnn.ocr.crnn_pytorch`):
    for a bare state dict they say what it cannot (None: crnn.pytorch's value: its alphabet,
    ignore_case=True, 32 x 100 inputs); for a fastcrnn checkpoint, a value given must agree
    with the checkpoint's."""
    from fastcrnn.ocr.crnn_pytorch import load_model_checkpoint

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
        charset = Charset(ck["charset"], case_insensitive=bool(ck.get("case_insensitive", False)))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path!r} holds an invalid charset: {exc}") from None
    net = build_model(ck["config"], charset.num_classes, backend=backend)
    try:
        net.load_state_dict(ck["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {path!r}: the weights do not fit its own config "
            f"and charset ({len(charset)} characters): {str(exc)[:400]}"
        ) from None
    return Recognizer(net.to(device), LabelConverter(charset), ck["config"])


def _recognizer(args) -> Recognizer:
    """The recognizer of ``--checkpoint`` with the state-dict flags of ``args``."""
    from fastcrnn.ocr.crnn_pytorch import state_dict_flags

    return load_recognizer(
        args.checkpoint, "cuda" if args.cuda else "cpu", **state_dict_flags(args)
    )


def format_metrics_table(metrics: Dict[str, Any]) -> str:
    rows = [
        ("samples", f"{metrics['num_samples']}"),
        ("word accuracy", f"{metrics['word_accuracy']:.4f}"),
        ("CER", f"{metrics['cer']:.4f}"),
        ("norm. edit distance", f"{metrics['norm_edit_distance']:.4f}"),
    ]
    w = max(len(k) for k, _ in rows)
    line = "+" + "-" * (w + 2) + "+" + "-" * 12 + "+"
    body = [f"| {k:<{w}} | {v:>10} |" for k, v in rows]
    return "\n".join([line] + body + [line])


def eval_main(args) -> Dict[str, Any]:
    from fastcrnn.ocr.arguments import validation_loader
    from fastcrnn.ocr.data import LmdbDataset
    from fastcrnn.ocr.engine import evaluate

    if args.cuda and not torch.cuda.is_available():
        raise SystemExit("error: --cuda given but no CUDA GPU is available")
    rec = _recognizer(args)
    ds = LmdbDataset(args.valRoot)
    loader = validation_loader(ds, args, rec.collate)
    res = evaluate(rec.net, loader, rec.converter, progress=not args.no_progress)
    m = res["metrics"]
    shown = 0
    if args.show:
        print(f"{'prediction':<28} {'reference':<28} {'conf':>6}")
        for p, r, c in zip(res["predictions"], res["references"], res["confidences"]):
            if shown >= args.show:
                break
            print(f"{p:<28} {r:<28} {c:6.3f}{'' if p == r else '  x'}")
            shown += 1
    print(format_metrics_table(m))
    print(
        json.dumps(
            dict(
                word_accuracy=m["word_accuracy"],
                cer=m["cer"],
                norm_edit_distance=m["norm_edit_distance"],
                num_samples=m["num_samples"],
            )
        )
    )
    return m


def predict_main(args) -> List[Tuple[str, str, float]]:
    from PIL import Image, UnidentifiedImageError

    if args.cuda and not torch.cuda.is_available():
        raise SystemExit("error: --cuda given but no CUDA GPU is available")
    rec = _recognizer(args)
    out = []
    for path in args.images:
        try:
            with Image.open(path) as im:
                img = im.convert("L")
        except FileNotFoundError:
            raise SystemExit(f"error: image {path!r} not found") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise SystemExit(f"error: {path!r} is not a readable image ({exc})") from None
        text, conf = rec.read([img])[0]
        print(f"{path}\t{text}\t{conf:.4f}")
        out.append((path, text, conf))
    return out
