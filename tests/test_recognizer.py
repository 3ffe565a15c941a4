"""fastcrnn.ocr.Recognizer: what it reads equals the greedy decode of the model's scores; input
types, order across width buckets, checkpoints of both kinds, errors; `python -m fastcrnn
predict` on it."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("PIL")
pytest.importorskip("lmdb")
pytest.importorskip("rapidfuzz")
pytest.importorskip("tqdm")

from helpers import cli
from PIL import Image
from tiny_crnn import ALPHABET, line_images, lively_crnn, save_tiny_checkpoint, tiny_config

import fastcrnn
from fastcrnn.nn import FrozenCRNN
from fastcrnn.ocr import Recognition, Recognizer
from fastcrnn.ocr.data import AlignCollate
from fastcrnn.text import LabelConverter

pytestmark = pytest.mark.usefixtures("one_thread")


def make_recognizer(keep_ratio=True, **kw):
    return Recognizer(lively_crnn(), LabelConverter(ALPHABET), tiny_config(keep_ratio), **kw)


def expected(rec, images):
    """The model run directly: the images prepared by the training collate, padded into one
    batch, the scores decoded by fastcrnn.ctc_greedy_decode over each image's own frames."""
    collate = AlignCollate(
        rec.config["imgH"], rec.config["imgW"], keep_ratio=rec.config["keep_ratio"]
    )
    batch = collate([(Image.fromarray(img), "") for img in images])
    with torch.no_grad():
        scores = rec.net(batch.images)
    lengths = rec.net.output_length(batch.widths)
    dec = fastcrnn.ctc_greedy_decode(scores, lengths, logits=True)
    texts = rec.converter.decode(dec)
    out = []
    for i, text in enumerate(texts):
        n = int(dec.lengths[i])
        out.append(
            (
                text,
                dec.token_probs[i, :n].tolist(),
                dec.token_frames[i, :n].tolist(),
                int(lengths[i]),
            )
        )
    return out


def as_tuple(r: Recognition):
    return (r.text, r.char_probs, r.char_frames, r.num_frames)


def assert_same_reading(a: Recognition, b: Recognition, what=""):
    """Equal but for float rounding: convolutions and GEMMs may round differently for another
    batch size or memory layout, so readings from different batches agree to ~1e-6."""
    assert (a.text, a.char_frames, a.num_frames) == (b.text, b.char_frames, b.num_frames), what
    assert a.char_probs == pytest.approx(b.char_probs, abs=1e-4), what
    assert a.confidence == pytest.approx(b.confidence, abs=1e-4), what


# ---- what it reads -----------------------------------------------------------------------------
def test_reads_the_greedy_decode_of_the_model_scores():
    rec = make_recognizer()
    images = line_images([90, 150, 60, 200, 120])
    results = rec.recognize(images, batch_size=1)
    assert len(results) == len(images)
    for img, r in zip(images, results):
        assert as_tuple(r) == expected(rec, [img])[0]
        assert r.confidence == pytest.approx(math.prod(r.char_probs), rel=1e-12)
        assert all(0.0 < p <= 1.0 for p in r.char_probs)
        assert r.char_frames == sorted(r.char_frames)
        assert all(0 <= f < r.num_frames for f in r.char_frames)
    assert len({r.text for r in results}) > 1 and max(len(r.text) for r in results) >= 3


def test_batches_pad_as_the_training_collate_and_keep_the_input_order():
    rec = make_recognizer()
    widths = [150, 40, 200, 90, 41, 120, 300, 60]
    images = line_images(widths, seed=1)
    results = rec.recognize(images, batch_size=3)
    # the buckets: the images sorted by width, three at a time, each padded to its widest
    order = sorted(range(len(images)), key=lambda i: images[i].shape[1])
    want = [None] * len(images)
    for start in range(0, len(order), 3):
        idx = order[start : start + 3]
        for i, e in zip(idx, expected(rec, [images[i] for i in idx])):
            want[i] = e
    assert [as_tuple(r) for r in results] == want
    # each image's frames are its own width's, in the input order
    frames = [rec.net.output_length(rec.prepare(img)[0].shape[-1]) for img in images]
    assert [r.num_frames for r in results] == frames
    # one batch of everything reads as the collate's one batch does
    assert [as_tuple(r) for r in rec.recognize(images, batch_size=len(images))] == [
        expected(rec, [images[i] for i in order])[order.index(i)] for i in range(len(images))
    ]


