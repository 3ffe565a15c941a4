"""`python -m fastcrnn finetune`: teach a trained recognizer new characters.

The model's classifier grows by one row per new character (:func:`fastcrnn.nn.expand_classifier`):
by default only the new rows train while every old weight and BatchNorm statistic stays fixed,
so what the model read before it still reads the same way (``--train_all`` trains every weight
instead, starting from the expanded model). Checkpoints are written with the classifier merged
back into one Linear (:func:`fastcrnn.nn.merge_classifier`) and the extended charset, so
``eval`` / ``predict`` / a later ``finetune`` load them like any other.
"""

import argparse
import copy
import os
from typing import Any, Dict

import torch

from fastcrnn.ocr.arguments import checkpoint_extra, fit_options, make_collate, validation_loader
from fastcrnn.ocr.checkpoint import load_model_weights
from fastcrnn.ocr.crnn_pytorch import add_state_dict_args, load_model_checkpoint, state_dict_flags
from fastcrnn.ocr.engine import Trainer, check_labels, make_optimizer, seed_everything
from fastcrnn.ocr.loop import fit
from fastcrnn.ocr.model import build_model
from fastcrnn.ocr.progress import make_logger
from fastcrnn.text import Charset, LabelConverter

__all__ = ["add_finetune_args", "finetune_main", "merged_state_dict", "FINETUNE_LR"]

FINETUNE_LR = 1e-3  # Adam's and RMSprop's default rate here


def add_finetune_args(p: argparse.ArgumentParser):
    p.add_argument(
        "--checkpoint",
        required=True,
        help="the trained model: a fastcrnn checkpoint or a crnn.pytorch state dict",
    )
    p.add_argument(
        "--add-chars",
        dest="add_chars",
        required=True,
        help="the new characters, as a string (or a file, one per line)",
    )
    p.add_argument("--trainRoot", default=None, help="training LMDB with the new characters")
    p.add_argument("--valRoot", default=None, help="validation LMDB")
    p.add_argument(
        "--synthetic",
        type=int,
        default=0,
        help="instead of LMDBs: this many synthetic lines over the extended alphabet "
        "(each holding at least one new character), plus a held-out fifth",
    )
    p.add_argument(
        "--train_all",
        action="store_true",
        help="train every weight, not only the new classifier rows",
    )
    p.add_argument("--expr_dir", default="expr_finetune")
    p.add_argument("--batchSize", type=int, default=64)
    p.add_argument("--nepoch", type=int, default=5)
    p.add_argument("--max_steps", type=int, default=None)
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default 1e-3; 1.0 with --adadelta, torch's and crnn.pytorch's)",
    )
    p.add_argument("--beta1", type=float, default=0.9)
    opt = p.add_mutually_exclusive_group()
    opt.add_argument("--rmsprop", action="store_true", help="RMSprop (default Adam)")
    opt.add_argument("--adadelta", action="store_true", help="Adadelta (default Adam)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--displayInterval", type=int, default=50)
    p.add_argument("--valInterval", type=int, default=200)
    p.add_argument("--saveInterval", type=int, default=200)
    p.add_argument("--n_test_disp", type=int, default=5)
    p.add_argument("--manualSeed", type=int, default=1234)
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--backend", default=None, choices=["fused", "torch"])
    p.add_argument("--no_progress", action="store_true")
    add_state_dict_args(p)


