"""Drop-in fastcrnn.nn.LSTM and LSTMCell on the fused layer / cell ops.

Same constructor arguments, parameter names, shapes and initialisation as torch.nn.LSTM /
torch.nn.LSTMCell, so ``load_state_dict`` moves weights both ways. ``backend="torch"`` runs
torch's own LSTM on the same parameters (the path for ONNX / TorchScript export).
"""

import math
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from fastcrnn.nn.recurrent import RecurrentBase
from fastcrnn.ops._checks import (
    PARAMETER_DEVICE_WORDS,
    STATE_DEVICE_WORDS,
    ArgumentValueError,
    LengthsLike,
    check_backend,
    positive_int,
    require_float,
    require_int,
    require_like,
    require_tensor,
)
from fastcrnn.ops.lstm import autocast_dtype, lstm_cell, lstm_layer

__all__ = ["LSTM", "LSTMCell"]


class LSTM(RecurrentBase):
    """Multi-layer, optionally bidirectional LSTM, a drop-in for :class:`torch.nn.LSTM`.

    Args (as torch.nn.LSTM): input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, proj_size=0 (anything else raises
    NotImplementedError), device, dtype; plus backend="fused" | "torch".

    forward(input, hx=None, lengths=None):
        input: (T, N, input_size), (N, T, input_size) with batch_first, unbatched
            (T, input_size), or a PackedSequence (then the output is a PackedSequence too).
        hx: optional (h0, c0), each (num_layers * D, N, H) ((num_layers * D, H) unbatched),
            in the caller's batch order also for packed input. Default zeros.
        lengths: optional (N,) int tensor / list for padded input: steps t >= lengths[n] leave
            sequence n's state unchanged and output zeros; the reverse direction starts at
            each sequence's own last step (as with a PackedSequence, but the output keeps
            length T). Not allowed with a PackedSequence.
    Returns output (T, N, D*H) (batch_first: (N, T, D*H)) and (h_n, c_n), each
    (num_layers * D, N, H), exactly as torch.nn.LSTM. float32/float64 on CPU (also
    bfloat16/float16, which CPU autocast uses), float32/float16/bfloat16 on CUDA; the cell
    state is float32 inside. Under torch.autocast it runs in the autocast dtype.
    """

    num_gates = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
        backend: str = "fused",
    ):
        super().__init__()
        proj_size = require_int(proj_size, "proj_size")
        if proj_size < 0:
            raise ValueError(
                "proj_size should be a positive integer or zero to disable projections, got "
                f"{proj_size}"
            )
        if proj_size > 0 and isinstance(hidden_size, int) and proj_size >= hidden_size:
            raise ValueError(
                f"proj_size has to be smaller than hidden_size, got {proj_size} >= {hidden_size}"
            )
        if proj_size != 0:
            raise NotImplementedError(
                "fastcrnn.nn.LSTM does not support proj_size (use "
                "torch.nn.LSTM for projected LSTMs)"
            )
        self.mode = "LSTM"
        self.proj_size = 0
        self.backend = check_backend(backend)
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

    def reset_parameters(self) -> None:
        """uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, in nn.LSTM's order."""
        self._reset_recurrent_parameters()

    def extra_repr(self) -> str:
        return self._extra_repr([f"backend={self.backend!r}"] if self.backend != "fused" else [])

    # -----------------------------------------------------------------------------------------

    def _layer_weights(
        self, layer: int
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """The op's (weight_ih (D*4H, I), weight_hh (D, 4H, H), bias (D*4H,) or None) of one
        layer, built from the parameters on every call.

        Deliberately not cached: fused optimizers, ``p.data`` writes and in-place broadcasts
        change parameters without bumping ``_version``, so no cheap key proves a cached copy
        current. One direction needs no copy (views); two directions copy the weights once
        per layer call, which is small next to the layer's T recurrent GEMMs.
        """
        dirs = self.num_directions
        suffixes = [self.suffix(layer, d) for d in range(dirs)]
        w_ih: Union[List[torch.Tensor], torch.Tensor]  # per direction, then the op's one tensor
        w_hh: Union[List[torch.Tensor], torch.Tensor]
        w_ih = [getattr(self, f"weight_ih{s}") for s in suffixes]
        w_hh = [getattr(self, f"weight_hh{s}") for s in suffixes]
        if dirs == 1:
            w_ih, w_hh = w_ih[0], w_hh[0].unsqueeze(0)
        else:
            w_ih, w_hh = torch.cat(w_ih, 0), torch.stack(w_hh, 0)
        bias = None
        if self.bias:
            b = [getattr(self, f"bias_ih{s}") + getattr(self, f"bias_hh{s}") for s in suffixes]
            bias = b[0] if dirs == 1 else torch.cat(b, 0)
        return w_ih, w_hh, bias

    def forward(
        self,
        input: Union[torch.Tensor, PackedSequence],
        hx: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        lengths: LengthsLike = None,
    ) -> Tuple[Union[torch.Tensor, PackedSequence], Tuple[torch.Tensor, torch.Tensor]]:
        x, lens, layout = self._prepare_input(input, lengths)
        if hx is None:
            h0 = c0 = self._initial_state(None, "h0", x, layout)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("hx must be a tuple (h0, c0)")
            h0 = self._initial_state(hx[0], "h0", x, layout, "hidden[0]")
            c0 = self._initial_state(hx[1], "c0", x, layout, "hidden[1]")
        if self.backend == "torch":
            out, h_n, c_n = self._torch_forward(x, h0, c0, lens)
        else:
            out, h_n, c_n = self._fused_forward(x, h0, c0, lens)
        return self._restore_output(out, layout), (
            self._restore_state(h_n, layout),
            self._restore_state(c_n, layout),
        )

    def _fused_forward(self, x, h0, c0, lens):
        dirs = self.num_directions
        layer_input = x
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            w_ih, w_hh, bias = self._layer_weights(layer)
            sl = slice(layer * dirs, (layer + 1) * dirs)
            # every layer gets the same lengths: check them (one host sync on CUDA) once
            out, h, c = lstm_layer(
                layer_input, h0[sl], c0[sl], w_ih, w_hh, bias, lens, validate=layer == 0
            )
            h_n.append(h)
            c_n.append(c)
            layer_input = out
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, True)
        if self.num_layers == 1:
            return layer_input, h_n[0], c_n[0]
        return layer_input, torch.cat(h_n, 0), torch.cat(c_n, 0)

    def _torch_forward(self, x, h0, c0, lens):
        """torch's own LSTM on these parameters (time-major x, original batch order)."""
        # torch.lstm's arguments after the input and state, in both of its forms
        weights_and_options = (
            self._flat_weights,
            self.bias,
            self.num_layers,
            self.dropout,
            self.training,
            self.bidirectional,
        )
        if lens is None:
            out, h_n, c_n = torch.lstm(x, (h0, c0), *weights_and_options, False)
            return out, h_n, c_n
        T = x.shape[0]
        lens_cpu = lens.cpu()
        empty = lens_cpu == 0
        if bool(empty.any()):
            raise ValueError("backend='torch' needs every length >= 1")
        packed = pack_padded_sequence(x, lens_cpu, enforce_sorted=False)
        order = packed.sorted_indices
        data, h_n, c_n = torch.lstm(
            packed.data,
            packed.batch_sizes,
            (h0.index_select(1, order), c0.index_select(1, order)),
            *weights_and_options,
        )
        inverse = packed.unsorted_indices
        out, _ = pad_packed_sequence(
            PackedSequence(data, packed.batch_sizes, order, inverse), total_length=T
        )
        return out, h_n.index_select(1, inverse), c_n.index_select(1, inverse)


