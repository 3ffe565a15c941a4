"""OCR training: a short run measurably learns; per-sample lengths reach the loss; resume."""

import os

import pytest
import torch

pytest.importorskip("PIL")
pytest.importorskip("rapidfuzz")
pytest.importorskip("tqdm")

import fastcrnn
from fastcrnn.ocr.data import AlignCollate, SyntheticTextLines
from fastcrnn.ocr.demo import render_dataset
from fastcrnn.ocr.model import build_model, model_config
from fastcrnn.ocr.train import ResumableSampler, Trainer, evaluate, fit
from fastcrnn.text import LabelConverter

TINY = dict(nh=32, channels=(8, 16, 16, 16, 32, 32, 32))


def _data(n, seed, alphabet="0123456789", keep_ratio=False, min_len=2, max_len=4):
    collate = AlignCollate(32, 64, keep_ratio=keep_ratio)
    ds = SyntheticTextLines(
        alphabet,
        n,
        min_len,
        max_len,
        seed=seed,
        noise=4.0,
        max_rotation=1.0,
        light_on_dark=0.0,
        max_fonts=2,
    )
    return render_dataset(ds, collate, "", progress=False), collate


def _fit(trainer, train, val=None, **options):
    """fit() with this file's usual options (batches of 32, seed 7, a line every step, no
    validation, checkpoints, progress bar or log), ``options`` overriding them."""
    args = dict(
        batch_size=32,
        expr_dir=None,
        seed=7,
        display_interval=1,
        val_interval=0,
        save_interval=0,
        progress=False,
        log=lambda s: None,
    )
    args.update(options)
    return fit(trainer, train, val, **args)


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
    hist = _fit(
        trainer, train, nepoch=100, collate=collate, seed=0, display_interval=35, max_steps=700
    )
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
        seen.update(
            T=logits.shape[0],
            lengths=torch.as_tensor(input_lengths).clone(),
            logits=logits.detach().clone(),
            targets=targets,
            tl=target_lengths,
        )
        return real(logits, targets, input_lengths, target_lengths)

    trainer.criterion.forward = spy
    batch = collate([train[i] for i in range(8)])
    assert len(set(batch.widths.tolist())) > 1  # variable widths
    trainer.step(batch)
    expected = net.output_length(batch.widths)
    assert torch.equal(seen["lengths"], expected)
    assert int(expected.max()) == seen["T"] and int(expected.min()) < seen["T"]
    # the loss with these lengths equals torch's on the same logits
    ref = torch.nn.functional.ctc_loss(
        seen["logits"].log_softmax(-1), seen["targets"], expected, seen["tl"], zero_infinity=True
    )
    got = fastcrnn.nn.CTCLoss(from_logits=True, zero_infinity=True)(
        seen["logits"], seen["targets"], expected, seen["tl"]
    )
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
        _fit(
            Trainer(net, conv, opt),
            train,
            collate=collate,
            expr_dir=expr,
            save_interval=100,
            state=state,
            checkpoint_extra=dict(charset="0123456789", config=cfg),
            **kw,
        )

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


# ---------------------------------------------------------------------------------------------
# learning-rate schedules, gradient clipping, logging
def _lrs(sched, opt, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules():
    from fastcrnn.ocr.engine import make_scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    assert make_scheduler(opt, "constant") is None  # crnn.pytorch's: nothing to step
    lrs = _lrs(make_scheduler(opt, "constant", warmup_steps=4), opt, 6)
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    opt = torch.optim.SGD([p], lr=2.0)
    lrs = _lrs(
        make_scheduler(opt, "cosine", total_steps=12, warmup_steps=2, final_factor=0.1), opt, 13
    )
    assert lrs[:3] == pytest.approx([1.0, 2.0, 2.0])
    assert lrs[7] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # half-way through the decay
    assert lrs[12] == pytest.approx(0.2) and all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    opt = torch.optim.SGD([p], lr=1.0)
    lrs = _lrs(make_scheduler(opt, "step", warmup_steps=1, step_size=3, gamma=0.5), opt, 8)
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25])
    # the default step size is a third of the steps after the warm-up
    opt = torch.optim.SGD([p], lr=1.0)
    lrs = _lrs(make_scheduler(opt, "step", total_steps=9), opt, 9)
    assert lrs == pytest.approx([1.0] * 3 + [0.1] * 3 + [0.01] * 3)


