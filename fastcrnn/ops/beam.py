"""CTC prefix beam search over torch.ops.fastcrnn.ctc_beam_search (csrc/kernels/beam.h holds the
algorithm; fastcrnn.reference.ctc_prefix_beam_search is its readable specification).

The search itself runs on the host (C++, OpenMP over the batch). A CUDA input is normalised and
pruned on the device (the top ``max_tokens`` labels of each frame, above ``token_min_logp``);
only those candidates cross to the host, in one copy.
"""

import math
from numbers import Real
from typing import Dict, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch

from fastcrnn._ext import _C  # noqa: F401  (defines the schemas registered against here)
from fastcrnn.lm import NGramArrays, NGramLM
from fastcrnn.ops._checks import (
    ArgumentValueError,
    LengthsLike,
    TensorTypeError,
    decoder_scores,
    lengths_tensor,
    positive_int,
)

__all__ = [
    "BeamLanguageModel",
    "BeamSearchDecoding",
    "ctc_beam_search_decode",
    "pack_language_model",
]


def _beam_fake_outputs(T, N, nbest, like):
    return (
        like.new_empty((N, nbest, T), dtype=torch.int64),
        like.new_empty((N, nbest), dtype=torch.int64),
        like.new_empty((N, nbest), dtype=torch.float64),
        like.new_empty((N, nbest), dtype=torch.float64),
        like.new_empty((N, nbest, T), dtype=torch.int64),
        like.new_empty((N, nbest, T), dtype=torch.float32),
    )


@torch.library.register_fake("fastcrnn::ctc_beam_search")
def _beam_search_fake(log_probs, input_lengths, blank, logits, beam_width, nbest, *_):
    T, N, _ = log_probs.shape
    return _beam_fake_outputs(T, N, nbest, log_probs)


@torch.library.register_fake("fastcrnn::ctc_beam_search_candidates")
def _beam_candidates_fake(
    candidate_tokens, _lp, _blank_lp, _lengths, _classes, _blank, _width, nbest, *_
):
    T, N, _ = candidate_tokens.shape
    return _beam_fake_outputs(T, N, nbest, candidate_tokens)


