"""Drop-in parity with crnn.pytorch (meijieru/crnn.pytorch): its model (models/crnn.py), its
label converter (utils.strLabelConverter), its train.py flags and its checkpoints.

The references are written from crnn.pytorch's published definitions: the CRNN's module names
(so state_dict keys are crnn.pytorch's; the network is fastcrnn.reference.ReferenceCRNN,
shared with test_nn_crnn.py), the converter's ignore_case layout (the alphabet lower-cased in
place, ``dict[char] = i + 1`` over it, so a repeated character maps to its LAST position;
``len(alphabet) + 1`` classes), its greedy decoding, its demo's input preprocessing (PIL
bilinear resize to 100 x 32, ``(x / 255 - 0.5) / 0.5``) and its choice of optimizer. fastcrnn
must read crnn.pytorch's checkpoints as crnn.pytorch does, and write ones
crnn.pytorch can load.
"""

import gc
import os
import random

import pytest
import torch
from torch import nn

pytest.importorskip("PIL")
pytest.importorskip("lmdb")
pytest.importorskip("rapidfuzz")
pytest.importorskip("tqdm")

from helpers import TINY_CRNN_FLAGS, assert_close, cli, randomise_batchnorm, tiny_train_args
from PIL import Image

import fastcrnn
from fastcrnn.ocr.data import LmdbDataset, SyntheticTextLines, write_lmdb
from fastcrnn.reference import FULL_WIDTHS, ReferenceCRNN
from fastcrnn.text import LabelConverter

CRNN_PYTORCH_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
TINY_WIDTHS = (8, 8, 16, 16, 16, 16, 16)  # TINY_CRNN_FLAGS' --channels
TINY_NH = 16
MIXED_CASE = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

# small models on a shared CI machine: one thread avoids OpenMP oversubscription
pytestmark = pytest.mark.usefixtures("one_thread")


# ---- crnn.pytorch's converter and demo, as its published code defines them ------------------
class ReferenceStrLabelConverter:
    """crnn.pytorch's strLabelConverter(alphabet, ignore_case=True)."""

    def __init__(self, alphabet, ignore_case=True):
        self.ignore_case = ignore_case
        if ignore_case:
            alphabet = alphabet.lower()
        self.alphabet = alphabet + "-"  # index -1: the blank's printable
        self.dict = {}
        for i, char in enumerate(alphabet):
            self.dict[char] = i + 1  # 0 is the blank; a repeated char keeps its last index

    def encode(self, texts):
        lengths = [len(t) for t in texts]
        joined = "".join(texts)
        flat = [self.dict[c.lower() if self.ignore_case else c] for c in joined]
        return torch.tensor(flat, dtype=torch.int32), torch.tensor(lengths, dtype=torch.int32)

    def decode_one(self, frames, raw=False):
        """One sequence of per-frame classes: raw (one character per frame, '-' for the
        blank) or collapsed (repeats merged, blanks dropped)."""
        frames = [int(k) for k in frames]
        if raw:
            return "".join(self.alphabet[k - 1] for k in frames)
        out = []
        for i, k in enumerate(frames):
            if k != 0 and not (i > 0 and frames[i - 1] == k):
                out.append(self.alphabet[k - 1])
        return "".join(out)


def reference_input(img, imgW=100, imgH=32):
    """crnn.pytorch's resizeNormalize((imgW, imgH)) of a PIL image, as a (1, 1, H, W) batch."""
    grey = img.convert("L").resize((imgW, imgH), Image.BILINEAR)
    x = torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8).float() / 255.0
    return x.reshape(1, 1, imgH, imgW).sub(0.5).div(0.5)


def reference_read(model, converter, images):
    """crnn.pytorch's demo: per-frame argmax of the scores, then the converter's decoding."""
    model.eval()
    with torch.no_grad():
        return [
            converter.decode_one(model(reference_input(img))[:, 0].argmax(-1)) for img in images
        ]


def random_crnn(nclass, nh=256, widths=FULL_WIDTHS, seed=0):
    """A ReferenceCRNN with random weights and BatchNorm statistics (eval mode), chosen so
    every frame's best class clearly beats the second (no near-ties between two backends)."""
    torch.manual_seed(seed)
    model = ReferenceCRNN(32, 1, nclass, nh, widths=widths)
    randomise_batchnorm(model, mean=0.2, var=(0.5, 1.5), bias=None)
    with torch.no_grad():
        # larger classifier weights spread the scores so the argmax is unambiguous
        model.rnn[1].embedding.weight.mul_(8.0)
    return model.eval()


