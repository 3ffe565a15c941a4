"""`python -m fastcrnn eval` / `predict` / `export`: load a checkpoint, recognise, report, or
write it as an ONNX model."""

import json
from typing import Any, Dict, List, Tuple

import torch

from fastcrnn.lm import NGramLM
from fastcrnn.ocr.recognizer import Recognizer

__all__ = [
    "load_recognizer",
    "Recognizer",
    "eval_main",
    "predict_main",
    "export_main",
    "format_metrics_table",
]


def load_recognizer(path: str, device="cpu", backend=None, **state_dict_flags) -> Recognizer:
    """:meth:`Recognizer.from_checkpoint` with the LSTM backend as third positional argument
    (this module's older signature); ``state_dict_flags`` are from_checkpoint's keyword-only
    flags (alphabet, ignore_case, imgH, imgW, keep_ratio, nc, nh, leaky_relu)."""
    return Recognizer.from_checkpoint(path, device, backend=backend, **state_dict_flags)


def _lexicon_words(path: str) -> List[str]:
    """The words of a lexicon file: one per line, blank lines skipped."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _lexicon_reader(rec: Recognizer):
    """(text, confidence) per image of a padded batch, read by the Recognizer (its lexicon)."""

    def read(images, widths):
        with torch.inference_mode():
            return [(r.text, r.confidence) for r in rec.read_batch(images, widths)]

    return read


def _recognizer(args) -> Recognizer:
    """The recognizer of ``--checkpoint`` with the state-dict flags of ``args``."""
    from fastcrnn.ocr.crnn_pytorch import state_dict_flags

    return Recognizer.from_checkpoint(
        args.checkpoint,
        "cuda" if args.cuda else "cpu",
        batch_size=args.batchSize,
        beam_width=args.beam_width,
        lm=NGramLM.from_arpa(args.lm) if args.lm else None,
        lm_weight=args.lm_weight,
        word_bonus=args.word_bonus,
        lexicon_words=_lexicon_words(args.lexicon) if args.lexicon else None,
        max_edit_distance=args.max_edit_distance,
        **state_dict_flags(args),
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
    res = evaluate(
        rec.net,
        loader,
        rec.converter,
        progress=not args.no_progress,
        decoding=rec.decoding,
        reader=_lexicon_reader(rec) if rec.lexicon is not None else None,
    )
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
    """Prints ``path<TAB>text<TAB>confidence`` per image on stdout, in the order given; the
    progress (for lists longer than one batch) and the throughput go to stderr."""
    import os
    import sys
    import time

    from fastcrnn.ocr.progress import CountProgress
    from fastcrnn.ocr.recognizer import load_image

    if args.cuda and not torch.cuda.is_available():
        raise SystemExit("error: --cuda given but no CUDA GPU is available")
    for path in args.images:  # before any work: a mistyped name fails at once
        if not os.path.isfile(path):
            raise SystemExit(f"error: image {path!r} not found")
    rec = _recognizer(args)
    # images are loaded and read a slice at a time: memory stays bounded on long lists, and
    # each slice is sorted by width into batches
    chunk = args.batchSize * 8
    paths = list(args.images)
    progress = CountProgress(
        len(paths), "predict", "line", enabled=not args.no_progress and len(paths) > args.batchSize
    )
    out = []
    start = time.perf_counter()
    try:
        for first in range(0, len(paths), chunk):
            part = paths[first : first + chunk]
            images = [load_image(path, "image") for path in part]
            for path, image, r in zip(part, images, rec.recognize(images)):
                line = f"{path}\t{r.text}\t{r.confidence:.4f}"
                if args.char_boxes:
                    spans = r.pixel_spans(image.width)
                    line += "\t" + " ".join(f"{c}:{x0}-{x1}" for c, (x0, x1) in zip(r.text, spans))
                progress.write(line)
                out.append((path, r.text, r.confidence))
            progress.update(len(part))
    finally:
        progress.close()
    seconds = time.perf_counter() - start
    print(
        f"predict: {len(out)} lines in {seconds:.2f} s ({len(out) / max(seconds, 1e-9):.1f} "
        f"lines/s, batch size {args.batchSize}, {rec.device.type})",
        file=sys.stderr,
    )
    return out


def export_main(args) -> str:
    """Writes ``--checkpoint`` as an ONNX model (see :func:`fastcrnn.export_onnx`), with the
    alphabet and the preprocessing in its metadata (``metadata_props``, keys ``fastcrnn.*``)."""
    import fastcrnn
    from fastcrnn.ocr.crnn_pytorch import state_dict_flags

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise SystemExit(
            "error: export needs the onnx package: pip install 'fastcrnn[export]'"
        ) from None
    # the network itself (not its frozen snapshot): export traces the torch modules
    rec = Recognizer.from_checkpoint(args.checkpoint, "cpu", freeze=False, **state_dict_flags(args))
    charset = rec.converter.charset
    metadata = {
        "fastcrnn.version": fastcrnn.__version__,
        "fastcrnn.alphabet": charset.to_string(),
        "fastcrnn.case_insensitive": json.dumps(charset.case_insensitive),
        "fastcrnn.blank": "0",
        "fastcrnn.config": json.dumps(rec.config, sort_keys=True),
        "fastcrnn.preprocessing": (
            "grey (PIL convert('L')); height imgH, width imgW or, with keep_ratio, the "
            "width keeping the aspect ratio within [min_width (default imgH // 2), max_width]; "
            "bilinear resize; x / 127.5 - 1; batch padded on the right with each image's "
            "border median"
        ),
    }
    path = fastcrnn.export_onnx(
        rec.net, args.output, include_decode=args.decode, opset=args.opset, metadata=metadata
    )
    net = rec.net
    inputs = f"images (N, {net.nc}, {net.imgH}, W) float32"
    outputs = f"{net.output} (T, N, {net.nclass}) float32"
    if args.decode:
        inputs += ", widths (N,) int64"
        outputs += (
            ", argmax (N, T) int64, keep (N, T) bool, max_prob (N, T) float32, lengths (N,) int64"
        )
    print(f"wrote {path} (opset {args.opset})")
    print(f"inputs: {inputs}")
    print(f"outputs: {outputs}")
    return path
