"""Command-line options of ``python -m fastcrnn train`` (crnn.pytorch's flags, kept as they are,
plus fastcrnn's own in snake_case like ``--max_steps``) and the helpers turning them into
objects."""

import argparse
from typing import Any, Dict, List, Optional

import torch

from fastcrnn.ocr.checkpoint import plain_config
from fastcrnn.ocr.data.collate import AlignCollate
from fastcrnn.ocr.engine import DEFAULT_ALPHABET, LR_SCHEDULES
from fastcrnn.ocr.model import FULL_CHANNELS

__all__ = [
    "positive",
    "non_negative",
    "channels_arg",
    "add_model_args",
    "add_train_args",
    "add_case_args",
    "optimizer_name",
    "make_collate",
    "validation_loader",
]


def positive(kind):
    """An argparse type: ``kind(s)`` that must be > 0."""

    def parse(s):
        v = kind(s)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v

    return parse


def non_negative(kind):
    """An argparse type: ``kind(s)`` that must be >= 0."""

    def parse(s):
        v = kind(s)
        if v < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
        return v

    return parse


def channels_arg(s: str) -> List[int]:
    """An argparse type: 7 comma-separated positive ints (the conv widths)."""
    try:
        vals = [int(x) for x in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 7 comma-separated ints, got {s!r}") from None
    if len(vals) != 7 or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"expected 7 comma-separated positive ints, got {s!r}")
    return vals


def add_model_args(p: argparse.ArgumentParser, nh: int = 256, channels=FULL_CHANNELS):
    p.add_argument("--imgH", type=positive(int), default=32, help="input height (32)")
    p.add_argument(
        "--imgW", type=positive(int), default=100, help="input width without --keep_ratio (100)"
    )
    p.add_argument(
        "--keep_ratio",
        action="store_true",
        help="resize to height imgH keeping the aspect ratio, pad to the widest",
    )
    p.add_argument("--nh", type=positive(int), default=nh, help="LSTM hidden size per direction")
    p.add_argument("--variant", default="crnn.pytorch", choices=["crnn.pytorch", "seed"])
    p.add_argument(
        "--channels",
        type=channels_arg,
        default=list(channels),
        help="7 comma-separated conv widths (default crnn.pytorch's)",
    )
    p.add_argument("--leaky_relu", action="store_true")


def add_train_args(p: argparse.ArgumentParser, need_data: bool = True):
    p.add_argument("--trainRoot", required=need_data, help="training LMDB (crnn.pytorch format)")
    p.add_argument("--valRoot", required=need_data, help="validation LMDB")
    p.add_argument("--workers", type=int, default=2, help="data loading workers")
    p.add_argument(
        "--batchSize",
        type=positive(int),
        default=64,
        help="batch size (per process under torchrun)",
    )
    p.add_argument("--nepoch", type=positive(int), default=25)
    p.add_argument("--cuda", action="store_true", help="train on the GPU")
    p.add_argument(
        "--ngpu",
        type=positive(int),
        default=1,
        help="with --cuda: GPUs one process splits each batch over (crnn.pytorch's "
        "DataParallel on GPUs 0..N-1; default 1); `torchrun --nproc_per_node N` (DDP, one "
        "process per GPU) is the faster way to use N GPUs",
    )
    p.add_argument("--amp", action="store_true", help="float16 mixed precision (GPU only)")
    p.add_argument(
        "--pretrained",
        default="",
        help="initial weights: a fastcrnn checkpoint or a crnn.pytorch state dict "
        "(DataParallel/DDP 'module.' prefixes are accepted)",
    )
    p.add_argument(
        "--alphabet",
        default=DEFAULT_ALPHABET,
        help="the characters, or a UTF-8 file with one character per line",
    )
    add_case_args(p, default=True)
    p.add_argument(
        "--unknown",
        default="error",
        choices=["error", "skip"],
        help="labels with characters outside the alphabet: fail, or drop them",
    )
    p.add_argument("--expr_dir", default="expr", help="where last.pth / best.pth go")
    p.add_argument("--displayInterval", type=positive(int), default=500)
    p.add_argument(
        "--n_test_disp", type=int, default=10, help="predictions shown at each validation"
    )
    p.add_argument("--valInterval", type=positive(int), default=500)
    p.add_argument("--saveInterval", type=positive(int), default=500)
    p.add_argument(
        "--lr",
        type=positive(float),
        default=None,
        help="learning rate (the peak rate under --lr_schedule); default crnn.pytorch's: "
        "0.01 for RMSprop and Adam, 1.0 for Adadelta (crnn.pytorch ignores --lr under "
        "--adadelta; fastcrnn honours a --lr given with it)",
    )
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1")
    opt = p.add_mutually_exclusive_group()
    opt.add_argument("--adam", action="store_true", help="Adam (default RMSprop)")
    opt.add_argument("--adadelta", action="store_true", help="Adadelta (default RMSprop)")
    p.add_argument("--manualSeed", type=int, default=1234)
    sampling = p.add_mutually_exclusive_group()
    sampling.add_argument(
        "--random_sample",
        action="store_true",
        help="shuffle the training set every epoch (the default; crnn.pytorch's flag for it)",
    )
    sampling.add_argument(
        "--sequential_sample",
        action="store_true",
        help="crnn.pytorch's randomSequentialSampler instead of shuffling: each batch is "
        "--batchSize consecutive samples from a random start (windows may overlap)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from EXPR_DIR/last.pth (model, optimizer, epoch, step)",
    )
    p.add_argument(
        "--max_steps",
        type=positive(int),
        default=None,
        help="stop after this many optimizer steps in total",
    )
    p.add_argument(
        "--lr_schedule",
        default="constant",
        choices=list(LR_SCHEDULES),
        help="learning rate per step: constant (crnn.pytorch's, the default), cosine "
        "(decay to 0 at the last step) or step (x --lr_gamma every "
        "--lr_step_size steps)",
    )
    p.add_argument(
        "--warmup_steps",
        type=non_negative(int),
        default=0,
        help="linear learning-rate warm-up over this many steps (default 0)",
    )
    p.add_argument(
        "--lr_step_size",
        type=positive(int),
        default=None,
        help="with --lr_schedule step: steps between decays (default a third of the training)",
    )
    p.add_argument(
        "--lr_gamma",
        type=positive(float),
        default=0.1,
        help="with --lr_schedule step: the decay factor (default 0.1)",
    )
    p.add_argument(
        "--grad_clip",
        type=non_negative(float),
        default=0.0,
        help="clip the global gradient norm to this (default 0: no clipping)",
    )
    p.add_argument(
        "--backend", default=None, choices=["fused", "torch"], help="LSTM backend (default fused)"
    )
    p.add_argument(
        "--no_progress",
        action="store_true",
        help="no tqdm progress bars (there are none when the output is not a terminal)",
    )