def test_images_of_one_width_read_as_alone():
    rec = make_recognizer(keep_ratio=False)  # every image resized to imgW: one width
    images = line_images([70, 130, 100, 55], seed=2)
    together = rec.recognize(images)
    alone = [rec.recognize([img])[0] for img in images]
    for a, b in zip(together, alone):
        assert_same_reading(a, b)
    assert rec.read(images) == [(r.text, r.confidence) for r in alone]


def test_batch_of_one_and_empty_list():
    rec = make_recognizer()
    (img,) = line_images([110])
    (r,) = rec.recognize([img])
    assert as_tuple(r) == expected(rec, [img])[0]
    assert rec.recognize([]) == [] and rec.recognize(()) == []


def test_input_types_read_alike(tmp_path):
    rec = make_recognizer()
    (grey,) = line_images([140], seed=3)
    path = tmp_path / "line.png"
    Image.fromarray(grey).save(path)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)  # grey in RGB: PIL's luma gives it back
    inputs = [
        Image.fromarray(grey),
        Image.fromarray(rgb),
        Image.fromarray(rgb).convert("RGBA"),
        grey,
        grey[:, :, None],
        rgb,
        np.concatenate([rgb, np.full_like(grey[:, :, None], 255)], axis=2),
        grey.astype(np.float32) / 255,
        rgb.astype(np.float64) / 255,
        str(path),
        path,
        np.asfortranarray(grey),
        grey[:, ::-1][:, ::-1],  # a view with negative strides
    ]
    results = rec.recognize(inputs, batch_size=1)
    assert all(r == results[0] for r in results), [as_tuple(r) for r in results]
    assert as_tuple(results[0]) == expected(rec, [grey])[0]
    for r in rec.recognize(inputs, batch_size=4):  # batches of one picture, four times
        assert_same_reading(r, results[0])


def test_colour_images_are_read_as_their_grey():
    rec = make_recognizer()
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (30, 120, 3), dtype=np.uint8)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    a, b = rec.recognize([rgb, grey])
    assert a == b


def test_serves_a_frozen_snapshot_on_the_cpu():
    """A CPU CRNN is served through FrozenCRNN, built from the weights the Recognizer got: a
    later change to the source network does not reach it, and its reading equals the unfrozen
    Recognizer's."""
    net = lively_crnn()
    rec = Recognizer(net, LabelConverter(ALPHABET), tiny_config(True))
    plain = Recognizer(lively_crnn(), LabelConverter(ALPHABET), tiny_config(True), freeze=False)
    assert isinstance(rec.net, FrozenCRNN) and not isinstance(plain.net, FrozenCRNN)
    images = line_images([100, 60, 140])
    first = rec.recognize(images)
    for a, b in zip(first, plain.recognize(images)):
        assert_same_reading(a, b)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(-1.0)
    for a, b in zip(rec.recognize(images), first):
        assert a == b
    with pytest.raises(TypeError, match="freeze must be a bool"):
        Recognizer(net, LabelConverter(ALPHABET), tiny_config(True), freeze=1)


def test_runs_in_eval_mode_without_autograd():
    rec = make_recognizer(freeze=False)
    rec.net.train()
    bn = rec.net.cnn.batchnorm2
    before = bn.running_mean.clone()
    rec.recognize(line_images([100, 60]), batch_size=2)
    assert not rec.net.training
    assert torch.equal(bn.running_mean, before)  # train mode would have updated it


