"""OCR metrics on known strings; checkpoint atomicity and error reporting."""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("rapidfuzz")

from fastcrnn.ocr.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_weights,
    plain_config,
    save_checkpoint,
    strip_module_prefix,
)
from fastcrnn.ocr.metrics import edit_distance, recognition_metrics


def test_edit_distance_known():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("abc", "abc") == 0
    assert edit_distance("字a", "a") == 1


def test_metrics_known_strings():
    preds = ["hello", "wrld", "", "abcd"]
    refs = ["hello", "world", "xy", "abce"]
    m = recognition_metrics(preds, refs)
    assert m["num_samples"] == 4
    assert m["word_accuracy"] == pytest.approx(1 / 4)
    # distances 0, 1, 2, 1 over reference lengths 5+5+2+4
    assert m["cer"] == pytest.approx(4 / 16)
    assert m["norm_edit_distance"] == pytest.approx((0 + 1 / 5 + 2 / 2 + 1 / 4) / 4)
    # prediction longer than the reference: normalised by the longer one
    m = recognition_metrics(["abcdef"], ["ab"])
    assert m["norm_edit_distance"] == pytest.approx(4 / 6) and m["cer"] == pytest.approx(2.0)
    m = recognition_metrics([""], [""])
    assert m == dict(word_accuracy=1.0, cer=0.0, norm_edit_distance=0.0, num_samples=1)
    assert math.isinf(recognition_metrics(["a"], [""])["cer"])
    empty = recognition_metrics([], [])
    assert empty["num_samples"] == 0 and math.isnan(empty["word_accuracy"])


def test_metrics_errors():
    with pytest.raises(ValueError, match="entries"):
        recognition_metrics(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="predictions"):
        recognition_metrics("ab", "ab")
    with pytest.raises(TypeError, match="references"):
        recognition_metrics(["a"], [1])


def _state(charset="abc"):
    model = torch.nn.Linear(3, 4)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    return dict(
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        epoch=3,
        step=42,
        best_accuracy=0.5,
        charset=charset,
        case_insensitive=False,
        config=plain_config(dict(imgH=32, nh=8, channels=(1, 2), fn=print, name=None)),
    )


def test_round_trip_weights_only(tmp_path):
    path = tmp_path / "ck" / "last.pth"
    st = _state()
    save_checkpoint(path, st)
    # loadable by plain torch.load(weights_only=True)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "fastcrnn-ocr" and raw["epoch"] == 3
    got = load_checkpoint(path, expected_charset="abc")
    assert got["config"] == dict(imgH=32, nh=8, channels=[1, 2], name=None)
    for k, v in st["model"].items():
        assert torch.equal(got["model"][k], v)
    assert got["optimizer"]["state"][0]["exp_avg"].shape == (4, 3)
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["last.pth"]  # no temp left


def test_module_prefix_stripped(tmp_path):
    st = _state()
    st["model"] = {"module." + k: v for k, v in st["model"].items()}
    save_checkpoint(tmp_path / "ddp.pth", st)
    assert set(load_checkpoint(tmp_path / "ddp.pth")["model"]) == {"weight", "bias"}
    torch.save({"module.weight": torch.ones(2)}, tmp_path / "bare.pth")
    got = load_checkpoint(tmp_path / "bare.pth", allow_bare_state_dict=True)
    assert list(got["model"]) == ["weight"]
    with pytest.raises(CheckpointError, match="not a fastcrnn OCR checkpoint"):
        load_checkpoint(tmp_path / "bare.pth")
    assert strip_module_prefix({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}


def test_load_model_weights_strict_with_a_checkpoint_error():
    """Weights that fit load exactly; a wrong shape or a missing entry is a CheckpointError that
    starts with the caller's words and names the entry (what finetune, the Recognizer and
    --pretrained report)."""
    net = torch.nn.Linear(3, 2)
    state = {"weight": torch.randn(2, 3), "bias": torch.randn(2)}
    load_model_weights(net, state, "unused")
    assert torch.equal(net.weight.detach(), state["weight"])
    shape_error = r"(?s)^ckpt does not fit: .*size mismatch for weight"
    with pytest.raises(CheckpointError, match=shape_error):
        load_model_weights(net, {**state, "weight": torch.randn(4, 3)}, "ckpt does not fit")
    with pytest.raises(CheckpointError, match=r"(?s)^ckpt does not fit: .*Missing key.*bias"):
        load_model_weights(net, {"weight": state["weight"]}, "ckpt does not fit")


def test_bad_checkpoints(tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint(path, _state())
    data = path.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "trunc.pth")
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 3 : len(corrupt) // 3 + 64] = b"\xff" * 64
    (tmp_path / "corrupt.pth").write_bytes(bytes(corrupt))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "corrupt.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="charset"):
        load_checkpoint(path, expected_charset="abd")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="list"):
        load_checkpoint(tmp_path / "list.pth")


def test_crash_mid_save_keeps_previous(tmp_path):
    """A process killed while writing a checkpoint leaves the previous one loadable."""
    path = tmp_path / "last.pth"
    save_checkpoint(path, _state())
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, torch
        from fastcrnn.ocr import checkpoint
        real_save = torch.save
        def dying_save(obj, f, *a, **k):
            f.write(b"PK\\x03\\x04 partial")   # some bytes reach the temp file, then death
            f.flush()
            os._exit(9)
        torch.save = dying_save
        checkpoint.save_checkpoint({str(path)!r}, dict(model={{}}, charset="x", config={{}}))
    """)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=os.getcwd())
    assert proc.returncode == 9
    assert path.read_bytes() == before
    assert load_checkpoint(path, expected_charset="abc")["epoch"] == 3
    # the killed process left only its temp file behind; an exception (not a crash) mid-save
    # removes its own temp file
    stale = {p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")}
    assert len(stale) == 1

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, dict(model={}, bad=Boom()))
    assert {p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")} == stale
    assert load_checkpoint(path)["step"] == 42
