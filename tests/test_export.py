"""Export: fastcrnn.export_onnx run by ONNX Runtime against the eager fused model (dynamic batch
and width, the greedy-decode outputs), `python -m fastcrnn export`, and torch.export.export of
the fused CRNN, LSTM, CTC loss and greedy decoding."""

import pytest
import torch
from tiny_crnn import ALPHABET, line_batch, lively_crnn, save_tiny_checkpoint

import fastcrnn
from fastcrnn.export import OPSETS, greedy_decoding_from_onnx

pytestmark = pytest.mark.usefixtures("one_thread")

# (batch, width) pairs: a batch of one, the narrowest width the CRNN takes, wide lines
SHAPES = [(1, 4), (1, 100), (2, 37), (3, 160), (5, 301), (8, 64)]


@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx", reason="ONNX export needs onnx (the [export] extra)")
    return pytest.importorskip(
        "onnxruntime", reason="running exported models needs onnxruntime (the [export] extra)"
    )


def session(ort, path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def batch_and_widths(N, W, seed):
    """A padded batch of N line images of width W, and per-image widths in [4, W] (the first
    is W; the others as a padded batch's shorter images have them)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(N, 1, 32, W, generator=gen) * 2 - 1
    widths = torch.randint(4, W + 1, (N,), generator=gen)
    widths[0] = W
    return images, widths


def eager(net, images, widths):
    with torch.no_grad():
        scores = net(images)
    lengths = net.output_length(widths)
    return scores, lengths, fastcrnn.ctc_greedy_decode(scores, lengths, logits=True)


def assert_scores_close(got, want, what):
    """Within 1e-5 of the scores' own scale (>= 1): the lively models' logits reach ~200, where
    float32 sums in another order differ by ~1e-4; a freshly initialised model's stay near 1
    (test_onnx_scores_of_a_fresh_model_within_1e-4 checks those at the absolute 1e-4)."""
    scale = max(1.0, float(want.abs().max()))
    torch.testing.assert_close(
        torch.as_tensor(got), want, atol=1e-5 * scale, rtol=0, msg=lambda m: f"{what}: {m}"
    )


def assert_decoding_equal(got, want, what):
    """Tokens, counts and frames equal; probabilities within 1e-4 (a logit ~200 off by ~1e-4,
    see assert_scores_close, moves a probability p by up to p (1 - p) 1e-4)."""
    assert torch.equal(got.lengths, want.lengths), what
    assert torch.equal(got.tokens, want.tokens), what
    assert torch.equal(got.token_frames, want.token_frames), what
    torch.testing.assert_close(got.token_probs, want.token_probs, atol=1e-4, rtol=0, msg=what)


# ---- ONNX: the graph against the eager model ---------------------------------------------------
@pytest.mark.parametrize("variant", ["crnn.pytorch", "seed"])
def test_onnx_matches_eager_on_any_batch_and_width(ort, tmp_path, variant):
    net = lively_crnn(seed=1, variant=variant)
    path = fastcrnn.export_onnx(net, tmp_path / "crnn.onnx")
    sess = session(ort, path)
    assert [i.name for i in sess.get_inputs()] == ["images", "widths"]
    assert [o.name for o in sess.get_outputs()] == [
        "logits",
        "argmax",
        "keep",
        "max_prob",
        "lengths",
    ]
    shapes = SHAPES if variant == "crnn.pytorch" else [(1, 32), (3, 77), (4, 200)]
    decoded = 0
    for k, (N, W) in enumerate(shapes):
        images, widths = batch_and_widths(N, W, seed=k)
        if variant == "seed":
            widths.clamp_(min=32)  # the seed variant needs 32 pixels for one frame
        scores, lengths, want = eager(net, images, widths)
        out = sess.run(None, {"images": images.numpy(), "widths": widths.numpy()})
        what = f"{variant} N={N} W={W}"
        assert_scores_close(out[0], scores, what)
        assert torch.equal(torch.from_numpy(out[4]), lengths), what
        # the per-frame outputs, read by definition
        argmax = scores.argmax(2).t()
        assert torch.equal(torch.from_numpy(out[1]), argmax), what
        prev = torch.cat([torch.full((N, 1), -1), argmax[:, :-1]], 1)
        frame = torch.arange(argmax.shape[1]).expand_as(argmax)
        keep = (argmax != 0) & (argmax != prev) & (frame < lengths[:, None])
        assert torch.equal(torch.from_numpy(out[2]), keep), what
        max_prob = scores.softmax(2).amax(2).t()
        torch.testing.assert_close(torch.from_numpy(out[3]), max_prob, atol=1e-4, rtol=0)
        assert_decoding_equal(greedy_decoding_from_onnx(*out[1:]), want, what)
        decoded += int(want.lengths.sum())
    assert decoded > 10  # the decodes compared are not all empty


def test_onnx_scores_of_a_fresh_model_within_1e_4(ort, tmp_path):
    torch.manual_seed(0)
    net = fastcrnn.nn.CRNN(32, 1, 37, 32, output="logits", channels=(16, 16, 32, 32, 32, 32, 32))
    sess = session(ort, fastcrnn.export_onnx(net.eval(), tmp_path / "m.onnx"))
    for k, (N, W) in enumerate(SHAPES):
        images, widths = batch_and_widths(N, W, seed=k)
        scores, lengths, want = eager(net, images, widths)
        out = sess.run(None, {"images": images.numpy(), "widths": widths.numpy()})
        torch.testing.assert_close(torch.from_numpy(out[0]), scores, atol=1e-4, rtol=0)
        assert torch.equal(torch.from_numpy(out[4]), lengths)
        assert_decoding_equal(greedy_decoding_from_onnx(*out[1:]), want, f"N={N} W={W}")


def test_onnx_without_decode_and_log_probs_models(ort, tmp_path):
    net = lively_crnn(seed=2, output="log_probs")
    sess = session(ort, fastcrnn.export_onnx(net, tmp_path / "m.onnx", include_decode=False))
    assert [i.name for i in sess.get_inputs()] == ["images"]
    assert [o.name for o in sess.get_outputs()] == ["log_probs"]
    for N, W in SHAPES:
        images, _ = batch_and_widths(N, W, seed=W)
        with torch.no_grad():
            want = net(images)
        (got,) = sess.run(None, {"images": images.numpy()})
        assert_scores_close(got, want, f"N={N} W={W}")
    # a log_probs model's decode outputs read as the logits model's do
    sess = session(ort, fastcrnn.export_onnx(net, tmp_path / "d.onnx"))
    images, widths = batch_and_widths(3, 120, seed=3)
    _, _, want = eager(net, images, widths)
    out = sess.run(None, {"images": images.numpy(), "widths": widths.numpy()})
    assert_decoding_equal(greedy_decoding_from_onnx(*out[1:]), want, "log_probs")


def test_onnx_graph_is_standard_onnx_with_lstm_ops_and_dynamic_axes(ort, tmp_path):
    import onnx

    net = lively_crnn()
    path = fastcrnn.export_onnx(net, tmp_path / "m.onnx", metadata={"fastcrnn.alphabet": "01"})
    model = onnx.load(path)
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("LSTM") == 2  # one bidirectional LSTM op per BiLSTM block
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}  # no custom ops
    assert model.opset_import[0].version == 17
    lstm = next(n for n in model.graph.node if n.op_type == "LSTM")
    attrs = {a.name: a for a in lstm.attribute}
    assert attrs["direction"].s == b"bidirectional" and attrs["hidden_size"].i == 16

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    graph_inputs = {v.name: dims(v) for v in model.graph.input}
    assert graph_inputs == {"images": ["batch", 1, 32, "width"], "widths": ["batch"]}
    outputs = {v.name: dims(v) for v in model.graph.output}
    # (the exporter's shape inference leaves the class count of (T, N, C) symbolic)
    assert outputs["logits"][1] == "batch" and isinstance(outputs["logits"][0], str)
    assert outputs["argmax"][0] == "batch" and outputs["lengths"] == ["batch"]
    assert {p.key: p.value for p in model.metadata_props} == {"fastcrnn.alphabet": "01"}


@pytest.mark.parametrize("opset", [OPSETS[0], OPSETS[-1]])
def test_onnx_opsets(ort, tmp_path, opset):
    net = lively_crnn(seed=3)
    sess = session(ort, fastcrnn.export_onnx(net, tmp_path / "m.onnx", opset=opset))
    images, widths = batch_and_widths(4, 90, seed=opset)
    scores, _, want = eager(net, images, widths)
    out = sess.run(None, {"images": images.numpy(), "widths": widths.numpy()})
    assert_scores_close(out[0], scores, f"opset {opset}")
    assert_decoding_equal(greedy_decoding_from_onnx(*out[1:]), want, f"opset {opset}")


def test_export_leaves_the_model_as_it_was(ort, tmp_path):
    net = lively_crnn(seed=4).train().double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fastcrnn.export_onnx(net, tmp_path / "m.onnx")
    assert net.training and net.rnn[0].rnn.backend == "fused"
    assert all(m.backend == "fused" for m in net.modules() if isinstance(m, fastcrnn.nn.LSTM))
    after = net.state_dict()
    assert all(
        torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype for k in before
    )
    # the double model was exported in float32 from its eval-mode copy
    sess = session(ort, tmp_path / "m.onnx")
    images, widths = batch_and_widths(2, 80, seed=4)
    with torch.no_grad():
        want = net.eval()(images.double()).float()
    out = sess.run(None, {"images": images.numpy(), "widths": widths.numpy()})
    assert_scores_close(out[0], want, "double model")


def test_export_rejects_bad_arguments(ort, tmp_path):
    net = lively_crnn()
    out = tmp_path / "m.onnx"
    cases = [
        (dict(model=torch.nn.LSTM(4, 4)), TypeError, "model must be a fastcrnn.nn.CRNN"),
        (dict(path=123), TypeError, "path must be a str or os.PathLike"),
        (dict(path=tmp_path / "no" / "m.onnx"), FileNotFoundError, "path: the folder"),
        (dict(include_decode=1), TypeError, "include_decode must be a bool"),
        (dict(opset=13), ValueError, r"opset must be in \[14, 20\]"),
        (dict(opset=17.0), TypeError, "opset must be an int"),
        (dict(blank=11), ValueError, r"blank must be in \[0, 11\)"),
        (dict(blank=-1), ValueError, "blank must be in"),
        (dict(metadata={"k": 1}), TypeError, "metadata must map str to str"),
    ]
    for kw, error, match in cases:
        args = {"model": net, "path": out, **kw}
        with pytest.raises(error, match=match):
            fastcrnn.export_onnx(args.pop("model"), args.pop("path"), **args)
    assert not out.exists()


# ---- reading the decode outputs ----------------------------------------------------------------
@pytest.mark.parametrize("blank", [0, 2])
def test_greedy_decoding_from_onnx_equals_ctc_greedy_decode(blank):
    """On scores with few classes (many repeats, blanks and runs) and lengths below T, the
    decode outputs as the graph defines them give ctc_greedy_decode's result."""
    gen = torch.Generator().manual_seed(blank)
    T, N, C = 30, 64, 4
    scores = torch.randn(T, N, C, generator=gen) * 2
    lengths = torch.randint(0, T + 1, (N,), generator=gen)
    argmax = scores.argmax(2).t()
    prev = torch.cat([torch.full((N, 1), -1), argmax[:, :-1]], 1)
    frame = torch.arange(T).expand(N, T)
    keep = (argmax != blank) & (argmax != prev) & (frame < lengths[:, None])
    max_prob = scores.softmax(2).amax(2).t()
    got = greedy_decoding_from_onnx(
        argmax.numpy(), keep.numpy(), max_prob.numpy(), lengths.numpy(), blank=blank
    )
    want = fastcrnn.ctc_greedy_decode(scores, lengths, blank=blank, logits=True)
    assert_decoding_equal(got, want, f"blank={blank}")
    with pytest.raises(ValueError, match="argmax must have shape"):
        greedy_decoding_from_onnx(argmax[0], keep[0], max_prob[0], lengths)
    with pytest.raises(TypeError, match="keep must be a bool"):
        greedy_decoding_from_onnx(argmax, keep.int(), max_prob, lengths)
    with pytest.raises(ValueError, match="max_prob must have argmax's shape"):
        greedy_decoding_from_onnx(argmax, keep, max_prob[:, 1:], lengths)
    with pytest.raises(ValueError, match="lengths must have shape"):
        greedy_decoding_from_onnx(argmax, keep, max_prob, lengths[1:])


# ---- python -m fastcrnn export ----------------------------------------------------------------
def test_cli_export(ort, tmp_path):
    pytest.importorskip("PIL")
    pytest.importorskip("lmdb")
    pytest.importorskip("rapidfuzz")
    pytest.importorskip("tqdm")
    import json

    import onnx
    from helpers import cli

    net = lively_crnn(seed=7)
    ck = save_tiny_checkpoint(tmp_path / "tiny.pth", net)
    out = tmp_path / "tiny.onnx"
    p = cli("export", "--checkpoint", ck, "--output", out)
    assert f"wrote {out}" in p.stdout and "widths (N,) int64" in p.stdout
    meta = {m.key: m.value for m in onnx.load(str(out)).metadata_props}
    assert meta["fastcrnn.alphabet"] == ALPHABET and meta["fastcrnn.blank"] == "0"
    assert json.loads(meta["fastcrnn.config"])["keep_ratio"] is True
    assert meta["fastcrnn.version"] == fastcrnn.__version__
    images = line_batch([90, 150, 60], seed=7)
    widths = torch.tensor([90, 150, 60])
    sess = session(ort, out)
    got = sess.run(None, {"images": images.numpy(), "widths": widths.numpy()})
    _, _, want = eager(net, images, widths)
    assert_decoding_equal(greedy_decoding_from_onnx(*got[1:]), want, "cli")
    # --no-decode, --opset, a crnn.pytorch state dict with its flags
    bare = tmp_path / "crnn.pth"
    torch.save(net.state_dict(), bare)
    plain = tmp_path / "plain.onnx"
    flags = ["--alphabet", ALPHABET, "--case_sensitive"]
    cli("export", "--checkpoint", bare, "--output", plain, "--no-decode", "--opset", 14, *flags)
    model = onnx.load(str(plain))
    assert [o.name for o in model.graph.output] == ["logits"]
    assert model.opset_import[0].version == 14
    (scores,) = session(ort, plain).run(None, {"images": images.numpy()})
    with torch.no_grad():
        assert_scores_close(scores, net(images), "cli --no-decode")
    # errors
    p = cli("export", "--checkpoint", tmp_path / "nope.pth", "--output", out, check=False)
    assert p.returncode == 2 and "does not exist" in p.stderr
    p = cli("export", "--checkpoint", bare, "--output", out, "--alphabet", "01", check=False)
    assert p.returncode == 2 and "--alphabet" in p.stderr
    p = cli("export", "--checkpoint", ck, "--output", out, "--opset", 9, check=False)
    assert p.returncode != 0 and "--opset" in p.stderr
    p = cli("export", "--checkpoint", ck, "--output", tmp_path / "no" / "m.onnx", check=False)
    assert p.returncode == 2 and "folder" in p.stderr


# ---- torch.export ------------------------------------------------------------------------------
def fused_ops(ep):
    return {
        str(n.target)
        for n in ep.graph.nodes
        if n.op == "call_function" and str(n.target).startswith("fastcrnn.")
    }


@pytest.mark.parametrize("strict", [False, True])
def test_torch_export_fused_crnn_with_dynamic_batch_and_width(strict):
    net = lively_crnn(seed=8)
    batch = torch.export.Dim("batch", min=1, max=1024)
    # from 8 pixels: at 4..7 crnn.pytorch's third feature map is 1 pixel wide, a size torch
    # specialises (the eval BatchNorm's broadcast guards on it)
    width = torch.export.Dim("width", min=8, max=4096)
    ep = torch.export.export(
        net, (torch.randn(2, 1, 32, 100),), dynamic_shapes=({0: batch, 3: width},), strict=strict
    )
    assert "fastcrnn.lstm_layer.default" in fused_ops(ep)  # the fused path, not torch.lstm
    module = ep.module()
    for N, W in [(1, 8), (3, 77), (5, 301)]:
        x = torch.randn(N, 1, 32, W)
        with torch.no_grad():
            torch.testing.assert_close(module(x), net(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strict", [False, True])
def test_torch_export_fused_lstm(strict):
    lstm = fastcrnn.nn.LSTM(16, 8, num_layers=2, bidirectional=True).eval()
    T = torch.export.Dim("T", min=2, max=4096)
    N = torch.export.Dim("N", min=2, max=1024)
    ep = torch.export.export(
        lstm, (torch.randn(11, 3, 16),), dynamic_shapes=({0: T, 1: N},), strict=strict
    )
    assert "fastcrnn.lstm_layer.default" in fused_ops(ep)
    module = ep.module()
    for t, n in [(2, 2), (30, 5)]:
        x = torch.randn(t, n, 16)
        with torch.no_grad():
            got, (h, c) = module(x)
            want, (h2, c2) = lstm(x)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close((h, c), (h2, c2))


@pytest.mark.parametrize("strict", [False, True])
def test_torch_export_fused_lstm_with_lengths(strict):
    class Padded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = fastcrnn.nn.LSTM(8, 8, bidirectional=True)

        def forward(self, x, lengths):
            return self.lstm(x, lengths=lengths)[0]

    model = Padded().eval()
    x, lengths = torch.randn(12, 4, 8), torch.tensor([12, 5, 1, 9])
    T = torch.export.Dim("T", min=2, max=4096)
    N = torch.export.Dim("N", min=2, max=1024)
    ep = torch.export.export(
        model, (x, lengths), dynamic_shapes=({0: T, 1: N}, {0: N}), strict=strict
    )
    x, lengths = torch.randn(20, 3, 8), torch.tensor([20, 7, 3])
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x, lengths), model(x, lengths))


class _CTC(torch.nn.Module):
    def __init__(self, from_logits):
        super().__init__()
        self.from_logits = from_logits

    def forward(self, scores, targets, input_lengths, target_lengths):
        fn = fastcrnn.ctc_loss_from_logits if self.from_logits else fastcrnn.ctc_loss
        return fn(scores, targets, input_lengths, target_lengths)


class _Decode(torch.nn.Module):
    def forward(self, scores, lengths):
        return tuple(fastcrnn.ctc_greedy_decode(scores, lengths, logits=True))


@pytest.mark.parametrize("strict", [False, True])
def test_torch_export_fused_ctc_loss_and_greedy_decode(strict):
    T_, N_, S_ = (torch.export.Dim(n, min=2, max=4096) for n in ("T", "N", "S"))

    def inputs(T, N, C, S, seed):
        gen = torch.Generator().manual_seed(seed)
        logits = torch.randn(T, N, C, generator=gen)
        targets = torch.randint(1, C, (N, S), generator=gen)
        target_lengths = torch.randint(1, S + 1, (N,), generator=gen)
        return logits, targets, torch.full((N,), T), target_lengths

    example = inputs(26, 4, 11, 5, seed=0)
    for from_logits in (True, False):
        model = _CTC(from_logits)
        args = example if from_logits else (example[0].log_softmax(2), *example[1:])
        dyn = ({0: T_, 1: N_}, {0: N_, 1: S_}, {0: N_}, {0: N_})
        ep = torch.export.export(model, args, dynamic_shapes=dyn, strict=strict)
        assert "fastcrnn.ctc_loss.default" in fused_ops(ep)
        new = inputs(40, 6, 11, 9, seed=1)
        if not from_logits:
            new = (new[0].log_softmax(2), *new[1:])
        torch.testing.assert_close(ep.module()(*new), model(*new))
    dec = _Decode()
    ep = torch.export.export(
        dec, (example[0], example[2]), dynamic_shapes=({0: T_, 1: N_}, {0: N_}), strict=strict
    )
    assert "fastcrnn.greedy_decode.default" in fused_ops(ep)
    scores, lengths = torch.randn(33, 5, 11), torch.tensor([33, 3, 20, 1, 0])
    for got, want in zip(ep.module()(scores, lengths), dec(scores, lengths)):
        torch.testing.assert_close(got, want)
