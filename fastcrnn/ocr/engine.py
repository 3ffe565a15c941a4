"""The optimisation step, optimizer and learning-rate schedule factories, and evaluation.

:class:`Trainer` runs one step of a CTC recognizer; :func:`make_optimizer` is crnn.pytorch's
choice of optimizer; :func:`make_scheduler` builds the opt-in warm-up + cosine / step-decay
schedules; :func:`evaluate` / :func:`predict_batch` / :func:`decode_batch` read batches.

Slightly past 400 lines on purpose: the Trainer, the factories and evaluation are what every
training entry point (train, demo, finetune) shares, and they are kept in the one module those
import.
"""

import itertools
import math
import random
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

import fastcrnn
from fastcrnn.lm import NGramArrays, NGramLM, text_to_tokens
from fastcrnn.ocr.data.collate import Batch
from fastcrnn.ocr.metrics import recognition_metrics
from fastcrnn.ocr.model import unwrap
from fastcrnn.ops.beam import BeamLanguageModel, pack_language_model
from fastcrnn.text import Charset, LabelConverter

__all__ = [
    "Trainer",
    "make_optimizer",
    "DEFAULT_LR",
    "make_scheduler",
    "LR_SCHEDULES",
    "DecodeOptions",
    "GREEDY",
    "decode_options",
    "batch_scores",
    "decode_scores",
    "decode_batch",
    "predict_batch",
    "evaluate",
    "check_labels",
    "seed_everything",
    "blank_prior_bias",
    "init_blank_bias",
    "DEFAULT_ALPHABET",
]

DEFAULT_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
LR_SCHEDULES = ("constant", "cosine", "step")


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# crnn.pytorch's rates when --lr is not given: its --lr default (0.01) for RMSprop and Adam;
# Adadelta is built without a rate there (``optim.Adadelta(params)``), so torch's default 1.0.
DEFAULT_LR = {"rmsprop": 0.01, "adam": 0.01, "adadelta": 1.0}


