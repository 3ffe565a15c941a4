"""fastcrnn.ctc_forced_align against the readable Viterbi in fastcrnn.reference, the vectorized
torch Viterbi, and brute force over every path of tiny cases."""

import itertools
import math

import pytest
import torch
from helpers import assert_close, run_with_cpu_isa

import fastcrnn
from fastcrnn import reference


def _case(seed, T, N, C, max_len, device="cpu", dtype=torch.float64, peaky=False):
    """Random log-probs (T, N, C), padded targets (N, max_len) without the blank (class 0),
    input lengths in [0, T] and target lengths in [0, max_len]."""
    g = torch.Generator().manual_seed(seed)
    scale = 4.0 if peaky else 1.0
    lp = (scale * torch.randn(T, N, C, generator=g, dtype=torch.float64)).log_softmax(-1)
    targets = torch.randint(1, C, (N, max_len), generator=g)
    il = torch.randint(0, T + 1, (N,), generator=g)
    tl = torch.randint(0, max_len + 1, (N,), generator=g)
    return lp.to(device=device, dtype=dtype), targets.to(device), il.to(device), tl.to(device)


def _collapse(path, blank):
    out = []
    prev = None
    for c in path:
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return out


def _check_outputs_consistent(out, lp, targets, il, tl, blank=0):
    """Spans, frame log-probs and the score all describe the same path, which spells the
    target; padding is where the docstring says."""
    T, N, _ = lp.shape
    for n in range(N):
        Tn, L = int(il[n]), int(tl[n])
        labels = out.labels[n]
        if not bool(out.aligned[n]):
            assert (labels == -1).all() and (out.token_starts[n] == -1).all()
            continue
        assert (labels[Tn:] == -1).all() and (labels[:Tn] >= 0).all()
        assert _collapse(labels[:Tn].tolist(), blank) == targets[n, :L].tolist()
        frames = lp[:Tn, n].double().gather(1, labels[:Tn, None]).squeeze(1)
        assert_close(out.frame_log_probs[n, :Tn].double(), frames, 1e-6, what="frame_log_probs")
        assert (out.frame_log_probs[n, Tn:] == 0).all()
        assert math.isclose(float(out.scores[n]), float(frames.sum()), rel_tol=1e-6, abs_tol=1e-6)
        for k in range(L):
            a, b = int(out.token_starts[n, k]), int(out.token_ends[n, k])
            assert 0 <= a < b <= Tn
            assert (labels[a:b] == targets[n, k]).all()
            if a > 0:  # a run starts where the previous frame holds another state
                assert labels[a - 1] != targets[n, k] or (
                    k > 0 and int(out.token_ends[n, k - 1]) == a
                )
            expected = float(frames[a:b].mean())
            assert math.isclose(float(out.token_log_probs[n, k]), expected, abs_tol=1e-5)
        assert (out.token_starts[n, L:] == -1).all() and (out.token_ends[n, L:] == -1).all()


@pytest.mark.parametrize("seed", range(40))
def test_matches_the_reference_viterbi(seed):
    """Hundreds of sequences: same path (exactly) and score as the loop reference in float64,
    including empty inputs and targets, impossible alignments and repeated labels."""
    g = torch.Generator().manual_seed(1000 + seed)
    T = int(torch.randint(1, 16, (1,), generator=g))
    C = int(torch.randint(2, 7, (1,), generator=g))
    max_len = int(torch.randint(0, 8, (1,), generator=g))
    lp, targets, il, tl = _case(seed, T, 8, C, max_len, peaky=seed % 2 == 0)
    out = fastcrnn.ctc_forced_align(lp, targets, il, tl)
    want_labels, want_scores = reference.ctc_forced_align(lp, targets, il, tl)
    assert torch.equal(out.labels, want_labels)
    assert torch.equal(out.aligned, want_scores > -math.inf)
    assert_close(out.scores, want_scores, 1e-12, what="scores")
    _check_outputs_consistent(out, lp, targets, il, tl)
    fast_labels, fast_scores = reference.ctc_forced_align_torch(lp, targets, il, tl)
    assert torch.equal(fast_labels, want_labels)
    assert_close(fast_scores, want_scores, 1e-12, what="vectorized reference scores")