def line_images(n, seed, alphabet=CRNN_PYTORCH_ALPHABET):
    ds = SyntheticTextLines(alphabet, n, 3, 6, seed=seed, max_fonts=1)
    return [ds[i] for i in range(n)]


def top2_margin(model, images):
    with torch.no_grad():
        scores = torch.cat([model(reference_input(img))[:, 0] for img in images])
    top2 = scores.topk(2, dim=-1).values
    return float((top2[:, 0] - top2[:, 1]).min())


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def published_shape(tmp_path_factory):
    """A state dict with the shapes of crnn.pytorch's published crnn.pth (CRNN(32, 1, 37, 256)),
    saved as crnn.pytorch does (torch.save of state_dict()), plus its DataParallel form, a
    folder of images and an LMDB of them."""
    d = tmp_path_factory.mktemp("crnn_pytorch")
    model = random_crnn(37)
    torch.save(model.state_dict(), d / "crnn.pth")
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, d / "dp.pth")
    samples = line_images(6, seed=11)
    paths = []
    for i, (img, _) in enumerate(samples):
        paths.append(d / f"{i}.png")
        img.save(paths[-1])
    images = [Image.open(p) for p in paths]
    assert top2_margin(model, images) > 1e-2  # the texts cannot flip between backends
    reads = reference_read(model, ReferenceStrLabelConverter(CRNN_PYTORCH_ALPHABET), images)
    # labels: crnn.pytorch's reading in upper case (its validation compares pred ==
    # target.lower(), so these all count as right)
    write_lmdb(d / "lmdb", [(img, text.upper()) for img, text in zip(images, reads)])
    return dict(dir=d, model=model, paths=paths, images=images, reads=reads)


@pytest.fixture(scope="module")
def mixed_case_lmdb(tmp_path_factory):
    """Training data with upper- and lower-case labels over digits and a few letters."""
    d = tmp_path_factory.mktemp("mixed")
    ds = SyntheticTextLines("0123abcABC", 24, 2, 4, seed=3, max_fonts=1)
    write_lmdb(d / "lmdb", (ds[i] for i in range(len(ds))))
    return d / "lmdb"


def one_lmdb_train_args(lmdb, expr, *extra, alphabet="0123abc"):
    """A crnn.pytorch-style command on one LMDB given as both --trainRoot and --valRoot."""
    return tiny_train_args(
        lmdb,
        lmdb,
        expr,
        *extra,
        alphabet=alphabet,
        batchSize=8,
        nepoch=10,
        intervals=(1, 2, 2),
        no_progress=True,
    )


@pytest.fixture(scope="module")
def trained(mixed_case_lmdb, tmp_path_factory):
    """fastcrnn train with crnn.pytorch's flags (--adadelta, no --lr, no case flag) on labels
    with upper-case letters and a lower-case alphabet, the same LMDB for training and
    validation, read by a DataLoader worker: 3 steps."""
    expr = tmp_path_factory.mktemp("expr")
    p = cli(
        *one_lmdb_train_args(mixed_case_lmdb, expr, "--adadelta", "--max_steps", 3, "--workers", 1)
    )
    return dict(expr=expr, log=p.stdout + p.stderr)


# ---- the model and its checkpoints ------------------------------------------------------------
def test_state_dict_keys_and_shapes_are_crnn_pytorchs():
    ours = fastcrnn.nn.CRNN(32, 1, 37, 256).state_dict()
    theirs = ReferenceCRNN(32, 1, 37, 256).state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_predict_reads_a_crnn_pytorch_state_dict_as_crnn_pytorch(published_shape):
    d = published_shape
    for name in ("crnn.pth", "dp.pth"):  # plain and DataParallel ("module.") keys
        p = cli("predict", "--checkpoint", d["dir"] / name, *d["paths"])
        rows = [line.split("\t") for line in p.stdout.strip().splitlines()]
        assert [r[0] for r in rows] == [str(x) for x in d["paths"]]
        assert [r[1] for r in rows] == d["reads"], name
    assert any(d["reads"])  # the comparison is not between empty strings
    # the scores themselves: fastcrnn's fused BiLSTM against crnn.pytorch's nn.LSTM
    from fastcrnn.ocr.evaluate import load_recognizer

    rec = load_recognizer(str(d["dir"] / "crnn.pth"), alphabet=CRNN_PYTORCH_ALPHABET, nh=256)
    assert rec.net.nclass == 37 and rec.converter.charset.case_insensitive
    x = torch.cat([reference_input(img) for img in d["images"]])
    with torch.no_grad():
        assert_close(rec.net(x), d["model"](x), atol=2e-4, rtol=1e-4, what="scores")


