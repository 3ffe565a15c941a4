"""`python -m fastcrnn demo`: the main job, end to end, with no files or downloads.

Generates synthetic text lines (4-10 lowercase letters and digits), trains a CPU-sized CRNN
(fastcrnn's fused BiLSTM + fused CTC loss from logits) on them, evaluates on held-out lines, prints
sample predictions with confidences, and writes to ``--output``:
``demo.pth`` (a checkpoint usable by ``eval`` / ``predict`` / ``finetune``), ``curve.png``
(training loss and held-out word accuracy), ``samples.png`` (held-out images with their
predictions), ``metrics.json`` and a few sample images ``sample_*.png`` to try ``predict`` on.

Slightly past 400 lines on purpose: the demo is one script a reader follows top to bottom.
"""

import argparse
import json
import math
import os
import time
from typing import Any, Dict, Sequence, Tuple

import torch

from fastcrnn.ocr.checkpoint import plain_config, save_checkpoint
from fastcrnn.ocr.data.collate import AlignCollate
from fastcrnn.ocr.data.synthetic import SyntheticTextLines
from fastcrnn.ocr.engine import (
    DEFAULT_ALPHABET,
    DecodeOptions,
    Trainer,
    blank_prior_bias,
    evaluate,
    init_blank_bias,
    make_scheduler,
    seed_everything,
)
from fastcrnn.ocr.loop import fit
from fastcrnn.ocr.model import DEMO_CHANNELS, build_model, model_config
from fastcrnn.ocr.progress import interactive, make_logger
from fastcrnn.text import Charset, LabelConverter

__all__ = ["add_demo_args", "demo_main", "PreparedLines", "render_dataset"]


class PreparedLines(torch.utils.data.Dataset):
    """Images already resized and normalised, ``(tensor (1, H, W), text)`` pairs."""

    def __init__(self, items: Sequence[Tuple[torch.Tensor, str]]):
        self.items = list(items)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _Prepare:
    """collate_fn rendering a list of (PIL image, text) into prepared (tensor, text) pairs."""

    def __init__(self, collate: AlignCollate):
        self.collate = collate

    def __call__(self, samples):
        # numpy arrays travel from worker processes by pickling (no shared-memory handle each)
        return [(self.collate.prepare(img)[0].numpy(), text) for img, text in samples]


def render_dataset(
    ds, collate: AlignCollate, desc: str, progress: bool = True, workers: int = 0
) -> PreparedLines:
    """Renders every sample of ``ds`` once (in ``workers`` processes; order kept) and keeps the
    prepared tensors in memory."""
    loader = torch.utils.data.DataLoader(
        ds, batch_size=64, num_workers=workers, collate_fn=_Prepare(collate)
    )
    it = loader
    if progress and interactive():
        from tqdm import tqdm

        it = tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True)
    items = []
    for chunk in it:
        items.extend((torch.from_numpy(arr), text) for arr, text in chunk)
    return PreparedLines(items)


def add_demo_args(p: argparse.ArgumentParser):
    p.add_argument("--output", default="runs/demo", help="folder for the checkpoint and PNGs")
    p.add_argument("--alphabet", default=DEFAULT_ALPHABET)
    p.add_argument("--min_len", type=int, default=4)
    p.add_argument("--max_len", type=int, default=10)
    p.add_argument(
        "--light_on_dark",
        type=float,
        default=0.0,
        help="fraction of lines rendered light-on-dark (default: all dark-on-light)",
    )
    p.add_argument("--noise", type=float, default=8.0, help="max Gaussian noise std (gray levels)")
    p.add_argument(
        "--train_samples",
        type=int,
        default=16000,
        help="distinct synthetic training lines (rendered once)",
    )
    p.add_argument("--test_samples", type=int, default=1000, help="held-out lines")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps")
    p.add_argument(
        "--max_minutes",
        type=float,
        default=8.0,
        help="stop training after this many minutes even if --steps is not reached "
        "(a guard for slow machines; 0 = no limit)",
    )
    p.add_argument("--batchSize", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate")
    p.add_argument(
        "--grad_clip",
        type=float,
        default=5.0,
        help="clip the global gradient norm to this (0: no clipping)",
    )
    p.add_argument(
        "--blank_bias",
        type=int,
        default=1,
        choices=[0, 1],
        help="1 (default): start the classifier at the all-blank prior; 0: "
        "PyTorch's default initialisation",
    )
    p.add_argument("--imgH", type=int, default=32)
    p.add_argument("--imgW", type=int, default=100)
    p.add_argument(
        "--keep_ratio",
        action="store_true",
        help="keep aspect ratios (variable widths) instead of a fixed imgW",
    )
    p.add_argument("--nh", type=int, default=64, help="LSTM hidden size per direction")
    p.add_argument(
        "--channels",
        default=",".join(map(str, DEMO_CHANNELS)),
        help="7 comma-separated conv widths",
    )
    p.add_argument(
        "--valInterval",
        type=int,
        default=250,
        help="held-out accuracy every this many steps (on --val_subset lines)",
    )
    p.add_argument("--val_subset", type=int, default=300)
    p.add_argument("--displayInterval", type=int, default=50)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--cuda", action="store_true", help="train on the GPU")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: for this small model a second thread "
        "gains little, and OpenMP spin-waiting makes several threads collapse "
        "when other processes share the CPU; 0 = torch's default)",
    )
    p.add_argument(
        "--render_workers",
        type=int,
        default=min(os.cpu_count() or 1, 4),
        help="processes rendering the synthetic lines",
    )
    p.add_argument("--backend", default=None, choices=["fused", "torch"])
    p.add_argument("--no_progress", action="store_true")