@pytest.mark.parametrize("seed", range(12))
def test_best_path_by_brute_force(seed):
    """On tiny cases, every one of the C^T frame labelings is scored: ours is a labeling that
    collapses to the target with the highest score, and no alignment means none exists."""
    g = torch.Generator().manual_seed(seed)
    T = int(torch.randint(1, 6, (1,), generator=g))
    C = int(torch.randint(2, 4, (1,), generator=g))
    lp = torch.randn(T, 1, C, generator=g, dtype=torch.float64).log_softmax(-1)
    for L in range(0, T + 1):
        for target in itertools.product(range(1, C), repeat=L):
            targets = torch.tensor([list(target)], dtype=torch.int64).reshape(1, L)
            out = fastcrnn.ctc_forced_align(lp, targets, [T], [L])
            best = -math.inf
            for path in itertools.product(range(C), repeat=T):
                if _collapse(path, 0) == list(target):
                    best = max(best, sum(float(lp[t, 0, c]) for t, c in enumerate(path)))
            assert bool(out.aligned[0]) == (best > -math.inf), (target, T)
            assert math.isclose(float(out.scores[0]), best, rel_tol=1e-12) or best == -math.inf
            if best > -math.inf:
                path = out.labels[0].tolist()
                assert _collapse(path, 0) == list(target)
                assert math.isclose(sum(float(lp[t, 0, c]) for t, c in enumerate(path)), best)


def test_edge_cases():
    lp = torch.randn(6, 5, 3, dtype=torch.float64).log_softmax(-1)
    targets = torch.tensor([[1, 1, 1], [1, 2, 1], [2, 2, 0], [1, 0, 0], [1, 2, 0]])
    il = torch.tensor([5, 3, 2, 1, 0])
    tl = torch.tensor([3, 3, 2, 0, 0])
    out = fastcrnn.ctc_forced_align(lp, targets, il, tl)
    # 1 1 1 needs 5 frames (blanks between repeats): fits exactly
    assert out.labels[0, :5].tolist() == [1, 0, 1, 0, 1] and bool(out.aligned[0])
    # 1 2 1 in 3 frames: exactly the labels
    assert out.labels[1, :3].tolist() == [1, 2, 1]
    # 2 2 in 2 frames: impossible (a blank must separate the repeat)
    assert not bool(out.aligned[2]) and out.scores[2] == -math.inf
    assert (out.labels[2] == -1).all() and (out.token_starts[2] == -1).all()
    # empty target: all blank
    assert out.labels[3].tolist() == [0, -1, -1, -1, -1, -1]
    assert math.isclose(float(out.scores[3]), float(lp[0, 3, 0]))
    # empty input and target: the empty path, score 0
    assert bool(out.aligned[4]) and float(out.scores[4]) == 0.0 and (out.labels[4] == -1).all()


def test_target_longer_than_input_and_zero_probability_frames():
    lp = torch.randn(4, 2, 3).log_softmax(-1)
    lp[:, 1, 2] = -math.inf  # class 2 impossible for sequence 1
    targets = torch.tensor([[1, 2, 1, 2, 1], [2, 0, 0, 0, 0]])
    out = fastcrnn.ctc_forced_align(lp, targets, [4, 4], [5, 1])
    assert out.aligned.tolist() == [False, False]
    assert out.scores.tolist() == [-math.inf, -math.inf]


def test_nan_scores_are_flagged_not_aligned():
    lp = torch.randn(5, 1, 4).log_softmax(-1)
    lp[2] = float("nan")
    out = fastcrnn.ctc_forced_align(lp, torch.tensor([[1, 2]]))
    assert not bool(out.aligned[0]) and math.isnan(float(out.scores[0]))
    assert (out.labels == -1).all()