def test_schedule_resumes_at_a_step():
    from fastcrnn.ocr.engine import make_scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    straight = _lrs(make_scheduler(opt, "cosine", total_steps=20, warmup_steps=5), opt, 20)
    opt2 = torch.optim.SGD([p], lr=1.0)
    resumed = _lrs(
        make_scheduler(opt2, "cosine", total_steps=20, warmup_steps=5, start_step=8), opt2, 12
    )
    assert resumed == pytest.approx(straight[8:])


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(schedule="linear"), "schedule"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(schedule="cosine"), "total_steps"),
        (dict(schedule="step"), "step_size"),
        (dict(schedule="step", step_size=0), "step_size"),
        (dict(schedule="step", step_size=2, gamma=0.0), "gamma"),
        (dict(total_steps=0), "total_steps"),
        (dict(final_factor=2.0), "final_factor"),
        (dict(start_step=-3), "start_step"),
    ],
)
def test_schedule_arguments_checked(kw, name):
    from fastcrnn.ocr.engine import make_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=name):
        make_scheduler(opt, **kw)


def test_grad_clip_bounds_the_update_and_reports_the_norm():
    train, collate = _data(16, seed=3)
    conv = LabelConverter("0123456789")
    batch = collate([train[i] for i in range(16)])
    norms, steps = {}, {}
    for clip in (None, 0.01):
        torch.manual_seed(0)
        net = build_model(model_config(imgW=64, **TINY), conv.num_classes)
        before = [p.detach().clone() for p in net.parameters()]
        trainer = Trainer(net, conv, torch.optim.SGD(net.parameters(), lr=1.0), grad_clip=clip)
        trainer.step(batch)
        norms[clip] = trainer.grad_norm
        steps[clip] = (
            torch.cat([(p.detach() - b).flatten() for p, b in zip(net.parameters(), before)])
            .norm()
            .item()
        )
    # the reported norm is the one before clipping; plain SGD with lr 1 moves by the gradient
    assert norms[None] == pytest.approx(norms[0.01], rel=1e-5) and norms[None] > 0.05
    assert steps[None] == pytest.approx(norms[None], rel=1e-4)
    assert steps[0.01] == pytest.approx(0.01, rel=1e-3)
    with pytest.raises(ValueError, match="grad_clip"):
        Trainer(net, conv, torch.optim.SGD(net.parameters(), lr=1.0), grad_clip=-1.0)


def _fit_logged(tmp_path, nepoch=2, val_interval=2, progress=True, **kw):
    """fit on 96 lines (3 batches of 32 per epoch) with stdout and stderr captured."""
    import contextlib
    import io

    train, collate = _data(96, seed=5)
    val, _ = _data(16, seed=6)
    conv = LabelConverter("0123456789")
    torch.manual_seed(0)
    net = build_model(model_config(imgW=64, **TINY), conv.num_classes)
    trainer = Trainer(net, conv, torch.optim.Adam(net.parameters(), lr=1e-3))
    val_loader = torch.utils.data.DataLoader(val, batch_size=16, collate_fn=collate)
    from fastcrnn.ocr.progress import make_logger

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        hist = _fit(
            trainer,
            train,
            val_loader,
            nepoch=nepoch,
            collate=collate,
            expr_dir=str(tmp_path),
            val_interval=val_interval,
            progress=progress,
            log=make_logger(True),
            **kw,
        )
    return hist, out.getvalue(), err.getvalue()


