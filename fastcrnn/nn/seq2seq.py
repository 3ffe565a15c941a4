"""Sequence to sequence learning in the familiar d2l shape, on LSTMs with a backend switch.

Encoder (N, S) token ids -> (outputs (S, N, H), state (h, c)); a plain decoder that starts from
the encoder's final state; a decoder with additive attention whose query is the top layer's h;
``EncoderDecoder``; ``MaskedSoftmaxCELoss`` (mean over valid tokens, or d2l's per-sequence
reduction). Greedy and beam search prediction live in :mod:`fastcrnn.nn.seq2seq_predict`, BLEU in
:mod:`fastcrnn.bleu`.
The file runs past 400 lines on purpose: the encoder, both decoders and the loss share the
token / valid-length checks and the LSTM runner, and are read together as one d2l-shaped unit.
"""

from typing import Any, Optional, Sequence, Tuple, Union, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fastcrnn.nn.attention import MLPAttention
from fastcrnn.nn.rnn import make_lstm
from fastcrnn.ops._checks import check_backend, positive_int, probability

__all__ = [
    "Encoder",
    "Decoder",
    "Seq2SeqEncoder",
    "Seq2SeqDecoder",
    "Seq2SeqAttentionDecoder",
    "EncoderDecoder",
    "MaskedSoftmaxCELoss",
]

# valid lengths: an (N,) tensor or a list / tuple of ints
_Lens = Union[torch.Tensor, Sequence[int]]
# Seq2SeqAttentionDecoder's state: (enc_outputs (N, S, H), (h, c), enc_valid_lens)
_AttentionState = Tuple[torch.Tensor, Tuple[torch.Tensor, ...], Optional[torch.Tensor]]


def _tokens(X, name: str, vocab_size: int) -> torch.Tensor:
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(X).__name__}")
    if X.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor of token ids, got {X.dtype}")
    if X.dim() != 2:
        raise ValueError(f"{name} must have shape (N, T), got {tuple(X.shape)}")
    if X.numel() and not torch.compiler.is_compiling():
        lo, hi = int(X.min()), int(X.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"{name} must hold token ids in [0, {vocab_size}), got {lo if lo < 0 else hi}"
            )
    return X.long()