def test_concatenated_targets_and_defaults_match_padded():
    lp, targets, il, tl = _case(3, 12, 4, 5, 4)
    padded = fastcrnn.ctc_forced_align(lp, targets, il, tl)
    flat = torch.cat([targets[n, : int(tl[n])] for n in range(4)])
    concat = fastcrnn.ctc_forced_align(lp, flat, il.tolist(), tl.tolist())
    L = int(tl.max())
    for name in ("labels", "frame_log_probs", "scores", "aligned"):
        assert torch.equal(getattr(concat, name), getattr(padded, name)), name
    assert concat.token_starts.shape == (4, L)
    assert torch.equal(concat.token_starts, padded.token_starts[:, :L])
    # None lengths: the whole input, the whole padded row
    full = fastcrnn.ctc_forced_align(lp, targets)
    again = fastcrnn.ctc_forced_align(lp, targets, [12] * 4, [4] * 4)
    assert torch.equal(full.labels, again.labels)


def test_unbatched_input():
    lp, targets, il, tl = _case(4, 9, 1, 4, 3)
    batched = fastcrnn.ctc_forced_align(lp, targets, [9], [3])
    single = fastcrnn.ctc_forced_align(lp[:, 0], targets[0])
    assert single.labels.shape == (9,) and single.token_starts.shape == (3,)
    assert single.scores.shape == ()
    for a, b in zip(single, batched):
        assert torch.equal(a, b[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_reduced_precision_inputs(dtype):
    """float32 accumulates in float32; half inputs are read as float32 on the CPU. The score is
    the float64 score of the path found, which is (one of) the best."""
    lp, targets, il, tl = _case(5, 20, 6, 6, 5, dtype=dtype, peaky=True)
    out = fastcrnn.ctc_forced_align(lp, targets, il, tl)
    assert out.scores.dtype == torch.float32
    _, want = reference.ctc_forced_align(lp.double(), targets, il, tl)
    finite = want > -math.inf
    assert torch.equal(out.aligned, finite)
    assert_close(out.scores[finite].double(), want[finite], 1e-4, rtol=1e-5, what="scores")


def test_bad_arguments_raise_naming_them():
    lp = torch.randn(6, 2, 4).log_softmax(-1)
    t = torch.tensor([[1, 2], [3, 1]])
    with pytest.raises(ValueError, match="targets"):
        fastcrnn.ctc_forced_align(lp, torch.tensor([[1, 0], [3, 1]]), [6, 6], [2, 2])
    with pytest.raises(ValueError, match="targets"):
        fastcrnn.ctc_forced_align(lp, torch.tensor([[1, 4], [3, 1]]), [6, 6], [2, 2])
    with pytest.raises(ValueError, match="input_lengths"):
        fastcrnn.ctc_forced_align(lp, t, [7, 6], [2, 2])
    with pytest.raises(ValueError, match="input_lengths"):
        fastcrnn.ctc_forced_align(lp, t, torch.tensor([7, 6]), [2, 2])
    with pytest.raises(ValueError, match="target_lengths"):
        fastcrnn.ctc_forced_align(lp, t, [6, 6], torch.tensor([3, 2]))
    with pytest.raises(TypeError, match="input_lengths"):
        fastcrnn.ctc_forced_align(lp, t, torch.tensor([6.0, 6.0]))
    with pytest.raises(TypeError, match="target_lengths"):
        fastcrnn.ctc_forced_align(lp, t.flatten(), [6, 6])
    with pytest.raises(TypeError, match="targets"):
        fastcrnn.ctc_forced_align(lp, t.float())
    with pytest.raises(TypeError, match="log_probs"):
        fastcrnn.ctc_forced_align(lp.long(), t)
    with pytest.raises(ValueError, match="log_probs"):
        fastcrnn.ctc_forced_align(lp[0, 0], t)
    with pytest.raises(ValueError, match="must not be empty"):
        fastcrnn.ctc_forced_align(lp[:0], t)
    with pytest.raises(ValueError, match="blank"):
        fastcrnn.ctc_forced_align(lp, t, blank=4)
    with pytest.raises(ValueError, match="targets"):
        fastcrnn.ctc_forced_align(lp, t[:1])
    with pytest.raises(TypeError, match="validate"):
        fastcrnn.ctc_forced_align(lp, t, validate="yes")


def test_opcheck_and_compile():
    lp, targets, il, tl = _case(6, 10, 3, 5, 3, dtype=torch.float32)
    op = torch.ops.fastcrnn.ctc_forced_align
    torch.library.opcheck(op, (lp, targets, il, tl, 0, True))
    torch.library.opcheck(op, (lp, targets, il, tl, 0, False))

    def align(x, y, a, b):
        out = fastcrnn.ctc_forced_align(x, y, a, b, validate=False)
        return out.labels, out.scores, out.token_starts

    compiled = torch.compile(align, fullgraph=True, backend="aot_eager")
    for a, b in zip(compiled(lp, targets, il, tl), align(lp, targets, il, tl)):
        assert torch.equal(a, b)


def test_large_batch_runs_in_parallel_and_matches_per_sample():
    """Samples are independent tasks: the batched call equals one call per sample."""
    lp, targets, il, tl = _case(7, 40, 32, 12, 10, dtype=torch.float32, peaky=True)
    out = fastcrnn.ctc_forced_align(lp, targets, il, tl)
    for n in (0, 5, 31):
        one = fastcrnn.ctc_forced_align(
            lp[:, n : n + 1], targets[n : n + 1], il[n : n + 1], tl[n : n + 1]
        )
        assert torch.equal(one.labels[0], out.labels[n])


def test_every_cpu_isa_variant(cpu_isa):
    script = (
        "import torch, fastcrnn\n"
        "from fastcrnn import reference\n"
        "g = torch.Generator().manual_seed(0)\n"
        "lp = torch.randn(30, 6, 7, generator=g, dtype=torch.float64).log_softmax(-1)\n"
        "t = torch.randint(1, 7, (6, 8), generator=g)\n"
        "il, tl = torch.tensor([30, 25, 9, 30, 1, 0]), torch.tensor([8, 3, 8, 0, 1, 0])\n"
        "out = fastcrnn.ctc_forced_align(lp, t, il, tl)\n"
        "labels, scores = reference.ctc_forced_align(lp, t, il, tl)\n"
        "assert torch.equal(out.labels, labels)\n"
        "assert torch.allclose(out.scores, scores)\n"
        "print('ok')\n"
    )
    assert run_with_cpu_isa(cpu_isa, script).strip() == "ok"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    lp, targets, il, tl = _case(8, 50, 16, 20, 12, dtype=dtype, peaky=True)
    want = fastcrnn.ctc_forced_align(lp, targets, il, tl)
    got = fastcrnn.ctc_forced_align(lp.cuda(), targets.cuda(), il.cuda(), tl.cuda())
    assert torch.equal(got.aligned.cpu(), want.aligned)
    assert torch.equal(got.labels.cpu(), want.labels)
    assert_close(got.scores.cpu(), want.scores, 1e-4, rtol=1e-5, what="scores")
    unchecked = fastcrnn.ctc_forced_align(
        lp.cuda(), targets.cuda(), il.cuda(), tl.cuda(), validate=False
    )
    assert torch.equal(unchecked.labels.cpu(), want.labels)


def test_cuda_unvalidated_bad_rows_are_flagged():
    lp = torch.randn(6, 3, 4).log_softmax(-1).cuda()
    targets = torch.tensor([[1, 2], [3, 0], [2, 2]]).cuda()  # row 1 holds the blank
    il, tl = torch.tensor([6, 6, 9]).cuda(), torch.tensor([2, 2, 2]).cuda()  # row 2: 9 > T
    out = fastcrnn.ctc_forced_align(lp, targets, il, tl, validate=False)
    assert out.aligned.tolist() == [True, False, False]
    assert math.isnan(float(out.scores[1])) and math.isnan(float(out.scores[2]))
    assert (out.labels[1:] == -1).all()
