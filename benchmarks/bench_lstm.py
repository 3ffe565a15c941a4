"""Fused LSTM: fastcrnn.nn.LSTM / LSTMCell vs torch.nn.LSTM / LSTMCell and a Python LSTMCell
loop, on the DESIGN.md workloads bilstm-2, crnn-blocks and seq2seq.

pytest-benchmark:  pytest benchmarks/bench_lstm.py --benchmark-only
report rows:       python benchmarks/report.py --only lstm   (ratios measured in the same run)

On the CPU a row per workload also times just its matrix products through our packed-weight
kernel (weights packed beforehand) against nn.LSTM's whole no-grad forward: the ratio no layer
built on that kernel can pass, whatever its pointwise work and threading cost.
"""

import pytest
import torch
from torch import nn

from benchmarks.timing import devices, paired_ms, row, synchronized
from benchmarks.workloads import BILSTM_2, CRNN_BLOCKS, SEQ2SEQ
from fastcrnn.nn import LSTM, LSTMCell


class CellLoopLSTM(nn.Module):
    """nn.LSTM's maths as a Python loop over nn.LSTMCell steps (the tutorial's way)."""

    def __init__(self, lstm: nn.Module):
        super().__init__()
        self.num_layers = lstm.num_layers
        self.dirs = 2 if lstm.bidirectional else 1
        self.cells = nn.ModuleList()
        for layer in range(self.num_layers):
            for d in range(self.dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                w_ih = getattr(lstm, f"weight_ih{sfx}")
                cell = nn.LSTMCell(w_ih.shape[1], lstm.hidden_size).to(w_ih.device, w_ih.dtype)
                with torch.no_grad():
                    cell.weight_ih.copy_(w_ih)
                    cell.weight_hh.copy_(getattr(lstm, f"weight_hh{sfx}"))
                    cell.bias_ih.copy_(getattr(lstm, f"bias_ih{sfx}"))
                    cell.bias_hh.copy_(getattr(lstm, f"bias_hh{sfx}"))
                self.cells.append(cell)

    def forward(self, x):
        T = x.shape[0]
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.dirs):
                cell = self.cells[layer * self.dirs + d]
                state = None
                steps = [None] * T
                for t in range(T - 1, -1, -1) if d else range(T):
                    state = cell(x[t], state)
                    steps[t] = state[0]
                outs.append(torch.stack(steps))
            x = torch.cat(outs, -1) if self.dirs == 2 else outs[0]
        return x, None


class Block(nn.Module):
    """One CRNN head block: bidirectional LSTM then Linear(2H -> out)."""

    def __init__(self, lstm_cls, n_in, hidden, n_out):
        super().__init__()
        self.rnn = lstm_cls(n_in, hidden, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, n_out)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y)


def _lstm_models(w, device):
    torch.manual_seed(0)
    ref = nn.LSTM(
        w["input_size"],
        w["hidden_size"],
        w["num_layers"],
        bidirectional=w.get("bidirectional", False),
    ).to(device)
    ours = LSTM(
        w["input_size"],
        w["hidden_size"],
        w["num_layers"],
        bidirectional=w.get("bidirectional", False),
    ).to(device)
    ours.load_state_dict(ref.state_dict())
    return {"fastcrnn": ours, "nn.LSTM": ref, "python LSTMCell loop": CellLoopLSTM(ref)}


def _crnn_models(device):
    torch.manual_seed(0)
    ref = nn.Sequential(*[Block(nn.LSTM, *b) for b in CRNN_BLOCKS["blocks"]]).to(device)
    ours = nn.Sequential(*[Block(LSTM, *b) for b in CRNN_BLOCKS["blocks"]]).to(device)
    ours.load_state_dict(ref.state_dict())
    return {"fastcrnn": ours, "nn.LSTM": ref}


def _input(T, N, I, device):
    return torch.randn(T, N, I, device=device, generator=None)


def _fwd(model, x):
    with torch.no_grad():
        return model(x)


def _fwd_bwd(model, x, grad=None):
    out = model(x)
    out = out[0] if isinstance(out, tuple) else out
    leaves = [x] + [p for p in model.parameters()]
    return torch.autograd.grad(
        out, leaves, grad if grad is not None else torch.ones_like(out), allow_unused=True
    )


def _cases(device):
    """(workload, models, x) for the sequence workloads."""
    out = []
    w = BILSTM_2
    out.append(
        ("bilstm-2", _lstm_models(w, device), _input(w["T"], w["N"], w["input_size"], device))
    )
    out.append(
        (
            "crnn-blocks",
            _crnn_models(device),
            _input(CRNN_BLOCKS["T"], CRNN_BLOCKS["N"], CRNN_BLOCKS["blocks"][0][0], device),
        )
    )
    w = SEQ2SEQ
    out.append(
        ("seq2seq", _lstm_models(w, device), _input(w["T"], w["N"], w["input_size"], device))
    )
    return out


