"""OCR data: synthetic generator, crnn.pytorch LMDB round trip, collate lengths."""

import io

import numpy as np
import pytest
import torch

PIL = pytest.importorskip("PIL")
lmdb = pytest.importorskip("lmdb")
from PIL import Image  # noqa: E402

from fastcrnn.ocr.data import (  # noqa: E402
    AlignCollate,
    LmdbDataset,
    SyntheticTextLines,
    read_label_file,
    write_lmdb,
)

ALPHA = "0123456789abcdefghijklmnopqrstuvwxyz"


def test_synthetic_deterministic_and_varied():
    a = SyntheticTextLines(ALPHA, 20, seed=3)
    b = SyntheticTextLines(ALPHA, 20, seed=3)
    c = SyntheticTextLines(ALPHA, 20, seed=4)
    # any access order gives the same samples
    for i in [5, 0, 19, 5]:
        ia, ta = a[i]
        ib, tb = b[i]
        assert ta == tb and np.array_equal(np.asarray(ia), np.asarray(ib))
    assert [c.text(i) for i in range(20)] != [a.text(i) for i in range(20)]
    widths, heights = set(), set()
    for i in range(20):
        img, text = a[i]
        assert img.mode == "L" and 4 <= len(text) <= 10
        assert all(ch in ALPHA for ch in text)
        assert a.text(i) == text
        widths.add(img.width)
        heights.add(img.height)
        arr = np.asarray(img, dtype=np.float32)
        assert arr.std() > 5  # not blank: text drawn with contrast
    assert len(widths) > 10 and len(heights) > 2
    assert a[-1][1] == a[19][1]
    with pytest.raises(IndexError):
        a[20]
    with pytest.raises(TypeError):
        a["0"]


def test_synthetic_wider_for_longer_text():
    ds = SyntheticTextLines(
        ALPHA, texts=["ab", "abcdefghijklmnop"], seed=0, size_range=(24, 24), max_rotation=0.0
    )
    assert ds[1][0].width > 3 * ds[0][0].width


def test_synthetic_argument_errors():
    with pytest.raises(ValueError, match="min_len"):
        SyntheticTextLines(ALPHA, 5, min_len=5, max_len=3)
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticTextLines(ALPHA, -1)
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticTextLines(ALPHA)
    with pytest.raises(ValueError, match="duplicate"):
        SyntheticTextLines("aa", 3)


def _samples(n, seed=0):
    ds = SyntheticTextLines(ALPHA + " ", n, min_len=0, max_len=8, seed=seed)
    return [ds[i] for i in range(n)]


def test_lmdb_round_trip_crnn_pytorch_format(tmp_path):
    samples = _samples(7)
    samples[3] = (samples[3][0], "größe 字")  # any UTF-8 label
    root = tmp_path / "db"
    assert write_lmdb(root, samples, map_size=1 << 16) == 7  # small map: must grow
    # raw layout as crnn.pytorch reads it
    env = lmdb.open(str(root), readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.get(b"num-samples") == b"7"
        assert txn.get(b"label-000000004").decode("utf-8") == "größe 字"
        assert txn.get(b"image-000000000") is None and txn.get(b"image-000000007") is not None
        Image.open(io.BytesIO(txn.get(b"image-000000001"))).load()
    env.close()
    ds = LmdbDataset(root)
    assert len(ds) == 7
    for i, (img, label) in enumerate(samples):
        got_img, got_label = ds[i]
        assert got_label == label and ds.label(i) == label
        assert np.array_equal(np.asarray(got_img), np.asarray(img))  # PNG is lossless
    with pytest.raises(IndexError):
        ds[7]
    with pytest.raises(FileExistsError):
        write_lmdb(root, samples)


def test_lmdb_with_dataloader_workers(tmp_path):
    samples = _samples(10, seed=1)
    write_lmdb(tmp_path / "db", samples)
    ds = LmdbDataset(tmp_path / "db")
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, num_workers=2, collate_fn=AlignCollate(32, keep_ratio=True)
    )
    texts = [t for batch in loader for t in batch.texts]
    assert texts == [t for _, t in samples]


def test_lmdb_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        LmdbDataset(tmp_path / "missing")
    env = lmdb.open(str(tmp_path / "bad"))
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"2")
        txn.put(b"image-000000001", b"not an image")
        txn.put(b"label-000000001", b"x")
    env.close()
    ds = LmdbDataset(tmp_path / "bad")
    with pytest.raises(ValueError, match="image-000000001"):
        ds[0]
    with pytest.raises(ValueError, match="image-000000002.*missing"):
        ds[1]
    env = lmdb.open(str(tmp_path / "nocount"))
    with env.begin(write=True) as txn:
        txn.put(b"x", b"y")
    env.close()
    with pytest.raises(ValueError, match="num-samples"):
        LmdbDataset(tmp_path / "nocount")
    with pytest.raises(ValueError, match="not a readable image"):
        write_lmdb(tmp_path / "w", [(b"garbage", "x")])