class LSTMCell(nn.Module):
    """One LSTM step, a drop-in for :class:`torch.nn.LSTMCell` on the fused cell op.

    Args: input_size, hidden_size, bias=True, device, dtype; backend="fused" | "torch".
    forward(input (N, input_size) or (input_size,), hx=None | (h (N, H), c (N, H))) ->
    (h', c') of the same batchedness. Parameters weight_ih (4H, I), weight_hh (4H, H),
    bias_ih, bias_hh (4H,) as torch.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
        backend: str = "fused",
    ):
        super().__init__()
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.bias = bool(bias)
        self.backend = check_backend(backend)
        factory: Dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, as nn.LSTMCell."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s

    def _check_state(self, t, k: int, x: torch.Tensor, unbatched: bool) -> None:
        """hx[k] must be (N, H) ((H,) for unbatched input) with x's dtype and device."""
        name = f"hx[{k}]"
        require_tensor(t, name)
        if t.dim() != (1 if unbatched else 2):
            raise ArgumentValueError(
                f"{name} must be {'1-D for unbatched' if unbatched else '2-D for batched'} "
                f"input, got shape {tuple(t.shape)}"
            )
        if not unbatched and t.shape[0] != x.shape[0]:
            raise ArgumentValueError(
                f"Input batch size {x.shape[0]} doesn't match hidden{k} batch size {t.shape[0]} "
                f"({name})"
            )
        if t.shape[-1] != self.hidden_size:
            raise ArgumentValueError(
                f"hidden{k} has inconsistent hidden_size: got {t.shape[-1]}, expected "
                f"{self.hidden_size} ({name})"
            )
        require_like(t, name, x, "input", STATE_DEVICE_WORDS)

    def forward(
        self, input: torch.Tensor, hx: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        require_tensor(input, "input")
        require_float(input, "input")
        if input.dim() not in (1, 2):
            raise ValueError(
                f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead (shape "
                f"{tuple(input.shape)})"
            )
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        N, I = x.shape
        # torch's words, which its tests match; ArgumentValueError is a RuntimeError as torch's
        if I != self.input_size:
            raise ArgumentValueError(
                f"input has inconsistent input_size: got {I}, expected {self.input_size}"
            )
        require_like(x, "input", self.weight_ih, "parameters", PARAMETER_DEVICE_WORDS)
        H = self.hidden_size
        if hx is None:
            h = c = torch.zeros(N, H, dtype=x.dtype, device=x.device)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("hx must be a tuple (h, c)")
            h, c = hx
            for k, t in enumerate((h, c)):
                self._check_state(t, k, x, unbatched)
            if unbatched:
                h, c = h.unsqueeze(0), c.unsqueeze(0)
        if self.backend == "torch":
            h1, c1 = torch.lstm_cell(
                x, (h, c), self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh
            )
        else:
            bias = self.bias_ih + self.bias_hh if self.bias else None
            if autocast_dtype(x.device) is None:
                # input and state were checked above and the op checks the parameters against
                # them: a decoder calls this once per step, so lstm_cell's second round of Python
                # checks is skipped
                h1, c1, _ = torch.ops.fastcrnn.lstm_cell(
                    x, h, c, self.weight_ih, self.weight_hh, bias
                )
            else:
                h1, c1 = lstm_cell(x, h, c, self.weight_ih, self.weight_hh, bias)
        if unbatched:
            return h1.squeeze(0), c1.squeeze(0)
        return h1, c1
