"""fastcrnn.ctc_greedy_decode against the loop and vectorized references in fastcrnn.reference."""

import pytest
import torch
from helpers import run_with_cpu_isa
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcrnn
from fastcrnn import reference


def assert_matches_reference(out, lp, lengths, blank, logits):
    ref = reference.ctc_greedy_decode_loop(
        lp.cpu(), None if lengths is None else list(lengths), blank, logits
    )
    vec = reference.ctc_greedy_decode_torch(lp.cpu(), lengths, blank, logits)
    names = ("tokens", "lengths", "token_probs", "token_frames")
    for name, got, want, want_vec in zip(names, out, ref, vec):
        got = got.cpu()
        if name == "token_probs":
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6, equal_nan=True)
            torch.testing.assert_close(want_vec, want, rtol=1e-6, atol=1e-6, equal_nan=True)
        else:
            assert torch.equal(got, want), name
            assert torch.equal(want_vec, want), name + " (vectorized reference)"
        assert got.dtype == want.dtype


def peaky_scores(T, N, C, blank, seed, sharp=True):
    """Scores whose argmax follows runs of labels, with many blanks (CTC-like outputs)."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(T, N, C, generator=g)
    if sharp and T > 0 and N > 0:
        run = torch.randint(1, 6, (T, N), generator=g)
        labels = torch.randint(0, C, (T, N), generator=g)
        labels = torch.where(
            torch.rand(T, N, generator=g) < 0.5, torch.full_like(labels, blank), labels
        )
        t = torch.arange(T)[:, None].expand(T, N)
        start = (t // run) * run  # frames in the same block share one label
        chosen = labels.gather(0, start)
        scores.scatter_add_(2, chosen.unsqueeze(-1), torch.full((T, N, 1), 6.0))
    return scores


@settings(max_examples=120, deadline=None)
@given(
    T=st.integers(0, 300),
    N=st.integers(0, 16),
    C=st.integers(1, 100),
    data=st.data(),
    logits=st.booleans(),
    sharp=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_matches_reference_random(T, N, C, data, logits, sharp, seed):
    blank = data.draw(st.integers(0, C - 1))
    lengths = data.draw(st.lists(st.integers(0, T), min_size=N, max_size=N))
    scores = peaky_scores(T, N, C, blank, seed, sharp)
    lp = scores if logits else scores.log_softmax(-1)
    out = fastcrnn.ctc_greedy_decode(lp, torch.tensor(lengths, dtype=torch.int64), blank, logits)
    assert_matches_reference(out, lp, lengths, blank, logits)


def test_minimal_torch_decode_anchor_reads_the_same_tokens():
    """The benchmark's minimal torch decode (reference.ctc_greedy_decode_minimal) reads what
    ours does, so the two are timed on the same job."""
    g = torch.Generator().manual_seed(5)
    lp = (torch.randn(40, 9, 6, generator=g) * 3).log_softmax(-1)
    lp[5:9, :, 2] = 10.0  # a repeated label run
    out = fastcrnn.ctc_greedy_decode(lp)
    for n, tokens in enumerate(reference.ctc_greedy_decode_minimal(lp)):
        assert tokens.tolist() == out.tokens[n, : out.lengths[n]].tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("logits", [False, True])
@pytest.mark.parametrize("shape", [(26, 64, 37), (50, 4, 5990), (9, 3, 1), (40, 2, 515)])
def test_dtypes(device, dtype, logits, shape):
    T, N, C = shape
    scores = peaky_scores(T, N, C, 0, seed=1).to(dtype)
    lp = scores if logits else scores.float().log_softmax(-1).to(dtype)
    lengths = torch.randint(0, T + 1, (N,))
    out = fastcrnn.ctc_greedy_decode(lp.to(device), lengths.to(device), logits=logits)
    for o in out:
        assert o.device.type == device.type
    assert_matches_reference(out, lp, lengths.tolist(), 0, logits)


@pytest.mark.parametrize("layout", ["batch_major_transposed", "class_strided", "time_strided"])
def test_non_contiguous(device, layout):
    T, N, C = 30, 5, 41
    if layout == "batch_major_transposed":
        lp = torch.randn(N, T, C).log_softmax(-1).transpose(0, 1)
    elif layout == "class_strided":
        lp = torch.randn(T, N, 2 * C).log_softmax(-1)[:, :, ::2]
    else:
        lp = torch.randn(2 * T, N, C).log_softmax(-1)[::2]
    assert not lp.is_contiguous()
    out = fastcrnn.ctc_greedy_decode(lp.to(device), blank=3)
    assert_matches_reference(out, lp, None, 3, False)


def test_ties_and_nan(device):
    T, N, C = 60, 6, 7
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 3, (T, N, C), generator=g).float()  # many exact ties
    scores[5, 0, 4] = float("nan")
    scores[6, 0, 2] = float("nan")
    scores[10:13, 1, :] = float("nan")
    scores[20, 2, :] = float("-inf")
    scores[21, 2, 3] = float("inf")
    for logits in (False, True):
        out = fastcrnn.ctc_greedy_decode(scores.to(device), logits=logits)
        assert_matches_reference(out, scores, None, 0, logits)


def test_worked_example(device):
    # frames: a a - a b b - - c  (blank 0): tokens a, a, b, c
    labels = [1, 1, 0, 1, 2, 2, 0, 0, 3]
    probs = [0.6, 0.9, 0.8, 0.7, 0.5, 0.95, 0.99, 0.9, 0.85]
    lp = torch.full((len(labels), 4), -20.0)
    for t, (lab, p) in enumerate(zip(labels, probs)):
        lp[t, lab] = torch.tensor(p).log()
    out = fastcrnn.ctc_greedy_decode(lp.to(device))
    assert out.tokens.tolist() == [1, 1, 2, 3] + [-1] * 5
    assert int(out.lengths) == 4
    assert out.token_frames.tolist() == [0, 3, 4, 8] + [-1] * 5
    torch.testing.assert_close(
        out.token_probs.cpu(), torch.tensor([0.9, 0.7, 0.95, 0.85] + [0.0] * 5)
    )


def test_unbatched_and_lengths_forms(device):
    lp = torch.randn(12, 5).log_softmax(-1).to(device)
    batched = fastcrnn.ctc_greedy_decode(lp.unsqueeze(1), [7])
    for lengths in (7, [7], (7,), torch.tensor(7), torch.tensor([7], dtype=torch.int32)):
        out = fastcrnn.ctc_greedy_decode(lp, lengths)
        assert out.tokens.shape == (12,) and out.lengths.shape == ()
        for a, b in zip(out, batched):
            assert torch.equal(a, b[0])


def test_empty(device):
    out = fastcrnn.ctc_greedy_decode(torch.randn(0, 3, 5, device=device))
    assert out.tokens.shape == (3, 0) and out.lengths.tolist() == [0, 0, 0]
    out = fastcrnn.ctc_greedy_decode(torch.randn(7, 0, 5, device=device))
    assert out.tokens.shape == (0, 7) and out.lengths.shape == (0,)
    out = fastcrnn.ctc_greedy_decode(torch.randn(7, 2, 5, device=device), [0, 0])
    assert out.lengths.tolist() == [0, 0] and (out.tokens == -1).all()
    assert (out.token_frames == -1).all() and (out.token_probs == 0).all()


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(log_probs=torch.randn(2, 3, 4, 5)), ValueError, "log_probs"),
        (dict(log_probs=torch.randn(5)), ValueError, "log_probs"),
        (dict(log_probs=torch.randn(4, 2, 0)), ValueError, "C > 0"),
        (dict(log_probs=torch.randint(0, 5, (4, 2, 3))), TypeError, "log_probs"),
        (dict(log_probs=[[0.0]]), TypeError, "log_probs"),
        (dict(blank=3), ValueError, "blank"),
        (dict(blank=-1), ValueError, "blank"),
        (dict(blank=1.0), TypeError, "blank"),
        (dict(input_lengths=[1, -1]), ValueError, "input_lengths"),
        (dict(input_lengths=[1, 5]), ValueError, "input_lengths"),
        (dict(input_lengths=[1, 2, 3]), ValueError, "input_lengths"),
        (dict(input_lengths=torch.tensor([1, -1])), ValueError, "input_lengths"),
        (dict(input_lengths=torch.tensor([1, 5])), ValueError, "input_lengths"),
        (dict(input_lengths=torch.tensor([1, 2, 3])), ValueError, "input_lengths"),
        (dict(input_lengths=torch.tensor([[1], [2], [3]])), ValueError, "input_lengths"),
        (dict(input_lengths=torch.tensor([1.0, 2.0])), TypeError, "input_lengths"),
        (dict(input_lengths=[1.5, 2]), TypeError, "input_lengths"),
        (dict(input_lengths="12"), TypeError, "input_lengths"),
    ],
)
def test_bad_input(kwargs, exc, match):
    args = dict(log_probs=torch.randn(4, 2, 3).log_softmax(-1))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fastcrnn.ctc_greedy_decode(**args)


def test_raw_op_checks_its_arguments():
    """torch.ops.fastcrnn.greedy_decode is public too: it must reject what it cannot handle."""
    op = torch.ops.fastcrnn.greedy_decode
    lp = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match="input_lengths"):
        op(lp, torch.tensor([5, 1]), 0, False, False)  # CPU values are always checked
    with pytest.raises(ValueError, match="blank"):
        op(lp, torch.tensor([4, 1]), 3, False, True)
    with pytest.raises(ValueError, match="log_probs"):
        op(lp[0], torch.tensor([4, 1]), 0, False, True)
    with pytest.raises(TypeError, match="input_lengths"):
        op(lp, torch.tensor([4.0, 1.0]), 0, False, True)


def test_opcheck(device):
    lp = torch.randn(10, 3, 6).log_softmax(-1).to(device)
    lengths = torch.tensor([10, 4, 0], device=device)
    torch.library.opcheck(torch.ops.fastcrnn.greedy_decode, (lp, lengths, 0, False, True))
    torch.library.opcheck(torch.ops.fastcrnn.greedy_decode, (lp, lengths, 2, True, False))


def test_torch_compile_fullgraph(device):
    lp = torch.randn(20, 4, 9).log_softmax(-1).to(device)
    lengths = torch.tensor([20, 3, 0, 11], device=device)

    def decode(x, n):
        out = fastcrnn.ctc_greedy_decode(x, n, blank=1)
        return out.tokens, out.lengths, out.token_probs, out.token_frames

    compiled = torch.compile(decode, fullgraph=True, backend="aot_eager")
    for a, b in zip(compiled(lp, lengths), decode(lp, lengths)):
        assert torch.equal(a, b)


def test_every_cpu_isa_variant(cpu_isa):
    """Each compiled instruction-set variant agrees with the reference (run in a subprocess)."""
    script = (
        "import torch, fastcrnn\n"
        "from fastcrnn import reference\n"
        "torch.manual_seed(0)\n"
        "info = fastcrnn.build_info()\n"
        "for T, N, C in [(26, 64, 37), (50, 4, 5990), (33, 3, 7)]:\n"
        "    for logits in (False, True):\n"
        "        x = torch.randn(T, N, C) * 3\n"
        "        x[3, 0, 5] = float('nan')\n"
        "        lp = x if logits else x.log_softmax(-1)\n"
        "        got = fastcrnn.ctc_greedy_decode(lp, logits=logits)\n"
        "        want = reference.ctc_greedy_decode_loop(lp, None, 0, logits)\n"
        "        for a, b in zip(got, want):\n"
        "            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, equal_nan=True)\n"
        "print(info['cpu_isa'])\n"
    )
    used = run_with_cpu_isa(cpu_isa, script).strip().splitlines()[-1]
    if cpu_isa == "avx2" and used != "avx2":
        pytest.skip("this CPU lacks AVX2")
    assert used == cpu_isa


# ---- CUDA-only behaviour (marked `cuda` and skipped without a GPU by tests/conftest.py) ----


def test_cuda_matches_cpu_gpu_big():
    x = torch.randn(100, 256, 6000)
    for logits in (False, True):
        lp = x if logits else x.log_softmax(-1)
        a = fastcrnn.ctc_greedy_decode(lp.cuda(), logits=logits)
        b = fastcrnn.ctc_greedy_decode(lp, logits=logits)
        for u, v in zip(a, b):
            torch.testing.assert_close(u.cpu(), v, rtol=1e-6, atol=1e-6)


def test_cuda_unvalidated_bad_length_marks_row():
    lp = torch.randn(8, 2, 5, device="cuda").log_softmax(-1)
    out = fastcrnn.ctc_greedy_decode(lp, torch.tensor([8, 9], device="cuda"), validate=False)
    assert out.lengths.tolist()[1] == -1 and (out.tokens[1] == -1).all()
    with pytest.raises(ValueError, match="input_lengths"):
        fastcrnn.ctc_greedy_decode(lp, torch.tensor([8, 9], device="cuda"))


def test_cuda_graph_capture():
    lp = torch.randn(26, 64, 37, device="cuda").log_softmax(-1)
    lengths = torch.full((64,), 26, device="cuda")
    fastcrnn.ctc_greedy_decode(lp, lengths)  # warm up outside the graph
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fastcrnn.ctc_greedy_decode(lp, lengths)
    new = torch.randn_like(lp).log_softmax(-1)
    lp.copy_(new)
    graph.replay()
    torch.cuda.synchronize()
    want = fastcrnn.ctc_greedy_decode(new, lengths)
    for a, b in zip(out, want):
        assert torch.equal(a, b)


def test_cuda_lengths_on_cpu_are_moved():
    lp = torch.randn(8, 2, 5, device="cuda").log_softmax(-1)
    out = fastcrnn.ctc_greedy_decode(lp, torch.tensor([8, 3]))
    assert out.tokens.is_cuda


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_lengths_on_other_gpu_rejected():
    lp = torch.randn(8, 2, 5, device="cuda:0")
    with pytest.raises(ValueError, match="input_lengths"):
        fastcrnn.ctc_greedy_decode(lp, torch.tensor([8, 3], device="cuda:1"))
