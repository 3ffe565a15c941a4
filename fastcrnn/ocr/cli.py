"""The `python -m fastcrnn` / `fastcrnn` command line.

Commands: demo, train, eval, predict, export, finetune, make-lmdb, make-lm, seq2seq-demo. (The
benchmark report is a script of the source checkout, not of the package:
``python benchmarks/report.py``.)
Run ``python -m fastcrnn <command> --help`` for each one's options.
"""

import argparse
import importlib
import os
import sys
from typing import List, Optional

__all__ = ["main", "build_parser"]

_OCR_EXTRA = "pip install 'fastcrnn[ocr]' (pillow, lmdb, tqdm, rapidfuzz, matplotlib)"


def _require_ocr_extra():
    missing = []
    for mod in ("PIL", "lmdb", "tqdm", "rapidfuzz"):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise SystemExit(f"error: this command needs {', '.join(missing)}: {_OCR_EXTRA}")


def _add_make_lmdb_args(p: argparse.ArgumentParser):
    p.add_argument("--output", required=True, help="new LMDB folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", help="a UTF-8 file of 'path<TAB>label' lines")
    src.add_argument("--synthetic", type=int, help="this many generated text lines")
    p.add_argument(
        "--images",
        default=None,
        help="folder the label file's relative paths start from (default: the label file's folder)",
    )
    p.add_argument(
        "--alphabet",
        default=None,
        help="with --synthetic: the characters (or an alphabet file); default "
        "lowercase letters and digits",
    )
    p.add_argument("--min_len", type=int, default=4)
    p.add_argument("--max_len", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_progress", action="store_true")


def add_checkpoint_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", required=True, help="a fastcrnn checkpoint or a crnn.pytorch state dict"
    )


def add_decoding_args(p: argparse.ArgumentParser, positive) -> None:
    p.add_argument(
        "--beam_width",
        "--beam-width",
        type=positive(int),
        default=1,
        help="1: greedy decoding (default); wider: CTC prefix beam search with this many "
        "hypotheses per frame",
    )
    p.add_argument(
        "--lm",
        help="a character n-gram language model (ARPA, e.g. from make-lm) for the beam search",
    )
    p.add_argument(
        "--lm_weight", "--lm-weight", type=float, default=0.5, help="the LM's weight (0.5)"
    )
    p.add_argument(
        "--word_bonus",
        "--word-bonus",
        type=float,
        default=0.0,
        help="a score added per character with --lm (0)",
    )
    p.add_argument(
        "--lexicon",
        help="a word list (one per line): each reading becomes the most probable word within "
        "--max_edit_distance edits of it, when there is one",
    )
    p.add_argument(
        "--max_edit_distance",
        "--max-edit-distance",
        type=int,
        default=3,
        help="the lexicon candidates' edit distance from the reading (3)",
    )


