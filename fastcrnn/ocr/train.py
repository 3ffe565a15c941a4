"""Training a CRNN with fastcrnn's fused BiLSTM and CTC loss (single process or DDP).

``python -m fastcrnn train`` takes crnn.pytorch's flags; under ``torchrun`` (WORLD_SIZE > 1) it
runs DistributedDataParallel (gloo on CPU, nccl on GPU) with a DistributedSampler; only rank 0
logs, validates and writes checkpoints. ``--batchSize`` is per process.
"""
import argparse
import itertools
import math
import os
import random
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

import fastcrnn
from fastcrnn.ocr.checkpoint import CheckpointError, load_checkpoint, plain_config, save_checkpoint
from fastcrnn.ocr.data.collate import AlignCollate, Batch
from fastcrnn.ocr.metrics import recognition_metrics
from fastcrnn.ocr.model import FULL_CHANNELS, build_model, model_config, unwrap
from fastcrnn.text import Charset, LabelConverter

__all__ = ["Trainer", "ResumableSampler", "predict_batch", "evaluate", "fit", "add_train_args",
           "train_main", "setup_distributed", "make_optimizer", "DEFAULT_ALPHABET"]

DEFAULT_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


# ---------------------------------------------------------------------------------------------
# distributed helpers
def setup_distributed(use_cuda: bool) -> Tuple[bool, int, int, torch.device]:
    """Initialises torch.distributed when launched by torchrun (WORLD_SIZE > 1).

    Returns (distributed, rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return True, dist.get_rank(), dist.get_world_size(), device
    return False, 0, 1, torch.device("cuda" if use_cuda else "cpu")


def _barrier(distributed: bool):
    if distributed:
        import torch.distributed as dist
        dist.barrier()


class ResumableSampler(torch.utils.data.Sampler):
    """Shuffles ``n`` indices with a generator seeded by ``(seed, epoch)`` — or, when
    distributed, uses a DistributedSampler — and can skip the first ``skip`` indices of an epoch
    (resuming in the middle of an epoch)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, distributed: bool = False,
                 dataset=None):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.skip = 0, 0
        self.base = None
        if distributed:
            self.base = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed)

    def set_epoch(self, epoch: int, skip: int = 0):
        self.epoch, self.skip = epoch, skip
        if self.base is not None:
            self.base.set_epoch(epoch)

    def _indices(self) -> List[int]:
        if self.base is not None:
            return list(self.base)
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        return iter(self._indices()[self.skip:])

    def __len__(self) -> int:
        total = len(self.base) if self.base is not None else self.n
        return max(total - self.skip, 0)


# ---------------------------------------------------------------------------------------------
def make_optimizer(params, name: str, lr: float, beta1: float = 0.5) -> torch.optim.Optimizer:
    """crnn.pytorch's choice: Adam (betas (beta1, 0.999)), Adadelta, or RMSprop (default)."""
    params = [p for p in params if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999))
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    raise ValueError(f"optimizer must be adam, adadelta or rmsprop, got {name!r}")


@torch.no_grad()
def predict_batch(net: nn.Module, images: torch.Tensor, widths: torch.Tensor,
                  converter: LabelConverter, amp: bool = False) -> List[Tuple[str, float]]:
    """(text, confidence) per image of a padded batch; frames beyond each width are ignored."""
    device = next(net.parameters()).device
    images = images.to(device, non_blocking=True)
    with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
        logits = net(images)
    lengths = net.output_length(widths.to(torch.int64)).to(logits.device)
    dec = fastcrnn.ctc_greedy_decode(logits.float(), lengths, logits=True)
    return converter.decode(dec, with_confidence=True)


def evaluate(net: nn.Module, loader, converter: LabelConverter, amp: bool = False,
             progress: bool = False, desc: str = "eval") -> Dict[str, Any]:
    """Runs the model (in eval mode) over a loader of :class:`Batch`.

    Returns ``metrics`` (see :func:`recognition_metrics`) plus ``predictions``,
    ``confidences`` and ``references`` (case-folded when the charset is case-insensitive)."""
    was_training = net.training
    net.eval()
    preds, confs, refs = [], [], []
    iterator = loader
    if progress:
        from tqdm import tqdm
        iterator = tqdm(loader, desc=desc, leave=False, unit="batch")
    try:
        for batch in iterator:
            for (text, conf), ref in zip(predict_batch(net, batch.images, batch.widths,
                                                       converter, amp), batch.texts):
                preds.append(text)
                confs.append(conf)
                refs.append(converter.charset.normalize(ref))
    finally:
        net.train(was_training)
    return dict(metrics=recognition_metrics(preds, refs), predictions=preds,
                confidences=confs, references=refs)