def add_case_args(p, default: Optional[bool]):
    """``--ignore_case`` / ``--case_sensitive`` into ``args.ignore_case`` (``default`` when
    neither is given: True for ``train``, crnn.pytorch's; None where a checkpoint decides)."""
    case = p.add_mutually_exclusive_group()
    case.add_argument(
        "--ignore_case",
        dest="ignore_case",
        action="store_const",
        const=True,
        default=default,
        help="lower-case the alphabet and the labels: crnn.pytorch's strLabelConverter "
        "(ignore_case=True, its default), one class per alphabet entry"
        + (" (the default)" if default else ""),
    )
    case.add_argument(
        "--case_sensitive",
        dest="ignore_case",
        action="store_const",
        const=False,
        help="keep case: 'a' and 'A' are different characters",
    )


def checkpoint_extra(charset, cfg: Dict[str, Any], args) -> Dict[str, Any]:
    """The plain entries every checkpoint of a run carries: alphabet, model config, flags."""
    return dict(
        charset=charset.to_string(),
        case_insensitive=charset.case_insensitive,
        config=cfg,
        args=plain_config(vars(args)),
    )


def fit_options(args) -> Dict[str, Any]:
    """The keyword arguments of ``engine.fit`` that come straight from the training flags
    (crnn.pytorch's names on the left), shared by ``train`` and ``finetune``."""
    return dict(
        nepoch=args.nepoch,
        batch_size=args.batchSize,
        expr_dir=args.expr_dir,
        seed=args.manualSeed,
        workers=args.workers,
        display_interval=args.displayInterval,
        val_interval=args.valInterval,
        save_interval=args.saveInterval,
        max_steps=args.max_steps,
        progress=not args.no_progress,
        n_test_disp=args.n_test_disp,
        sequential_sample=getattr(args, "sequential_sample", False),
    )


def optimizer_name(args) -> str:
    return "adam" if args.adam else "adadelta" if args.adadelta else "rmsprop"


def make_collate(cfg: Dict[str, Any]) -> AlignCollate:
    """The AlignCollate a model config (:func:`fastcrnn.ocr.model.model_config`) asks for."""
    return AlignCollate(
        cfg["imgH"],
        cfg["imgW"],
        keep_ratio=cfg["keep_ratio"],
        min_width=cfg.get("min_width"),
        max_width=cfg.get("max_width"),
    )


def validation_loader(dataset, args, collate) -> torch.utils.data.DataLoader:
    """The loader evaluation reads ``dataset`` through: in order, ``--batchSize`` samples a
    batch, ``--workers`` loading processes."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batchSize,
        shuffle=False,
        num_workers=args.workers,
        collate_fn=collate,
    )