def _valid_lens(valid_lens, N: int, T: int, device, name: str) -> Optional[torch.Tensor]:
    """valid_lens as an (N,) int64 tensor on `device`, each clamped to at most T.

    Like d2l's sequence_mask (and masked_softmax), a length above T keeps every step, so it is
    clamped rather than rejected. Lengths must be whole numbers (an integer tensor, a list of
    ints, or a float tensor holding whole numbers, as d2l sometimes passes; +inf keeps every
    step) and not negative: a bool, complex or fractional tensor is a TypeError, a negative
    length or a wrong shape a ValueError, each naming the argument.
    """
    if valid_lens is None:
        return None
    if isinstance(valid_lens, (list, tuple)):
        valid_lens = torch.tensor([positive_int(v, name, 0) for v in valid_lens], dtype=torch.int64)
    if not isinstance(valid_lens, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or list of ints, got {type(valid_lens).__name__}")
    if valid_lens.dtype == torch.bool or valid_lens.dtype.is_complex:
        raise TypeError(f"{name} must hold whole numbers, got {valid_lens.dtype}")
    if valid_lens.shape != (N,):
        raise ValueError(f"{name} must have shape ({N},), got {tuple(valid_lens.shape)}")
    lens = valid_lens.to(device=device)
    if N and not torch.compiler.is_compiling():
        # NaN fails the whole-number test (NaN != NaN); +inf passes and is clamped to T below
        if lens.dtype.is_floating_point and not torch.equal(lens, lens.round()):
            raise TypeError(f"{name} must hold whole numbers, got {valid_lens.dtype}")
        lo = lens.min().item()
        if lo < 0:
            raise ValueError(f"{name} must not be negative, got {lo:g}")
    # clamp before the int64 cast: a float +inf has no int64 value
    return lens.clamp(0, T).to(torch.int64)


class Encoder(nn.Module):
    """The encoder interface of the encoder-decoder architecture."""

    def forward(self, X: torch.Tensor, *args: Any) -> Any:
        raise NotImplementedError


class Decoder(nn.Module):
    """The decoder interface: ``init_state(enc_outputs, *args)`` then ``forward(X, state)``.

    ``reorder_state(state, index)`` selects batch entries of a state (beam search uses it), and
    ``attention_weights`` holds the last forward's weights (None for a decoder without attention).
    """

    def init_state(self, enc_outputs: Any, *args: Any) -> Any:
        raise NotImplementedError

    def forward(self, X: torch.Tensor, state: Any) -> Tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def reorder_state(self, state: Any, index: torch.Tensor) -> Any:
        raise NotImplementedError

    @property
    def attention_weights(self) -> Optional[torch.Tensor]:
        return None


def _run_lstm(rnn: nn.Module, X: torch.Tensor, state, lengths: Optional[torch.Tensor]):
    """X (T, N, E) through an LSTM; with lengths, padded steps are skipped (packed sequence)."""
    if lengths is None:
        return rnn(X, state)
    T = X.shape[0]
    zero = lengths == 0
    # pack_padded_sequence needs lengths >= 1: a length-0 row runs one step, then its outputs are
    # zeroed and its state restored below.
    packed = pack_padded_sequence(X, lengths.clamp(min=1).cpu(), enforce_sorted=False)
    out, (h, c) = rnn(packed, state)
    out, _ = pad_packed_sequence(out, total_length=T)
    if bool(zero.any()):
        keep = (~zero).to(out.dtype)
        out = out * keep[None, :, None]
        if state is None:
            h0 = c0 = torch.zeros_like(h)
        else:
            h0, c0 = state
        h = torch.where(zero[None, :, None], h0, h)
        c = torch.where(zero[None, :, None], c0, c)
    return out, (h, c)


class _EmbeddedLSTM(nn.Module):
    """What the encoder and the decoders share: their constructor (sizes, dropout, backend), a
    token embedding and an LSTM. Each builds its layers in :meth:`_add_layers`."""

    def __init__(
        self,
        vocab_size: int,
        embed_size: int,
        num_hiddens: int,
        num_layers: int,
        dropout: float = 0.0,
        backend: Optional[str] = None,
    ):
        super().__init__()
        self.vocab_size = positive_int(vocab_size, "vocab_size")
        self.num_hiddens = positive_int(num_hiddens, "num_hiddens")
        self.num_layers = positive_int(num_layers, "num_layers")
        self.backend = check_backend(backend)
        self._add_layers(embed_size, probability(dropout))

    def _add_layers(self, embed_size, dropout: float) -> None:
        """The module's layers: the encoder's are the embedding and the LSTM."""
        self._add_embedding_and_lstm(embed_size, 0, dropout)

    def _add_embedding_and_lstm(self, embed_size, extra_inputs: int, dropout: float) -> None:
        """The token embedding (vocab_size -> embed_size) and the LSTM, whose input is the
        embedding plus `extra_inputs` features (the attention decoder's context)."""
        embed_size = positive_int(embed_size, "embed_size")
        self.embedding = nn.Embedding(self.vocab_size, embed_size)
        self.rnn = make_lstm(
            self.backend,
            embed_size + extra_inputs,
            self.num_hiddens,
            self.num_layers,
            dropout=dropout,
        )


class Seq2SeqEncoder(_EmbeddedLSTM, Encoder):
    """Embedding then a multi-layer LSTM (the tutorial's ``Seq2SeqEncoder``).

    forward(X (N, S) int64 token ids, valid_lens=None) -> (outputs (S, N, num_hiddens),
    state (h, c) each (num_layers, N, num_hiddens)). With ``valid_lens`` ((N,) whole numbers
    >= 0; above S means S) padded source steps are skipped, so the final state is each
    sentence's own last step and padded outputs are zero; without it every step is run, as in
    the tutorial and in d2l, whose encoder ignores valid lengths.
    """

    def begin_state(
        self, batch_size: int, device: Union[torch.device, str, None] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Zero (h, c), each (num_layers, batch_size, num_hiddens)."""
        w = self.embedding.weight
        z = torch.zeros(
            self.num_layers, batch_size, self.num_hiddens, device=device or w.device, dtype=w.dtype
        )
        return (z, z.clone())

    def forward(
        self, X: torch.Tensor, valid_lens: Optional[_Lens] = None, *args: Any
    ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        X = _tokens(X, "X", self.vocab_size)
        N, S = X.shape
        lens = _valid_lens(valid_lens, N, S, X.device, "valid_lens")
        emb = self.embedding(X).transpose(0, 1)  # (S, N, E)
        return _run_lstm(self.rnn, emb, self.begin_state(N, X.device), lens)


class Seq2SeqDecoder(_EmbeddedLSTM, Decoder):
    """The plain decoder: its initial state is the encoder's final (h, c) (the tutorial's).

    init_state(enc_outputs, *args) -> (h, c). forward(X (N, T) token ids, state) ->
    (logits (N, T, vocab_size), state). Encoder and decoder need the same num_hiddens and
    num_layers.
    """

    def _add_layers(self, embed_size, dropout: float) -> None:
        super()._add_layers(embed_size, dropout)
        self.dense = nn.Linear(self.num_hiddens, self.vocab_size)

    def _check_hidden(self, state, N):
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError("state must be the (h, c) pair of the encoder")
        expect = (self.num_layers, N, self.num_hiddens)
        for name, t in zip(("h", "c"), state):
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != expect:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"state {name} must have shape {expect}, got {got}")
        return tuple(state)

    def init_state(
        self, enc_outputs: Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]], *args: Any
    ) -> Tuple[torch.Tensor, ...]:
        if not isinstance(enc_outputs, (tuple, list)) or len(enc_outputs) != 2:
            raise TypeError("enc_outputs must be the encoder's (outputs, state)")
        state = enc_outputs[1]
        return self._check_hidden(
            state,
            state[0].shape[1]
            if isinstance(state, (tuple, list)) and isinstance(state[0], torch.Tensor)
            else -1,
        )

    def forward(
        self, X: torch.Tensor, state: Tuple[torch.Tensor, torch.Tensor]
    ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        X = _tokens(X, "X", self.vocab_size)
        state = self._check_hidden(state, X.shape[0])
        emb = self.embedding(X).transpose(0, 1)  # (T, N, E)
        out, state = self.rnn(emb, state)
        return self.dense(out).transpose(0, 1), state  # (N, T, V)

    def reorder_state(
        self, state: Sequence[torch.Tensor], index: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        return (h.index_select(1, index), c.index_select(1, index))


class Seq2SeqAttentionDecoder(_EmbeddedLSTM, Decoder):
    """Decoder with additive attention over the encoder outputs (d2l's Seq2SeqAttentionDecoder).

    At every step the query is the top layer's hidden state h[-1] (the previous step's, or the
    encoder's final one at the start); the attention context (num_hiddens) is concatenated with
    the token embedding and fed to the LSTM (input size embed_size + num_hiddens).

    init_state((enc_outputs (S, N, H), (h, c)), enc_valid_lens=None) ->
        (enc_outputs (N, S, H), (h, c), enc_valid_lens as (N,) int64 clamped to S).
    enc_valid_lens: None (attend to every source step) or (N,) whole numbers >= 0; a length
    above S attends to every step, as d2l's masked_softmax does.
    forward(X (N, T) token ids, state) -> (logits (N, T, vocab_size), state);
    ``attention_weights`` is then (N, T, S): one row of weights over the source per step.
    """

    def _add_layers(self, embed_size, dropout: float) -> None:
        H = self.num_hiddens
        self.attention = MLPAttention(H, H, H, dropout)
        self._add_embedding_and_lstm(embed_size, H, dropout)
        self.dense = nn.Linear(H, self.vocab_size)
        self._attention_weights: Optional[torch.Tensor] = None

    def init_state(
        self,
        enc_outputs: Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]],
        enc_valid_lens: Optional[_Lens] = None,
        *args: Any,
    ) -> _AttentionState:
        if not isinstance(enc_outputs, (tuple, list)) or len(enc_outputs) != 2:
            raise TypeError("enc_outputs must be the encoder's (outputs, state)")
        outputs, hidden = enc_outputs
        if (
            not isinstance(outputs, torch.Tensor)
            or outputs.dim() != 3
            or outputs.shape[-1] != self.num_hiddens
        ):
            raise ValueError(f"encoder outputs must have shape (S, N, {self.num_hiddens})")
        S, N = outputs.shape[0], outputs.shape[1]
        lens = _valid_lens(enc_valid_lens, N, S, outputs.device, "enc_valid_lens")
        return (outputs.permute(1, 0, 2), tuple(hidden), lens)

    def forward(
        self, X: torch.Tensor, state: _AttentionState
    ) -> Tuple[torch.Tensor, _AttentionState]:
        X = _tokens(X, "X", self.vocab_size)
        if not isinstance(state, (tuple, list)) or len(state) != 3:
            raise TypeError("state must be (enc_outputs, (h, c), enc_valid_lens) from init_state")
        enc_outputs, hidden, lens = state
        N = X.shape[0]
        if enc_outputs.shape[0] != N:
            raise ValueError(f"X has batch size {N} but the state has {enc_outputs.shape[0]}")
        h, c = hidden
        if tuple(h.shape) != (self.num_layers, N, self.num_hiddens):
            raise ValueError(
                f"state h must have shape {(self.num_layers, N, self.num_hiddens)}, "
                f"got {tuple(h.shape)}"
            )
        emb = self.embedding(X).transpose(0, 1)  # (T, N, E)
        outputs, weights = [], []
        for x in emb:
            query = hidden[0][-1].unsqueeze(1)  # (N, 1, H)
            context = self.attention(query, enc_outputs, enc_outputs, lens)  # (N, 1, H)
            step_in = torch.cat((context, x.unsqueeze(1)), dim=-1)  # (N, 1, H + E)
            out, hidden = self.rnn(step_in.transpose(0, 1), hidden)
            outputs.append(out)
            weights.append(cast(torch.Tensor, self.attention.attention_weights))  # set just now
        if outputs:
            out = self.dense(torch.cat(outputs, dim=0)).transpose(0, 1)
            self._attention_weights = torch.cat(weights, dim=1)  # (N, T, S)
        else:
            out = emb.new_zeros(N, 0, self.vocab_size)
            self._attention_weights = emb.new_zeros(N, 0, enc_outputs.shape[1])
        return out, (enc_outputs, hidden, lens)

    def reorder_state(self, state: _AttentionState, index: torch.Tensor) -> _AttentionState:
        enc_outputs, (h, c), lens = state
        return (
            enc_outputs.index_select(0, index),
            (h.index_select(1, index), c.index_select(1, index)),
            None if lens is None else lens.index_select(0, index),
        )

    @property
    def attention_weights(self) -> Optional[torch.Tensor]:
        """(N, T, S) attention weights of the last forward call."""
        return self._attention_weights


class EncoderDecoder(nn.Module):
    """forward(enc_X (N, S), dec_X (N, T), enc_valid_lens=None) -> (logits (N, T, V), state).

    enc_valid_lens goes to both the encoder and ``decoder.init_state``. d2l's encoder ignores
    it; ``Seq2SeqEncoder`` skips the padded source steps with it, so for sentences shorter than
    S the encoder state (and so the logits) differ from d2l's, which runs through the padding.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        if not isinstance(encoder, nn.Module) or not isinstance(decoder, nn.Module):
            raise TypeError("encoder and decoder must be nn.Module instances")
        self.encoder = encoder
        self.decoder = decoder

    def forward(
        self,
        enc_X: torch.Tensor,
        dec_X: torch.Tensor,
        enc_valid_lens: Optional[_Lens] = None,
        *args: Any,
    ) -> Tuple[torch.Tensor, Any]:
        enc_outputs = self.encoder(enc_X, enc_valid_lens, *args)
        # the decoder is a Decoder (or has its interface): nn.Module's attributes are untyped
        dec_state = cast(Decoder, self.decoder).init_state(enc_outputs, enc_valid_lens, *args)
        return self.decoder(dec_X, dec_state)


class MaskedSoftmaxCELoss(nn.Module):
    """Softmax cross-entropy over the valid (unpadded) tokens only.

    forward(pred (N, T, V) float logits, label (N, T) integer class ids, valid_len (N,) whole
    numbers >= 0: an integer tensor, a list of ints or a float tensor of whole numbers; a length
    above T keeps every step, as in d2l). Labels at padded steps are never read.

    reduction:

    - ``"mean"`` (default): the sum over every valid token divided by the number of valid tokens
      in the batch, a scalar. Padding never dilutes the average; 0 when there is no valid token.
    - ``"sum"``: the sum over valid tokens, a scalar.
    - ``"none"``: (N,), each sequence's mean over its own valid tokens (0 for an empty one).
    - ``"per_sequence_padded_mean"``: (N,), d2l's ``MaskedSoftmaxCELoss``: each sequence's sum
      over its valid tokens divided by the padded length T (NaN when T == 0, as d2l's mean
      over an empty axis). d2l trains with ``loss(...).sum()``, so its per-token weight is 1/T
      whatever a sentence's length; the default ``"mean"`` weighs every valid token of the batch
      equally instead and does not change when more padding is appended.
    """

    reductions = ("mean", "sum", "none", "per_sequence_padded_mean")

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if not isinstance(reduction, str) or reduction not in self.reductions:
            raise ValueError(
                f"reduction must be one of {', '.join(map(repr, self.reductions))}, "
                f"got {reduction!r}"
            )
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, label: torch.Tensor, valid_len: _Lens) -> torch.Tensor:
        if not isinstance(pred, torch.Tensor) or not pred.dtype.is_floating_point:
            raise TypeError("pred must be a floating-point tensor of logits")
        if pred.dim() != 3:
            raise ValueError(f"pred must have shape (N, T, V), got {tuple(pred.shape)}")
        N, T, V = pred.shape
        if (
            not isinstance(label, torch.Tensor)
            or label.dtype.is_floating_point
            or label.dtype.is_complex
            or label.dtype == torch.bool
        ):
            raise TypeError("label must be an integer tensor")
        if label.shape != (N, T):
            raise ValueError(f"label must have shape ({N}, {T}), got {tuple(label.shape)}")
        lens = _valid_lens(valid_len, N, T, pred.device, "valid_len")
        if lens is None:
            raise ValueError("valid_len must not be None")
        keep = torch.arange(T, device=pred.device)[None, :] < lens[:, None]
        label = label.long().to(pred.device)
        if bool(((label < 0) | (label >= V))[keep].any()):
            raise ValueError(f"label must hold class indices in [0, {V}) at valid positions")
        safe = torch.where(keep, label, torch.zeros_like(label))
        per_token = F.cross_entropy(
            pred.reshape(N * T, V), safe.reshape(-1), reduction="none"
        ).reshape(N, T)
        per_token = torch.where(keep, per_token, torch.zeros_like(per_token))
        if self.reduction == "sum":
            return per_token.sum()
        if self.reduction == "none":
            return per_token.sum(1) / lens.clamp(min=1).to(per_token.dtype)
        if self.reduction == "per_sequence_padded_mean":
            return per_token.mean(1)
        return per_token.sum() / lens.sum().clamp(min=1).to(per_token.dtype)
