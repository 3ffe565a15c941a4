"""``python -m fastcrnn train``: a CRNN with fastcrnn's fused BiLSTM and CTC loss on LMDB data
(single process or DDP).

It takes crnn.pytorch's flags (see :mod:`fastcrnn.ocr.arguments`); under ``torchrun``
(WORLD_SIZE > 1) it runs DistributedDataParallel (gloo on CPU, nccl on GPU) with a
DistributedSampler; only rank 0 logs, validates and writes checkpoints. ``--batchSize`` is per
process. The pieces live in :mod:`fastcrnn.ocr.engine` (step, optimizer, schedule, evaluation),
:mod:`fastcrnn.ocr.loop` (``fit``), :mod:`fastcrnn.ocr.distributed` and
:mod:`fastcrnn.ocr.arguments`; this module re-exports them.
"""

import math
import os
from typing import Any, Dict

import torch
from torch import nn

from fastcrnn.ocr.arguments import (
    add_model_args,
    add_train_args,
    checkpoint_extra,
    fit_options,
    make_collate,
    optimizer_name,
    validation_loader,
)
from fastcrnn.ocr.checkpoint import CheckpointError, load_checkpoint, load_model_weights
from fastcrnn.ocr.distributed import ResumableSampler, cleanup_distributed, setup_distributed
from fastcrnn.ocr.engine import (
    DEFAULT_ALPHABET,
    DEFAULT_LR,
    Trainer,
    check_labels,
    evaluate,
    make_optimizer,
    make_scheduler,
    predict_batch,
    seed_everything,
)
from fastcrnn.ocr.loop import fit
from fastcrnn.ocr.model import TimeMajorDataParallel, build_model, model_config
from fastcrnn.ocr.progress import make_logger
from fastcrnn.text import Charset, LabelConverter

__all__ = [
    "Trainer",
    "ResumableSampler",
    "predict_batch",
    "evaluate",
    "fit",
    "add_train_args",
    "add_model_args",
    "train_main",
    "setup_distributed",
    "make_optimizer",
    "make_scheduler",
    "load_pretrained",
    "data_parallel",
    "DEFAULT_ALPHABET",
]


def load_pretrained(net: nn.Module, path: str, log=print) -> None:
    """Loads weights (strictly) from a fastcrnn checkpoint or a bare (crnn.pytorch) state dict."""
    ck = load_checkpoint(path, allow_bare_state_dict=True)
    classifier = ck["model"].get(f"{net.classifier_name}.weight")
    nclass = getattr(net, "nclass", None)
    if isinstance(classifier, torch.Tensor) and nclass and classifier.shape[0] != nclass:
        raise CheckpointError(
            f"--pretrained {path!r} does not fit this model: its classifier has "
            f"{classifier.shape[0]} classes ({classifier.shape[0] - 1} characters and the "
            f"blank) but --alphabet gives {nclass - 1} characters; give the alphabet it was "
            f"trained with"
        )
    load_model_weights(
        net,
        ck["model"],
        f"--pretrained {path!r} does not fit this model (check --nh, --channels, --variant, "
        "--alphabet)",
    )
    log(f"loaded pretrained weights from {path}")


def planned_steps(args, n_train: int, world: int) -> int:
    """The number of optimizer steps the run will make: --nepoch epochs of
    ceil(n / (batchSize x processes)) batches, or --max_steps if fewer."""
    total = args.nepoch * math.ceil(n_train / (args.batchSize * world))
    return min(total, args.max_steps) if args.max_steps else total


def data_parallel(net: nn.Module, args, distributed: bool, log=print) -> nn.Module:
    """crnn.pytorch's ``--ngpu``: with --cuda and --ngpu N > 1, DataParallel over GPUs 0..N-1
    (each batch split over them; :class:`TimeMajorDataParallel`, as the scores are
    time-major); ``net`` itself otherwise. Without --cuda crnn.pytorch
    ignores --ngpu, and so does this (with a note). Under torchrun each process drives one GPU,
    so --ngpu > 1 is an error there, as is asking for more GPUs than are visible."""
    ngpu = getattr(args, "ngpu", 1)
    if ngpu == 1:
        return net
    if not args.cuda:
        log(f"note: --ngpu {ngpu} is ignored without --cuda (as in crnn.pytorch)")
        return net
    if distributed:
        raise SystemExit(
            f"error: --ngpu {ngpu}: under torchrun each process drives one GPU; "
            f"use torchrun --nproc_per_node {ngpu} without --ngpu"
        )
    visible = torch.cuda.device_count()
    if ngpu > visible:
        raise SystemExit(f"error: --ngpu {ngpu}: only {visible} GPU(s) are visible")
    log(
        f"DataParallel over GPUs 0..{ngpu - 1} (--ngpu {ngpu}); torchrun "
        f"--nproc_per_node {ngpu} (DDP) is faster"
    )
    return TimeMajorDataParallel(net, device_ids=list(range(ngpu)))


def case_note(charset: Charset) -> str:
    """A warning when ignoring case leaves alphabet entries that read the same (empty if not)."""
    dups = charset.folded_duplicates()
    if not dups:
        return ""
    return (
        f"note: ignoring case (crnn.pytorch's default), {len(dups)} character(s) of "
        f"--alphabet appear in two cases ({''.join(dups[:10])}{'...' if len(dups) > 10 else ''}"
        f"): each case keeps its class, as in crnn.pytorch, but labels are lower-cased and "
        f"only the last class of each trains; pass --case_sensitive to read case"
    )