def _plot_curve(hist: Dict[str, Any], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(hist["steps"], hist["losses"], color="tab:blue", label="training CTC loss")
    ax.set_xlabel("step")
    ax.set_ylabel("CTC loss", color="tab:blue")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(
        hist["val_steps"],
        [100 * a for a in hist["val_accuracy"]],
        "o-",
        color="tab:green",
        label="held-out word accuracy",
    )
    ax2.set_ylabel("held-out word accuracy (%)", color="tab:green")
    ax2.set_ylim(0, 100)
    ax.set_title("fastcrnn demo: CRNN on synthetic text lines")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _samples_png(images, preds, refs, confs, path: str, n: int = 24) -> None:
    from PIL import Image, ImageDraw, ImageFont

    n = min(n, len(images))
    cols, cell_w, cell_h = 2, 360, 64
    rows = (n + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=14)
    except Exception:
        font = ImageFont.load_default()
    for i in range(n):
        x, y = (i % cols) * cell_w, (i // cols) * cell_h
        img = images[i]
        scale = 32 / img.height
        img = img.resize((max(1, min(int(img.width * scale), cell_w - 10)), 32))
        sheet.paste(img.convert("RGB"), (x + 5, y + 4))
        ok = preds[i] == refs[i]
        draw.text(
            (x + 5, y + 40),
            f"{preds[i]} ({confs[i]:.2f})" + ("" if ok else f"  gt {refs[i]}"),
            fill=(0, 128, 0) if ok else (200, 0, 0),
            font=font,
        )
    sheet.save(path)


# the beam width of the held-out comparison with greedy decoding
DEMO_BEAM = 10


def demo_main(args) -> Dict[str, Any]:
    t0 = time.time()
    if args.cuda and not torch.cuda.is_available():
        raise SystemExit("error: --cuda given but no CUDA GPU is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in (
        "train_samples",
        "test_samples",
        "steps",
        "batchSize",
        "nh",
        "valInterval",
        "displayInterval",
    ):
        if getattr(args, name) <= 0:
            raise SystemExit(f"error: --{name} must be > 0")
    if args.grad_clip < 0:
        raise SystemExit(f"error: --grad_clip must be >= 0, got {args.grad_clip}")
    try:
        channels = [int(c) for c in str(args.channels).split(",")]
        assert len(channels) == 7 and min(channels) > 0
    except (ValueError, AssertionError):
        raise SystemExit(
            f"error: --channels needs 7 comma-separated positive ints, got {args.channels!r}"
        ) from None
    device = torch.device("cuda" if args.cuda else "cpu")
    log = make_logger(True)
    progress = not args.no_progress
    seed_everything(args.seed)
    charset = Charset.load(args.alphabet)
    converter = LabelConverter(charset)
    cfg = model_config(
        imgH=args.imgH, nh=args.nh, channels=channels, imgW=args.imgW, keep_ratio=args.keep_ratio
    )
    collate = AlignCollate(args.imgH, args.imgW, keep_ratio=args.keep_ratio)
    os.makedirs(args.output, exist_ok=True)

    log(
        f"generating {args.train_samples} training and {args.test_samples} held-out lines "
        f"of {args.min_len}-{args.max_len} characters ..."
    )
    look = dict(light_on_dark=args.light_on_dark, noise=args.noise)
    train_src = SyntheticTextLines(
        charset, args.train_samples, args.min_len, args.max_len, seed=args.seed, **look
    )
    test_src = SyntheticTextLines(
        charset, args.test_samples, args.min_len, args.max_len, seed=args.seed + 7919, **look
    )
    train_set = render_dataset(
        train_src, collate, "render train", progress, workers=args.render_workers
    )
    test_images = [test_src[i][0] for i in range(len(test_src))]
    test_set = PreparedLines(
        [(collate.prepare(im)[0], test_src.text(i)) for i, im in enumerate(test_images)]
    )
    train_texts = {t for _, t in train_set.items}
    overlap = sum(t in train_texts for _, t in test_set.items)
    t_data = time.time() - t0
    log(f"data ready in {t_data:.1f} s ({overlap} held-out texts also occur in training)")

    net = build_model(cfg, charset.num_classes, backend=args.backend).to(device)
    if args.blank_bias:
        T = net.output_length(args.imgW)
        init_blank_bias(
            net, blank_prior_bias(T, (args.min_len + args.max_len) / 2, charset.num_classes)
        )
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    scheduler = make_scheduler(
        optimizer,
        "cosine",
        total_steps=args.steps,
        warmup_steps=min(100, args.steps // 10 + 1),
        final_factor=0.02,
        max_seconds=60 * args.max_minutes if args.max_minutes else None,
    )
    trainer = Trainer(
        net, converter, optimizer, amp=False, scheduler=scheduler, grad_clip=args.grad_clip or None
    )
    nparams = sum(p.numel() for p in net.parameters())
    log(
        f"training a CRNN ({nparams} parameters, channels {channels}, nh {args.nh}) on "
        f"{device} for {args.steps} steps of {args.batchSize} ..."
    )
    val_subset = PreparedLines(test_set.items[: args.val_subset])
    val_loader = torch.utils.data.DataLoader(val_subset, batch_size=256, collate_fn=collate)
    nepoch = math.ceil(args.steps * args.batchSize / len(train_set)) + 1
    extra = dict(
        charset=charset.to_string(),
        case_insensitive=False,
        config=cfg,
        args=plain_config(vars(args)),
    )
    t1 = time.time()
    hist = fit(
        trainer,
        train_set,
        val_loader,
        nepoch=nepoch,
        batch_size=args.batchSize,
        collate=collate,
        expr_dir=None,
        seed=args.seed,
        workers=0,
        display_interval=args.displayInterval,
        val_interval=args.valInterval,
        save_interval=0,
        max_steps=args.steps,
        max_seconds=60 * args.max_minutes if args.max_minutes else None,
        log=log,
        progress=progress,
    )
    t_train = time.time() - t1
    log(
        f"trained {hist['step']} steps in {t_train:.1f} s "
        f"({hist['images'] / max(t_train, 1e-9):.0f} images/s)"
    )

    test_loader = torch.utils.data.DataLoader(test_set, batch_size=256, collate_fn=collate)
    res = evaluate(net, test_loader, converter, progress=progress, desc="held-out")
    m = res["metrics"]
    hist["val_steps"].append(hist["step"])
    hist["val_accuracy"].append(m["word_accuracy"])
    hist["val_cer"].append(m["cer"])
    beam = evaluate(
        net, test_loader, converter, desc="held-out, beam", decoding=DecodeOptions(DEMO_BEAM)
    )
    beam_accuracy = beam["metrics"]["word_accuracy"]
    log(
        f"held-out word accuracy: greedy {100 * m['word_accuracy']:.2f}%, "
        f"beam search (width {DEMO_BEAM}) {100 * beam_accuracy:.2f}%"
    )
    log("sample predictions on held-out lines:")
    log(f"  {'prediction':<12} {'confidence':>10}  {'truth':<12}")
    for p, r, c in list(zip(res["predictions"], res["references"], res["confidences"]))[:12]:
        log(f"  {p:<12} {c:>10.3f}  {r:<12}{'' if p == r else '  <- wrong'}")

    ck_path = os.path.join(args.output, "demo.pth")
    save_checkpoint(
        ck_path,
        dict(
            extra,
            model=net.state_dict(),
            optimizer=None,
            epoch=hist["epoch"],
            batch=0,
            step=hist["step"],
            best_accuracy=m["word_accuracy"],
        ),
    )
    curve = os.path.join(args.output, "curve.png")
    have_curve = _plot_curve(hist, curve)
    samples = os.path.join(args.output, "samples.png")
    _samples_png(test_images, res["predictions"], res["references"], res["confidences"], samples)
    for i in range(3):
        test_images[i].save(os.path.join(args.output, f"sample_{i}_{test_src.text(i)}.png"))
    total = time.time() - t0
    summary = dict(
        word_accuracy=m["word_accuracy"],
        beam_word_accuracy=beam_accuracy,
        cer=m["cer"],
        norm_edit_distance=m["norm_edit_distance"],
        num_samples=m["num_samples"],
        steps=hist["step"],
        train_seconds=round(t_train, 1),
        data_seconds=round(t_data, 1),
        total_seconds=round(total, 1),
        device=str(device),
        threads=torch.get_num_threads(),
        parameters=nparams,
    )
    with open(os.path.join(args.output, "metrics.json"), "w") as f:
        json.dump(dict(summary, history=hist), f, indent=1)
    log(
        f"held-out word accuracy {100 * m['word_accuracy']:.2f}% on {m['num_samples']} lines, "
        f"CER {m['cer']:.4f}; total time {total / 60:.1f} min"
    )
    log(
        f"wrote {ck_path}, {samples}"
        + (f", {curve}" if have_curve else " (no matplotlib: no curve)")
    )
    log(
        f"try: python -m fastcrnn predict --checkpoint {ck_path} "
        f"{os.path.join(args.output, 'sample_0_' + test_src.text(0) + '.png')}"
    )
    print(json.dumps(summary))
    return summary
