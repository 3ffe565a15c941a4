"""What fastcrnn's multi-layer recurrent modules (LSTM, RNN) share, as torch's RNNBase does for
its own: the constructor arguments, nn.RNN/nn.LSTM's parameter layout and initialisation, and
the handling of the input forms (padded with optional lengths, batch_first, unbatched,
PackedSequence) and of the initial states.

A subclass builds its layers with :meth:`RecurrentBase._init_recurrent`, turns its input into
time-major form with :meth:`_prepare_input`, checks each initial state with
:meth:`_initial_state`, runs its layers on (T, N, features) tensors, and gives results back in
the caller's form with :meth:`_restore_output` / :meth:`_restore_state`.
"""

import math
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union, cast

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from fastcrnn.ops._checks import (
    PARAMETER_DEVICE_WORDS,
    STATE_DEVICE_WORDS,
    ArgumentValueError,
    LengthsLike,
    lengths_tensor,
    positive_int,
    probability,
    require_bool,
    require_float,
    require_like,
    require_tensor,
)

__all__ = ["RecurrentBase", "InputLayout"]


class InputLayout(NamedTuple):
    """How the caller passed the input, so the outputs can be given back the same way."""

    packed: Optional[PackedSequence]  # the PackedSequence given, or None
    lengths_cpu: Optional[torch.Tensor]  # its lengths (N,) int64 on the CPU, original order
    unbatched: bool  # input was (T, features)
    batch_first: bool  # input was (N, T, features)