class BeamSearchDecoding(NamedTuple):
    """The nbest hypotheses of each sequence, best first (batched shapes; an unbatched call drops
    the N axis). A sequence with fewer than nbest possible hypotheses pads the rest with
    score -inf, length 0 and tokens -1.

    tokens: (N, nbest, T) int64 class indices, padded with -1.
    lengths: (N, nbest) int64.
    scores: (N, nbest) float64, the hypothesis' total log score, what it is ranked by: its CTC
        log-probability, plus with a language model lm_weight * ln(10) * log10 p_LM(text and
        end of sentence) + word_bonus * length.
    ctc_scores: (N, nbest) float64, its CTC log-probability alone (the sum over every path that
        collapses to it, within the beam).
    token_frames: (N, nbest, T) int64, the frame where each token was appended; -1 padding.
    token_probs: (N, nbest, T) float32, each token's highest probability from its frame until
        the next token's frame (or the input's end); 0 padding.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    scores: torch.Tensor
    ctc_scores: torch.Tensor
    token_frames: torch.Tensor
    token_probs: torch.Tensor


def _optional_real(value, name: str, at_most_zero: bool = False) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(float(value)):
        raise TypeError(f"{name} must be a float or None, got {value!r}")
    if at_most_zero and float(value) > 0:
        raise ValueError(f"{name} must be <= 0 (a log-probability below the best), got {value}")
    return float(value)


def ctc_beam_search_decode(
    log_probs: torch.Tensor,
    input_lengths: LengthsLike = None,
    beam_width: int = 10,
    blank: int = 0,
    logits: bool = False,
    nbest: int = 1,
    max_tokens: Optional[int] = None,
    token_min_logp: Optional[float] = None,
    beam_prune_logp: Optional[float] = None,
    lm: Optional[Union[NGramLM, NGramArrays, "BeamLanguageModel"]] = None,
    lm_tokens: Optional[Sequence[str]] = None,
    lm_weight: float = 0.5,
    word_bonus: float = 0.0,
) -> BeamSearchDecoding:
    """CTC prefix beam search: the most probable label sequences (summing over every path that
    collapses to each), batched.

    Args:
        log_probs: (T, N, C) or unbatched (T, C) log-probabilities, or unnormalised scores with
            ``logits=True``; float32/64 (float16/bfloat16 read as float32). CPU or CUDA.
        input_lengths: (N,) tensor, list or tuple in [0, T]; None: T for every sequence.
        beam_width: hypotheses kept per frame (>= 1).
        blank: the blank class, in [0, C).
        logits: normalise each frame with log-softmax first (in the kernel on the CPU).
        nbest: hypotheses returned per sequence, in [1, beam_width].
        max_tokens: per frame, only the max_tokens most probable labels (ties to the smaller
            class on the CPU; torch.topk's order on CUDA) may extend or continue a hypothesis;
            None: all. On CUDA this is the pruning done on the device, which sets how much
            crosses to the host.
        token_min_logp: per frame, only labels with at least this log-probability; None: all.
        beam_prune_logp: drop hypotheses below the best one's log score + this (<= 0); None:
            keep beam_width.
        lm: a token-level n-gram language model (:class:`fastcrnn.NGramLM`, e.g. a character
            model from ``python -m fastcrnn make-lm``, its ``to_arrays(numpy.float64)``, or
            :func:`pack_language_model` of either, which saves converting it on every call);
            each label is one LM token.
        lm_tokens: with ``lm``, the LM token of each class (C strings; the blank's is ignored;
            a token the model lacks is its ``<unk>``). For characters, the tokens
            ``fastcrnn.lm.text_to_tokens`` gives (a space is ``<space>``).
        lm_weight, word_bonus: the language model's weight, and a score added per label (both
            only with ``lm``).

    Without pruning and with beam_width at least the number of live prefixes, the result is the
    most probable labeling. Labels pruned at a frame count as probability 0 there. Ties are
    broken toward the lexicographically smaller label sequence, so results are deterministic.
    Returns a :class:`BeamSearchDecoding` of CPU tensors.
    """
    scores, blank, unbatched = decoder_scores(log_probs, blank)
    T, N, C = scores.shape
    if not isinstance(logits, bool):
        raise TypeError(f"logits must be a bool, got {type(logits).__name__}")
    beam_width = positive_int(beam_width, "beam_width")
    nbest = positive_int(nbest, "nbest")
    if nbest > beam_width:
        raise ValueError(f"nbest must be <= beam_width ({beam_width}), got {nbest}")
    max_tokens = 0 if max_tokens is None else positive_int(max_tokens, "max_tokens")
    token_min_logp = _optional_real(token_min_logp, "token_min_logp")
    beam_prune_logp = _optional_real(beam_prune_logp, "beam_prune_logp", at_most_zero=True)
    lm_args = _language_model_args(lm, lm_tokens, lm_weight, word_bonus, C, blank)
    cpu = torch.device("cpu")
    if isinstance(input_lengths, torch.Tensor) and input_lengths.device != cpu:
        if input_lengths.dtype not in (torch.int32, torch.int64):
            raise TensorTypeError(
                f"input_lengths must be integral (an int32 or int64 tensor), got "
                f"{input_lengths.dtype}"
            )
        input_lengths = input_lengths.cpu()
    lengths = lengths_tensor(input_lengths, N, T, cpu, "input_lengths", unbatched=unbatched)

    if scores.is_cuda:
        out = _search_cuda(
            scores, lengths, blank, logits, beam_width, nbest, max_tokens, token_min_logp,
            beam_prune_logp, lm_args,
        )  # fmt: skip
    else:
        if scores.dtype in (torch.float16, torch.bfloat16):
            scores = scores.float()
        try:
            out = torch.ops.fastcrnn.ctc_beam_search(
                scores, lengths, blank, logits, beam_width, nbest, max_tokens, token_min_logp,
                beam_prune_logp, *lm_args,
            )  # fmt: skip
        except ValueError as error:  # length values: torch raises RuntimeError for those
            raise ArgumentValueError(str(error)) from None
    result = BeamSearchDecoding(*out)
    if unbatched:
        return BeamSearchDecoding(*(t[0] for t in result))
    return result


class BeamLanguageModel(NamedTuple):
    """A language model packed for the search (:func:`pack_language_model`): the flat tables of
    its :class:`fastcrnn.lm.NGramArrays` as the op takes them. Pack once and pass it as ``lm=``
    to decode many batches without repacking the tables on every call.

    keys: (R,) int64; values: (R, 2) float64 (log10 probability, log10 back-off); links:
    (R, 2) int64 (suffix row, next state); token_ids: each vocabulary token's id.
    """

    keys: torch.Tensor
    values: torch.Tensor
    links: torch.Tensor
    token_ids: Dict[str, int]
    unk_id: int
    begin_state: int
    eos_id: int


def pack_language_model(lm: Union[NGramLM, NGramArrays]) -> BeamLanguageModel:
    """The model's tables in the op's layout (an NGramLM is flattened with
    ``to_arrays(numpy.float64)`` first)."""
    if isinstance(lm, NGramLM):
        lm = lm.to_arrays(np.float64)
    if not isinstance(lm, NGramArrays):
        raise TypeError(
            f"lm must be an NGramLM, NGramArrays or BeamLanguageModel, got {type(lm).__name__}"
        )
    values = np.stack([lm.log10_probs, lm.log10_backoffs], 1).astype(np.float64)
    links = np.stack([lm.suffix, lm.next_state], 1).astype(np.int64)
    return BeamLanguageModel(
        torch.from_numpy(np.ascontiguousarray(lm.keys, dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(values)),
        torch.from_numpy(np.ascontiguousarray(links)),
        {token: i for i, token in enumerate(lm.vocab)},
        int(lm.unk_id),
        int(lm.begin_state),
        int(lm.eos_id),
    )


def _language_model_args(lm, lm_tokens, lm_weight, word_bonus, C, blank):
    """The ops' language model arguments: the packed tables and each class's token id (or
    Nones without a model)."""
    weight = _optional_real(lm_weight, "lm_weight")
    bonus = _optional_real(word_bonus, "word_bonus")
    if lm is None:
        if lm_tokens is not None:
            raise ValueError("lm_tokens is given without lm")
        return (None, None, None, None, 0, 0, 0, 0.0, 0.0)
    packed = lm if isinstance(lm, BeamLanguageModel) else pack_language_model(lm)
    if weight is None or bonus is None:
        raise TypeError("lm_weight and word_bonus must be floats with a language model")
    if lm_tokens is None or isinstance(lm_tokens, str) or len(lm_tokens) != C:
        raise ValueError(f"lm_tokens must be a sequence of {C} token strings, one per class")
    ids, unk = packed.token_ids, packed.unk_id
    token_ids = torch.tensor(
        [unk if c == blank else ids.get(t, unk) for c, t in enumerate(lm_tokens)],
        dtype=torch.int64,
    )
    return (
        packed.keys,
        packed.values,
        packed.links,
        token_ids,
        len(ids),
        packed.begin_state,
        packed.eos_id,
        weight,
        bonus,
    )


def _search_cuda(
    scores,
    lengths,
    blank,
    logits,
    beam_width,
    nbest,
    max_tokens,
    token_min_logp,
    beam_prune_logp,
    lm_args,
):
    """Normalises and prunes on the device, then searches the survivors on the host: one copy
    of (T, N, 2K + 1) float64 values (K candidates' classes and log-probs, and the blank's)."""
    T, N, C = scores.shape
    lp = scores.double()
    if logits:
        lp = lp.log_softmax(-1)
    blank_lp = lp[..., blank]
    others = lp.index_fill(-1, torch.tensor([blank], device=lp.device), -math.inf)
    K = min(max_tokens or C, C)
    values, classes = others.topk(K, dim=-1)
    if token_min_logp is not None:
        values = torch.where(values >= token_min_logp, values, -math.inf)
    host = torch.cat([classes.double(), values, blank_lp.unsqueeze(-1)], -1).cpu()
    try:
        return torch.ops.fastcrnn.ctc_beam_search_candidates(
            host[..., :K].long(),
            host[..., K : 2 * K].contiguous(),
            host[..., 2 * K].contiguous(),
            lengths,
            C,
            blank,
            beam_width,
            nbest,
            token_min_logp,
            beam_prune_logp,
            *lm_args,
        )
    except ValueError as error:
        raise ArgumentValueError(str(error)) from None
