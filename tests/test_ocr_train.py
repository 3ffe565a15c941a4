"""OCR training: a short run measurably learns; per-sample lengths reach the loss; resume."""
import os

import pytest
import torch

pytest.importorskip("PIL")
pytest.importorskip("rapidfuzz")
pytest.importorskip("tqdm")

import fastcrnn  # noqa: E402
from fastcrnn.ocr.data import AlignCollate, SyntheticTextLines  # noqa: E402
from fastcrnn.ocr.demo import PreparedLines, render_dataset  # noqa: E402
from fastcrnn.ocr.model import build_model, model_config  # noqa: E402
from fastcrnn.ocr.train import ResumableSampler, Trainer, evaluate, fit  # noqa: E402
from fastcrnn.text import LabelConverter  # noqa: E402

TINY = dict(nh=32, channels=(8, 16, 16, 16, 32, 32, 32))


def _data(n, seed, alphabet="0123456789", keep_ratio=False, min_len=2, max_len=4):
    collate = AlignCollate(32, 64, keep_ratio=keep_ratio)
    ds = SyntheticTextLines(alphabet, n, min_len, max_len, seed=seed, noise=4.0,
                            max_rotation=1.0, light_on_dark=0.0, max_fonts=2)
    return render_dataset(ds, collate, "", progress=False), collate


def test_short_training_run_learns():
    torch.manual_seed(0)
    train, collate = _data(640, seed=1)
    test, _ = _data(128, seed=2)
    conv = LabelConverter("0123456789")
    cfg = model_config(imgW=64, **TINY)
    net = build_model(cfg, conv.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    trainer = Trainer(net, conv, opt)
    loader = torch.utils.data.DataLoader(test, batch_size=128, collate_fn=collate)
    before = evaluate(net, loader, conv)["metrics"]
    hist = fit(trainer, train, None, nepoch=100, batch_size=32, collate=collate, expr_dir=None,
               seed=0, display_interval=35, val_interval=0, save_interval=0, max_steps=700,
               progress=False, log=lambda s: None)
    after = evaluate(net, loader, conv)["metrics"]
    assert hist["step"] == 700 and len(hist["losses"]) == 20
    # past the CTC "all blank" plateau (mean loss ~3 here): characters are being read
    assert hist["losses"][-1] < 0.5 * hist["losses"][0], hist["losses"]
    assert hist["losses"][-1] < 0.8 * hist["losses"][1], hist["losses"]
    assert after["cer"] < 0.9 * before["cer"] and after["word_accuracy"] > 0.02, (before, after)


def test_step_passes_each_samples_length_to_ctc():
    train, collate = _data(8, seed=3, keep_ratio=True, min_len=1, max_len=8)
    conv = LabelConverter("0123456789")
    net = build_model(model_config(**TINY), conv.num_classes)
    trainer = Trainer(net, conv, torch.optim.SGD(net.parameters(), lr=0.0))
    seen = {}
    real = trainer.criterion.forward

    def spy(logits, targets, input_lengths, target_lengths):
        seen.update(T=logits.shape[0], lengths=torch.as_tensor(input_lengths).clone(),
                    logits=logits.detach().clone(), targets=targets, tl=target_lengths)
        return real(logits, targets, input_lengths, target_lengths)

    trainer.criterion.forward = spy
    batch = collate([train[i] for i in range(8)])
    assert len(set(batch.widths.tolist())) > 1  # variable widths
    trainer.step(batch)
    expected = net.output_length(batch.widths)
    assert torch.equal(seen["lengths"], expected)
    assert int(expected.max()) == seen["T"] and int(expected.min()) < seen["T"]
    # the loss with these lengths equals torch's on the same logits
    ref = torch.nn.functional.ctc_loss(seen["logits"].log_softmax(-1), seen["targets"],
                                       expected, seen["tl"], zero_infinity=True)
    got = fastcrnn.nn.CTCLoss(from_logits=True, zero_infinity=True)(
        seen["logits"], seen["targets"], expected, seen["tl"])
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_resumable_sampler():
    s = ResumableSampler(10, seed=3)
    s.set_epoch(2)
    full = list(s)
    assert sorted(full) == list(range(10))
    s.set_epoch(2, skip=4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_epoch(3)
    assert list(s) != full


def _params(path):
    from fastcrnn.ocr.checkpoint import load_checkpoint
    return load_checkpoint(path)["model"]


# small models on a shared CI machine: one thread avoids OpenMP oversubscription
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("split", ["epoch", "mid-epoch"])
def test_resume_matches_uninterrupted(tmp_path, split):
    """Training 2 epochs straight equals training, stopping (at an epoch end or mid-epoch),
    and resuming from last.pth: same data order, optimizer state and final weights."""
    train, collate = _data(96, seed=5)
    conv = LabelConverter("0123456789")
    cfg = model_config(imgW=64, **TINY)

    def run(expr, state=None, **kw):
        torch.manual_seed(0)
        net = build_model(cfg, conv.num_classes)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        if state is not None:
            from fastcrnn.ocr.checkpoint import load_checkpoint
            ck = load_checkpoint(os.path.join(expr, "last.pth"))
            net.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            state = {k: ck[k] for k in ("epoch", "batch", "step", "best_accuracy")}
        fit(Trainer(net, conv, opt), train, None, batch_size=32, collate=collate, expr_dir=expr,
            seed=7, display_interval=1, val_interval=0, save_interval=100, state=state,
            progress=False, log=lambda s: None, checkpoint_extra=dict(charset="0123456789",
                                                                      config=cfg), **kw)

    run(str(tmp_path / "a"), nepoch=2)
    b = str(tmp_path / "b")
    if split == "epoch":
        run(b, nepoch=1)
    else:
        run(b, nepoch=2, max_steps=4)  # 3 batches per epoch: stops inside epoch 1
    from fastcrnn.ocr.checkpoint import load_checkpoint
    ck = load_checkpoint(os.path.join(b, "last.pth"))
    assert (ck["epoch"], ck["batch"]) == ((1, 0) if split == "epoch" else (1, 1))
    run(b, state=True, nepoch=2)
    pa, pb = _params(os.path.join(tmp_path / "a", "last.pth")), _params(os.path.join(b, "last.pth"))
    assert load_checkpoint(os.path.join(b, "last.pth"))["step"] == 6
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