def test_label_file(tmp_path):
    samples = _samples(3)
    lines = []
    for i, (img, label) in enumerate(samples):
        img.save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png\t{label}")
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    got = list(read_label_file(tmp_path / "labels.txt"))
    assert [l for _, l in got] == [l for _, l in samples]
    (tmp_path / "bad.txt").write_text("0.png\tok\nnotab\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        list(read_label_file(tmp_path / "bad.txt"))
    (tmp_path / "missing.txt").write_text("nope.png\tx\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="line 1"):
        list(read_label_file(tmp_path / "missing.txt"))


def _crnn_pytorch_T(widths):
    return widths // 4 + 1


def test_collate_keep_ratio_lengths_and_padding():
    rng = np.random.default_rng(0)
    imgs = []
    for h, w, bg in [(40, 100, 200), (20, 30, 10), (64, 256, 128)]:
        arr = np.full((h, w), bg, dtype=np.uint8)
        arr[h // 4 : 3 * h // 4, 2 : w - 2] = rng.integers(0, 255, (h // 2, w - 4))
        imgs.append((Image.fromarray(arr, "L"), f"t{w}"))
    coll = AlignCollate(imgH=32, keep_ratio=True, output_length=_crnn_pytorch_T)
    batch = coll(imgs)
    assert batch.images.shape == (3, 1, 32, 128) and batch.images.dtype == torch.float32
    assert batch.widths.tolist() == [80, 48, 128]
    assert batch.input_lengths.tolist() == [21, 13, 33]
    assert batch.texts == ["t100", "t30", "t256"]
    assert batch.images.min() >= -1 and batch.images.max() <= 1
    # padding holds each image's background value
    for i, bg in enumerate([200, 10, 128]):
        w = batch.widths[i]
        pad = batch.images[i, :, :, w:]
        assert torch.allclose(pad, torch.full_like(pad, bg / 127.5 - 1), atol=1e-6)
    # the unpadded part equals the image resized alone
    alone, _ = coll.prepare(imgs[1][0])
    assert torch.equal(batch.images[1, :, :, :48], alone)


def test_collate_fixed_width_and_min_width():
    imgs = [(Image.new("L", (300, 30), 255), "a"), (Image.new("RGB", (5, 60)), "b")]
    batch = AlignCollate(imgH=32, imgW=100, keep_ratio=False)(imgs)
    assert batch.images.shape == (2, 1, 32, 100) and batch.widths.tolist() == [100, 100]
    assert batch.input_lengths is None
    batch = AlignCollate(imgH=32, keep_ratio=True, min_width=16, max_width=200)(imgs)
    assert batch.widths.tolist() == [200, 16]
    with pytest.raises(ValueError, match="imgH"):
        AlignCollate(imgH=0)
    with pytest.raises(ValueError, match="empty"):
        AlignCollate()([])
    with pytest.raises(TypeError, match="PIL"):
        AlignCollate()([(np.zeros((3, 3)), "x")])


def test_collate_lengths_make_ctc_ignore_padding():
    """With per-sample lengths, appending padding frames changes neither the CTC loss nor the
    decoded text: what the collate's lengths are for."""
    import torch.nn.functional as F

    import fastcrnn

    T, N, C = 12, 2, 5
    lp = torch.randn(T, N, C).log_softmax(-1)
    lengths = torch.tensor([7, 12])
    targets, tl = torch.tensor([1, 2, 3, 4, 1]), torch.tensor([2, 3])
    padded = torch.cat([lp, torch.randn(5, N, C).log_softmax(-1)])
    a = F.ctc_loss(lp, targets, lengths, tl, reduction="none")
    b = F.ctc_loss(padded, targets, lengths, tl, reduction="none")
    assert torch.allclose(a, b)
    da = fastcrnn.ctc_greedy_decode(lp, lengths)
    db = fastcrnn.ctc_greedy_decode(padded, lengths)
    assert torch.equal(da.tokens[:, :T], db.tokens[:, :T]) and torch.equal(da.lengths, db.lengths)


def test_synthetic_fonts_and_polarity():
    ds = SyntheticTextLines(ALPHA, 12, seed=0, max_fonts=1, light_on_dark=1.0)
    assert len(ds.fonts) == 1
    dark = SyntheticTextLines(ALPHA, 12, seed=0, max_fonts=1, light_on_dark=0.0)
    for i in range(12):
        # border (background) vs. the whole image mean: text is lighter / darker
        for d, lighter_text in ((ds, True), (dark, False)):
            arr = np.asarray(d[i][0], dtype=np.float32)
            bg = np.median(np.concatenate([arr[0], arr[-1]]))
            assert (arr.max() - bg > 40) if lighter_text else (bg - arr.min() > 40)
    with pytest.raises(ValueError, match="max_fonts"):
        SyntheticTextLines(ALPHA, 3, max_fonts=0)
    with pytest.raises(ValueError, match="light_on_dark"):
        SyntheticTextLines(ALPHA, 3, light_on_dark=2.0)
    with pytest.raises(TypeError):
        SyntheticTextLines(ALPHA, 3, no_such_option=1)