class Trainer:
    """One optimisation step of a CTC recognizer: logits (T, N, C) from the model,
    fastcrnn.nn.CTCLoss(from_logits=True) with per-sample frame counts from the image widths.

    Args:
        model: a CRNN (or a DDP wrapper of one) emitting logits, already on its device.
        converter: the label converter (its charset defines the classes).
        optimizer: the optimizer.
        amp: float16 autocast with a GradScaler (CUDA only; ignored on CPU).
        grad_clip: optional max gradient norm.
        scheduler: optional learning-rate scheduler, stepped after every optimizer step.
    """

    def __init__(self, model: nn.Module, converter: LabelConverter,
                 optimizer: torch.optim.Optimizer, amp: bool = False,
                 grad_clip: Optional[float] = None, scheduler=None):
        self.model = model
        self.net = unwrap(model)
        self.converter = converter
        self.optimizer = optimizer
        self.device = next(self.net.parameters()).device
        self.amp = bool(amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.criterion = fastcrnn.nn.CTCLoss(blank=0, reduction="mean", zero_infinity=True,
                                             from_logits=True)
        self.grad_clip = grad_clip
        self.scheduler = scheduler

    def step(self, batch: Batch) -> float:
        self.model.train()
        images = batch.images.to(self.device, non_blocking=True)
        lengths = self.net.output_length(batch.widths.to(torch.int64))
        targets, target_lengths = self.converter.encode(batch.texts)
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = self.model(images)
        loss = self.criterion(logits.float(), targets, lengths, target_lengths)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(loss.detach())


def check_labels(dataset, converter: LabelConverter, name: str) -> None:
    """Fails early, naming the sample, when a label has a character outside the charset (only
    for datasets with a cheap ``label(i)``, e.g. LMDB) and the converter raises on unknowns."""
    if converter.unknown != "error" or not hasattr(dataset, "label"):
        return
    charset = converter.charset
    for i in range(len(dataset)):
        label = dataset.label(i)
        for ch in charset.normalize(label):
            if ch not in charset._index:
                raise ValueError(f"{name}: sample {i + 1} has label {label!r} with character "
                                 f"{ch!r} not in the alphabet (use --unknown skip to drop such "
                                 f"characters, or add it to --alphabet)")


def fit(trainer: Trainer, train_set, val_loader, *, nepoch: int, batch_size: int,
        collate: Callable, expr_dir: Optional[str], seed: int, workers: int = 0,
        display_interval: int = 100, val_interval: int = 500, save_interval: int = 500,
        max_steps: Optional[int] = None, max_seconds: Optional[float] = None,
        state: Optional[Dict[str, Any]] = None, checkpoint_extra: Optional[Dict] = None,
        distributed: bool = False, rank: int = 0, log: Callable[[str], None] = print,
        progress: bool = True, n_test_disp: int = 0,
        before_save: Optional[Callable[[nn.Module], Dict[str, Any]]] = None) -> Dict[str, Any]:
    """The training loop: epochs over ``train_set``, validation every ``val_interval`` steps and
    at each epoch end, ``last.pth`` every ``save_interval`` steps and at each epoch end,
    ``best.pth`` on a new best validation word accuracy (rank 0 only).

    ``state`` (from a checkpoint) resumes: epoch, batch within the epoch, step, best accuracy
    (the optimizer and model must be restored by the caller). ``checkpoint_extra`` holds the
    plain entries saved with every checkpoint (charset, config). ``before_save(net)`` may return
    the model state dict to save (default ``net.state_dict()``).

    Returns a history dict: ``steps``/``losses`` (every display), ``val_steps``/``val_accuracy``/
    ``val_cer``, ``best_accuracy``, ``step``, ``epoch``, ``seconds``, ``images``.
    """
    state = dict(state or {})
    epoch = int(state.get("epoch", 0))
    skip_batches = int(state.get("batch", 0))
    step = int(state.get("step", 0))
    best = float(state.get("best_accuracy", -1.0))
    hist = dict(steps=[], losses=[], val_steps=[], val_accuracy=[], val_cer=[])
    sampler = ResumableSampler(len(train_set), seed, distributed=distributed, dataset=train_set)
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, sampler=sampler,
                                         num_workers=workers, collate_fn=collate,
                                         pin_memory=trainer.device.type == "cuda",
                                         persistent_workers=False)
    is_main = rank == 0
    start = time.time()
    images_seen = 0
    running, running_n = 0.0, 0

    def save(name: str, epoch_i: int, batch_i: int):
        if not is_main or not expr_dir:
            return
        net = trainer.net
        model_state = before_save(net) if before_save else net.state_dict()
        ck = dict(checkpoint_extra or {})
        ck.update(model=model_state, optimizer=trainer.optimizer.state_dict(), epoch=epoch_i,
                  batch=batch_i, step=step, best_accuracy=best)
        save_checkpoint(os.path.join(expr_dir, name), ck)

    last_val = [-1]
    last_save = [-1]

    def validate(epoch_i, batch_i):
        nonlocal best
        if last_val[0] == step:
            return
        last_val[0] = step
        if is_main and val_loader is not None:
            res = evaluate(trainer.net, val_loader, trainer.converter, trainer.amp,
                           progress=progress, desc="validate")
            m = res["metrics"]
            hist["val_steps"].append(step)
            hist["val_accuracy"].append(m["word_accuracy"])
            hist["val_cer"].append(m["cer"])
            for p, r, c in list(zip(res["predictions"], res["references"],
                                    res["confidences"]))[:n_test_disp]:
                log(f"  {p!r:<24} gt {r!r:<24} conf {c:.3f}")
            improved = m["word_accuracy"] > best
            log(f"[epoch {epoch_i} step {step}] validation: word accuracy "
                f"{m['word_accuracy']:.4f}, CER {m['cer']:.4f}, norm. edit distance "
                f"{m['norm_edit_distance']:.4f} on {m['num_samples']} samples"
                + (" (best)" if improved else ""))
            if improved:
                best = m["word_accuracy"]
                save("best.pth", epoch_i, batch_i)
        _barrier(distributed)

    done = False
    bar = None
    if progress and is_main:
        from tqdm import tqdm
        bar = tqdm(total=None if max_steps is None else max_steps, initial=step, unit="step",
                   desc="train", dynamic_ncols=True)
    try:
        while epoch < nepoch and not done:
            sampler.set_epoch(epoch, skip_batches * batch_size)
            batch_i = skip_batches
            skip_batches = 0
            for batch in loader:
                loss = trainer.step(batch)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss} at step {step + 1}; lower "
                                             f"--lr (or use --adam / --adadelta)")
                step += 1
                batch_i += 1
                images_seen += len(batch.texts)
                running += loss
                running_n += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}")
                if step % display_interval == 0:
                    hist["steps"].append(step)
                    hist["losses"].append(running / running_n)
                    if is_main:
                        log(f"[epoch {epoch}/{nepoch} step {step}] loss {running / running_n:.4f}")
                    running, running_n = 0.0, 0
                out_of_time = max_seconds is not None and time.time() - start >= max_seconds
                if (max_steps is not None and step >= max_steps) or out_of_time:
                    done = True
                if val_interval and step % val_interval == 0 and not done:
                    validate(epoch, batch_i)
                if save_interval and step % save_interval == 0:
                    save("last.pth", epoch, batch_i)
                    last_save[0] = step
                if done:
                    break
            if not done:
                epoch += 1
                batch_i = 0
            validate(epoch, batch_i)
            if last_save[0] != step or batch_i == 0:
                save("last.pth", epoch, batch_i)
                last_save[0] = step
    finally:
        if bar is not None:
            bar.close()
    hist.update(best_accuracy=best, step=step, epoch=epoch, seconds=time.time() - start,
                images=images_seen)
    return hist


