"""Drop-in parity with PyTorch's own behaviour for CTC and the RNN family, written from what
torch's test suite checks (test_nn.py's CTC / RNN tests and the ModuleInfo / OpInfo entries for
CTCLoss, ctc_loss, LSTM, LSTMCell, RNN): values and gradients, gradients of gradients, the error
classes code catches and the key words torch's tests match, no-batch-dim and empty inputs.

Each error case runs torch's call and ours side by side: ours must raise an instance of the class
torch raised (fastcrnn's errors subclass both its own convention and torch's where they differ)
and, where given, both messages must carry the same key words.
"""

import re

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close
from torch import nn

import fastcrnn
from fastcrnn import nn as fnn


def _raised(fn):
    try:
        fn()
    except Exception as error:  # the class is what is compared
        return error
    return None


def assert_same_error(torch_call, our_call, key_words=None):
    """torch_call raises; our_call raises an instance of the same class; both messages match
    the `key_words` regex when given. (torch's NotImplementedError for a dtype its kernel lacks
    is matched by a RuntimeError: fastcrnn rejects the dtype as a TypeError that is also a
    RuntimeError, NotImplementedError's base.)"""
    expected = _raised(torch_call)
    assert expected is not None, "torch accepted the call: the case is wrong"
    got = _raised(our_call)
    assert got is not None, f"fastcrnn accepted what torch rejects with {expected!r}"
    wanted = RuntimeError if type(expected) is NotImplementedError else type(expected)
    assert isinstance(got, wanted), (
        f"torch raised {type(expected).__name__}, fastcrnn {type(got).__mro__}: {got}"
    )
    if key_words is not None:
        assert re.search(key_words, str(expected)), (key_words, str(expected))
        assert re.search(key_words, str(got)), (key_words, str(got))


