"""What grows when a late epoch collapses? Trains a CRNN on synthetic digit strings with
crnn.pytorch's Adam recipe (constant lr 1e-3, betas (0.5, 0.999), no clipping) or the opt-in
one, and at every validation records the quantities a collapse could come from:

- the largest loss and gradient norm since the previous validation,
- Adam's largest realised step, max |m_hat / (sqrt(v_hat) + eps)| over all weights (in units
  of the learning rate; it can reach (1 - beta1) / sqrt(1 - beta2) = 15.8 with beta1 = 0.5 when
  a large gradient meets a second moment that shrank while the loss was low), and the median
  sqrt(v_hat),
- the largest BatchNorm running variance, and
- the validation word accuracy twice: as evaluated (BatchNorm's running statistics) and with
  those statistics re-estimated on training batches. When the first falls while the second
  does not, the collapse is in the running statistics, not in the weights.

    python benchmarks/collapse_probe.py                      # crnn.pytorch's recipe
    python benchmarks/collapse_probe.py --lr_schedule cosine --warmup_steps 200 --grad_clip 5
    python benchmarks/collapse_probe.py --nepoch 2 --train 512 --val 128 --tiny  # smoke run

It prints one markdown row per validation, and exits 1 when a validation falls more than
--drop below the best so far (a collapse), so it can gate a recipe.
"""

import argparse
import copy
import math
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere, like report.py
    sys.path.insert(0, ROOT)

from fastcrnn.ocr.data import AlignCollate, SyntheticTextLines  # noqa: E402
from fastcrnn.ocr.demo import render_dataset  # noqa: E402
from fastcrnn.ocr.distributed import ResumableSampler  # noqa: E402
from fastcrnn.ocr.engine import (  # noqa: E402
    LR_SCHEDULES,
    Trainer,
    evaluate,
    make_optimizer,
    make_scheduler,
    seed_everything,
)
from fastcrnn.ocr.model import DEMO_CHANNELS, build_model, model_config  # noqa: E402
from fastcrnn.text import LabelConverter  # noqa: E402

TINY_CHANNELS = (8, 16, 16, 16, 32, 32, 32)


def adam_stats(opt: torch.optim.Optimizer, median: bool = True):
    """(largest |m_hat / (sqrt(v_hat) + eps)|, median sqrt(v_hat) or nan) over every
    weight."""
    biggest, roots = 0.0, []
    for group in opt.param_groups:
        b1, b2 = group["betas"]
        for p in group["params"]:
            st = opt.state.get(p)
            if not st or "exp_avg_sq" not in st:
                continue
            t = float(st["step"])
            v_hat = st["exp_avg_sq"] / (1 - b2**t)
            m_hat = st["exp_avg"] / (1 - b1**t)
            ratio = (m_hat.abs() / (v_hat.sqrt() + group["eps"])).max()
            biggest = max(biggest, float(ratio))
            if median:
                roots.append(v_hat.sqrt().flatten())
    med = float(torch.cat(roots).median()) if roots else float("nan")
    return biggest, med


