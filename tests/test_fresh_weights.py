"""Every module answers with its parameters as they are at the moment of the call.

Fused optimizers, ``p.data`` writes, writes through another alias of the storage (as DDP / FSDP
broadcasts do) and numpy views change parameters without bumping autograd's ``_version``, so a
cache keyed on (data_ptr, _version) serves stale weights. Each case here primes the module in
every mode (training, eval + no_grad, inference_mode), changes the parameters one way, and
compares every mode with torch's own module built from the parameters at that moment.
"""

import pathlib
import re

import pytest
import torch
from torch import nn

import fastcrnn
from fastcrnn.nn import (
    CRNN,
    LSTM,
    RNN,
    EncoderDecoder,
    LSTMCell,
    Seq2SeqAttentionDecoder,
    Seq2SeqDecoder,
    Seq2SeqEncoder,
)

MODES = ("train", "eval_no_grad", "inference_mode")


# ---- the modules and their torch twins --------------------------------------------------------


class Case:
    """A fastcrnn module, a torch module with the same parameter names, and an input."""

    def __init__(self, name, make, make_twin, make_input):
        self.name, self.make, self.make_twin, self.make_input = name, make, make_twin, make_input

    def __repr__(self):
        return self.name


def _seq2seq(backend, attention):
    dec_cls = Seq2SeqAttentionDecoder if attention else Seq2SeqDecoder
    return EncoderDecoder(
        Seq2SeqEncoder(13, 8, 6, 2, backend=backend), dec_cls(11, 8, 6, 2, backend=backend)
    )


def _seq2seq_input(device):
    g = torch.Generator().manual_seed(3)
    enc = torch.randint(0, 13, (3, 5), generator=g).to(device)
    dec = torch.randint(0, 11, (3, 4), generator=g).to(device)
    return enc, dec, torch.tensor([5, 2, 4], device=device)


def _randn(*shape):
    return lambda device: (
        torch.randn(*shape, generator=torch.Generator().manual_seed(1)).to(device),
    )


def _namesakes(name, ours, theirs, input_shape, *args, **kwargs):
    """The case of a fastcrnn module and its torch namesake, built with the same arguments."""
    return Case(
        name, lambda: ours(*args, **kwargs), lambda: theirs(*args, **kwargs), _randn(*input_shape)
    )


CASES = [
    _namesakes("lstm", LSTM, nn.LSTM, (6, 3, 7), 7, 5),
    _namesakes("lstm-2-layer-bidirectional", LSTM, nn.LSTM, (6, 3, 7), 7, 5, 2, bidirectional=True),
    Case(
        "lstm-bidirectional-lengths",
        lambda: LSTM(7, 5, bidirectional=True),
        lambda: LSTM(7, 5, bidirectional=True, backend="torch"),
        lambda device: (_randn(6, 3, 7)(device)[0], None, torch.tensor([6, 2, 4])),
    ),
    _namesakes("lstm-cell", LSTMCell, nn.LSTMCell, (3, 7), 7, 5),
    _namesakes("rnn", RNN, nn.RNN, (6, 3, 7), 7, 5, 2, bidirectional=True),
    Case(
        "crnn",
        lambda: CRNN(32, 1, 9, 8, channels=(4, 4, 8, 8, 8, 8, 8)),
        lambda: CRNN(32, 1, 9, 8, channels=(4, 4, 8, 8, 8, 8, 8), backend="torch"),
        _randn(2, 1, 32, 24),
    ),
    Case(
        "seq2seq",
        lambda: _seq2seq("fused", False),
        lambda: _seq2seq("torch", False),
        _seq2seq_input,
    ),
    Case(
        "seq2seq-attention",
        lambda: _seq2seq("fused", True),
        lambda: _seq2seq("torch", True),
        _seq2seq_input,
    ),
]


def _tensors(out):
    """The floating tensors of a (nested) module output, in order."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


def _run(module, inputs, mode, params=None):
    """The module's floating outputs in `mode`; with `params`, through functional_call."""
    module.train(mode == "train")

    def call():
        if params is None:
            return _tensors(module(*inputs))
        return _tensors(torch.func.functional_call(module, params, inputs))

    if mode == "train":
        return call()
    if mode == "eval_no_grad":
        with torch.no_grad():
            return call()
    with torch.inference_mode():
        return [t.clone() for t in call()]


def _tol(device):
    # float32 recurrences of a few steps: rounding stays far below 1e-5 on the CPU; cuDNN and
    # cuBLAS may sum in another order. A stale weight moves outputs by 1e-2 or more.
    return 1e-5 if device.type == "cpu" else 1e-4