def make_optimizer(
    params, name: str, lr: Optional[float] = None, beta1: float = 0.5
) -> torch.optim.Optimizer:
    """crnn.pytorch's choice: ``Adam(lr, betas=(beta1, 0.999))``, ``Adadelta(lr)`` or
    ``RMSprop(lr)`` (its default), torch's other hyper-parameters unchanged. ``lr=None`` is
    crnn.pytorch's rate for that optimizer (:data:`DEFAULT_LR`: 1.0 for Adadelta, 0.01 else)."""
    if name not in DEFAULT_LR:
        raise ValueError(f"optimizer must be adam, adadelta or rmsprop, got {name!r}")
    if lr is None:
        lr = DEFAULT_LR[name]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    params = [p for p in params if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999))
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr)
    return torch.optim.RMSprop(params, lr=lr)


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str = "constant",
    *,
    total_steps: Optional[int] = None,
    warmup_steps: int = 0,
    step_size: Optional[int] = None,
    gamma: float = 0.1,
    final_factor: float = 0.0,
    start_step: int = 0,
    max_seconds: Optional[float] = None,
    clock=time.monotonic,
) -> Optional[torch.optim.lr_scheduler.LambdaLR]:
    """A per-step learning-rate schedule, or None for a constant rate without warm-up.

    Args:
        optimizer: the optimizer whose learning rates are the peak rates.
        schedule: "constant" (after the warm-up), "cosine" (half a cosine from the peak down to
            ``final_factor`` x the peak at ``total_steps``) or "step" (the rate times ``gamma``
            every ``step_size`` steps after the warm-up).
        total_steps: the length of the training (needed by "cosine"; for "step" the default
            ``step_size`` is a third of it).
        warmup_steps: linear warm-up from 1/warmup_steps of the peak over this many steps.
        step_size, gamma: the "step" schedule's period (steps) and factor.
        final_factor: where "cosine" ends, as a fraction of the peak, in [0, 1].
        start_step: the number of steps already made (resuming): the rates are set to that
            step's. The schedule is a function of the step alone, so a checkpoint needs no
            scheduler state, and a resumed run follows the flags it is given.
        max_seconds: a time budget for the training (e.g. the demo's cap): the decay then
            follows whichever of ``total_steps`` and ``max_seconds`` (counted by ``clock`` from
            this call) runs out first, so a run cut short by a slow or busy machine still ends
            at the low rate instead of at the peak. When the steps run out first, as on a
            machine fast enough for the budget, the rates are exactly the step schedule's.

    Step it after every optimizer step (:class:`Trainer` does).
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    if not 0.0 <= final_factor <= 1.0:
        raise ValueError(f"final_factor must be in [0, 1], got {final_factor!r}")
    if total_steps is not None and (
        isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0
    ):
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
    if schedule == "cosine" and total_steps is None:
        raise ValueError("total_steps is required for the 'cosine' schedule")
    if schedule == "step":
        if step_size is None:
            if total_steps is None:
                raise ValueError("the 'step' schedule needs step_size or total_steps")
            step_size = max((total_steps - warmup_steps) // 3, 1)
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size <= 0:
            raise ValueError(f"step_size must be a positive int, got {step_size!r}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
    if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"start_step must be an int >= 0, got {start_step!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds!r}")
    if max_seconds is not None and total_steps is None:
        raise ValueError("total_steps is required with max_seconds")
    if schedule == "constant" and warmup_steps == 0:
        return None
    fn = _Schedule(schedule, total_steps, warmup_steps, step_size, gamma, final_factor)
    if max_seconds is not None:
        fn = _TimedSchedule(fn, total_steps, max_seconds, clock)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    if start_step:
        scheduler.last_epoch = start_step
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * fn(start_step)
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return scheduler


class _Schedule:
    """The learning-rate factor at a step (a class, not a closure, so it pickles)."""

    def __init__(self, kind, total, warmup, step_size, gamma, final):
        self.kind, self.total, self.warmup = kind, total, warmup
        self.step_size, self.gamma, self.final = step_size, gamma, final

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        after = step - self.warmup
        if self.kind == "cosine":
            t = min(after / max(self.total - self.warmup, 1), 1.0)
            return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * t))
        if self.kind == "step":
            return self.gamma ** (after // self.step_size)
        return 1.0


def blank_prior_bias(frames: float, label_length: float, num_classes: int) -> float:
    """The blank's classifier bias (the others at 0) at which a CTC model starts out predicting
    what the all-blank plateau predicts: blank on ``frames - label_length`` of ``frames``
    frames, the rest spread over the ``num_classes - 1`` characters."""
    if not 0 < label_length < frames:
        raise ValueError(f"label_length must be in (0, frames), got {label_length} and {frames}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return math.log((frames - label_length) / label_length * (num_classes - 1))


@torch.no_grad()
def init_blank_bias(net: nn.Module, value: float, blank: int = 0) -> None:
    """Sets the final classifier's bias to ``value`` for the blank and 0 for every other class
    (``net.classifier_name`` names the Linear, as in :class:`fastcrnn.nn.CRNN`)."""
    name = getattr(net, "classifier_name", None)
    if name is None:
        raise ValueError("net has no classifier_name attribute naming its final Linear")
    layer = net.get_submodule(name)
    if getattr(layer, "bias", None) is None:
        raise ValueError(f"the classifier {name!r} has no bias")
    layer.bias.zero_()
    layer.bias[blank] = float(value)


class _TimedSchedule:
    """A schedule evaluated at max(step, the step the elapsed share of a time budget
    corresponds to)."""

    def __init__(self, fn: _Schedule, total: int, max_seconds: float, clock):
        self.fn, self.total, self.max_seconds, self.clock = fn, total, max_seconds, clock
        self.start = clock()

    def __call__(self, step: int) -> float:
        if step < self.fn.warmup:  # the warm-up always runs in steps
            return self.fn(step)
        by_time = (self.clock() - self.start) / self.max_seconds * self.total
        return self.fn(max(step, min(int(by_time), self.total)))


@torch.no_grad()
def model_device(net: nn.Module) -> torch.device:
    """Where a model's tensors live (its parameters, or its buffers for a frozen model)."""
    for tensor in itertools.chain(net.parameters(), net.buffers()):
        return tensor.device
    raise ValueError("the model holds no tensors: its device is unknown")


