"""DDP: `torchrun --nproc_per_node=2 -m fastcrnn train` on CPU (gloo), tiny data, few steps."""

import textwrap

import pytest
import torch

pytest.importorskip("PIL")
pytest.importorskip("lmdb")
pytest.importorskip("rapidfuzz")
pytest.importorskip("tqdm")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from helpers import TINY_ADAM, run_python, tiny_train_args


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from fastcrnn.ocr.data import SyntheticTextLines, write_lmdb

    d = tmp_path_factory.mktemp("ddp")
    for name, n, seed in (("train", 64, 1), ("val", 8, 2)):
        ds = SyntheticTextLines("0123456789", n, 1, 4, seed=seed)
        write_lmdb(d / name, (ds[i] for i in range(n)))
    return d


def _torchrun(*args):
    return run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args)


def test_torchrun_train_cli(data):
    expr = data / "expr"
    p = _torchrun(
        "-m",
        "fastcrnn",
        *tiny_train_args(
            data / "train",
            data / "val",
            expr,
            alphabet="0123456789",
            nepoch=2,
            intervals=(1, 2, 2),
            workers=0,
            no_progress=True,
            **TINY_ADAM,
        ),
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "(2 processes)" in out
    assert out.count("done:") == 1  # rank-0 logging only
    ck = torch.load(expr / "last.pth", weights_only=True)
    # DistributedSampler: each rank sees 32 of the 64 samples -> 2 steps per epoch
    assert ck["step"] == 4 and ck["epoch"] == 2
    assert not any(k.startswith("module.") for k in ck["model"])


def test_ddp_ranks_stay_in_sync(data, tmp_path):
    """Every rank ends with the same weights (gradients are averaged), different from the
    initial ones, while each rank trained on its own half of the data."""
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, sys, torch
        from fastcrnn.ocr.cli import build_parser
        from fastcrnn.ocr import train
        captured = {{}}
        real_fit = train.fit
        def fit(trainer, *a, **k):
            captured["net"] = trainer.net
            captured["init"] = {{n: p.detach().clone() for n, p in trainer.net.named_parameters()}}
            seen = captured.setdefault("texts", [])
            real_step = trainer.step
            def step(batch):
                seen.extend(batch.texts)
                return real_step(batch)
            trainer.step = step
            return real_fit(trainer, *a, **k)
        train.fit = fit
        args = build_parser().parse_args(["train", "--trainRoot", {str(data / "train")!r},
            "--valRoot", {str(data / "val")!r}, "--alphabet", "0123456789", "--expr_dir",
            {str(tmp_path / "e")!r}, "--batchSize", "8", "--nepoch", "1", "--adam", "--lr",
            "1e-2", "--workers", "0", "--no_progress", "--nh", "16", "--channels",
            "8,8,16,16,16,16,16"])
        rank = os.environ["RANK"]
        train.train_main(args)
        net = captured["net"]
        torch.save(dict(params={{n: p.detach() for n, p in net.named_parameters()}},
                        init=captured["init"], texts=captured["texts"]),
                   {str(tmp_path)!r} + f"/rank{{rank}}.pt")
    """)
    )
    p = _torchrun(str(script))
    assert p.returncode == 0, p.stdout + p.stderr
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert len(r0["texts"]) == len(r1["texts"]) == 32
    from fastcrnn.ocr.data import LmdbDataset

    ds = LmdbDataset(data / "train")
    assert sorted(r0["texts"] + r1["texts"]) == sorted(ds.label(i) for i in range(64))
    for name, p0 in r0["params"].items():
        assert torch.equal(p0, r1["params"][name]), name
        assert torch.equal(r0["init"][name], r1["init"][name]), name  # DDP broadcast at start
    assert any(not torch.equal(r0["params"][n], r0["init"][n]) for n in r0["params"])