class RecurrentBase(nn.Module):
    """Base of the multi-layer, optionally bidirectional recurrent modules.

    Parameters per layer k and direction (suffix ``_l{k}`` or ``_l{k}_reverse``), exactly as
    torch's: ``weight_ih`` (G*H, layer input), ``weight_hh`` (G*H, H) and, with bias,
    ``bias_ih`` and ``bias_hh`` (G*H,), where G is the number of gates (4 for an LSTM, 1 for
    a vanilla RNN). Initialisation: uniform in ±1/sqrt(H).
    """

    #: gates per unit: 4 (LSTM) or 1 (vanilla RNN)
    num_gates = 1

    def _init_recurrent(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.num_layers = positive_int(num_layers, "num_layers")
        self.bias = require_bool(bias, "bias")
        self.batch_first = require_bool(batch_first, "batch_first")
        self.dropout = probability(dropout)
        self.bidirectional = bool(bidirectional)
        factory: Dict[str, Any] = {"device": device, "dtype": dtype}
        gate = self.num_gates * self.hidden_size
        self._flat_weights_names: List[str] = []
        self._all_weights: List[List[str]] = []
        for layer in range(self.num_layers):
            layer_in = self.input_size if layer == 0 else self.hidden_size * self.num_directions
            for d in range(self.num_directions):
                suffix = self.suffix(layer, d)
                names = [f"weight_ih{suffix}", f"weight_hh{suffix}"]
                shapes: List[Tuple[int, ...]] = [(gate, layer_in), (gate, self.hidden_size)]
                if self.bias:
                    names += [f"bias_ih{suffix}", f"bias_hh{suffix}"]
                    shapes += [(gate,), (gate,)]
                for name, shape in zip(names, shapes):
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self._reset_recurrent_parameters()

    @staticmethod
    def suffix(layer: int, direction: int) -> str:
        """The parameter-name suffix of a layer and direction: ``_l0``, ``_l0_reverse``, ..."""
        return f"_l{layer}" + ("_reverse" if direction == 1 else "")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _reset_recurrent_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self._flat_weights:
            nn.init.uniform_(weight, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, kept for torch compatibility: no kernel here needs a flat weight buffer."""

    @property
    def _flat_weights(self) -> List[torch.Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def _extra_repr(self, extra: List[str]) -> str:
        """torch's extra_repr (sizes, then the non-default options) plus `extra` entries."""
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return "".join([s] + [", " + e for e in extra])

    # ---- input and state ----------------------------------------------------------------------

    def _prepare_input(
        self, input: Union[torch.Tensor, PackedSequence], lengths: LengthsLike
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], InputLayout]:
        """Returns x (T, N, input_size), lengths (N,) int64 on x's device or None, and the
        layout. Raises TypeError / ValueError naming the argument for anything invalid (where
        torch raises RuntimeError, an error that is both: see fastcrnn.ops._checks); length
        values of a tensor are left to the caller (a list's are checked here)."""
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths cannot be given with a PackedSequence input")
            x, lengths_cpu = pad_packed_sequence(input, batch_first=False)
            layout = InputLayout(input, lengths_cpu, False, False)
            lens: Optional[torch.Tensor] = lengths_cpu.to(x.device)
        else:
            require_tensor(input, "input")
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"{type(self).__name__}: Expected input to be 2D or 3D, got "
                    f"{input.dim()}D instead (input must be 2-D (unbatched) or 3-D, got shape "
                    f"{tuple(input.shape)})"
                )
            unbatched = input.dim() == 2
            layout = InputLayout(None, None, unbatched, self.batch_first and not unbatched)
            if unbatched:
                x = input.unsqueeze(1)
            elif self.batch_first:
                x = input.transpose(0, 1)
            else:
                x = input
            lens = None
        require_float(x, "input")
        T, N, features = x.shape
        if T == 0:
            raise ArgumentValueError(
                "Expected sequence length to be larger than 0 in RNN (input has no time steps)"
            )
        if features != self.input_size:
            raise ArgumentValueError(
                f"input.size(-1) must be equal to input_size. Expected "
                f"{self.input_size}, got {features}"
            )
        require_like(x, "input", self._flat_weights[0], "parameters", PARAMETER_DEVICE_WORDS)
        if layout.packed is None and lengths is not None:
            lens = lengths_tensor(lengths, N, T, x.device, "lengths", unbatched=layout.unbatched)
        return x, lens, layout

    def _initial_state(
        self,
        state: Optional[torch.Tensor],
        name: str,
        x: torch.Tensor,
        layout: InputLayout,
        torch_name: str = "hidden",
    ) -> torch.Tensor:
        """A checked initial state (num_layers * D, N, H) for x (T, N, I); zeros for None.
        Unbatched calls take (num_layers * D, H). `torch_name` is what torch's message calls
        the state ("hidden", "hidden[0]", ...), whose words its tests match."""
        LD, N, H = self.num_layers * self.num_directions, x.shape[1], self.hidden_size
        if state is None:
            return torch.zeros(LD, N, H, dtype=x.dtype, device=x.device)
        require_tensor(state, name)
        expected = (LD, H) if layout.unbatched else (LD, N, H)
        if tuple(state.shape) != expected:
            raise ArgumentValueError(
                f"Expected {torch_name} size {expected}, got {list(state.shape)} "
                f"({name} must have shape {expected})"
            )
        require_like(state, name, x, "input", STATE_DEVICE_WORDS)
        return state.unsqueeze(1) if layout.unbatched else state

    @staticmethod
    def _restore_output(
        out: torch.Tensor, layout: InputLayout
    ) -> Union[torch.Tensor, PackedSequence]:
        """out (T, N, F) back in the caller's form (a PackedSequence for packed input)."""
        if layout.packed is not None:
            packed = layout.packed
            lengths = cast(torch.Tensor, layout.lengths_cpu)  # set for every packed input
            if packed.sorted_indices is not None:
                out = out.index_select(1, packed.sorted_indices)
                lengths = lengths.index_select(0, packed.sorted_indices.cpu())
            data = pack_padded_sequence(out, lengths, enforce_sorted=True).data
            return PackedSequence(
                data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
            )
        if layout.unbatched:
            return out.squeeze(1)
        if layout.batch_first:
            return out.transpose(0, 1)
        return out

    @staticmethod
    def _restore_state(state: torch.Tensor, layout: InputLayout) -> torch.Tensor:
        """A final state (num_layers * D, N, H) in the caller's batch form (packed input keeps
        the original batch order, as torch does)."""
        return state.squeeze(1) if layout.unbatched else state