def assert_current(case, module, inputs, device, params=None):
    """Every mode of `module` equals its torch twin on the parameters it holds now (or on
    `params` through torch.func.functional_call)."""
    for mode in MODES:
        twin = case.make_twin().to(device=device, dtype=next(module.parameters()).dtype)
        # before `module` runs: in training BatchNorm moves its running statistics
        twin.load_state_dict(module.state_dict())
        got = _run(module, inputs, mode, params)
        want = _run(twin, inputs, mode, params)
        assert len(got) == len(want) > 0
        for g, w in zip(got, want):
            torch.testing.assert_close(
                g.detach(),
                w.detach(),
                rtol=_tol(device),
                atol=_tol(device),
                msg=f"{case} in mode {mode}",
            )


def _prime(module, inputs):
    """Runs every mode once, so that a cache (if any) would now hold the current weights."""
    for mode in MODES:
        _run(module, inputs, mode)


def _loss(module, inputs):
    module.train()
    return sum(t.square().mean() for t in _tensors(module(*inputs)))


def _setup(case, device):
    torch.manual_seed(0)
    module = case.make().to(device)
    inputs = case.make_input(device)
    _prime(module, inputs)
    return module, inputs


# ---- optimizers -------------------------------------------------------------------------------


def _optimizers(device):
    opts = {
        "adam-fused": lambda p: torch.optim.Adam(p, lr=0.05, fused=True),
        "adamw-fused": lambda p: torch.optim.AdamW(p, lr=0.05, fused=True),
        "sgd-fused": lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9, fused=True),
        "adagrad-fused": lambda p: torch.optim.Adagrad(p, lr=0.5, fused=True),
        "adam-foreach": lambda p: torch.optim.Adam(p, lr=0.05, foreach=True),
        "sgd-for-loop": lambda p: torch.optim.SGD(p, lr=0.5, foreach=False),
        "rmsprop-foreach": lambda p: torch.optim.RMSprop(p, lr=0.01, foreach=True),
    }
    if device.type == "cuda":
        opts["adam-capturable"] = lambda p: torch.optim.Adam(p, lr=0.05, capturable=True)
        opts["adamw-fused-capturable"] = lambda p: torch.optim.AdamW(
            p, lr=0.05, fused=True, capturable=True
        )
    return opts


OPTIMIZER_NAMES = list(_optimizers(torch.device("cuda")))


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("opt_name", OPTIMIZER_NAMES)
def test_optimizer_steps(case, opt_name, device):
    """After every step of every optimizer each mode equals torch's module on the new weights."""
    factories = _optimizers(device)
    if opt_name not in factories:
        pytest.skip(f"{opt_name} needs CUDA")
    if device.type == "cuda" and not ("fused" in opt_name or "capturable" in opt_name):
        pytest.skip(
            "the for-loop and foreach updates are the CPU cases' kernels; on CUDA the "
            "fused and capturable ones are what differs"
        )
    module, inputs = _setup(case, device)
    opt = factories[opt_name](list(module.parameters()))
    for _ in range(3):
        opt.zero_grad()
        _loss(module, inputs).backward()
        opt.step()
        assert_current(case, module, inputs, device)


# ---- direct writes ----------------------------------------------------------------------------


def _noise_like(p, seed):
    g = torch.Generator().manual_seed(seed)
    return (0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype)).to(p.device)


def _named_params(module):
    return list(module.named_parameters())


def _set_submodule_attr(module, dotted, value):
    owner, _, leaf = dotted.rpartition(".")
    setattr(module.get_submodule(owner) if owner else module, leaf, value)


def write_data_add(module):
    for i, (_, p) in enumerate(_named_params(module)):
        p.data.add_(_noise_like(p, i))


def write_data_assign(module):
    for i, (_, p) in enumerate(_named_params(module)):
        p.data = p.data + _noise_like(p, i)


def write_no_grad_copy(module):
    with torch.no_grad():
        for i, (_, p) in enumerate(_named_params(module)):
            p.copy_(p + _noise_like(p, i))


def write_load_state_dict(module):
    state = {
        k: v + _noise_like(v, i) if v.is_floating_point() else v
        for i, (k, v) in enumerate(module.state_dict().items())
    }
    module.load_state_dict(state)


def write_set_(module):
    with torch.no_grad():
        for i, (_, p) in enumerate(_named_params(module)):
            p.set_(p.detach().clone() + _noise_like(p, i))