def test_eval_reads_a_crnn_pytorch_state_dict_as_crnn_pytorch(published_shape):
    import json

    d = published_shape
    p = cli(
        "eval",
        "--checkpoint",
        d["dir"] / "crnn.pth",
        "--valRoot",
        d["dir"] / "lmdb",
        "--show",
        len(d["reads"]),
        "--no_progress",
    )
    lines = p.stdout.strip().splitlines()
    listed = [row[:28].strip() for row in lines[1 : 1 + len(d["reads"])]]
    assert listed == d["reads"]
    # the labels are the readings in upper case: right, ignoring case, as crnn.pytorch counts
    assert json.loads(lines[-1])["word_accuracy"] == 1.0


def test_bare_state_dict_flag_errors_name_the_flag(published_shape, tmp_path):
    d = published_shape
    sd = d["dir"] / "crnn.pth"
    cases = [
        (["--alphabet", "0123456789"], "--alphabet has 10 characters (11 classes"),
        (["--nh", "128"], "--nh 128"),
        (["--nc", "3"], "--nc 3"),
        (["--imgH", "48"], "--imgH 48"),
    ]
    for flags, message in cases:
        p = cli("predict", "--checkpoint", sd, *flags, d["paths"][0], check=False)
        assert p.returncode == 2 and message in p.stderr, (flags, p.stderr)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    p = cli("predict", "--checkpoint", tmp_path / "other.pth", d["paths"][0], check=False)
    assert p.returncode == 2 and "not a CRNN state dict" in p.stderr


def test_finetune_starts_from_a_crnn_pytorch_state_dict(tmp_path):
    model = random_crnn(11, nh=TINY_NH, widths=TINY_WIDTHS)
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "sd.pth")
    out = tmp_path / "ft"
    common = ["--checkpoint", tmp_path / "sd.pth", "--alphabet", "0123456789"]
    cli(
        "finetune",
        *common,
        "--add-chars",
        "xy",
        "--synthetic",
        8,
        "--max_steps",
        1,
        "--batchSize",
        4,
        "--valInterval",
        1,
        "--expr_dir",
        out,
        "--no_progress",
    )
    ck = torch.load(out / "last.pth", weights_only=True)
    assert ck["charset"] == "0123456789xy" and ck["case_insensitive"] is True
    w_old, w_new = model.rnn[1].embedding.weight, ck["model"]["rnn.1.embedding.weight"]
    assert torch.equal(w_new[:11], w_old) and w_new.shape[0] == 13
    # without --alphabet the default (36 characters) does not fit the 11-class classifier
    p = cli(
        "finetune",
        "--checkpoint",
        tmp_path / "sd.pth",
        "--add-chars",
        "x",
        "--synthetic",
        8,
        check=False,
    )
    assert p.returncode == 2 and "--alphabet" in p.stderr


def test_fastcrnn_checkpoint_loads_into_crnn_pytorch(trained):
    sd = torch.load(trained["expr"] / "last.pth", weights_only=True)["model"]
    reference = ReferenceCRNN(32, 1, 8, TINY_NH, widths=TINY_WIDTHS)
    reference.load_state_dict(sd, strict=True)  # crnn.pytorch's crnn.load_state_dict(...)
    from fastcrnn.ocr.evaluate import load_recognizer

    rec = load_recognizer(str(trained["expr"] / "last.pth"))
    x = torch.cat([reference_input(img, imgW=64) for img, _ in line_images(3, seed=5)])
    with torch.no_grad():
        assert_close(rec.net(x), reference.eval()(x), atol=1e-4, rtol=1e-4, what="scores")


