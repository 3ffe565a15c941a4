"""Drop-in fastcrnn.nn.LSTM and LSTMCell on the fused layer / cell ops.

Same constructor arguments, parameter names, shapes and initialisation as torch.nn.LSTM /
torch.nn.LSTMCell, so ``load_state_dict`` moves weights both ways. ``backend="torch"`` runs
torch's own LSTM on the same parameters (the path for ONNX / TorchScript export).
"""
import math
import numbers
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from fastcrnn.ops._checks import lengths_tensor, require_float, require_tensor
from fastcrnn.ops.lstm import autocast_dtype, lstm_cell, lstm_layer

__all__ = ["LSTM", "LSTMCell"]

_BACKENDS = ("fused", "torch")


def _check_backend(backend):
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    return backend


def recurrent_repr(m: nn.Module, extra: List[str]) -> str:
    """nn.LSTM's extra_repr (sizes, then the non-default options) plus `extra` entries."""
    s = f"{m.input_size}, {m.hidden_size}"
    if m.num_layers != 1:
        s += f", num_layers={m.num_layers}"
    if not m.bias:
        s += ", bias=False"
    if m.batch_first:
        s += ", batch_first=True"
    if m.dropout:
        s += f", dropout={m.dropout}"
    if m.bidirectional:
        s += ", bidirectional=True"
    return "".join([s] + [", " + e for e in extra])


def uniform_reset(m: nn.Module) -> None:
    """torch's recurrent initialisation: every parameter uniform in ±1/sqrt(hidden_size)."""
    stdv = 1.0 / math.sqrt(m.hidden_size)
    for weight in m.parameters():
        nn.init.uniform_(weight, -stdv, stdv)


class _DerivedWeights:
    """Detached tensors built from parameters (concatenations), rebuilt whenever one of the
    parameters changed.

    The key is each parameter's (data_ptr, _version): in-place updates (optimizer.step(),
    load_state_dict, ``with torch.no_grad(): w.add_(1)``) bump the version, and rebinding
    (``.to()``, ``w.data = ...``) moves the data pointer: the old tensors are held (detached) so
    that no new one can take their address while the key still names it. Writes through
    ``w.data`` are invisible to autograd's version counter and so to this cache too.
    Never used while torch.compile or torch.jit.trace traces (a trace would freeze the cached
    value as a constant); not pickled.
    """

    def __init__(self):
        self._entries = {}

    def get(self, name, params, build):
        key = tuple((p.data_ptr(), p._version) for p in params)
        entry = self._entries.get(name)
        if entry is None or entry[0] != key:
            with torch.no_grad():
                value = build()
            entry = (key, tuple(p.detach() for p in params), value)
            self._entries[name] = entry
        return entry[2]


class _CachedWeightsModule(nn.Module):
    """A module holding a _DerivedWeights that deepcopy / pickle leave out (a copy's parameters
    live elsewhere, so its cache starts empty)."""

    def __init__(self):
        super().__init__()
        self._derived = _DerivedWeights()

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_derived", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._derived = _DerivedWeights()

    def _use_cache(self) -> bool:
        return not (torch.compiler.is_compiling() or torch.jit.is_tracing())