def test_log_to_a_file_is_plain_lines_with_epochs_from_1(tmp_path):
    import re

    hist, out, err = _fit_logged(tmp_path)
    # not a terminal: no progress-bar frames, only whole lines
    assert "\r" not in out + err and err == ""
    lines = out.splitlines()
    train_lines = [l for l in lines if "] loss " in l]
    assert len(train_lines) == 6
    for l in train_lines:
        assert re.search(r"grad norm [0-9.e+-]+ \(max [0-9.e+-]+\), lr 0.001$", l), l
    # 3 steps per epoch: steps 1-3 are epoch 1, 4-6 epoch 2, in every kind of line
    seen = [
        (int(m.group(2)), int(m.group(1)))
        for m in (re.match(r"\[epoch (\d+)/2 step (\d+)\]", l) for l in lines)
        if m
    ]
    assert {s for s, _ in seen} == {1, 2, 3, 4, 5, 6}
    for step, epoch in seen:
        assert epoch == (step - 1) // 3 + 1, (step, epoch, out)
    val_steps = [
        int(m.group(1)) for m in (re.search(r"step (\d+)\] validation", l) for l in lines) if m
    ]
    assert val_steps == [2, 3, 4, 6] == hist["val_steps"]
    assert len(hist["grad_norms"]) == 6 and all(g > 0 for g in hist["grad_norms"])


def test_loss_spikes_are_counted_and_logged():
    from fastcrnn.ocr.progress import TrainProgress

    lines = []
    prog = TrainProgress(lines.append, nepoch=1, bar=False)
    for step in range(1, 61):
        prog.update(1, step, 1.0 + 0.01 * (step % 3), grad_norm=2.0)
    prog.update(1, 61, 5.0, grad_norm=40.0)
    prog.update(1, 62, 1.0, grad_norm=2.0)
    assert len(lines) == 1 and "loss spike" in lines[0] and "step 61" in lines[0]
    assert "gradient norm 40" in lines[0]
    prog.display(1, 62)
    assert "1 loss spike" in lines[-1] and "(max 5.0000)" in lines[-1]
    assert "grad norm" in lines[-1] and "(max 40)" in lines[-1]
    prog.display(1, 63)
    assert "spike" not in lines[-1]
    # a rise that lasts stops counting as spikes once the running mean has caught up
    for step in range(63, 200):
        prog.update(1, step, 4.0)
    assert prog.spikes_total < 10


def test_validation_collapse_is_flagged_and_best_kept(tmp_path, monkeypatch):
    """A collapsing later validation is called out in the log, and best.pth keeps the best."""
    import fastcrnn.ocr.loop as loop

    scripted = iter([0.9, 0.95, 0.5, 0.6])
    real = loop.evaluate

    def fake(*a, **k):
        res = real(*a, **k)
        res["metrics"]["word_accuracy"] = next(scripted)
        return res

    monkeypatch.setattr(loop, "evaluate", fake)
    hist, out, _ = _fit_logged(tmp_path)
    assert hist["best_accuracy"] == 0.95 and hist["best_step"] == 3
    collapse = [l for l in out.splitlines() if "below the best" in l]
    assert len(collapse) == 2 and "45.0 points below the best (0.9500 at step 3)" in collapse[0]
    best = torch.load(os.path.join(tmp_path, "best.pth"), weights_only=True)
    assert best["step"] == 3 and best["best_accuracy"] == 0.95


def test_timed_schedule_follows_the_budget_that_runs_out_first():
    from fastcrnn.ocr.engine import make_scheduler

    now = [0.0]
    p = torch.nn.Parameter(torch.zeros(1))

    def run(seconds_per_step):
        now[0] = 0.0
        opt = torch.optim.SGD([p], lr=1.0)
        sched = make_scheduler(
            opt, "cosine", total_steps=100, warmup_steps=10, max_seconds=50.0, clock=lambda: now[0]
        )
        lrs = []
        for _ in range(100):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            now[0] += seconds_per_step
            sched.step()
        return lrs

    opt = torch.optim.SGD([p], lr=1.0)
    steps_only = _lrs(make_scheduler(opt, "cosine", total_steps=100, warmup_steps=10), opt, 100)
    assert run(0.2) == pytest.approx(steps_only)  # 100 steps in 20 s: the steps run out first
    slow = run(1.0)  # the 50 s budget ends at step 50
    assert slow[:10] == pytest.approx(steps_only[:10])  # the warm-up counts steps
    assert slow[30] == pytest.approx(steps_only[60]) and slow[49] < 2e-3
    assert slow[60:] == pytest.approx([0.0] * 40, abs=1e-12)  # past the budget: the floor
    with pytest.raises(ValueError, match="max_seconds"):
        make_scheduler(opt, "cosine", total_steps=10, max_seconds=0.0)