# ---------------------------------------------------------------------------------------------
# command line
def _positive(kind):
    def parse(s):
        v = kind(s)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v
    return parse


def _channels(s: str) -> List[int]:
    try:
        vals = [int(x) for x in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 7 comma-separated ints, got {s!r}") from None
    if len(vals) != 7 or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"expected 7 comma-separated positive ints, got {s!r}")
    return vals


def add_model_args(p: argparse.ArgumentParser, nh: int = 256, channels=FULL_CHANNELS):
    p.add_argument("--imgH", type=_positive(int), default=32, help="input height (32)")
    p.add_argument("--imgW", type=_positive(int), default=100,
                   help="input width without --keep_ratio (100)")
    p.add_argument("--keep_ratio", action="store_true",
                   help="resize to height imgH keeping the aspect ratio, pad to the widest")
    p.add_argument("--nh", type=_positive(int), default=nh, help="LSTM hidden size per direction")
    p.add_argument("--variant", default="crnn.pytorch", choices=["crnn.pytorch", "seed"])
    p.add_argument("--channels", type=_channels, default=list(channels),
                   help="7 comma-separated conv widths (default crnn.pytorch's)")
    p.add_argument("--leaky_relu", action="store_true")


def add_train_args(p: argparse.ArgumentParser, need_data: bool = True):
    p.add_argument("--trainRoot", required=need_data, help="training LMDB (crnn.pytorch format)")
    p.add_argument("--valRoot", required=need_data, help="validation LMDB")
    p.add_argument("--workers", type=int, default=2, help="data loading workers")
    p.add_argument("--batchSize", type=_positive(int), default=64,
                   help="batch size (per process under torchrun)")
    p.add_argument("--nepoch", type=_positive(int), default=25)
    p.add_argument("--cuda", action="store_true", help="train on the GPU")
    p.add_argument("--amp", action="store_true", help="float16 mixed precision (GPU only)")
    p.add_argument("--pretrained", default="",
                   help="initial weights: a fastcrnn checkpoint or a crnn.pytorch state dict "
                        "(DataParallel/DDP 'module.' prefixes are accepted)")
    p.add_argument("--alphabet", default=DEFAULT_ALPHABET,
                   help="the characters, or a UTF-8 file with one character per line")
    p.add_argument("--ignore_case", action="store_true", help="case-insensitive alphabet")
    p.add_argument("--unknown", default="error", choices=["error", "skip"],
                   help="labels with characters outside the alphabet: fail, or drop them")
    p.add_argument("--expr_dir", default="expr", help="where last.pth / best.pth go")
    p.add_argument("--displayInterval", type=_positive(int), default=500)
    p.add_argument("--n_test_disp", type=int, default=10,
                   help="predictions shown at each validation")
    p.add_argument("--valInterval", type=_positive(int), default=500)
    p.add_argument("--saveInterval", type=_positive(int), default=500)
    p.add_argument("--lr", type=_positive(float), default=0.01,
                   help="learning rate (crnn.pytorch: 0.01 for RMSprop/Adadelta; ~1e-3 Adam)")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1")
    opt = p.add_mutually_exclusive_group()
    opt.add_argument("--adam", action="store_true", help="Adam (default RMSprop)")
    opt.add_argument("--adadelta", action="store_true", help="Adadelta (default RMSprop)")
    p.add_argument("--manualSeed", type=int, default=1234)
    p.add_argument("--resume", action="store_true",
                   help="continue from EXPR_DIR/last.pth (model, optimizer, epoch, step)")
    p.add_argument("--max_steps", type=_positive(int), default=None,
                   help="stop after this many optimizer steps in total")
    p.add_argument("--backend", default=None, choices=["fused", "torch"],
                   help="LSTM backend (default fused)")
    p.add_argument("--no_progress", action="store_true", help="no tqdm progress bars")


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def optimizer_name(args) -> str:
    return "adam" if args.adam else "adadelta" if args.adadelta else "rmsprop"