class LSTM(_CachedWeightsModule):
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

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, backend: str = "fused"):
        super().__init__()
        if proj_size != 0:
            raise NotImplementedError("fastcrnn.nn.LSTM does not support proj_size (use "
                                      "torch.nn.LSTM for projected LSTMs)")
        for value, name in ((input_size, "input_size"), (hidden_size, "hidden_size"),
                            (num_layers, "num_layers")):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if hidden_size <= 0:
            raise ValueError(f"hidden_size must be greater than zero, got {hidden_size}")
        if input_size <= 0:
            raise ValueError(f"input_size must be greater than zero, got {input_size}")
        if num_layers <= 0:
            raise ValueError(f"num_layers must be greater than zero, got {num_layers}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) \
                or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        self.mode = "LSTM"
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = 0
        self.backend = _check_backend(backend)
        factory = {"device": device, "dtype": dtype}
        dirs = 2 if bidirectional else 1
        gate = 4 * hidden_size
        self._flat_weights_names: List[str] = []
        self._all_weights: List[List[str]] = []
        for layer in range(num_layers):
            for d in range(dirs):
                layer_in = input_size if layer == 0 else hidden_size * dirs
                suffix = f"_l{layer}" + ("_reverse" if d == 1 else "")
                names = [f"weight_ih{suffix}", f"weight_hh{suffix}"]
                params = [torch.empty(gate, layer_in, **factory),
                          torch.empty(gate, hidden_size, **factory)]
                if bias:
                    names += [f"bias_ih{suffix}", f"bias_hh{suffix}"]
                    params += [torch.empty(gate, **factory), torch.empty(gate, **factory)]
                for name, p in zip(names, params):
                    setattr(self, name, nn.Parameter(p))
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, in nn.LSTM's order."""
        uniform_reset(self)

    def flatten_parameters(self) -> None:
        """No-op (kept for nn.LSTM compatibility: the fused kernels need no flat buffer)."""

    @property
    def _flat_weights(self) -> List[torch.Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def extra_repr(self) -> str:
        return recurrent_repr(self, [f"backend={self.backend!r}"] if self.backend != "fused"
                              else [])

    # -----------------------------------------------------------------------------------------

    def _layer_weights(self, layer: int):
        """The op's (weight_ih (D*4H, I), weight_hh (D, 4H, H), bias (D*4H,) or None) of one
        layer. Built per call (differentiable) when a gradient may be needed, else cached."""
        dirs = 2 if self.bidirectional else 1
        suffixes = [f"_l{layer}" + ("_reverse" if d == 1 else "") for d in range(dirs)]
        names = [f"{kind}{s}" for s in suffixes
                 for kind in (("weight_ih", "weight_hh", "bias_ih", "bias_hh") if self.bias
                              else ("weight_ih", "weight_hh"))]
        params = [getattr(self, n) for n in names]

        def build():
            w_ih = [getattr(self, f"weight_ih{s}") for s in suffixes]
            w_hh = [getattr(self, f"weight_hh{s}") for s in suffixes]
            if dirs == 1:
                w_ih, w_hh = w_ih[0], w_hh[0].unsqueeze(0)  # views: no copy
            else:
                w_ih, w_hh = torch.cat(w_ih, 0), torch.stack(w_hh, 0)
            bias = None
            if self.bias:
                b = [getattr(self, f"bias_ih{s}") + getattr(self, f"bias_hh{s}")
                     for s in suffixes]
                bias = b[0] if dirs == 1 else torch.cat(b, 0)
            return w_ih, w_hh, bias

        if self._use_cache() and not (torch.is_grad_enabled()
                                      and any(p.requires_grad for p in params)):
            return self._derived.get(layer, params, build)
        return build()

    def _check_hx(self, hx, N: int, unbatched: bool, ref: torch.Tensor):
        dirs = 2 if self.bidirectional else 1
        LD, H = self.num_layers * dirs, self.hidden_size
        if hx is None:
            z = torch.zeros(LD, N, H, dtype=ref.dtype, device=ref.device)
            return z, z
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError("hx must be a tuple (h0, c0)")
        out = []
        for t, name in zip(hx, ("h0", "c0")):
            require_tensor(t, name)
            expected = (LD, H) if unbatched else (LD, N, H)
            if tuple(t.shape) != expected:
                raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)}")
            if t.dtype != ref.dtype:
                raise TypeError(f"{name} must have the input's dtype {ref.dtype}, got {t.dtype}")
            if t.device != ref.device:
                raise ValueError(f"{name} must be on the input's device {ref.device}, got "
                                 f"{t.device}")
            out.append(t.unsqueeze(1) if unbatched else t)
        return out[0], out[1]

    def forward(self, input, hx: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                lengths=None):
        packed = isinstance(input, PackedSequence)
        unbatched = False
        if packed:
            if lengths is not None:
                raise ValueError("lengths cannot be given with a PackedSequence input")
            x, lens_cpu = pad_packed_sequence(input, batch_first=False)
            lens = lens_cpu.to(x.device)
        else:
            require_tensor(input, "input")
            if input.dim() not in (2, 3):
                raise ValueError(f"input must be 2-D (unbatched) or 3-D, got shape "
                                 f"{tuple(input.shape)}")
            unbatched = input.dim() == 2
            if unbatched:
                x = input.unsqueeze(1)
            elif self.batch_first:
                x = input.transpose(0, 1)
            else:
                x = input
            lens = None
        require_float(x, "input")
        T, N, I = x.shape
        if I != self.input_size:
            raise ValueError(f"input.size(-1) must be equal to input_size. Expected "
                             f"{self.input_size}, got {I}")
        first = self._flat_weights[0]
        if x.dtype != first.dtype:
            raise TypeError(f"input dtype {x.dtype} does not match the parameters' dtype "
                            f"{first.dtype}")
        if x.device != first.device:
            raise ValueError(f"input is on {x.device} but the parameters are on {first.device}")
        if not packed and lengths is not None:
            lens = lengths_tensor(lengths, N, T, x.device, "lengths", unbatched=unbatched)
        h0, c0 = self._check_hx(hx, N, unbatched, x)

        if self.backend == "torch":
            out, h_n, c_n = self._torch_forward(x, h0, c0, lens)
        else:
            out, h_n, c_n = self._fused_forward(x, h0, c0, lens)

        if packed:
            if input.sorted_indices is not None:
                out = out.index_select(1, input.sorted_indices)
                lens_sorted = lens_cpu.index_select(0, input.sorted_indices.cpu())
            else:
                lens_sorted = lens_cpu
            data = pack_padded_sequence(out, lens_sorted, enforce_sorted=True).data
            output = PackedSequence(data, input.batch_sizes, input.sorted_indices,
                                    input.unsorted_indices)
        elif unbatched:
            output, h_n, c_n = out.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
        elif self.batch_first:
            output = out.transpose(0, 1)
        else:
            output = out
        return output, (h_n, c_n)

    def _fused_forward(self, x, h0, c0, lens):
        dirs = 2 if self.bidirectional else 1
        layer_input = x
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            w_ih, w_hh, bias = self._layer_weights(layer)
            sl = slice(layer * dirs, (layer + 1) * dirs)
            # every layer gets the same lengths: check them (one host sync on CUDA) once
            out, h, c = lstm_layer(layer_input, h0[sl], c0[sl], w_ih, w_hh, bias, lens,
                                   validate=layer == 0)
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
        weights = self._flat_weights
        if lens is None:
            out, h_n, c_n = torch.lstm(x, (h0, c0), weights, self.bias, self.num_layers,
                                       self.dropout, self.training, self.bidirectional, False)
            return out, h_n, c_n
        T, N = x.shape[0], x.shape[1]
        lens_cpu = lens.cpu()
        empty = lens_cpu == 0
        if bool(empty.any()):
            raise ValueError("backend='torch' needs every length >= 1")
        packed = pack_padded_sequence(x, lens_cpu, enforce_sorted=False)
        order = packed.sorted_indices
        data, h_n, c_n = torch.lstm(packed.data, packed.batch_sizes,
                                    (h0.index_select(1, order), c0.index_select(1, order)),
                                    weights, self.bias, self.num_layers, self.dropout,
                                    self.training, self.bidirectional)
        inverse = packed.unsorted_indices
        out, _ = pad_packed_sequence(
            PackedSequence(data, packed.batch_sizes, order, inverse), total_length=T)
        return out, h_n.index_select(1, inverse), c_n.index_select(1, inverse)