def _log_probs(T, N, C, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shape = (T, C) if N is None else (T, N, C)
    return torch.randn(*shape, generator=g, dtype=dtype).log_softmax(-1).requires_grad_()


# ---- CTC --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("batched", [True, False])
def test_ctc_zero_dim_lengths_match_torch(reduction, batched):
    """One sequence with 0-d length tensors, with and without the batch dimension: torch
    accepts both; values and gradients agree."""
    T, C = 12, 6
    lp = _log_probs(T, 1 if batched else None, C, seed=1)
    targets = torch.tensor([[1, 2, 2, 5]]) if batched else torch.tensor([1, 2, 2, 5])
    il, tl = torch.tensor(T - 2), torch.tensor(4)
    want = F.ctc_loss(lp, targets, il, tl, reduction=reduction)
    got = fastcrnn.ctc_loss(lp, targets, il, tl, reduction=reduction)
    assert_close(got, want, atol=1e-10, what="loss")
    (g_want,) = torch.autograd.grad(want.sum(), lp)
    (g_got,) = torch.autograd.grad(got.sum(), lp)
    assert_close(g_got, g_want, atol=1e-10, what="grad")


def test_ctc_lengths_of_any_shape_with_one_entry_per_sequence():
    """torch reads length tensors by their entries: an (N, 1) column works as (N,)."""
    lp = _log_probs(10, 3, 5, seed=2)
    targets = torch.tensor([[1, 2, 3], [4, 4, 0], [2, 0, 0]])
    il, tl = torch.tensor([[10], [9], [7]]), torch.tensor([[3], [2], [1]])
    want = F.ctc_loss(lp, targets, il, tl, reduction="none")
    got = fastcrnn.ctc_loss(lp, targets, il, tl, reduction="none")
    assert_close(got, want, atol=1e-10, what="loss")


@pytest.mark.parametrize("fn", [fastcrnn.ctc_loss, fastcrnn.ctc_loss_from_logits])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("shape", [(0, 0, 5), (4, 0, 5), (0, 2, 5), (0, 5)])
def test_ctc_empty_input_raises_as_torch(fn, reduction, shape):
    """torch refuses an empty log_probs (no sequences, or no frames) with a RuntimeError; an
    empty batch has no mean, so returning NaN or an empty tensor would hide the mistake."""
    lp = torch.zeros(shape)
    N = 1 if len(shape) == 2 else shape[1]
    targets = torch.zeros((0,) if len(shape) == 2 else (N, 0), dtype=torch.long)
    lens = torch.zeros(() if len(shape) == 2 else (N,), dtype=torch.long)
    assert_same_error(
        lambda: F.ctc_loss(lp, targets, lens, lens, reduction=reduction),
        lambda: fn(lp, targets, lens, lens, reduction=reduction),
        "must not be empty",
    )
    with pytest.raises(ValueError):  # and fastcrnn's own convention
        fn(lp, targets, lens, lens, reduction=reduction)


def _ctc_cases():
    lp = torch.randn(10, 2, 5).log_softmax(-1)
    tg = torch.tensor([[1, 2, 3], [2, 2, 0]])
    il, tl = torch.tensor([10, 8]), torch.tensor([3, 2])
    # (name, args, key words both messages carry)
    return [
        ("input_length_above_T", (lp, tg, torch.tensor([11, 8]), tl), "to have value at most"),
        ("input_length_negative", (lp, tg, torch.tensor([-1, 8]), tl), "to have value at least"),
        ("input_length_list_above_T", (lp, tg, [11, 8], [3, 2]), "to have value at most"),
        ("target_length_above_S", (lp, tg, il, torch.tensor([4, 2])), None),
        ("float_input_lengths", (lp, tg, il.float(), tl), "input_lengths must be integral"),
        ("float_target_lengths", (lp, tg, il, tl.float()), "target_lengths must be integral"),
        ("lengths_count", (lp, tg, torch.tensor([10, 8, 7]), tl), "must be of size batch_size"),
        ("log_probs_1d", (lp[:, 0, 0], tg, il, tl), None),
        ("targets_rows", (lp, tg[:1], il, tl), None),
        ("integer_log_probs", (lp.long(), tg, il, tl), None),
    ]


@pytest.mark.parametrize("case", _ctc_cases(), ids=lambda c: c[0])
def test_ctc_errors_are_torch_classes(case):
    _, args, key_words = case
    assert_same_error(lambda: F.ctc_loss(*args), lambda: fastcrnn.ctc_loss(*args), key_words)
    # the same mistake through the module
    assert_same_error(lambda: nn.CTCLoss()(*args), lambda: fnn.CTCLoss()(*args), key_words)


def test_ctc_blank_out_of_range_is_a_torch_error():
    lp = torch.randn(6, 2, 4).log_softmax(-1)
    args = (lp, torch.tensor([[1, 2], [3, 1]]), [6, 6], [2, 2])
    assert_same_error(
        lambda: F.ctc_loss(*args, blank=4),
        lambda: fastcrnn.ctc_loss(*args, blank=4),
        "blank must be in label range",
    )


@pytest.mark.parametrize("seed", range(4))
def test_ctc_values_and_gradients_without_batch_dim(seed):
    """(T, C) input with (S,) targets and int / 0-d lengths, against torch's batched call."""
    g = torch.Generator().manual_seed(seed)
    T = int(torch.randint(1, 30, (1,), generator=g))
    C = int(torch.randint(2, 9, (1,), generator=g))
    S = int(torch.randint(0, T // 2 + 1, (1,), generator=g))
    lp = _log_probs(T, None, C, seed=seed)
    targets = torch.randint(1, C, (S,), generator=g)
    for reduction in ("none", "mean", "sum"):
        want = F.ctc_loss(lp, targets, torch.tensor(T), torch.tensor(S), reduction=reduction)
        got = fastcrnn.ctc_loss(lp, targets, torch.tensor(T), torch.tensor(S), reduction=reduction)
        assert_close(got, want, atol=1e-9, rtol=1e-9, what=reduction)
        (g_want,) = torch.autograd.grad(want.sum(), lp)
        (g_got,) = torch.autograd.grad(got.sum(), lp)
        assert_close(g_got, g_want, atol=1e-9, what=f"grad {reduction}")


# ---- the RNN family: gradients of gradients ---------------------------------------------------


def _copy_weights(ours, theirs):
    theirs.load_state_dict(ours.state_dict())
    return theirs


def _second_order(module, inputs, outputs_of):
    """The gradient of sum(grad(outputs . w, inputs)^2) with respect to the inputs and the
    parameters: a first backward with create_graph=True, then a second backward through it."""
    params = list(module.parameters())
    outs = outputs_of(module, *inputs)
    weights = [torch.linspace(-1, 1, o.numel(), dtype=o.dtype).reshape(o.shape) for o in outs]
    total = sum((o * w).sum() for o, w in zip(outs, weights))
    first = torch.autograd.grad(total, list(inputs) + params, create_graph=True)
    penalty = sum((g**2).sum() for g in first)
    return torch.autograd.grad(penalty, list(inputs) + params)


LSTM_CONFIGS = [
    dict(num_layers=1, bidirectional=False),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=1, bidirectional=True, bias=False),
    dict(num_layers=2, bidirectional=False, batch_first=True),
]


@pytest.mark.parametrize("config", LSTM_CONFIGS, ids=str)
def test_lstm_gradient_of_gradient_matches_torch(config):
    """create_graph=True through the fused LSTM gives torch's second-order gradients (as
    test_LSTM_grad_and_gradgrad asks of nn.LSTM), for the input, the initial state and every
    weight."""
    torch.manual_seed(3)
    ours = fnn.LSTM(3, 4, **config).double()
    theirs = _copy_weights(ours, nn.LSTM(3, 4, **config).double())
    layers = config["num_layers"] * (2 if config["bidirectional"] else 1)
    shape = (2, 5, 3) if config.get("batch_first") else (5, 2, 3)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(layers, 2, 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(layers, 2, 4, dtype=torch.float64, requires_grad=True)

    def outputs_of(m, x, h0, c0):
        out, (h, c) = m(x, (h0, c0))
        return out, h, c

    want = _second_order(theirs, (x, h0, c0), outputs_of)
    got = _second_order(ours, (x, h0, c0), outputs_of)
    names = ["x", "h0", "c0"] + [n for n, _ in ours.named_parameters()]
    for name, g, w in zip(names, got, want):
        assert_close(g, w, atol=1e-9, rtol=1e-7, what=name)


def test_lstm_cell_gradient_of_gradient_matches_torch():
    torch.manual_seed(4)
    ours = fnn.LSTMCell(3, 5).double()
    theirs = _copy_weights(ours, nn.LSTMCell(3, 5).double())
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    c = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    outputs_of = lambda m, x, h, c: m(x, (h, c))  # noqa: E731
    want = _second_order(theirs, (x, h, c), outputs_of)
    got = _second_order(ours, (x, h, c), outputs_of)
    names = ["x", "h", "c"] + [n for n, _ in ours.named_parameters()]
    for name, g, w in zip(names, got, want):
        assert_close(g, w, atol=1e-9, rtol=1e-7, what=name)


@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("lengths", [None, [4, 1, 3]])
def test_lstm_layer_gradgradcheck(D, lengths):
    """float64 gradgradcheck of the layer op, variable lengths included."""
    g = torch.Generator().manual_seed(5)
    T, N, I, H = 4, 3, 2, 2
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    args = (r(T, N, I), r(D, N, H), r(D, N, H), r(D * 4 * H, I), r(D, 4 * H, H), r(D * 4 * H))
    lens = None if lengths is None else torch.tensor(lengths)
    fn = lambda *a: fastcrnn.lstm_layer(*a, lengths=lens)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, args)


def test_lstm_cell_gradgradcheck():
    g = torch.Generator().manual_seed(6)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    args = (r(3, 4), r(3, 2), r(3, 2), r(8, 4), r(8, 2), r(8))
    assert torch.autograd.gradgradcheck(fastcrnn.lstm_cell, args)
    assert torch.autograd.gradgradcheck(fastcrnn.lstm_cell, args[:5])  # no bias


def test_first_order_backward_after_create_graph_is_unchanged():
    """A plain backward (the fused kernel) and the differentiable one agree."""
    torch.manual_seed(7)
    m = fnn.LSTM(3, 4, bidirectional=True).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    (fused,) = torch.autograd.grad(m(x)[0].square().sum(), x)
    (graph,) = torch.autograd.grad(m(x)[0].square().sum(), x, create_graph=True)
    assert graph.requires_grad
    assert_close(graph.detach(), fused, atol=1e-12, what="dx")


# ---- the RNN family: modules, arguments and errors ---------------------------------------------


def test_rnn_has_flatten_parameters():
    m = fnn.RNN(3, 4)
    assert m.flatten_parameters() is None
    assert fnn.LSTM(3, 4).flatten_parameters() is None


@pytest.mark.parametrize(
    "kind, kwargs, key_words",
    [
        ("RNN", dict(proj_size=2), "only supported for LSTM"),
        ("LSTM", dict(proj_size=-1), "proj_size should be a positive integer"),
        ("LSTM", dict(proj_size=4), "proj_size has to be smaller than hidden_size"),
    ],
)
def test_proj_size_errors_as_torch(kind, kwargs, key_words):
    assert_same_error(
        lambda: getattr(nn, kind)(3, 4, **kwargs),
        lambda: getattr(fnn, kind)(3, 4, **kwargs),
        key_words,
    )


def test_valid_proj_size_is_refused_clearly():
    """A projected LSTM is a feature fastcrnn does not have: it says so (torch.nn.LSTM has it)."""
    nn.LSTM(3, 4, proj_size=2)
    with pytest.raises(NotImplementedError, match="proj_size"):
        fnn.LSTM(3, 4, proj_size=2)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("backend", ["fused", "torch"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_sequence_of_length_zero_raises_as_torch(kind, backend, batch_first):
    kwargs = dict(batch_first=batch_first)
    ours = getattr(fnn, kind)(3, 4, **kwargs, **({"backend": backend} if kind == "LSTM" else {}))
    theirs = getattr(nn, kind)(3, 4, **kwargs)
    x = torch.randn(2, 0, 3) if batch_first else torch.randn(0, 2, 3)
    key_words = "sequence length to be larger than 0"
    assert_same_error(lambda: theirs(x), lambda: ours(x), key_words)
    unbatched = torch.randn(0, 3)
    assert_same_error(lambda: theirs(unbatched), lambda: ours(unbatched), key_words)


CONSTRUCTOR_CASES = [
    dict(bias=1),
    dict(bias="x"),
    dict(bias=None),
    dict(batch_first=1),
    dict(batch_first="False"),
    dict(input_size=3.0),
    dict(input_size="3"),
    dict(hidden_size=4.0),
    dict(hidden_size="4"),
    dict(num_layers=1.0),
    dict(num_layers=0),
    dict(num_layers=-1),
    dict(input_size=0),
    dict(input_size=-2),
    dict(hidden_size=0),
    dict(dropout="0"),
    dict(dropout=True),
    dict(dropout=1.5),
    dict(dropout=-0.1),
]


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("case", CONSTRUCTOR_CASES, ids=str)
def test_constructor_arguments_are_checked_as_torch(kind, case):
    """Wrong types raise TypeError and bad values ValueError, as torch's RNNBase: a string
    batch_first="False" must not quietly mean True."""
    kwargs = dict(input_size=3, hidden_size=4)
    kwargs.update(case)
    size_words = {
        "bias": "bias should be of type bool",
        "batch_first": "batch_first should be of type bool",
        "dropout": "dropout should be a number in range",
    }
    key = next(iter(case))
    key_words = size_words.get(key)
    if key in ("input_size", "hidden_size") and isinstance(case[key], int):
        key_words = f"{key} must be greater than zero"
    if key in ("input_size", "hidden_size") and not isinstance(case[key], int):
        key_words = f"{key} should be of type int"
    assert_same_error(
        lambda: getattr(nn, kind)(**kwargs), lambda: getattr(fnn, kind)(**kwargs), key_words
    )


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_constructor_accepts_what_torch_accepts(kind):
    for kwargs in (
        dict(bidirectional=1),
        dict(dropout=0),
        dict(dropout=1, num_layers=2),
        dict(bias=False),
    ):
        theirs = getattr(nn, kind)(3, 4, **kwargs)
        ours = getattr(fnn, kind)(3, 4, **kwargs)
        assert ours.state_dict().keys() == theirs.state_dict().keys()


def _forward_error_cases():
    x = torch.randn(5, 2, 3)
    h = torch.randn(1, 2, 4)
    bad_h = torch.randn(1, 3, 4)
    return [
        ("lstm_input_size", "LSTM", (torch.randn(5, 2, 6),), "must be equal to input_size"),
        ("lstm_input_4d", "LSTM", (torch.randn(5, 2, 3, 1),), "Expected input to be 2D or 3D"),
        ("lstm_input_dtype", "LSTM", (x.double(),), None),
        ("lstm_h0_shape", "LSTM", (x, (bad_h, h)), r"Expected hidden\[0\] size"),
        ("lstm_c0_shape", "LSTM", (x, (h, bad_h)), r"Expected hidden\[1\] size"),
        ("lstm_h0_dtype", "LSTM", (x, (h.double(), h)), None),
        ("lstm_batched_2d_state", "LSTM", (x, (h[:, 0], h[:, 0])), None),
        ("lstm_unbatched_3d_state", "LSTM", (x[:, 0], (h[:, :1], h[:, :1])), None),
        ("rnn_input_size", "RNN", (torch.randn(5, 2, 6),), "must be equal to input_size"),
        ("rnn_h0_shape", "RNN", (x, bad_h), "Expected hidden size"),
        ("rnn_h0_dtype", "RNN", (x, h.double()), None),
        ("cell_input_size", "LSTMCell", (torch.randn(2, 6),), "inconsistent input_size"),
        ("cell_input_3d", "LSTMCell", (torch.randn(2, 2, 3),), "Expected input to be 1D or 2D"),
        (
            "cell_batch",
            "LSTMCell",
            (torch.randn(2, 3), (torch.randn(3, 4), torch.randn(3, 4))),
            "Input batch size 2 doesn't match hidden0 batch size 3",
        ),
        (
            "cell_hidden_size",
            "LSTMCell",
            (torch.randn(2, 3), (torch.randn(2, 5), torch.randn(2, 4))),
            "hidden0 has inconsistent hidden_size",
        ),
        (
            "cell_c_hidden_size",
            "LSTMCell",
            (torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 5))),
            "hidden1 has inconsistent hidden_size",
        ),
        ("cell_input_dtype", "LSTMCell", (torch.randn(2, 3).double(),), None),
    ]


@pytest.mark.parametrize("case", _forward_error_cases(), ids=lambda c: c[0])
def test_forward_errors_are_torch_classes(case):
    _, kind, args, key_words = case
    torch.manual_seed(0)
    ours = getattr(fnn, kind)(3, 4)
    theirs = _copy_weights(ours, getattr(nn, kind)(3, 4))
    assert_same_error(lambda: theirs(*args), lambda: ours(*args), key_words)


@pytest.mark.parametrize("kind", ["LSTM", "RNN", "LSTMCell"])
def test_no_batch_dim_matches_torch(kind):
    """Unbatched input gives what torch gives for it (its ModuleInfo no-batch-dim check)."""
    torch.manual_seed(8)
    ours = getattr(fnn, kind)(3, 4).double()
    theirs = _copy_weights(ours, getattr(nn, kind)(3, 4).double())
    x = torch.randn(3, dtype=torch.float64) if kind == "LSTMCell" else torch.randn(6, 3).double()
    got, want = ours(x), theirs(x)
    flat = lambda r: list(r) if kind != "LSTM" else [r[0], *r[1]]  # noqa: E731
    for g, w in zip(flat(got), flat(want)):
        assert_close(g, w, atol=1e-12, what=kind)
