"""Recurrent building blocks: the LSTM backend switch and a vanilla RNN from its step equations."""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from fastcrnn.nn.lstm import LSTM, recurrent_repr
from fastcrnn.ops._checks import BACKENDS, DEFAULT_BACKEND, check_backend, positive_int

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "check_backend", "make_lstm",
           "RNN"]



def make_lstm(backend: Optional[str], *args, **kwargs) -> nn.Module:
    """Builds an LSTM layer: ``fastcrnn.nn.lstm.LSTM`` for "fused", ``torch.nn.LSTM`` for "torch".

    Both take nn.LSTM's constructor arguments and have its parameter names, so a state_dict moves
    between them unchanged. This is the one place every network builds its recurrent layers.
    """
    backend = check_backend(backend)
    if backend == "torch":
        return nn.LSTM(*args, **kwargs)
    return LSTM(*args, **kwargs)


class RNN(nn.Module):
    """A vanilla (Elman) RNN written from its step equations, with ``nn.RNN``'s parameters.

    Each layer and direction computes, step by step,
    ``H_t = act(X_t · W_xh + H_{t-1} · W_hh + b_h)`` with ``W_xh = weight_ih_l{k}ᵀ``,
    ``W_hh = weight_hh_l{k}ᵀ`` and ``b_h = bias_ih_l{k} + bias_hh_l{k}`` (act = tanh or relu).
    Parameter names and shapes are exactly ``nn.RNN``'s (``weight_ih_l0``, ``weight_hh_l0``,
    ``bias_ih_l0``, ``bias_hh_l0``, ``..._reverse``), so its state_dict loads in both directions
    and the two modules give equal outputs and gradients on the same weights.

    With ``output_size`` set, an output layer ``Y_t = H_t · W_hq + b_q`` (``self.output``, an
    ``nn.Linear``; the tutorial's char-level language model) is applied to every step; the
    state_dict then has the two extra keys ``output.weight`` / ``output.bias``.

    Args match ``nn.RNN``: input_size, hidden_size, num_layers=1, nonlinearity="tanh",
    bias=True, batch_first=False, dropout=0.0 (between layers, in training), bidirectional=False;
    plus output_size=None.

    forward(input, hx=None, lengths=None):
        input: (T, N, input_size) (or (N, T, input_size) with batch_first, or unbatched
            (T, input_size)), floating point; or a PackedSequence.
        hx: (num_layers * dirs, N, hidden_size) (unbatched: (num_layers * dirs, hidden_size)).
        lengths: optional (N,) ints/tensor, valid steps per sequence (as a PackedSequence
            would give): padded steps output zeros and leave the state unchanged.
        Returns (output (T, N, dirs * hidden_size) — or (T, N, output_size) with an output
        layer — and h_n (num_layers * dirs, N, hidden_size)); a PackedSequence in, one out.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False,
                 output_size: Optional[int] = None, device=None, dtype=None):
        super().__init__()
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.num_layers = positive_int(num_layers, "num_layers")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"dropout must be a float, got {type(dropout).__name__}")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.output_size = None if output_size is None else positive_int(output_size,
                                                                         "output_size")
        factory = {"device": device, "dtype": dtype}
        dirs = 2 if self.bidirectional else 1
        H = self.hidden_size
        for layer in range(self.num_layers):
            layer_in = self.input_size if layer == 0 else H * dirs
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                setattr(self, f"weight_ih{sfx}", nn.Parameter(torch.empty(H, layer_in, **factory)))
                setattr(self, f"weight_hh{sfx}", nn.Parameter(torch.empty(H, H, **factory)))
                if self.bias:
                    setattr(self, f"bias_ih{sfx}", nn.Parameter(torch.empty(H, **factory)))
                    setattr(self, f"bias_hh{sfx}", nn.Parameter(torch.empty(H, **factory)))
        self.output = (nn.Linear(H * dirs, self.output_size, **factory)
                       if self.output_size is not None else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.RNN's initialisation: every weight and bias uniform in ±1/sqrt(hidden_size)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters():
            if not name.startswith("output."):
                nn.init.uniform_(p, -bound, bound)
        if self.output is not None:
            self.output.reset_parameters()

    def extra_repr(self) -> str:
        return recurrent_repr(self, [f"nonlinearity={self.nonlinearity!r}"]
                              if self.nonlinearity != "tanh" else [])

    def begin_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """Zero initial state (num_layers * dirs, batch_size, hidden_size)."""
        dirs = 2 if self.bidirectional else 1
        w = self.weight_hh_l0
        return torch.zeros(self.num_layers * dirs, batch_size, self.hidden_size,
                           device=device or w.device, dtype=dtype or w.dtype)

    def _direction(self, x: torch.Tensor, h: torch.Tensor, sfx: str,
                   lengths: Optional[torch.Tensor], reverse: bool):
        w_ih = getattr(self, f"weight_ih{sfx}")
        w_hh = getattr(self, f"weight_hh{sfx}")
        b_ih = getattr(self, f"bias_ih{sfx}") if self.bias else None
        b_hh = getattr(self, f"bias_hh{sfx}") if self.bias else None
        act = torch.tanh if self.nonlinearity == "tanh" else torch.relu
        T = x.shape[0]
        # X · W_xh (+ b_ih) for every step in one GEMM; only H · W_hh stays in the loop.
        xw = F.linear(x, w_ih, b_ih)
        outputs = [None] * T
        steps = range(T - 1, -1, -1) if reverse else range(T)
        for t in steps:
            new = act(xw[t] + F.linear(h, w_hh, b_hh))
            if lengths is not None:
                valid = (t < lengths).unsqueeze(1)
                h = torch.where(valid, new, h)
                outputs[t] = torch.where(valid, new, torch.zeros_like(new))
            else:
                h = new
                outputs[t] = new
        out = torch.stack(outputs) if T else x.new_zeros(0, x.shape[1], self.hidden_size)
        return out, h

    def forward(self, input, hx: Optional[torch.Tensor] = None, lengths=None):
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("lengths must be None when input is a PackedSequence")
            sorted_idx, unsorted_idx = input.sorted_indices, input.unsorted_indices
            x, lens = pad_packed_sequence(input, batch_first=False)
            lengths = lens.to(x.device)
            batch_first, unbatched = False, False
        else:
            if not isinstance(input, torch.Tensor):
                raise TypeError(f"input must be a torch.Tensor or PackedSequence, got "
                                f"{type(input).__name__}")
            x = input
            batch_first = self.batch_first
            unbatched = x.dim() == 2
            if x.dim() not in (2, 3):
                raise ValueError(f"input must be 2-D (unbatched) or 3-D, got shape "
                                 f"{tuple(x.shape)}")
            if unbatched:
                x = x.unsqueeze(1)
            elif batch_first:
                x = x.transpose(0, 1)
        if not x.dtype.is_floating_point:
            raise TypeError(f"input must be floating point, got {x.dtype}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input must have {self.input_size} features in its last "
                             f"dimension, got {x.shape[-1]}")
        w = self.weight_hh_l0
        if x.dtype != w.dtype or x.device != w.device:
            raise ValueError(f"input ({x.dtype}, {x.device}) must match the parameters "
                             f"({w.dtype}, {w.device})")
        T, N = x.shape[0], x.shape[1]
        dirs = 2 if self.bidirectional else 1
        if lengths is not None and not packed:
            from fastcrnn.ops._checks import lengths_tensor
            lengths = lengths_tensor(lengths, N, T, x.device, "lengths", unbatched=unbatched)
            if not torch.compiler.is_compiling() and lengths.numel() and (
                    int(lengths.min()) < 0 or int(lengths.max()) > T):
                raise ValueError(f"lengths must lie in [0, {T}]")
        if hx is None:
            h0 = self.begin_state(N, x.device, x.dtype)
        else:
            if not isinstance(hx, torch.Tensor):
                raise TypeError(f"hx must be a torch.Tensor, got {type(hx).__name__}")
            h0 = hx.unsqueeze(1) if unbatched else hx
            expect = (self.num_layers * dirs, N, self.hidden_size)
            if tuple(h0.shape) != expect:
                shown = expect if not unbatched else (expect[0], expect[2])
                raise ValueError(f"hx must have shape {shown}, got {tuple(hx.shape)}")
            if h0.dtype != x.dtype or h0.device != x.device:
                raise ValueError(f"hx ({h0.dtype}, {h0.device}) must match the input "
                                 f"({x.dtype}, {x.device})")
        finals = []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                out, h = self._direction(layer_in, h0[k], sfx, lengths, reverse=d == 1)
                outs.append(out)
                finals.append(h)
            layer_in = outs[0] if dirs == 1 else torch.cat(outs, dim=-1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, True)
        h_n = torch.stack(finals)
        output = layer_in
        if self.output is not None:
            output = self.output(output)
        if packed:
            # a PackedSequence's hx and h_n are in the original batch order, as is padded x
            idx = sorted_idx
            lens_cpu = lens if idx is None else lens.index_select(0, idx.cpu())
            out_sorted = output if idx is None else output.index_select(1, idx)
            p = pack_padded_sequence(out_sorted, lens_cpu, enforce_sorted=True)
            return PackedSequence(p.data, p.batch_sizes, sorted_idx, unsorted_idx), h_n
        if unbatched:
            return output.squeeze(1), h_n.squeeze(1)
        if batch_first:
            output = output.transpose(0, 1)
        return output, h_n