def test_fastcrnn_checkpoint_rejects_contradicting_flags(trained, published_shape):
    p = cli(
        "predict",
        "--checkpoint",
        trained["expr"] / "last.pth",
        "--alphabet",
        "0123",
        published_shape["paths"][0],
        check=False,
    )
    assert p.returncode == 2 and "--alphabet" in p.stderr and "'0123abc'" in p.stderr
    p = cli(
        "predict",
        "--checkpoint",
        trained["expr"] / "last.pth",
        "--case_sensitive",
        published_shape["paths"][0],
        check=False,
    )
    assert p.returncode == 2 and "--case_sensitive" in p.stderr
    # the same values as the checkpoint's are fine
    cli(
        "predict",
        "--checkpoint",
        trained["expr"] / "last.pth",
        "--alphabet",
        "0123abc",
        "--ignore_case",
        "--nh",
        TINY_NH,
        published_shape["paths"][0],
    )


# ---- case handling ----------------------------------------------------------------------------
@pytest.mark.parametrize("ignore_case", [True, False])
@pytest.mark.parametrize("alphabet", [CRNN_PYTORCH_ALPHABET, MIXED_CASE, "xYzaAb9", "Zz"])
def test_label_converter_matches_str_label_converter(alphabet, ignore_case):
    ref = ReferenceStrLabelConverter(alphabet, ignore_case)
    ours = LabelConverter(alphabet, case_insensitive=ignore_case)
    assert ours.num_classes == len(alphabet) + 1  # crnn.pytorch's nclass
    rng = random.Random(len(alphabet) * 2 + ignore_case)
    # labels: the alphabet's characters; ignoring case, also in the other case
    pool = list(alphabet) + ([c.swapcase() for c in alphabet] if ignore_case else [])
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 8))) for _ in range(40)]
    ref_targets, ref_lengths = ref.encode(texts)
    targets, lengths = ours.encode(texts)
    assert targets.tolist() == ref_targets.tolist() and lengths.tolist() == ref_lengths.tolist()
    # decoding per-frame classes (every class, the duplicates' unused ones too)
    frames = torch.randint(
        0, len(alphabet) + 1, (20, 30), generator=torch.Generator().manual_seed(1)
    )
    scores = torch.nn.functional.one_hot(frames, len(alphabet) + 1).float().transpose(0, 1)
    decoded = ours.decode(fastcrnn.ctc_greedy_decode(scores, logits=True))
    assert decoded == [ref.decode_one(row) for row in frames.tolist()]


def test_mixed_case_crnn_pytorch_checkpoint_lines_up(tmp_path):
    """A crnn.pytorch model over a mixed-case alphabet (63 classes: crnn.pytorch lower-cases
    the alphabet but keeps every position) reads the same in fastcrnn by default; with
    --case_sensitive, as a converter built with ignore_case=False reads it."""
    model = random_crnn(len(MIXED_CASE) + 1, nh=TINY_NH, widths=TINY_WIDTHS, seed=2)
    torch.save(model.state_dict(), tmp_path / "sd.pth")
    images = [img for img, _ in line_images(4, seed=8, alphabet=MIXED_CASE)]
    assert top2_margin(model, images) > 1e-2
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        img.save(paths[-1])
    for flags, ignore_case in (([], True), (["--case_sensitive"], False)):
        p = cli(
            "predict", "--checkpoint", tmp_path / "sd.pth", "--alphabet", MIXED_CASE, *flags, *paths
        )
        texts = [line.split("\t")[1] for line in p.stdout.strip().splitlines()]
        expected = reference_read(
            model, ReferenceStrLabelConverter(MIXED_CASE, ignore_case), images
        )
        assert texts == expected, flags
    assert any(c.isupper() for t in texts for c in t)  # case-sensitive: upper case is read


def test_train_ignores_case_by_default_as_crnn_pytorch(trained, mixed_case_lmdb, tmp_path):
    ck = torch.load(trained["expr"] / "last.pth", weights_only=True)
    assert ck["case_insensitive"] is True and ck["charset"] == "0123abc"
    assert "case-insensitive" in trained["log"]
    # --case_sensitive keeps case: the upper-case labels are not in the alphabet
    p = cli(*one_lmdb_train_args(mixed_case_lmdb, tmp_path / "e", "--case_sensitive"), check=False)
    assert p.returncode == 2 and "not in the alphabet" in p.stderr
    # a mixed-case alphabet is crnn.pytorch's layout, with a note on the duplicate classes
    p = cli(
        *one_lmdb_train_args(
            mixed_case_lmdb, tmp_path / "f", "--max_steps", 1, "--workers", 0, alphabet="0123abcABC"
        )
    )
    ck = torch.load(tmp_path / "f" / "last.pth", weights_only=True)
    assert ck["model"]["rnn.1.embedding.weight"].shape[0] == 11
    assert "--case_sensitive to read case" in p.stdout + p.stderr