@torch.no_grad()
def recalibrated(net, loader, batches: int):
    """A copy of ``net`` whose BatchNorm running statistics are re-estimated (cumulative
    average) on ``batches`` training batches."""
    twin = copy.deepcopy(net)
    bns = [m for m in twin.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    twin.train()
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        twin(batch.images)
    return twin


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=int, default=8000, help="training lines (digit strings)")
    p.add_argument("--val", type=int, default=400)
    p.add_argument("--nepoch", type=int, default=10)
    p.add_argument("--batchSize", type=int, default=64)
    p.add_argument("--valInterval", type=int, default=125)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--lr_schedule", default="constant", choices=list(LR_SCHEDULES))
    p.add_argument("--warmup_steps", type=int, default=0)
    p.add_argument("--grad_clip", type=float, default=0.0)
    p.add_argument("--tiny", action="store_true", help="a very small model (smoke runs)")
    p.add_argument("--backend", default=None, choices=["fused", "torch"])
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument(
        "--drop",
        type=float,
        default=0.1,
        help="a validation this far below the best is a collapse (default 0.1)",
    )
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    for name in ("train", "val", "nepoch", "batchSize", "valInterval"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be > 0")
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    digits = "0123456789"
    conv = LabelConverter(digits)
    collate = AlignCollate(32, 100)
    look = dict(light_on_dark=0.0, noise=8.0)
    train = render_dataset(
        SyntheticTextLines(digits, args.train, 1, 10, seed=args.seed, **look),
        collate,
        "",
        progress=False,
    )
    val = render_dataset(
        SyntheticTextLines(digits, args.val, 1, 10, seed=args.seed + 1, **look),
        collate,
        "",
        progress=False,
    )
    cfg = model_config(
        nh=32 if args.tiny else 64, channels=TINY_CHANNELS if args.tiny else DEMO_CHANNELS
    )
    net = build_model(cfg, conv.num_classes, backend=args.backend)
    opt = make_optimizer(net.parameters(), "adam", args.lr, args.beta1)
    total = args.nepoch * math.ceil(args.train / args.batchSize)
    sched = make_scheduler(opt, args.lr_schedule, total_steps=total, warmup_steps=args.warmup_steps)
    trainer = Trainer(net, conv, opt, grad_clip=args.grad_clip or None, scheduler=sched)
    sampler = ResumableSampler(len(train), args.seed)
    loader = torch.utils.data.DataLoader(
        train, batch_size=args.batchSize, sampler=sampler, collate_fn=collate
    )
    calib = torch.utils.data.DataLoader(
        train, batch_size=args.batchSize, shuffle=False, collate_fn=collate
    )
    val_loader = torch.utils.data.DataLoader(val, batch_size=256, collate_fn=collate)
    print(
        f"{args.train} lines, {total} steps, adam lr {args.lr:g} betas ({args.beta1}, 0.999), "
        f"schedule {args.lr_schedule}, warm-up {args.warmup_steps}, clip {args.grad_clip:g}"
    )
    print(
        "| epoch | step | loss mean | loss max | grad norm max | Adam step max (x lr) | "
        "median sqrt(v) | BN running var max | val acc | val acc, BN re-estimated |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    step, best, collapsed = 0, 0.0, False
    losses, gmax, smax = [], 0.0, 0.0
    t0 = time.time()
    for epoch in range(args.nepoch):
        sampler.set_epoch(epoch)
        for batch in loader:
            losses.append(trainer.step(batch))
            gmax = max(gmax, trainer.grad_norm)
            step += 1
            s_max, _ = adam_stats(opt, median=False)
            smax = max(smax, s_max)
            if step % args.valInterval and step != total:
                continue
            acc = evaluate(net, val_loader, conv)["metrics"]["word_accuracy"]
            acc_re = evaluate(recalibrated(net, calib, 20), val_loader, conv)["metrics"][
                "word_accuracy"
            ]
            _, med = adam_stats(opt)
            bn_var = max(
                float(m.running_var.max())
                for m in net.modules()
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            )
            flag = ""
            if best - acc > args.drop:
                collapsed, flag = True, " **collapse**"
            best = max(best, acc)
            print(
                f"| {epoch + 1} | {step} | {sum(losses) / len(losses):.4f} | {max(losses):.3f} "
                f"| {gmax:.3g} | {smax:.3g} | {med:.3g} | {bn_var:.3g} | {acc:.4f}{flag} | "
                f"{acc_re:.4f} |",
                flush=True,
            )
            losses, gmax, smax = [], 0.0, 0.0
    print(
        f"best {best:.4f}; {'a collapse' if collapsed else 'no collapse'}; {time.time() - t0:.0f} s"
    )
    return 1 if collapsed else 0


if __name__ == "__main__":
    sys.exit(main())