# ---- errors name the argument ------------------------------------------------------------------
def test_bad_inputs_raise_naming_the_argument(tmp_path):
    rec = make_recognizer()
    good = line_images([80])[0]
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not an image")
    cases = [
        (good, TypeError, "images must be a list or tuple"),
        (Image.fromarray(good), TypeError, r"wrap a single image as \[image\]"),
        ("a.png", TypeError, "images must be a list or tuple"),
        ({"a": good}, TypeError, "images must be a list or tuple"),
        ([good, 3], TypeError, r"images\[1\] must be a PIL image, a numpy array or a path"),
        ([torch.zeros(32, 80)], TypeError, r"images\[0\] is a torch.Tensor"),
        ([np.zeros((32, 80, 2), np.uint8)], ValueError, r"images\[0\] must be an array of shape"),
        ([np.zeros((2, 32, 80, 3), np.uint8)], ValueError, r"images\[0\] must be an array"),
        ([np.zeros((0, 80), np.uint8)], ValueError, r"images\[0\] is empty"),
        ([good, np.zeros((32, 80), bool)], TypeError, r"images\[1\] must be a uint8 or floating"),
        ([np.zeros((32, 80), np.int32)], TypeError, r"images\[0\] must be a uint8"),
        ([good.astype(np.float32)], ValueError, r"images\[0\].*values in \[0, 1\]"),
        ([np.full((32, 80), np.nan, np.float32)], ValueError, r"images\[0\] holds NaN"),
        ([good, str(tmp_path / "missing.png")], FileNotFoundError, r"images\[1\].*not found"),
        ([not_an_image], ValueError, r"images\[0\].*not a readable image"),
        ([Image.new("L", (0, 32))], ValueError, r"images\[0\]: image is empty"),
    ]
    for images, error, match in cases:
        with pytest.raises(error, match=match):
            rec.recognize(images)
    for bad, error in ((0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match="batch_size"):
            rec.recognize([good], batch_size=bad)
        with pytest.raises(error, match="batch_size"):
            make_recognizer(batch_size=bad)


def test_beam_width_reads_the_best_beam_search_hypothesis(tmp_path):
    """beam_width > 1 reads each image's best CTC prefix beam search hypothesis of the model's
    scores; the confidence is the product of its characters' probabilities."""
    greedy = make_recognizer()
    beam = make_recognizer(beam_width=8)
    images = line_images([90, 150, 60, 200], seed=3)
    for img, r in zip(images, beam.recognize(images, batch_size=1)):
        tensor, background = beam.prepare(img)
        batch = beam.collate.pad([tensor], [background], [""])
        with torch.inference_mode():
            logits = beam.net(batch.images)
        lengths = beam.net.output_length(batch.widths)
        best = fastcrnn.ctc_beam_search_decode(logits, lengths, beam_width=8, logits=True)
        n = int(best.lengths[0, 0])
        assert r.text == greedy.converter.decode_tokens(best.tokens[0, 0, :n].tolist())
        assert r.char_frames == best.token_frames[0, 0, :n].tolist()
        assert r.confidence == pytest.approx(math.prod(r.char_probs), rel=1e-12)
    for bad, error in ((0, ValueError), ("1", TypeError), (True, TypeError)):
        with pytest.raises(error, match="beam_width"):
            make_recognizer(beam_width=bad)
    path = save_tiny_checkpoint(tmp_path / "tiny.pth", lively_crnn())
    assert Recognizer.from_checkpoint(path, beam_width=4).beam_width == 4


# ---- checkpoints -------------------------------------------------------------------------------
def test_from_checkpoint_reads_fastcrnn_checkpoints_and_crnn_pytorch_state_dicts(tmp_path):
    net = lively_crnn(seed=5)
    images = line_images([100, 100, 100], seed=5)  # one width: exact whatever the batching
    # a fastcrnn checkpoint, resizing to 32 x 100 as crnn.pytorch's demo does
    ck = save_tiny_checkpoint(tmp_path / "tiny.pth", net, keep_ratio=False)
    rec = Recognizer.from_checkpoint(ck, batch_size=2)
    assert rec.batch_size == 2 and rec.device == torch.device("cpu")
    assert isinstance(rec.net, FrozenCRNN)
    assert Recognizer.from_checkpoint(ck, freeze=False).net.backend == "fused"
    # a bare state dict (crnn.pytorch's torch.save(crnn.state_dict())), DataParallel keys
    bare = tmp_path / "crnn.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, bare)
    rec_bare = Recognizer.from_checkpoint(str(bare), alphabet=ALPHABET, ignore_case=False)
    assert rec_bare.config["imgW"] == 100 and not rec_bare.config["keep_ratio"]
    direct = Recognizer(net, LabelConverter(ALPHABET), tiny_config(keep_ratio=False))
    want = direct.recognize(images)
    assert rec.recognize(images) == rec_bare.recognize(images, batch_size=2)  # same batches
    torch_backend = Recognizer.from_checkpoint(ck, backend="torch")
    for got in (rec, rec_bare, torch_backend):
        for a, b in zip(got.recognize(images), want):
            assert_same_reading(a, b)
    # the state-dict flags are checked as `predict` checks them
    with pytest.raises(ValueError, match="--alphabet"):
        Recognizer.from_checkpoint(bare, alphabet="0123")
    with pytest.raises(ValueError, match="--nh"):
        Recognizer.from_checkpoint(bare, alphabet=ALPHABET, nh=8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Recognizer.from_checkpoint(tmp_path / "nope.pth")


# ---- python -m fastcrnn predict ---------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    ck = save_tiny_checkpoint(d / "tiny.pth", lively_crnn(seed=6))
    paths = []
    for i, img in enumerate(line_images([60, 180, 90, 40, 250, 120, 75], seed=6)):
        paths.append(d / f"{i}.png")
        Image.fromarray(img).save(paths[-1])
    return ck, paths


def test_predict_prints_the_recognizer_results_in_order_and_the_throughput(saved):
    ck, paths = saved
    p = cli("predict", "--checkpoint", ck, "--batchSize", 2, *paths)
    rows = [line.split("\t") for line in p.stdout.strip().splitlines()]
    assert [r[0] for r in rows] == [str(x) for x in paths]
    want = Recognizer.from_checkpoint(ck).recognize([str(x) for x in paths], batch_size=2)
    assert [r[1] for r in rows] == [w.text for w in want]
    assert [float(r[2]) for r in rows] == pytest.approx([w.confidence for w in want], abs=6e-5)
    # stdout holds only the results; progress (plain lines off a terminal) and the throughput
    # go to stderr
    err = p.stderr.strip().splitlines()
    assert err[-1].startswith(f"predict: {len(paths)} lines in ") and "lines/s" in err[-1]
    assert f"predict: {len(paths)}/{len(paths)} lines (100%)" in err
    quiet = cli("predict", "--checkpoint", ck, "--batchSize", 2, "--no_progress", *paths)
    assert quiet.stdout == p.stdout
    assert len(quiet.stderr.strip().splitlines()) == 1 and "lines/s" in quiet.stderr
    # a list within one batch shows no progress
    one = cli("predict", "--checkpoint", ck, str(paths[0]))
    assert len(one.stderr.strip().splitlines()) == 1


def test_predict_with_a_beam_prints_the_beam_recognizer_results(saved):
    ck, paths = saved
    p = cli("predict", "--checkpoint", ck, "--batchSize", 2, "--beam-width", 6, *paths)
    rows = [line.split("\t") for line in p.stdout.strip().splitlines()]
    rec = Recognizer.from_checkpoint(ck, beam_width=6)
    want = rec.recognize([str(x) for x in paths], batch_size=2)
    assert [r[1] for r in rows] == [w.text for w in want]
    assert [float(r[2]) for r in rows] == pytest.approx([w.confidence for w in want], abs=6e-5)
    p = cli("predict", "--checkpoint", ck, "--beam_width", 0, paths[0], check=False)
    assert p.returncode != 0 and "--beam_width" in p.stderr


def test_char_spans_are_the_runs_of_the_best_path_spelling_the_text():
    """With greedy decoding the best path that spells the text is the best path itself, so each
    character's aligned run starts at its greedy frame; the runs are ordered and disjoint, and
    pixel_spans scales them to the image."""
    rec = make_recognizer()
    images = line_images([90, 150, 200, 120], seed=4)
    for img, r in zip(images, rec.recognize(images)):
        assert len(r.char_spans) == len(r.text)
        assert [a for a, _ in r.char_spans] == r.char_frames
        ends = [0] + [b for _, b in r.char_spans]
        assert all(ends[i] <= a < b <= r.num_frames for i, (a, b) in enumerate(r.char_spans))
        width = img.shape[1]
        px = r.pixel_spans(width)
        assert all(0 <= x0 < x1 <= width for x0, x1 in px)
        assert [x0 for x0, _ in px] == sorted(x0 for x0, _ in px)


def test_predict_char_boxes(saved):
    ck, paths = saved
    p = cli("predict", "--checkpoint", ck, "--char-boxes", "--no_progress", *paths)
    want = Recognizer.from_checkpoint(ck).recognize([str(x) for x in paths])
    for line, r, path in zip(p.stdout.strip().splitlines(), want, paths):
        fields = line.split("\t")
        boxes = fields[3].split() if len(fields) > 3 else []
        assert fields[1] == r.text and len(boxes) == len(r.text)
        spans = r.pixel_spans(Image.open(path).width)
        assert boxes == [f"{c}:{x0}-{x1}" for c, (x0, x1) in zip(r.text, spans)]


def _digit_lm():
    import warnings

    from fastcrnn.lm import train_char_lm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small corpus: the fallback discounts
        return train_char_lm(["0123", "1234", "2345", "3456", "4567", "5678", "6789"], 3)


def test_language_model_reads_the_beam_search_with_it(saved, tmp_path):
    """With lm= the Recognizer reads the best hypothesis of the beam search with that model on
    the scores; predict --lm reads an ARPA file to the same result."""
    ck, paths = saved
    lm = _digit_lm()
    rec = Recognizer.from_checkpoint(ck, beam_width=6, lm=lm, lm_weight=1.5, word_bonus=0.5)
    images = [str(x) for x in paths]
    for path, r in zip(images, rec.recognize(images, batch_size=1)):
        tensor, background = rec.prepare(path)
        batch = rec.collate.pad([tensor], [background], [""])
        with torch.inference_mode():
            scores = rec.net(batch.images)
        tokens = [""] + list(ALPHABET)
        best = fastcrnn.ctc_beam_search_decode(
            scores,
            rec.net.output_length(batch.widths),
            beam_width=6,
            logits=True,
            lm=lm,
            lm_tokens=tokens,
            lm_weight=1.5,
            word_bonus=0.5,
        )
        n = int(best.lengths[0, 0])
        assert r.text == rec.converter.decode_tokens(best.tokens[0, 0, :n].tolist())
    arpa = tmp_path / "digits.arpa"
    lm.write_arpa(arpa)
    p = cli(
        "predict", "--checkpoint", ck, "--beam-width", 6, "--lm", arpa, "--lm-weight", 1.5,
        "--word-bonus", 0.5, "--no_progress", *paths,
    )  # fmt: skip
    want = rec.recognize(images)
    assert [line.split("\t")[1] for line in p.stdout.strip().splitlines()] == [w.text for w in want]


def test_lexicon_replaces_each_reading_by_its_most_probable_near_word(saved, tmp_path):
    ck, paths = saved
    images = [str(x) for x in paths]
    plain = Recognizer.from_checkpoint(ck).recognize(images, batch_size=1)
    words = ["0123", "98765", "42"] + [r.text for r in plain[:2]]
    rec = Recognizer.from_checkpoint(ck, lexicon_words=words, max_edit_distance=2)
    got = rec.recognize(images, batch_size=1)
    for path, reading, r in zip(images, plain, got):
        tensor, background = rec.prepare(path)
        batch = rec.collate.pad([tensor], [background], [""])
        with torch.inference_mode():
            lp = rec.net(batch.images).log_softmax(-1)
        want = fastcrnn.lexicon_decode(lp, rec.lexicon, rec.net.output_length(batch.widths), 2)
        assert r.text == (want.words[0] if int(want.indices[0]) >= 0 else reading.text)
        assert r.confidence == pytest.approx(math.prod(r.char_probs), rel=1e-9)
        assert len(r.char_spans) == len(r.text) == len(r.char_probs)
    assert got[0].text == plain[0].text and got[1].text == plain[1].text  # in the lexicon
    lexicon = tmp_path / "words.txt"
    lexicon.write_text("\n".join(words) + "\n")
    p = cli(
        "predict", "--checkpoint", ck, "--lexicon", lexicon, "--max_edit_distance", 2,
        "--batchSize", 1, *paths,
    )  # fmt: skip
    assert [line.split("\t")[1] for line in p.stdout.strip().splitlines()] == [r.text for r in got]
    with pytest.raises(ValueError, match="charset"):
        Recognizer(rec.net, rec.converter, rec.config, lexicon=fastcrnn.Lexicon(["ab"], "ab"))


def test_predict_errors(saved, tmp_path):
    ck, paths = saved
    p = cli("predict", "--checkpoint", ck, paths[0], tmp_path / "missing.png", check=False)
    assert p.returncode != 0 and "not found" in p.stderr and p.stdout == ""
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    p = cli("predict", "--checkpoint", ck, bad, check=False)
    assert p.returncode == 2 and "not a readable image" in p.stderr
    p = cli("predict", "--checkpoint", ck, "--batchSize", 0, paths[0], check=False)
    assert p.returncode != 0 and "--batchSize" in p.stderr
