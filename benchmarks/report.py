"""Benchmark report: every fastcrnn op against its reference, measured in the same run.

    python benchmarks/report.py [--device cpu|cuda] [--only decode,ctc,lstm] [--out DIR]

Collects `report_rows(device)` from each benchmarks/bench_*.py, prints a ratio table
(ratio = reference time / fastcrnn time; > 1 means fastcrnn is faster: CTC and LSTM rows
time both sides in alternating rounds and report the median of the per-round ratios, see
benchmarks.timing.paired_ms), and writes
DIR/report-<device>.json and DIR/report-<device>.png.
"""

import argparse
import datetime
import glob
import importlib
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.timing import machine_name  # noqa: E402


def collect(device, only=None):
    rows = []
    for path in sorted(glob.glob(os.path.join(ROOT, "benchmarks", "bench_*.py"))):
        family = os.path.basename(path)[len("bench_") : -3]
        if only and family not in only:
            continue
        module = importlib.import_module(f"benchmarks.bench_{family}")
        if hasattr(module, "report_rows"):
            rows.extend(module.report_rows(device))
    return rows


def format_table(rows):
    header = (
        f"{'op':<7} {'workload':<12} {'case':<32} {'fastcrnn ms':>11} {'reference':<34} "
        f"{'ref ms':>9} {'ratio':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['family']:<7} {r['workload']:<12} {r['case']:<32} {r['ours_ms']:>11.3f} "
            f"{r['baseline']:<34} {r['baseline_ms']:>9.3f} {r['ratio']:>6.2f}x"
        )
    return "\n".join(lines)


def write_chart(rows, path, title):
    """Horizontal bar chart of the ratios (matplotlib if installed, else Pillow)."""
    labels = [f"{r['family']} {r['workload']} {r['case']} vs {r['baseline']}" for r in rows]
    ratios = [r["ratio"] for r in rows]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    if plt is not None:
        fig, ax = plt.subplots(figsize=(11, 0.35 * len(rows) + 1.5))
        ax.barh(
            range(len(rows)), ratios, color=["tab:green" if r >= 1 else "tab:red" for r in ratios]
        )
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("speed-up over reference (x)")
        ax.set_title(title, fontsize=9)
        ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return True
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        return False
    width, bar_h = 1100, 18
    img = Image.new("RGB", (width, bar_h * len(rows) + 40), "white")
    draw = ImageDraw.Draw(img)
    draw.text((5, 5), title, fill="black")
    scale = 400 / max(max(ratios, default=1), 1)
    for i, (label, ratio) in enumerate(zip(labels, ratios)):
        y = 30 + i * bar_h
        draw.text((5, y), label[:80], fill="black")
        draw.rectangle(
            [620, y, 620 + ratio * scale, y + bar_h - 4], fill="green" if ratio >= 1 else "red"
        )
        draw.text((625 + ratio * scale, y), f"{ratio:.2f}x", fill="black")
    img.save(path)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--only", default="", help="comma-separated families, e.g. decode,ctc")
    parser.add_argument("--out", default="bench_out")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU")
    import fastcrnn

    only = {f for f in args.only.split(",") if f}
    rows = collect(torch.device(args.device), only)
    machine = machine_name(args.device)
    stamp = datetime.date.today().isoformat()
    title = f"fastcrnn {fastcrnn.__version__} on {machine}, torch {torch.__version__}, {stamp}"
    print(title)
    print(format_table(rows))
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"report-{args.device}")
    with open(base + ".json", "w") as f:
        json.dump(
            dict(
                machine=machine,
                date=stamp,
                torch=torch.__version__,
                build_info=fastcrnn.build_info(),
                rows=rows,
            ),
            f,
            indent=1,
        )
    if write_chart(rows, base + ".png", title):
        print(f"wrote {base}.json and {base}.png")
    else:
        print(f"wrote {base}.json (no matplotlib or Pillow: no chart)")
    return rows


if __name__ == "__main__":
    main()