def load_pretrained(net: nn.Module, path: str, log=print) -> None:
    """Loads weights (strictly) from a fastcrnn checkpoint or a bare (crnn.pytorch) state dict."""
    ck = load_checkpoint(path, allow_bare_state_dict=True)
    try:
        net.load_state_dict(ck["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"--pretrained {path!r} does not fit this model (check --nh, "
                           f"--channels, --variant, --alphabet): {str(exc)[:500]}") from None
    log(f"loaded pretrained weights from {path}")


def _make_collate(cfg: Dict[str, Any]) -> AlignCollate:
    return AlignCollate(cfg["imgH"], cfg["imgW"], keep_ratio=cfg["keep_ratio"],
                        min_width=cfg.get("min_width"), max_width=cfg.get("max_width"))


def train_main(args, train_set=None, val_set=None) -> Dict[str, Any]:
    """`python -m fastcrnn train`: builds datasets/model/optimizer from parsed args and fits."""
    if args.amp and not args.cuda:
        raise SystemExit("error: --amp (mixed precision) needs --cuda")
    if args.cuda and not torch.cuda.is_available():
        raise SystemExit("error: --cuda given but no CUDA GPU is available")
    distributed, rank, world, device = setup_distributed(args.cuda)
    is_main = rank == 0
    log = _logger(is_main)
    try:
        seed_everything(args.manualSeed)
        charset = Charset.load(args.alphabet, case_insensitive=args.ignore_case)
        converter = LabelConverter(charset, unknown=args.unknown)
        cfg = model_config(imgH=args.imgH, nh=args.nh, variant=args.variant,
                           channels=args.channels, leaky_relu=args.leaky_relu, imgW=args.imgW,
                           keep_ratio=args.keep_ratio)
        if train_set is None:
            from fastcrnn.ocr.data import LmdbDataset
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
            if ck["config"].get("channels") != cfg["channels"] or ck["config"].get("nh") != cfg["nh"]:
                raise SystemExit(f"error: --resume: {last} was trained with model config "
                                 f"{ck['config']}, not {cfg}")
            net.load_state_dict(ck["model"])
            if ck.get("optimizer"):
                optimizer.load_state_dict(ck["optimizer"])
            state = dict(epoch=ck.get("epoch", 0), batch=ck.get("batch", 0),
                         step=ck.get("step", 0), best_accuracy=ck.get("best_accuracy", -1.0))
            log(f"resuming from {last}: epoch {state['epoch']}, step {state['step']}")
        elif args.pretrained:
            load_pretrained(net, args.pretrained, log)
        model = net
        if distributed:
            model = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)
        trainer = Trainer(model, converter, optimizer, amp=args.amp)
        collate = _make_collate(cfg)
        val_loader = None
        if val_set is not None and len(val_set) and is_main:
            val_loader = torch.utils.data.DataLoader(val_set, batch_size=args.batchSize,
                                                     shuffle=False, num_workers=args.workers,
                                                     collate_fn=collate)
        if is_main:
            log(f"training on {device} ({world} process{'es' if world > 1 else ''}), "
                f"{len(train_set)} training samples, alphabet of {len(charset)} characters, "
                f"{sum(p.numel() for p in net.parameters())} parameters")
        extra = dict(charset=charset.to_string(), case_insensitive=charset.case_insensitive,
                     config=cfg, args=plain_config(vars(args)))
        hist = fit(trainer, train_set, val_loader, nepoch=args.nepoch, batch_size=args.batchSize,
                   collate=collate, expr_dir=args.expr_dir, seed=args.manualSeed,
                   workers=args.workers, display_interval=args.displayInterval,
                   val_interval=args.valInterval, save_interval=args.saveInterval,
                   max_steps=args.max_steps, state=state, checkpoint_extra=extra,
                   distributed=distributed, rank=rank, log=log,
                   progress=not args.no_progress, n_test_disp=args.n_test_disp)
        if is_main:
            log(f"done: {hist['step']} steps, best validation word accuracy "
                f"{max(hist['best_accuracy'], 0):.4f}; checkpoints in {args.expr_dir}")
        return hist
    finally:
        if distributed:
            import torch.distributed as dist
            dist.destroy_process_group()


def _logger(enabled: bool) -> Callable[[str], None]:
    def log(msg: str):
        if not enabled:
            return
        try:
            from tqdm import tqdm
            tqdm.write(msg)
        except ImportError:
            print(msg, flush=True)
    return log