class LSTMCell(_CachedWeightsModule):
    """One LSTM step, a drop-in for :class:`torch.nn.LSTMCell` on the fused cell op.

    Args: input_size, hidden_size, bias=True, device, dtype; backend="fused" | "torch".
    forward(input (N, input_size) or (input_size,), hx=None | (h (N, H), c (N, H))) ->
    (h', c') of the same batchedness. Parameters weight_ih (4H, I), weight_hh (4H, H),
    bias_ih, bias_hh (4H,) as torch.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None, backend: str = "fused"):
        super().__init__()
        for value, name in ((input_size, "input_size"), (hidden_size, "hidden_size")):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{name} must be greater than zero, got {value}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.bias = bool(bias)
        self.backend = _check_backend(backend)
        factory = {"device": device, "dtype": dtype}
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
        uniform_reset(self)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s

    def forward(self, input: torch.Tensor,
                hx: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        require_tensor(input, "input")
        require_float(input, "input")
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: expected input to be 1-D or 2-D, got shape "
                             f"{tuple(input.shape)}")
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        N, I = x.shape
        if I != self.input_size:
            raise ValueError(f"input has inconsistent input_size: got {I}, expected "
                             f"{self.input_size}")
        if x.dtype != self.weight_ih.dtype:
            raise TypeError(f"input dtype {x.dtype} does not match the parameters' dtype "
                            f"{self.weight_ih.dtype}")
        if x.device != self.weight_ih.device:
            raise ValueError(f"input is on {x.device} but the parameters are on "
                             f"{self.weight_ih.device}")
        H = self.hidden_size
        if hx is None:
            h = c = torch.zeros(N, H, dtype=x.dtype, device=x.device)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("hx must be a tuple (h, c)")
            h, c = hx
            for t, name in ((h, "hx[0]"), (c, "hx[1]")):
                require_tensor(t, name)
                expected = (H,) if unbatched else (N, H)
                if tuple(t.shape) != expected:
                    raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)}")
                if t.dtype != x.dtype:
                    raise TypeError(f"{name} must have the input's dtype {x.dtype}, got "
                                    f"{t.dtype}")
                if t.device != x.device:
                    raise ValueError(f"{name} must be on the input's device {x.device}, got "
                                     f"{t.device}")
            if unbatched:
                h, c = h.unsqueeze(0), c.unsqueeze(0)
        if self.backend == "torch":
            h1, c1 = torch.lstm_cell(x, (h, c), self.weight_ih, self.weight_hh, self.bias_ih,
                                     self.bias_hh)
        else:
            bias = self.bias_ih + self.bias_hh if self.bias else None
            w_cat = None
            if self._use_cache():
                w_cat = self._derived.get(
                    "weight_cat", (self.weight_ih, self.weight_hh),
                    lambda: torch.cat([self.weight_ih, self.weight_hh], 1))
            if autocast_dtype(x.device) is None:
                # input and state were checked above, and the op checks the parameters against
                # them: skipping lstm_cell's second round of Python checks saves ~40 us a step
                h1, c1, _ = torch.ops.fastcrnn.lstm_cell(x, h, c, self.weight_ih, self.weight_hh,
                                                         bias, w_cat)
            else:
                h1, c1 = lstm_cell(x, h, c, self.weight_ih, self.weight_hh, bias, w_cat)
        if unbatched:
            return h1.squeeze(0), c1.squeeze(0)
        return h1, c1