def _product_shapes(name):
    """The matrix products of one no-grad forward of a workload: (M, K, N, how many) each."""
    if name == "crnn-blocks":
        T, N = CRNN_BLOCKS["T"], CRNN_BLOCKS["N"]
        shapes = []
        for n_in, H, n_out in CRNN_BLOCKS["blocks"]:
            shapes += [(T * N, n_in, 8 * H, 1), (N, H, 4 * H, 2 * T), (T * N, 2 * H, n_out, 1)]
        return shapes
    w = BILSTM_2 if name == "bilstm-2" else SEQ2SEQ
    T, N, H = w["T"], w["N"], w["hidden_size"]
    D = 2 if w.get("bidirectional") else 1
    shapes = []
    for layer in range(w["num_layers"]):
        n_in = w["input_size"] if layer == 0 else D * H
        shapes += [(T * N, n_in, D * 4 * H, 1), (N, H, 4 * H, D * T)]
    return shapes


def _products_alone(name):
    """A callable running just the workload's matrix products through our packed-weight kernel
    (weights packed beforehand, so no packing, no activations, no state): the time any layer
    built on that kernel needs at least."""
    from fastcrnn.ops.packed import linear_packed, pack_linear_weight

    g = torch.Generator().manual_seed(0)
    work = [
        (torch.randn(M, K, generator=g), pack_linear_weight(torch.randn(Nc, K, generator=g)), n)
        for M, K, Nc, n in _product_shapes(name)
    ]

    def run():
        with torch.no_grad():
            for x, w, n in work:
                for _ in range(n):
                    linear_packed(x, w)

    return run


def _cell_models(device):
    torch.manual_seed(0)
    H = SEQ2SEQ["hidden_size"]
    ref = nn.LSTMCell(H, H).to(device)
    ours = LSTMCell(H, H).to(device)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(SEQ2SEQ["N"], H, device=device, requires_grad=True)
    h = torch.randn(SEQ2SEQ["N"], H, device=device, requires_grad=True)
    c = torch.randn(SEQ2SEQ["N"], H, device=device, requires_grad=True)
    return ours, ref, (x, h, c)


def _cell_step(cell, x, h, c):
    h1, c1 = cell(x, (h, c))
    return torch.autograd.grad(
        (h1, c1), [x, h, c] + list(cell.parameters()), (torch.ones_like(h1), torch.ones_like(c1))
    )


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("impl", ["fastcrnn", "nn.LSTM"])
@pytest.mark.parametrize("case", ["forward", "forward+backward"])
@pytest.mark.parametrize("workload", ["bilstm-2", "crnn-blocks", "seq2seq"])
def test_lstm(benchmark, workload, case, impl, device):
    name, models, x = [c for c in _cases(device) if c[0] == workload][0]
    model = models[impl]
    if case == "forward":
        benchmark(synchronized(lambda: _fwd(model, x), device))
    else:
        xg = x.clone().requires_grad_(True)
        benchmark(synchronized(lambda: _fwd_bwd(model, xg), device))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("impl", ["fastcrnn", "nn.LSTMCell"])
def test_lstm_cell_step(benchmark, impl, device):
    ours, ref, args = _cell_models(device)
    cell = ours if impl == "fastcrnn" else ref
    benchmark(synchronized(lambda: _cell_step(cell, *args), device))


def report_rows(device):
    cpu = torch.device(device).type == "cpu"
    rows = []
    for name, models, x in _cases(device):
        xg = x.clone().requires_grad_(True)
        ours = models["fastcrnn"]
        for base_name, base in models.items():
            if base_name == "fastcrnn":
                continue
            slow = base_name.startswith("python")
            kw = (
                dict(rounds=3, warmup=1, repeat=1, min_time_s=0)
                if slow and cpu
                else dict(rounds=5, warmup=1, repeat=3, min_time_s=0)
            )
            for case, fn in (
                ("forward (no grad)", lambda m: _fwd(m, x)),
                ("forward+backward", lambda m: _fwd_bwd(m, xg)),
            ):
                a, b, ratio = paired_ms(lambda: fn(ours), lambda: fn(base), device, **kw)
                rows.append(row("lstm", name, case, device, a, base_name, b, ratio=ratio))
        if cpu:
            # the ceiling of the no-grad forward ratio: nn.LSTM's whole forward against our
            # kernel's products alone
            a, b, ratio = paired_ms(
                _products_alone(name),
                lambda: _fwd(models["nn.LSTM"], x),
                device,
                rounds=5,
                warmup=1,
                repeat=3,
                min_time_s=0,
            )
            rows.append(
                row(
                    "lstm",
                    name,
                    "matrix products alone (no-grad ceiling)",
                    device,
                    a,
                    "nn.LSTM forward",
                    b,
                    ratio=ratio,
                )
            )
    ours, ref, args = _cell_models(device)
    a, b, ratio = paired_ms(
        lambda: _cell_step(ours, *args),
        lambda: _cell_step(ref, *args),
        device,
        rounds=7,
        repeat=10,
        min_time_s=0.05,
    )
    rows.append(
        row(
            "lstm", "seq2seq", "decoder cell step fwd+bwd", device, a, "nn.LSTMCell", b, ratio=ratio
        )
    )
    return rows
