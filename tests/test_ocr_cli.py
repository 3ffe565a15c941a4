"""`python -m fastcrnn ...` end to end on tiny data (in process through fastcrnn.ocr.cli.main,
plus real `python -m fastcrnn` subprocesses for the entry point itself)."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("PIL")
pytest.importorskip("lmdb")
pytest.importorskip("rapidfuzz")
pytest.importorskip("tqdm")

from helpers import ROOT, TINY_ADAM, cli, flags, run_python, tiny_train_args


def digits_train_args(lmdbs, expr, **options):
    """`fastcrnn train` (the tiny model) on the digit LMDBs of the `lmdbs` fixture."""
    return tiny_train_args(lmdbs / "train", lmdbs / "val", expr, alphabet="0123456789", **options)


def cli_subprocess(*args, cwd=None):
    return run_python("-m", "fastcrnn", *args, cwd=cwd)


# small models on a shared CI machine: one thread avoids OpenMP oversubscription
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lmdbs(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    cli(
        "make-lmdb",
        "--output",
        d / "train",
        "--synthetic",
        64,
        "--alphabet",
        "0123456789",
        "--min_len",
        1,
        "--max_len",
        4,
        "--seed",
        1,
        "--no_progress",
    )
    # the validation set from a folder of images plus a path<TAB>label file
    from fastcrnn.ocr.data import SyntheticTextLines

    ds = SyntheticTextLines("0123456789", 12, 1, 4, seed=2)
    os.makedirs(d / "imgs")
    lines = []
    for i in range(len(ds)):
        img, label = ds[i]
        img.save(d / "imgs" / f"{i}.png")
        lines.append(f"{i}.png\t{label}")
    (d / "imgs" / "labels.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cli("make-lmdb", "--output", d / "val", "--labels", d / "imgs" / "labels.txt", "--no_progress")
    return d


@pytest.fixture(scope="module")
def trained(lmdbs):
    expr = lmdbs / "expr"
    p = cli(
        *digits_train_args(
            lmdbs,
            expr,
            nepoch=2,
            intervals=(2, 3, 3),
            workers=1,
            keep_ratio=True,
            no_progress=True,
            **TINY_ADAM,
        )
    )
    assert "validation: word accuracy" in p.stderr + p.stdout
    return expr


def test_make_lmdb_and_train_checkpoints(lmdbs, trained):
    from fastcrnn.ocr.checkpoint import load_checkpoint
    from fastcrnn.ocr.data import LmdbDataset

    assert len(LmdbDataset(lmdbs / "train")) == 64 and len(LmdbDataset(lmdbs / "val")) == 12
    last = torch.load(trained / "last.pth", weights_only=True)
    assert last["charset"] == "0123456789" and last["step"] == 8 and last["epoch"] == 2
    assert last["config"]["keep_ratio"] is True and last["config"]["channels"][0] == 8
    assert set(last) >= {"model", "optimizer", "epoch", "charset", "config"}
    load_checkpoint(trained / "best.pth", expected_charset="0123456789")
    assert not [f for f in os.listdir(trained) if f.endswith(".tmp")]


@pytest.mark.parametrize("beam_width", [1, 5])
def test_eval_json_matches_predictions(lmdbs, trained, beam_width):
    p = cli(
        "eval",
        "--checkpoint",
        trained / "last.pth",
        "--valRoot",
        lmdbs / "val",
        "--show",
        12,
        "--no_progress",
        "--beam_width",
        beam_width,
    )
    out = p.stdout.strip().splitlines()
    result = json.loads(out[-1])
    assert set(result) == {"word_accuracy", "cer", "norm_edit_distance", "num_samples"}
    assert result["num_samples"] == 12
    assert "word accuracy" in p.stdout
    # recompute from the predictions listed in the table
    from fastcrnn.ocr.metrics import recognition_metrics

    rows = [l for l in out[1:13]]
    preds = [r[:28].strip() for r in rows]
    refs = [r[29:57].strip() for r in rows]
    m = recognition_metrics(preds, refs)
    for k in ("word_accuracy", "cer", "norm_edit_distance"):
        assert result[k] == pytest.approx(m[k])


def test_eval_with_a_lexicon_reads_lexicon_words(lmdbs, trained, tmp_path):
    from fastcrnn.ocr.data import LmdbDataset

    val = LmdbDataset(lmdbs / "val")
    words = sorted({val.label(i) for i in range(len(val))})
    lexicon = tmp_path / "words.txt"
    lexicon.write_text("\n".join(words) + "\n")
    p = cli(
        "eval", "--checkpoint", trained / "last.pth", "--valRoot", lmdbs / "val", "--show", 12,
        "--no_progress", "--lexicon", lexicon, "--max_edit_distance", 20,
    )  # fmt: skip
    out = p.stdout.strip().splitlines()
    assert json.loads(out[-1])["num_samples"] == 12
    # a distance beyond every word: each prediction is a lexicon word
    assert all(row[:28].strip() in words for row in out[1:13])


def test_predict(lmdbs, trained):
    from fastcrnn.ocr.evaluate import load_recognizer

    imgs = [lmdbs / "imgs" / "0.png", lmdbs / "imgs" / "1.png"]
    p = cli("predict", "--checkpoint", trained / "best.pth", *imgs)
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 2
    rec = load_recognizer(str(trained / "best.pth"))
    # predict reads the two as one batch (padded to the wider), as the Recognizer does
    expected = rec.recognize([str(path) for path in imgs])
    for line, path, exp in zip(lines, imgs, expected):
        name, text, conf = line.split("\t")
        assert name == str(path)
        assert text == exp.text and float(conf) == pytest.approx(exp.confidence, abs=1e-4)
        assert 0.0 <= float(conf) <= 1.0
    bad = cli("predict", "--checkpoint", trained / "best.pth", lmdbs / "nope.png", check=False)
    assert bad.returncode != 0 and "not found" in bad.stderr


def test_resume_and_errors(lmdbs, trained, tmp_path):
    import shutil

    expr = tmp_path / "expr"
    shutil.copytree(trained, expr)
    common = dict(TINY_ADAM, workers=0, keep_ratio=True, no_progress=True)

    def train(alphabet, nepoch, *extra, check=True):
        args = tiny_train_args(
            lmdbs / "train", lmdbs / "val", expr, *extra, alphabet=alphabet, nepoch=nepoch, **common
        )
        return cli(*args, check=check)

    p = train("0123456789", 3, "--resume")
    assert "resuming" in p.stderr + p.stdout
    assert torch.load(expr / "last.pth", weights_only=True)["step"] == 12
    # another charset
    p = train("0123456789x", 4, "--resume", check=False)
    assert p.returncode != 0 and "charset" in p.stderr
    # a truncated checkpoint
    data = (expr / "last.pth").read_bytes()
    (expr / "last.pth").write_bytes(data[:100])
    p = train("0123456789", 4, "--resume", check=False)
    assert p.returncode != 0 and "truncated or corrupt" in p.stderr
    # labels outside the alphabet are reported with the sample
    p = train("01234", 1, check=False)
    assert p.returncode != 0 and "not in the alphabet" in p.stderr


def test_train_schedule_clipping_and_plain_log(lmdbs, tmp_path):
    """The opt-in schedule and clipping flags reach the optimizer; a log that is not a terminal
    is whole lines with the gradient norm, and epochs numbered from 1 to --nepoch."""
    import re

    p = cli(
        *digits_train_args(
            lmdbs,
            tmp_path / "e",
            nepoch=2,
            lr_schedule="cosine",
            warmup_steps=2,
            grad_clip=1.5,
            intervals=(1, 3, 3),
            workers=0,
            **TINY_ADAM,
        )
    )  # progress bars on, but stdout is not a terminal
    log = p.stdout + p.stderr
    assert "\r" not in log
    assert "adam lr 0.001 (cosine, 2 warm-up steps), gradient norm clipped to 1.5" in log
    assert "8 steps planned" in log
    lrs = [float(x) for x in re.findall(r"\] loss .*, lr ([0-9.e-]+)$", log, re.M)]
    assert len(lrs) == 8 and lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)
    import math

    for k in range(2, 8):  # cosine from the peak after the warm-up towards 0 at step 8
        assert lrs[k] == pytest.approx(
            1e-3 * 0.5 * (1 + math.cos(math.pi * (k - 2) / 6)), rel=2e-3
        ), (k, lrs)
    epochs = {int(e) for e in re.findall(r"\[epoch (\d+)/2 step", log)}
    assert epochs == {1, 2}
    # 4 steps per epoch: the epoch-end validations are labelled with the epoch that ended
    assert "[epoch 1/2 step 4] validation" in log and "[epoch 2/2 step 8] validation" in log
    for bad, word in (
        (["--lr_schedule", "linear"], "--lr_schedule"),
        (["--grad_clip", "-1"], "--grad_clip"),
        (["--warmup_steps", "-2"], "--warmup_steps"),
    ):
        p = cli("train", "--trainRoot", "x", "--valRoot", "y", *bad, check=False)
        assert p.returncode == 2 and word in p.stderr, (bad, p.stderr)


def test_pretrained_with_module_prefix(lmdbs, trained, tmp_path):
    sd = torch.load(trained / "last.pth", weights_only=True)["model"]
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "ddp.pth")
    p = cli(
        *digits_train_args(
            lmdbs,
            tmp_path / "e",
            batchSize=16,
            nepoch=1,
            max_steps=1,
            pretrained=tmp_path / "ddp.pth",
            workers=0,
            keep_ratio=True,
            no_progress=True,
            lr="1e-12",
            adam=True,
        )
    )
    assert "loaded pretrained" in p.stderr + p.stdout
    # another model (--nh 8) and the default alphabet
    p = cli(
        "train",
        *flags(
            trainRoot=lmdbs / "train",
            valRoot=lmdbs / "val",
            expr_dir=tmp_path / "f",
            nepoch=1,
            pretrained=tmp_path / "ddp.pth",
            no_progress=True,
            nh="8",
            channels="8,8,16,16,16,16,16",
        ),
        check=False,
    )
    assert p.returncode != 0 and "does not fit" in p.stderr


def test_finetune_adds_characters(lmdbs, trained, tmp_path):
    out = tmp_path / "ft"
    cli(
        "finetune",
        "--checkpoint",
        trained / "last.pth",
        "--add-chars",
        "xy",
        "--synthetic",
        32,
        "--max_steps",
        2,
        "--batchSize",
        8,
        "--expr_dir",
        out,
        "--valInterval",
        2,
        "--no_progress",
    )
    ck = torch.load(out / "last.pth", weights_only=True)
    assert ck["charset"] == "0123456789xy"
    old = torch.load(trained / "last.pth", weights_only=True)["model"]
    w_new, w_old = ck["model"]["rnn.1.embedding.weight"], old["rnn.1.embedding.weight"]
    assert w_new.shape[0] == w_old.shape[0] + 2
    # only the new rows trained: the old classes' weights and the rest are unchanged
    assert torch.equal(w_new[: w_old.shape[0]], w_old)
    assert torch.equal(ck["model"]["cnn.conv0.weight"], old["cnn.conv0.weight"])
    assert not torch.equal(w_new[w_old.shape[0] :], torch.zeros_like(w_new[w_old.shape[0] :]))
    p = cli("predict", "--checkpoint", out / "last.pth", lmdbs / "imgs" / "0.png")
    assert p.stdout.count("\t") == 2
    p = cli(
        "finetune",
        "--checkpoint",
        trained / "last.pth",
        "--add-chars",
        "1",
        "--synthetic",
        8,
        check=False,
    )
    assert p.returncode != 0 and "already in the charset" in p.stderr


def test_demo_tiny(tmp_path):
    out = tmp_path / "demo"
    p = cli(
        "demo",
        "--output",
        out,
        "--train_samples",
        48,
        "--test_samples",
        16,
        "--steps",
        3,
        "--batchSize",
        16,
        "--valInterval",
        2,
        "--val_subset",
        8,
        "--displayInterval",
        1,
        "--nh",
        16,
        "--channels",
        "8,8,16,16,16,16,16",
        "--threads",
        1,
        "--no_progress",
    )
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["num_samples"] == 16 and summary["steps"] == 3
    assert 0.0 <= summary["beam_word_accuracy"] <= 1.0
    assert "beam search (width 10)" in p.stderr + p.stdout
    for f in ("demo.pth", "curve.png", "samples.png", "metrics.json"):
        assert (out / f).stat().st_size > 0, f
    from PIL import Image

    assert Image.open(out / "samples.png").size[0] > 100
    ck = torch.load(out / "demo.pth", weights_only=True)
    assert ck["charset"] == "0123456789abcdefghijklmnopqrstuvwxyz"
    sample = [f for f in os.listdir(out) if f.startswith("sample_0_")][0]
    p = cli("predict", "--checkpoint", out / "demo.pth", out / sample)
    assert p.stdout.count("\t") == 2


def test_seq2seq_dispatch():
    # seq2seq-demo dispatches to fastcrnn.demos.seq2seq (its own --help)
    p = cli("seq2seq-demo", "--help", check=False)
    try:
        import fastcrnn.demos.seq2seq  # noqa: F401

        assert p.returncode == 0
    except ImportError:
        assert p.returncode != 0 and "not part of this installation" in p.stderr


def test_benchmark_report_runs_as_a_script(tmp_path):
    """The benchmark report is benchmarks/report.py of the checkout (the CLI has no bench
    command: the package does not reach outside itself)."""
    p = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "report.py"),
            "--only",
            "no-such-family",
            "--out",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "fastcrnn" in p.stdout and (tmp_path / "b" / "report-cpu.json").exists()
    assert cli("bench", check=False).returncode == 2


def test_cli_usage_errors():
    p = cli_subprocess("train")  # the real entry point
    assert p.returncode == 2 and "--trainRoot" in p.stderr
    p = cli_subprocess("--help")
    assert p.returncode == 0 and "make-lmdb" in p.stdout and "seq2seq-demo" in p.stdout
    p = cli("nonsense", check=False)
    assert p.returncode == 2
    p = cli("train", "--trainRoot", "x", "--valRoot", "y", "--amp", check=False)
    assert p.returncode != 0 and "--amp" in p.stderr
    p = cli("eval", "--checkpoint", "nope.pth", "--valRoot", "x", check=False)
    assert p.returncode != 0 and "nope.pth" in p.stderr
