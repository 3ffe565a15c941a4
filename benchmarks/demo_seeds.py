"""Does the demo converge for every seed? Runs `python -m fastcrnn demo` once per (backend, seed),
each in its own process, one after the other, and prints a markdown table of the held-out word
accuracy, CER, steps and times.

    python benchmarks/demo_seeds.py                          # fused seeds 0-9, torch seeds 0-4
    python benchmarks/demo_seeds.py --fused 0-2 --torch ''   # a subset
    python benchmarks/demo_seeds.py -- --steps 1500          # extra arguments for every demo

Each run's summary (the demo's last stdout line, a JSON object) is appended to
OUT/results.jsonl as soon as the run ends, with its full log in OUT/<backend>_<seed>.log, so an
interrupted sweep keeps what it measured; `--skip_done` reruns only the missing ones. A run
fails the target when its word accuracy is below --target; the exit status is 1 if any does.
The runs are sequential and single-threaded (the demo's default): run nothing else heavy
meanwhile, or say so next to the table, since wall times on a shared machine vary.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seeds_arg(s: str) -> List[int]:
    """'0-9', '1,3,5' or '0-2,7' -> a list of ints; '' -> []."""
    out = []
    for part in filter(None, (x.strip() for x in s.split(","))):
        lo, _, hi = part.partition("-")
        try:
            lo_i, hi_i = int(lo), int(hi or lo)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"seeds must look like 0-9 or 1,3,5, got {s!r}"
            ) from None
        if hi_i < lo_i:
            raise argparse.ArgumentTypeError(f"empty seed range {part!r}")
        out.extend(range(lo_i, hi_i + 1))
    return out


def run_one(backend: str, seed: int, out: str, extra: List[str], timeout: float) -> Dict:
    folder = os.path.join(out, f"{backend}_{seed}")
    cmd = [
        sys.executable,
        "-m",
        "fastcrnn",
        "demo",
        "--seed",
        str(seed),
        "--backend",
        backend,
        "--no_progress",
        "--output",
        folder,
        *extra,
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    log = os.path.join(out, f"{backend}_{seed}.log")
    t0 = time.time()
    with open(log, "w") as f:  # written as the run goes, to follow it with tail -f
        try:
            rc = subprocess.run(
                cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.time() - t0
    row = dict(
        backend=backend,
        seed=seed,
        returncode=rc,
        wall_seconds=round(wall, 1),
        command=" ".join(cmd[1:]),
    )
    with open(log) as f:
        lines = [ln for ln in f.read().splitlines() if ln.startswith("{")]
    if rc == 0 and lines:
        summary = json.loads(lines[-1])
        row.update(
            {
                k: summary[k]
                for k in ("word_accuracy", "cer", "steps", "train_seconds", "total_seconds")
                if k in summary
            }
        )
        row["plateau_exit"] = plateau_exit(out, backend, seed)
    return row


# the all-blank plateau sits at a mean loss of about 3.9 for the demo's data; below this the
# model reads characters
PLATEAU_LEFT = 2.0


def plateau_exit(out: str, backend: str, seed: int):
    """The first logged step whose mean training loss is below PLATEAU_LEFT, from the run's
    metrics.json (None when it never got there or the file is missing)."""
    path = os.path.join(out, f"{backend}_{seed}", "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        hist = json.load(f)["history"]
    return next((s for s, l in zip(hist["steps"], hist["losses"]) if l < PLATEAU_LEFT), None)


def table(rows: List[Dict], target: float) -> str:
    out = [
        "| backend | seed | word accuracy | CER | steps | loss < 2 at step | train time | "
        "total time | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "word_accuracy" not in r:
            out.append(
                f"| {r['backend']} | {r['seed']} | failed (exit {r['returncode']}) | | | "
                f"| | {r['wall_seconds'] / 60:.1f} min | no |"
            )
            continue
        ok = "yes" if r["word_accuracy"] >= target else "**no**"
        out.append(
            f"| {r['backend']} | {r['seed']} | {100 * r['word_accuracy']:.1f}% | "
            f"{r['cer']:.4f} | {r['steps']:,} | {r.get('plateau_exit') or 'never'} | "
            f"{r['train_seconds'] / 60:.1f} min | "
            f"{r['total_seconds'] / 60:.1f} min | {ok} |"
        )
    done = [r for r in rows if "word_accuracy" in r]
    if done:
        accs = sorted(r["word_accuracy"] for r in done)
        out.append("")
        out.append(
            f"{sum(a >= target for a in accs)} of {len(rows)} runs reach "
            f"{100 * target:.0f}%; lowest {100 * accs[0]:.1f}%, median "
            f"{100 * accs[len(accs) // 2]:.1f}%, longest total "
            f"{max(r['total_seconds'] for r in done) / 60:.1f} min."
        )
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--fused",
        type=seeds_arg,
        default=seeds_arg("0-9"),
        help="seeds to run with the fused LSTM (default 0-9)",
    )
    p.add_argument(
        "--torch",
        type=seeds_arg,
        default=seeds_arg("0-4"),
        help="seeds to run with the torch LSTM (default 0-4)",
    )
    p.add_argument(
        "--out",
        default=os.path.join(ROOT, "bench_out", "demo_seeds"),
        help="folder for results.jsonl, the logs and each run's output",
    )
    p.add_argument("--target", type=float, default=0.90, help="word accuracy to reach")
    p.add_argument("--timeout_minutes", type=float, default=20.0, help="per run")
    p.add_argument(
        "--skip_done",
        action="store_true",
        help="skip (backend, seed) pairs already in OUT/results.jsonl",
    )
    p.add_argument(
        "--report", action="store_true", help="run nothing: print the table of OUT/results.jsonl"
    )
    p.add_argument("demo_args", nargs="*", help="after --: extra arguments for every demo")
    args = p.parse_args(argv)
    if not 0.0 < args.target <= 1.0:
        p.error(f"--target must be in (0, 1], got {args.target}")
    os.makedirs(args.out, exist_ok=True)
    results = os.path.join(args.out, "results.jsonl")
    if args.report:
        with open(results) as f:
            rows = [json.loads(line) for line in f]
        for r in rows:
            r.setdefault("plateau_exit", plateau_exit(args.out, r["backend"], r["seed"]))
        print(table(rows, args.target))
        return 0 if all(r.get("word_accuracy", -1) >= args.target for r in rows) else 1
    previous = {}
    if args.skip_done and os.path.isfile(results):
        with open(results) as f:
            for line in f:
                r = json.loads(line)
                if "word_accuracy" in r:
                    previous[(r["backend"], r["seed"])] = r
    rows = []
    # by seed, both backends of a seed together: an interrupted sweep has both covered
    todo = sorted(
        [(seed, 0, "fused") for seed in args.fused] + [(seed, 1, "torch") for seed in args.torch]
    )
    for seed, _, backend in todo:
        if (backend, seed) in previous:
            rows.append(previous[(backend, seed)])
            continue
        row = run_one(backend, seed, args.out, args.demo_args, 60 * args.timeout_minutes)
        rows.append(row)
        with open(results, "a") as f:
            f.write(json.dumps(row) + "\n")
        acc = row.get("word_accuracy")
        print(
            f"{backend} seed {seed}: "
            + (f"{100 * acc:.1f}%" if acc is not None else f"failed ({row['returncode']})")
            + f" in {row['wall_seconds'] / 60:.1f} min",
            flush=True,
        )
    print(table(rows, args.target))
    return 0 if all(r.get("word_accuracy", -1) >= args.target for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