def train_main(args, train_set=None, val_set=None) -> Dict[str, Any]:
    """`python -m fastcrnn train`: builds datasets/model/optimizer from parsed args and fits."""
    if args.amp and not args.cuda:
        raise SystemExit("error: --amp (mixed precision) needs --cuda")
    if args.cuda and not torch.cuda.is_available():
        raise SystemExit("error: --cuda given but no CUDA GPU is available")
    if args.lr is None:  # crnn.pytorch's rate for the optimizer (Adadelta: 1.0)
        args.lr = DEFAULT_LR[optimizer_name(args)]
    distributed, rank, world, device = setup_distributed(args.cuda)
    is_main = rank == 0
    log = make_logger(is_main)
    try:
        seed_everything(args.manualSeed)
        charset = Charset.load(args.alphabet, case_insensitive=args.ignore_case)
        converter = LabelConverter(charset, unknown=args.unknown)
        if is_main and case_note(charset):
            log(case_note(charset))
        cfg = model_config(
            imgH=args.imgH,
            nh=args.nh,
            variant=args.variant,
            channels=args.channels,
            leaky_relu=args.leaky_relu,
            imgW=args.imgW,
            keep_ratio=args.keep_ratio,
        )
        if train_set is None:
            from fastcrnn.ocr.data import LmdbDataset

            # the same folder for both is fine: the two datasets share one LMDB environment
            train_set = LmdbDataset(args.trainRoot)
            val_set = LmdbDataset(args.valRoot)
            if is_main:
                check_labels(train_set, converter, f"--trainRoot {args.trainRoot}")
        if len(train_set) == 0:
            raise SystemExit("error: the training set is empty")
        net = build_model(cfg, charset.num_classes, backend=args.backend).to(device)
        optimizer = make_optimizer(net.parameters(), optimizer_name(args), args.lr, args.beta1)
        state = {}
        last = os.path.join(args.expr_dir, "last.pth")
        if args.resume:
            if not os.path.isfile(last):
                raise SystemExit(f"error: --resume: no checkpoint at {last}")
            ck = load_checkpoint(last, expected_charset=charset.to_string())
            if bool(ck.get("case_insensitive", False)) != charset.case_insensitive:
                held = "--ignore_case" if ck.get("case_insensitive") else "--case_sensitive"
                raise SystemExit(f"error: --resume: {last} was trained with {held}; pass it again")
            if (
                ck["config"].get("channels") != cfg["channels"]
                or ck["config"].get("nh") != cfg["nh"]
            ):
                raise SystemExit(
                    f"error: --resume: {last} was trained with model config "
                    f"{ck['config']}, not {cfg}"
                )
            net.load_state_dict(ck["model"])
            if ck.get("optimizer"):
                optimizer.load_state_dict(ck["optimizer"])
                # the flags of this run set the rate, not the old run's last rate
                for group in optimizer.param_groups:
                    group["lr"] = args.lr
                    group.pop("initial_lr", None)
            state = dict(
                epoch=ck.get("epoch", 0),
                batch=ck.get("batch", 0),
                step=ck.get("step", 0),
                best_accuracy=ck.get("best_accuracy", -1.0),
                best_step=ck.get("best_step"),
            )
            log(f"resuming from {last}: epoch {state['epoch']} done, step {state['step']}")
        elif args.pretrained:
            load_pretrained(net, args.pretrained, log)
        total = planned_steps(args, len(train_set), world)
        scheduler = make_scheduler(
            optimizer,
            args.lr_schedule,
            total_steps=total,
            warmup_steps=args.warmup_steps,
            step_size=args.lr_step_size,
            gamma=args.lr_gamma,
            start_step=int(state.get("step", 0)),
        )
        model = data_parallel(net, args, distributed, log)
        if distributed:
            model = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None
            )
        trainer = Trainer(
            model,
            converter,
            optimizer,
            amp=args.amp,
            grad_clip=args.grad_clip or None,
            scheduler=scheduler,
        )
        collate = make_collate(cfg)
        val_loader = None
        if val_set is not None and len(val_set) and is_main:
            val_loader = validation_loader(val_set, args, collate)
        if is_main:
            recipe = f"lr {args.lr:g} ({args.lr_schedule}"
            recipe += f", {args.warmup_steps} warm-up steps)" if args.warmup_steps else ")"
            if args.grad_clip:
                recipe += f", gradient norm clipped to {args.grad_clip:g}"
            log(
                f"training on {device} ({world} process{'es' if world > 1 else ''}), "
                f"{len(train_set)} training samples, alphabet of {len(charset)} characters "
                f"({'case-insensitive' if charset.case_insensitive else 'case-sensitive'}), "
                f"{sum(p.numel() for p in net.parameters())} parameters, "
                f"{optimizer_name(args)} {recipe}, {total} steps planned"
            )
        extra = checkpoint_extra(charset, cfg, args)
        hist = fit(
            trainer,
            train_set,
            val_loader,
            collate=collate,
            state=state,
            checkpoint_extra=extra,
            distributed=distributed,
            rank=rank,
            log=log,
            **fit_options(args),
        )
        if is_main:
            at = f" (step {hist['best_step']})" if hist.get("best_step") is not None else ""
            log(
                f"done: {hist['step']} steps, best validation word accuracy "
                f"{max(hist['best_accuracy'], 0):.4f}{at} in best.pth; checkpoints in "
                f"{args.expr_dir}"
            )
        return hist
    finally:
        cleanup_distributed(distributed)