def write_storage_alias(module):
    """As a collective broadcast into the parameters' storage: a second tensor over the same
    memory, which does not share the parameter's version counter."""
    with torch.no_grad():
        for i, (_, p) in enumerate(_named_params(module)):
            alias = torch.empty(0, dtype=p.dtype, device=p.device)
            alias.set_(p.untyped_storage(), p.storage_offset(), p.shape, p.stride())
            alias.add_(_noise_like(p, i))


def write_numpy_view(module):
    for i, (_, p) in enumerate(_named_params(module)):
        if p.device.type != "cpu":
            pytest.skip("numpy views exist for CPU tensors only")
        view = p.detach().numpy()
        view += _noise_like(p, i).numpy()


def write_new_parameters(module):
    for i, (name, p) in enumerate(_named_params(module)):
        _set_submodule_attr(module, name, nn.Parameter(p.detach() + _noise_like(p, i)))


def write_to_float64(module):
    module.to(torch.float64)


WRITES = [
    write_data_add,
    write_data_assign,
    write_no_grad_copy,
    write_load_state_dict,
    write_set_,
    write_storage_alias,
    write_numpy_view,
    write_new_parameters,
    write_to_float64,
]


def _inputs_like(module, inputs):
    dtype = next(module.parameters()).dtype
    return tuple(
        t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs
    )


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("write", WRITES, ids=lambda w: w.__name__[len("write_") :])
def test_parameter_writes(case, write, device):
    """Each way of changing parameters outside autograd is seen by the next call, twice over
    (the second write finds whatever the first call may have cached)."""
    module, inputs = _setup(case, device)
    for _ in range(2):
        write(module)
        inputs = _inputs_like(module, inputs)
        assert_current(case, module, inputs, device)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_functional_call(case, device):
    """torch.func.functional_call with other tensors than the module's parameters."""
    module, inputs = _setup(case, device)
    params = {
        name: p.detach() + _noise_like(p, i) for i, (name, p) in enumerate(_named_params(module))
    }
    assert_current(case, module, inputs, device, params=params)
    # and the module's own parameters are used again afterwards
    assert_current(case, module, inputs, device)


def test_lstm_cell_trains_like_torch_under_fused_adam():
    """The decoder-step case of the defect: LSTMCell and nn.LSTMCell trained side by side with
    Adam(fused=True) stay equal step after step."""
    torch.manual_seed(0)
    ours, ref = LSTMCell(7, 5), nn.LSTMCell(7, 5)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 7)
    opts = [torch.optim.Adam(m.parameters(), lr=0.05, fused=True) for m in (ours, ref)]
    for _ in range(4):
        outs = []
        for m, opt in zip((ours, ref), opts):
            opt.zero_grad()
            h, c = m(x)
            (h.square().sum() + c.sum()).backward()
            opt.step()
            outs.append(h.detach())
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---- no other cache ---------------------------------------------------------------------------

# Attributes a module may hold besides parameters, buffers and submodules, when tensors:
# Seq2SeqAttentionDecoder keeps its last attention weights to be read (an output, never an input).
_ALLOWED_TENSOR_ATTRIBUTES = {"_attention_weights", "attention_weights"}


def _tensor_attributes(module):
    found = []
    for name, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if (
                attr in ("_parameters", "_buffers", "_modules")
                or attr in _ALLOWED_TENSOR_ATTRIBUTES
            ):
                continue
            values = (
                value.values()
                if isinstance(value, dict)
                else (value if isinstance(value, (list, tuple)) else [value])
            )
            if any(isinstance(v, torch.Tensor) for v in values):
                found.append(f"{name}.{attr}" if name else attr)
    return found


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_modules_hold_no_derived_tensors(case):
    """After running in every mode, no module keeps a tensor outside its parameters and buffers
    (where a derived-weight cache would live)."""
    module, inputs = _setup(case, torch.device("cpu"))
    _prime(module, inputs)
    assert _tensor_attributes(module) == []


def test_package_keys_nothing_on_tensor_versions():
    """No code in the package keys a cache on a tensor's version or address: neither proves a
    value current (fused optimizers and ``p.data`` writes change neither)."""
    root = pathlib.Path(fastcrnn.__file__).parent
    pattern = re.compile(r"\._version\b|\.data_ptr\(\)|_version_counter")
    offenders = [
        f"{path.relative_to(root)}:{i}"
        for path in sorted(root.rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