def build_parser() -> argparse.ArgumentParser:
    from fastcrnn.export import DEFAULT_OPSET, OPSETS
    from fastcrnn.ocr.arguments import add_model_args, add_train_args, positive
    from fastcrnn.ocr.crnn_pytorch import add_state_dict_args
    from fastcrnn.ocr.demo import add_demo_args
    from fastcrnn.ocr.finetune import add_finetune_args

    parser = argparse.ArgumentParser(
        prog="fastcrnn",
        description="fastcrnn text recognition: train, evaluate, predict, "
        "fine-tune CRNN models with fused CTC / LSTM kernels.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("demo", help="generate data, train, evaluate, plot (the main job)")
    add_demo_args(p)
    p = sub.add_parser(
        "train", help="train a CRNN on LMDB data (crnn.pytorch flags; torchrun for DDP)"
    )
    add_train_args(p)
    add_model_args(p)
    p = sub.add_parser(
        "eval", help="word accuracy / CER / normalised edit distance of a checkpoint on an LMDB"
    )
    add_checkpoint_arg(p)
    p.add_argument("--valRoot", required=True)
    p.add_argument("--batchSize", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--show", type=int, default=10, help="predictions listed before the table")
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--no_progress", action="store_true")
    add_decoding_args(p, positive)
    add_state_dict_args(p)
    p = sub.add_parser("predict", help="read the text of images")
    add_checkpoint_arg(p)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--batchSize",
        type=positive(int),
        default=32,
        help="images per batch; a batch holds images of similar widths (default 32)",
    )
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--no_progress", action="store_true")
    p.add_argument(
        "--char_boxes",
        "--char-boxes",
        action="store_true",
        help="also print each character's columns in the image, x0-x1 (from the forced "
        "alignment of the text read on the model's scores)",
    )
    add_decoding_args(p, positive)
    add_state_dict_args(p)
    p = sub.add_parser(
        "export", help="write a checkpoint as an ONNX model (dynamic batch and width)"
    )
    add_checkpoint_arg(p)
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument(
        "--no-decode",
        dest="decode",
        action="store_false",
        help="only the scores: no greedy-decode outputs and no widths input",
    )
    p.add_argument(
        "--opset",
        type=int,
        choices=list(OPSETS),
        default=DEFAULT_OPSET,
        metavar="N",
        help=f"ONNX opset, {OPSETS[0]}..{OPSETS[-1]} (default {DEFAULT_OPSET})",
    )
    add_state_dict_args(p)
    p = sub.add_parser("finetune", help="add characters to a trained model and fine-tune it")
    add_finetune_args(p)
    p = sub.add_parser(
        "make-lmdb",
        help="write a crnn.pytorch LMDB from a label file or from the synthetic generator",
    )
    _add_make_lmdb_args(p)
    # listed here; parsed by fastcrnn.ocr.make_lm (main() dispatches it before the [ocr] check)
    p = sub.add_parser(
        "make-lm", help="train a character / word n-gram LM, written as ARPA", add_help=False
    )
    p.add_argument("make_lm_args", nargs=argparse.REMAINDER)
    p = sub.add_parser("seq2seq-demo", help="the Seq2Seq with attention demo", add_help=False)
    p.add_argument("demo_args", nargs=argparse.REMAINDER)
    return parser


def _make_lmdb(args) -> int:
    from fastcrnn.ocr.data import SyntheticTextLines, read_label_file, write_lmdb
    from fastcrnn.ocr.engine import DEFAULT_ALPHABET

    if args.labels is not None:
        if not os.path.isfile(args.labels):
            raise SystemExit(f"error: label file {args.labels!r} not found")
        samples = read_label_file(args.labels, args.images)
    else:
        if args.synthetic < 0:
            raise SystemExit("error: --synthetic must be >= 0")
        ds = SyntheticTextLines(
            args.alphabet or DEFAULT_ALPHABET,
            args.synthetic,
            args.min_len,
            args.max_len,
            seed=args.seed,
        )
        samples = (ds[i] for i in range(len(ds)))
    n = write_lmdb(args.output, samples, progress=not args.no_progress)
    print(f"wrote {n} samples to {args.output}")
    return n


def _seq2seq(argv: List[str]):
    try:
        mod = importlib.import_module("fastcrnn.demos.seq2seq")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("fastcrnn.demos"):
            raise SystemExit(
                "error: the Seq2Seq demo (fastcrnn.demos.seq2seq) is not part of this installation"
            ) from None
        raise
    rc = mod.main(argv)
    return rc if isinstance(rc, int) else 0


def main(argv: Optional[List[str]] = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # seq2seq-demo takes its own options (including --help)
    if argv and argv[0] == "seq2seq-demo":
        return _seq2seq(argv[1:])
    if argv and argv[0] == "make-lm":  # needs none of the [ocr] extra
        from fastcrnn.ocr.make_lm import main as make_lm_main

        return make_lm_main(argv[1:])
    _require_ocr_extra()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        # user errors (bad alphabet, checkpoint, data) as one line, not a traceback
        from fastcrnn.ocr.checkpoint import CheckpointError

        if isinstance(exc, RuntimeError) and not isinstance(exc, CheckpointError):
            raise
        print(f"fastcrnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


# each subcommand's entry point (module, function), imported only when it runs
_MAINS = {
    "demo": ("fastcrnn.ocr.demo", "demo_main"),
    "train": ("fastcrnn.ocr.train", "train_main"),
    "eval": ("fastcrnn.ocr.evaluate", "eval_main"),
    "predict": ("fastcrnn.ocr.evaluate", "predict_main"),
    "finetune": ("fastcrnn.ocr.finetune", "finetune_main"),
    "export": ("fastcrnn.ocr.evaluate", "export_main"),
}


def _run(args):
    if args.command == "make-lmdb":
        _make_lmdb(args)
    elif args.command in _MAINS:
        module, name = _MAINS[args.command]
        getattr(importlib.import_module(module), name)(args)
    return 0