# ---- optimizer, flags -------------------------------------------------------------------------
def _reference_optimizer(params, flags):
    """train.py's optimizer for parsed crnn.pytorch flags (its defaults: lr 0.01, beta1 0.5)."""
    lr, beta1 = flags.get("lr", 0.01), flags.get("beta1", 0.5)
    if flags.get("adam"):
        return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999))
    if flags.get("adadelta"):
        return torch.optim.Adadelta(params)
    return torch.optim.RMSprop(params, lr=lr)


@pytest.mark.parametrize(
    "argv, flags, lr",
    [
        ([], {}, 0.01),
        (["--adam"], {"adam": True}, 0.01),
        (
            ["--adam", "--lr", "0.001", "--beta1", "0.9"],
            {"adam": True, "lr": 1e-3, "beta1": 0.9},
            1e-3,
        ),
        (["--adadelta"], {"adadelta": True}, 1.0),
        (["--lr", "0.05"], {"lr": 0.05}, 0.05),
        # crnn.pytorch ignores --lr under --adadelta; fastcrnn honours an explicit one
        (["--adadelta", "--lr", "0.5"], None, 0.5),
    ],
)
def test_optimizer_is_crnn_pytorchs(argv, flags, lr, monkeypatch):
    import fastcrnn.ocr.train as train
    from fastcrnn.ocr.cli import build_parser

    used = {}

    def capture_fit(trainer, *a, **kw):
        used["optimizer"] = trainer.optimizer
        return dict(step=0, best_accuracy=-1.0, best_step=None)

    monkeypatch.setattr(train, "fit", capture_fit)
    args = build_parser().parse_args(
        ["train", "--trainRoot", "-", "--valRoot", "-", "--no_progress", *TINY_CRNN_FLAGS, *argv]
    )
    samples = line_images(2, seed=1)
    train.train_main(args, train_set=samples, val_set=None)
    got = used["optimizer"].param_groups[0]
    assert got["lr"] == pytest.approx(lr)
    if flags is not None:
        ref = _reference_optimizer([nn.Parameter(torch.zeros(1))], flags)
        assert type(used["optimizer"]) is type(ref)
        expected = {k: v for k, v in ref.param_groups[0].items() if k != "params"}
        assert {k: got[k] for k in expected} == expected