def merged_state_dict(net: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The state dict of ``net`` with an expanded classifier merged into one Linear (``net``
    itself is left expanded)."""
    from fastcrnn.nn import ExpandedLinear, merge_classifier

    if not any(isinstance(m, ExpandedLinear) for m in net.modules()):
        return net.state_dict()
    twin = copy.deepcopy(net)
    merge_classifier(twin)
    return twin.state_dict()


class _WithNewChars:
    """Synthetic lines that each contain at least one of the new characters (half of them), so
    the new classes get enough examples."""

    def __init__(self, base, new_chars, seed):
        self.base, self.new_chars, self.seed = base, list(new_chars), seed

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        import random

        from fastcrnn.ocr.data.synthetic import render_text_line

        text = self.base.text(i)
        rng = random.Random(self.seed * 7_777_777 + i)
        if i % 2 == 0 and text:
            pos = rng.randrange(len(text))
            text = text[:pos] + rng.choice(self.new_chars) + text[pos + 1 :]
        font = self.base.fonts[rng.randrange(len(self.base.fonts))]
        return render_text_line(text, rng, font, **self.base.render_kwargs), text


def finetune_main(args) -> Dict[str, Any]:
    from fastcrnn.nn import expand_classifier, merge_classifier

    if args.cuda and not torch.cuda.is_available():
        raise SystemExit("error: --cuda given but no CUDA GPU is available")
    if not args.synthetic and not (args.trainRoot and args.valRoot):
        raise SystemExit("error: give --trainRoot and --valRoot, or --synthetic N")
    device = torch.device("cuda" if args.cuda else "cpu")
    log = make_logger(True)
    seed_everything(args.manualSeed)
    ck = load_model_checkpoint(args.checkpoint, state_dict_flags(args))
    old = Charset(ck["charset"], case_insensitive=bool(ck.get("case_insensitive", False)))
    add = args.add_chars
    if os.path.isfile(add):
        add = Charset.from_file(add).chars
    try:
        new = old.extended(add)
    except ValueError as exc:
        raise SystemExit(f"error: --add-chars: {exc}") from None
    k = len(new) - len(old)
    cfg = ck["config"]
    net = build_model(cfg, old.num_classes, backend=args.backend)
    load_model_weights(
        net, ck["model"], f"checkpoint {args.checkpoint!r} does not fit its own config and charset"
    )
    expand_classifier(net, k)
    if args.train_all:
        merge_classifier(net)  # one plain Linear with the new rows initialised; all trainable
    net.to(device)
    converter = LabelConverter(new)
    collate = make_collate(cfg)
    if args.synthetic:
        from fastcrnn.ocr.data import SyntheticTextLines

        n_val = max(args.synthetic // 5, 1)
        base = SyntheticTextLines(new, args.synthetic + n_val, seed=args.manualSeed)
        full = _WithNewChars(base, new.chars[len(old) :], args.manualSeed)
        train_set = torch.utils.data.Subset(full, range(args.synthetic))
        val_set = torch.utils.data.Subset(full, range(args.synthetic, args.synthetic + n_val))
    else:
        from fastcrnn.ocr.data import LmdbDataset

        train_set, val_set = LmdbDataset(args.trainRoot), LmdbDataset(args.valRoot)
        check_labels(train_set, converter, f"--trainRoot {args.trainRoot}")
    name = "adadelta" if args.adadelta else "rmsprop" if args.rmsprop else "adam"
    if args.lr is None:  # Adadelta's rate is a scale of its own step size: torch's 1.0
        args.lr = 1.0 if name == "adadelta" else FINETUNE_LR
    optimizer = make_optimizer(net.parameters(), name, args.lr, args.beta1)
    trainer = Trainer(net, converter, optimizer)
    val_loader = validation_loader(val_set, args, collate)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    log(
        f"fine-tuning {args.checkpoint}: {len(old)} -> {len(new)} characters (added "
        f"{''.join(new.chars[len(old) :])!r}), {trainable} trainable parameters, "
        f"{len(train_set)} training samples"
    )
    extra = dict(checkpoint_extra(new, cfg, args), finetuned_from=os.path.abspath(args.checkpoint))
    hist = fit(
        trainer,
        train_set,
        val_loader,
        collate=collate,
        checkpoint_extra=extra,
        log=log,
        before_save=merged_state_dict,
        **fit_options(args),
    )
    log(
        f"done: best validation word accuracy {max(hist['best_accuracy'], 0):.4f}; "
        f"checkpoints in {args.expr_dir} (classifier merged, {len(new)} characters)"
    )
    return hist
