"""Recurrent building blocks: the LSTM backend switch and a vanilla RNN from its step equations."""

from typing import Any, List, Optional, Tuple, Union, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from fastcrnn.nn.lstm import LSTM
from fastcrnn.nn.recurrent import RecurrentBase
from fastcrnn.ops._checks import (
    BACKENDS,
    DEFAULT_BACKEND,
    LengthsLike,
    check_backend,
    positive_int,
    require_int,
)

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "check_backend", "make_lstm", "RNN"]


def make_lstm(backend: Optional[str], *args: Any, **kwargs: Any) -> nn.Module:
    """Builds an LSTM layer: ``fastcrnn.nn.lstm.LSTM`` for "fused", ``torch.nn.LSTM`` for "torch".

    Both take nn.LSTM's constructor arguments and have its parameter names, so a state_dict moves
    between them unchanged. This is the one place every network builds its recurrent layers.
    """
    backend = check_backend(backend)
    if backend == "torch":
        return nn.LSTM(*args, **kwargs)
    return LSTM(*args, **kwargs)


class RNN(RecurrentBase):
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
    bias=True, batch_first=False, dropout=0.0 (between layers, in training), bidirectional=False,
    device, dtype, proj_size=0 (as torch: anything else raises ValueError); plus
    output_size=None.

    forward(input, hx=None, lengths=None):
        input: (T, N, input_size) (or (N, T, input_size) with batch_first, or unbatched
            (T, input_size)), floating point; or a PackedSequence.
        hx: (num_layers * dirs, N, hidden_size) (unbatched: (num_layers * dirs, hidden_size)).
        lengths: optional (N,) ints/tensor, valid steps per sequence (as a PackedSequence
            would give): padded steps output zeros and leave the state unchanged.
        Returns (output (T, N, dirs * hidden_size) — or (T, N, output_size) with an output
        layer — and h_n (num_layers * dirs, N, hidden_size)); a PackedSequence in, one out.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        output_size: Optional[int] = None,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
        proj_size: int = 0,
    ):
        super().__init__()
        if require_int(proj_size, "proj_size") != 0:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"Unknown nonlinearity {nonlinearity!r}. Select from 'tanh' or 'relu'. "
                "(nonlinearity must be 'tanh' or 'relu')"
            )
        self.nonlinearity = nonlinearity
        self._init_recurrent(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device,
            dtype,
        )
        self.output_size = None if output_size is None else positive_int(output_size, "output_size")
        self.output = (
            nn.Linear(
                self.hidden_size * self.num_directions, self.output_size, device=device, dtype=dtype
            )
            if self.output_size is not None
            else None
        )

    def reset_parameters(self) -> None:
        """nn.RNN's initialisation: every weight and bias uniform in ±1/sqrt(hidden_size)."""
        self._reset_recurrent_parameters()
        if self.output is not None:
            self.output.reset_parameters()

    def extra_repr(self) -> str:
        return self._extra_repr(
            [f"nonlinearity={self.nonlinearity!r}"] if self.nonlinearity != "tanh" else []
        )

    def begin_state(
        self,
        batch_size: int,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> torch.Tensor:
        """Zero initial state (num_layers * dirs, batch_size, hidden_size)."""
        dirs = 2 if self.bidirectional else 1
        w = cast(torch.Tensor, self.weight_hh_l0)  # a Parameter set by _init_recurrent
        return torch.zeros(
            self.num_layers * dirs,
            batch_size,
            self.hidden_size,
            device=device or w.device,
            dtype=dtype or w.dtype,
        )

    def _direction(
        self,
        x: torch.Tensor,
        h: torch.Tensor,
        sfx: str,
        lengths: Optional[torch.Tensor],
        reverse: bool,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        w_ih = getattr(self, f"weight_ih{sfx}")
        w_hh = getattr(self, f"weight_hh{sfx}")
        b_ih = getattr(self, f"bias_ih{sfx}") if self.bias else None
        b_hh = getattr(self, f"bias_hh{sfx}") if self.bias else None
        act = torch.tanh if self.nonlinearity == "tanh" else torch.relu
        T = x.shape[0]
        # X · W_xh (+ b_ih) for every step in one GEMM; only H · W_hh stays in the loop.
        xw = F.linear(x, w_ih, b_ih)
        outputs: List[Optional[torch.Tensor]] = [None] * T
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
        # every step t in range(T) was filled above
        out = (
            torch.stack(cast("List[torch.Tensor]", outputs))
            if T
            else x.new_zeros(0, x.shape[1], self.hidden_size)
        )
        return out, h

    def forward(
        self,
        input: Union[torch.Tensor, PackedSequence],
        hx: Optional[torch.Tensor] = None,
        lengths: LengthsLike = None,
    ) -> Tuple[Union[torch.Tensor, PackedSequence], torch.Tensor]:
        x, lengths, layout = self._prepare_input(input, lengths)
        T = x.shape[0]
        dirs = self.num_directions
        if (
            lengths is not None
            and layout.packed is None
            and not torch.compiler.is_compiling()
            and lengths.numel()
            and (int(lengths.min()) < 0 or int(lengths.max()) > T)
        ):
            # the step loop indexes nothing by length, but a length outside [0, T] means
            # the caller's padding is not what they think
            raise ValueError(f"lengths must lie in [0, {T}]")
        h0 = self._initial_state(hx, "hx", x, layout)
        finals = []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                sfx = self.suffix(layer, d)
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
        return self._restore_output(output, layout), self._restore_state(h_n, layout)