def test_ngpu_and_random_sample_are_accepted(mixed_case_lmdb, tmp_path, monkeypatch):
    from fastcrnn.ocr.cli import build_parser
    from fastcrnn.ocr.train import data_parallel

    base = ["train", "--trainRoot", "-", "--valRoot", "-"]
    args = build_parser().parse_args(base + ["--ngpu", "2", "--random_sample"])
    assert args.ngpu == 2 and args.random_sample and not args.sequential_sample
    for bad, flag in (
        (["--ngpu", "0"], "--ngpu"),
        (["--random_sample", "--sequential_sample"], "--sequential_sample"),
    ):
        p = cli(*base, *bad, check=False)
        assert p.returncode == 2 and flag in p.stderr, bad
    net = nn.Linear(2, 2)
    notes = []
    # without --cuda crnn.pytorch ignores --ngpu
    assert (
        data_parallel(net, build_parser().parse_args(base + ["--ngpu", "2"]), False, notes.append)
        is net
    )
    assert "ignored without --cuda" in notes[0]
    cuda_args = build_parser().parse_args(base + ["--ngpu", "2", "--cuda"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit, match="--ngpu 2: only 1 GPU"):
        data_parallel(net, cuda_args, False, notes.append)
    with pytest.raises(SystemExit, match="torchrun"):
        data_parallel(net, cuda_args, True, notes.append)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    wrapped = data_parallel(net, cuda_args, False, notes.append)
    assert isinstance(wrapped, nn.DataParallel) and wrapped.module is net
    # the replicas' (T, N / k, C) scores are joined along N, not stacked along T
    joined = {}
    monkeypatch.setattr(torch.nn.parallel, "gather", lambda out, dev, dim: joined.update(dim=dim))
    wrapped.gather([torch.zeros(26, 2, 5)] * 2, 0)
    assert joined == {"dim": 1}
    # a run with both flags trains
    p = cli(
        *one_lmdb_train_args(
            mixed_case_lmdb,
            tmp_path / "e",
            "--ngpu",
            2,
            "--random_sample",
            "--max_steps",
            1,
            "--workers",
            0,
        )
    )
    assert torch.load(tmp_path / "e" / "last.pth", weights_only=True)["step"] == 1


def test_sequential_sample_is_random_sequential_sampler():
    """crnn.pytorch's randomSequentialSampler: n // B runs of B consecutive indices, then one of
    n % B, each from a random start in [0, n - B]; fit's batches are then those runs."""
    from fastcrnn.ocr.data.collate import Batch
    from fastcrnn.ocr.distributed import ResumableSampler
    from fastcrnn.ocr.loop import fit

    sampler = ResumableSampler(23, seed=4, window=5)
    sampler.set_epoch(0)
    order = list(sampler)
    assert len(order) == len(sampler) == 23
    runs = [order[i : i + 5] for i in range(0, 23, 5)]
    assert [len(r) for r in runs] == [5, 5, 5, 5, 3]
    for run in runs:
        assert run == list(range(run[0], run[0] + len(run))) and 0 <= run[0] <= 23 - 5
    assert list(sampler) == order  # deterministic per (seed, epoch): resumable
    sampler.set_epoch(1)
    assert list(sampler) != order
    sampler.set_epoch(0, skip=10)
    assert list(sampler) == order[10:]
    small = ResumableSampler(3, seed=0, window=5)  # fewer samples than a batch: one run
    assert list(small) == [0, 1, 2]
    # per process under DDP: ceil(n / world) indices each
    shard = ResumableSampler(23, seed=4, window=5)
    shard.rank, shard.world = 1, 2
    assert len(list(shard)) == len(shard) == 12

    class RecordingTrainer:
        device = torch.device("cpu")
        amp, grad_norm, converter, net = False, 0.0, None, None

        def __init__(self):
            self.optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
            self.batches = []

        def step(self, batch):
            self.batches.append([int(t) for t in batch.texts])
            return 1.0

    trainer = RecordingTrainer()
    fit(
        trainer,
        [(None, str(i)) for i in range(20)],
        None,
        nepoch=2,
        batch_size=4,
        collate=lambda samples: Batch(None, None, [t for _, t in samples], None),
        expr_dir=None,
        seed=0,
        progress=False,
        log=lambda s: None,
        sequential_sample=True,
    )
    assert len(trainer.batches) == 10
    for batch in trainer.batches:
        assert batch == list(range(batch[0], batch[0] + 4))


# ---- one LMDB for training and validation, resume at --max_steps ------------------------------
def test_same_lmdb_for_train_and_val(trained, mixed_case_lmdb):
    # the fixture's run gave one folder as --trainRoot and --valRoot (and read it in a worker)
    assert "validation: word accuracy" in trained["log"]
    a, b = LmdbDataset(mixed_case_lmdb), LmdbDataset(os.path.join(str(mixed_case_lmdb), "."))
    assert a._open() is b._open()  # one environment
    assert a[0][1] == b[0][1] and len(a) == len(b) == 24
    env = a._open()
    del a, b
    gc.collect()
    c = LmdbDataset(mixed_case_lmdb)  # the last user gone, the environment was closed
    assert c._open() is not env and c.label(0)


def test_resume_at_max_steps_makes_no_step(trained, mixed_case_lmdb, tmp_path):
    import shutil

    expr = tmp_path / "expr"
    shutil.copytree(trained["expr"], expr)
    before = torch.load(expr / "last.pth", weights_only=True)
    assert before["step"] == 3
    again = one_lmdb_train_args(mixed_case_lmdb, expr, "--adadelta", "--resume", "--workers", 0)
    p = cli(*again, "--max_steps", 3)
    assert "already reached --max_steps 3" in p.stdout + p.stderr
    after = torch.load(expr / "last.pth", weights_only=True)
    assert after["step"] == 3
    assert all(torch.equal(after["model"][k], v) for k, v in before["model"].items())
    cli(*again, "--max_steps", 4)
    assert torch.load(expr / "last.pth", weights_only=True)["step"] == 4
    # the run resumes with crnn.pytorch's Adadelta rate, and the fixture's run used it
    assert before["optimizer"]["param_groups"][0]["lr"] == 1.0