def batch_scores(
    net: nn.Module, images: torch.Tensor, widths: torch.Tensor, amp: bool = False
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The model's float32 scores (T, N, C) of a padded batch (images (N, 1, H, W) float32) and
    each image's number of frames (N,) int64, ``net.output_length(width)`` of its width before
    padding, on the model's device."""
    device = model_device(net)
    images = images.to(device, non_blocking=True)
    with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
        logits = net(images)
    return logits.float(), net.output_length(widths.to(torch.int64)).to(logits.device)


class DecodeOptions(NamedTuple):
    """How CTC scores become text: greedy decoding (beam_width 1, no language model), or CTC
    prefix beam search of beam_width hypotheses with an optional character language model (lm:
    a :class:`fastcrnn.ops.beam.BeamLanguageModel`; lm_tokens: its token for each class, see
    :func:`decode_options`)."""

    beam_width: int = 1
    lm: Optional[BeamLanguageModel] = None
    lm_tokens: Optional[Sequence[str]] = None
    lm_weight: float = 0.5
    word_bonus: float = 0.0


GREEDY = DecodeOptions()


def decode_options(
    charset: Charset,
    beam_width: int = 1,
    lm: Optional[Union[NGramLM, NGramArrays]] = None,
    lm_weight: float = 0.5,
    word_bonus: float = 0.0,
) -> DecodeOptions:
    """The options of a model whose classes are ``charset``'s (class 0 the blank): each
    character is the LM token fastcrnn.lm.text_to_tokens gives it (a space is ``<space>``).
    The model is packed for the search once, here."""
    if lm is None:
        return DecodeOptions(beam_width)
    packed = pack_language_model(lm)
    tokens = [""] + [text_to_tokens(charset.char(k))[0] for k in range(1, len(charset) + 1)]
    return DecodeOptions(beam_width, packed, tokens, lm_weight, word_bonus)


def decode_scores(
    scores: torch.Tensor, lengths: torch.Tensor, decoding: DecodeOptions = GREEDY
) -> fastcrnn.GreedyDecoding:
    """The CTC decoding of scores (T, N, C) (logits or log-probabilities) over each sequence's
    first lengths[n] frames. Greedy decoding runs on the scores' device; a beam search (a width
    above 1, or a language model) runs fastcrnn.ctc_beam_search_decode and gives its best
    hypothesis in the same form (CPU)."""
    # softmax(log_softmax(x)) == softmax(x): logits=True also reads a log_probs model right
    if decoding.beam_width == 1 and decoding.lm is None:
        return fastcrnn.ctc_greedy_decode(scores, lengths, logits=True)
    best = fastcrnn.ctc_beam_search_decode(
        scores,
        lengths,
        beam_width=decoding.beam_width,
        logits=True,
        lm=decoding.lm,
        lm_tokens=decoding.lm_tokens,
        lm_weight=decoding.lm_weight,
        word_bonus=decoding.word_bonus,
    )
    return fastcrnn.GreedyDecoding(
        best.tokens[:, 0], best.lengths[:, 0], best.token_probs[:, 0], best.token_frames[:, 0]
    )


def decode_batch(
    net: nn.Module,
    images: torch.Tensor,
    widths: torch.Tensor,
    amp: bool = False,
    decoding: DecodeOptions = GREEDY,
) -> fastcrnn.GreedyDecoding:
    """The CTC decoding of a padded batch: images (N, 1, H, W) float32, widths (N,) int64 (each
    image's width before padding); see :func:`batch_scores` and :func:`decode_scores`."""
    scores, lengths = batch_scores(net, images, widths, amp)
    return decode_scores(scores, lengths, decoding)


@torch.no_grad()
def predict_batch(
    net: nn.Module,
    images: torch.Tensor,
    widths: torch.Tensor,
    converter: LabelConverter,
    amp: bool = False,
    decoding: DecodeOptions = GREEDY,
) -> List[Tuple[str, float]]:
    """(text, confidence) per image of a padded batch; frames beyond each width are ignored."""
    return converter.decode(decode_batch(net, images, widths, amp, decoding), with_confidence=True)


def evaluate(
    net: nn.Module,
    loader,
    converter: LabelConverter,
    amp: bool = False,
    progress: bool = False,
    desc: str = "eval",
    decoding: DecodeOptions = GREEDY,
    reader: Optional[Callable[[torch.Tensor, torch.Tensor], List[Tuple[str, float]]]] = None,
) -> Dict[str, Any]:
    """Runs the model (in eval mode) over a loader of :class:`Batch`.

    Returns ``metrics`` (see :func:`recognition_metrics`) plus ``predictions``,
    ``confidences`` and ``references`` (case-folded when the charset is case-insensitive).
    ``progress`` shows a progress bar, only when the output is a terminal. ``decoding``: greedy,
    or beam search (see :class:`DecodeOptions`); ``reader(images, widths)``, when given, reads
    each batch instead ((text, confidence) per image, e.g. a Recognizer with a lexicon)."""
    from fastcrnn.ocr.progress import interactive

    was_training = net.training
    net.eval()
    preds, confs, refs = [], [], []
    iterator = loader
    if progress and interactive():
        from tqdm import tqdm

        iterator = tqdm(loader, desc=desc, leave=False, unit="batch")
    try:
        for batch in iterator:
            for (text, conf), ref in zip(
                reader(batch.images, batch.widths)
                if reader is not None
                else predict_batch(net, batch.images, batch.widths, converter, amp, decoding),
                batch.texts,
            ):
                preds.append(text)
                confs.append(conf)
                refs.append(converter.charset.normalize(ref))
    finally:
        net.train(was_training)
    return dict(
        metrics=recognition_metrics(preds, refs),
        predictions=preds,
        confidences=confs,
        references=refs,
    )


class Trainer:
    """One optimisation step of a CTC recognizer: logits (T, N, C) from the model,
    fastcrnn.nn.CTCLoss(from_logits=True) with per-sample frame counts from the image widths.

    Args:
        model: a CRNN (or a DDP wrapper of one) emitting logits, already on its device.
        converter: the label converter (its charset defines the classes).
        optimizer: the optimizer.
        amp: float16 autocast with a GradScaler (CUDA only; ignored on CPU).
        grad_clip: optional max gradient norm (the global L2 norm over all parameters);
            None or 0 = no clipping.
        scheduler: optional learning-rate scheduler, stepped after every optimizer step.

    After each :meth:`step`, ``grad_norm`` holds the global gradient norm before clipping (the
    quantity a training collapse shows first).
    """

    def __init__(
        self,
        model: nn.Module,
        converter: LabelConverter,
        optimizer: torch.optim.Optimizer,
        amp: bool = False,
        grad_clip: Optional[float] = None,
        scheduler=None,
    ):
        if grad_clip is not None and (isinstance(grad_clip, bool) or not grad_clip >= 0):
            raise ValueError(f"grad_clip must be a number >= 0 or None, got {grad_clip!r}")
        self.model = model
        self.net = unwrap(model)
        self.converter = converter
        self.optimizer = optimizer
        self.device = next(self.net.parameters()).device
        self.amp = bool(amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.criterion = fastcrnn.nn.CTCLoss(
            blank=0, reduction="mean", zero_infinity=True, from_logits=True
        )
        self.grad_clip = grad_clip or None
        self.scheduler = scheduler
        self.grad_norm = float("nan")

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
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.net.parameters() if p.grad is not None]
        if self.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        self.grad_norm = float(norm)
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
                raise ValueError(
                    f"{name}: sample {i + 1} has label {label!r} with character "
                    f"{ch!r} not in the alphabet (use --unknown skip to drop such "
                    f"characters, or add it to --alphabet)"
                )
