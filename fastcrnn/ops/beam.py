"""CTC prefix beam search over torch.ops.fastcrnn.ctc_beam_search (csrc/kernels/beam.h holds the
algorithm; fastcrnn.reference.ctc_prefix_beam_search is its readable specification).

The search itself runs on the host (C++, OpenMP over the batch). A CUDA input is normalised and
pruned on the device (the top ``max_tokens`` labels of each frame, above ``token_min_logp``);
only those candidates cross to the host, in one copy.

Past 400 lines on purpose: the decode entry point, the packing of its language model and token
tries into the op's arguments, and the CUDA path's device pruning are one call's argument flow.
"""

import math
from collections import deque
from numbers import Integral, Real
from typing import (
    TYPE_CHECKING,
    Dict,
    Iterable,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

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
    require_int,
)

if TYPE_CHECKING:
    from fastcrnn.lexicon import Lexicon
    from fastcrnn.text import Charset

#: the default ``hotword_weight``: sherpa-onnx's default hotword score. Per label, it flips close
#: calls but not a confidently read character, whose rivals lie several nats lower.
DEFAULT_HOTWORD_WEIGHT = 1.5

__all__ = [
    "BeamLanguageModel",
    "BeamSearchDecoding",
    "TokenTrie",
    "ctc_beam_search_decode",
    "pack_language_model",
    "pack_token_trie",
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
        end of sentence) + word_bonus * length (in labels; in words with lm_level="word"), plus
        hotword_weight per label of each completed hotword.
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
    lm_level: str = "label",
    lexicon: Optional["Lexicon"] = None,
    word_delimiter: Optional[int] = None,
    hotwords: Optional[Sequence[Union[str, Sequence[int]]]] = None,
    hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
    charset: Optional[Union["Charset", str]] = None,
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
        lm_weight, word_bonus: the language model's weight, and a score added per label (per
            word with ``lm_level="word"``) (both only with ``lm``).
        lm_level: ``"label"`` (each class is an LM token, ``lm_tokens``) or ``"word"``: a
            word-level model (e.g. ``make-lm --word-level``) over the ``lexicon``'s words
            (each word's text is its LM token; one the model lacks is its ``<unk>``), scored
            when a word completes: when ``word_delimiter`` follows it, and at the end of the
            input (with the end of sentence). Needs ``lexicon``; no ``lm_tokens``.
        lexicon: a :class:`fastcrnn.Lexicon` (its classes, blank 0): constrained search. A
            prefix grows only by a label that continues some lexicon word, and a hypothesis
            must end on a whole word; a sample where none does gets an empty result (length 0,
            score -inf, as padding). The lexicon's token trie is packed once and kept on it.
        word_delimiter: with ``lexicon``, a class (not the blank, not inside any word) that
            separates words: a line is then lexicon words joined by it (after a whole word the
            delimiter may follow and the next word starts). None: a line is one word.
        hotwords: words to favour: class sequences, or strings spelled with ``charset`` (class
            i + 1 is its i-th character, as a Lexicon's). While a prefix is inside a hotword it
            gains ``hotword_weight`` per matched label; a partial match that breaks off gives
            its bonus back, a completed hotword keeps it (and matching restarts after it). In
            the returned ``scores``, only completed hotwords count; never in ``ctc_scores``.
        hotword_weight: the bonus per matched label (log score; default 1.5, sherpa-onnx's
            default hotword score; negative values penalise the words).
        charset: the :class:`fastcrnn.text.Charset` (or alphabet string) that spells string
            hotwords; None: the lexicon's charset.

    Without pruning and with beam_width at least the number of live prefixes, the result is the
    most probable labeling (with a lexicon: the most probable the lexicon allows). Labels pruned
    at a frame count as probability 0 there. Ties are broken toward the lexicographically
    smaller label sequence, so results are deterministic.
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
    trie_args = _trie_args(
        lexicon, word_delimiter, hotwords, hotword_weight, charset, C, blank
    )  # fmt: skip
    lm_args, word_ids = _language_model_args(
        lm, lm_tokens, lm_weight, word_bonus, C, blank, lm_level, lexicon
    )
    model_args = (*lm_args, *trie_args, word_ids)
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
            beam_prune_logp, model_args,
        )  # fmt: skip
    else:
        if scores.dtype in (torch.float16, torch.bfloat16):
            scores = scores.float()
        try:
            out = torch.ops.fastcrnn.ctc_beam_search(
                scores, lengths, blank, logits, beam_width, nbest, max_tokens, token_min_logp,
                beam_prune_logp, *model_args,
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


def _language_model_args(
    lm, lm_tokens, lm_weight, word_bonus, C, blank, lm_level="label", lexicon=None
):
    """The ops' language model arguments: the packed tables and each class's token id (or
    Nones without a model), and the op's lm_word_ids (each lexicon word's token id, for a
    word-level model; else None)."""
    weight = _optional_real(lm_weight, "lm_weight")
    bonus = _optional_real(word_bonus, "word_bonus")
    if lm_level not in ("label", "word"):
        raise ValueError(f"lm_level must be 'label' or 'word', got {lm_level!r}")
    if lm is None:
        if lm_tokens is not None:
            raise ValueError("lm_tokens is given without lm")
        if lm_level == "word":
            raise ValueError("lm_level='word' is given without lm")
        return (None, None, None, None, 0, 0, 0, 0.0, 0.0), None
    packed = lm if isinstance(lm, BeamLanguageModel) else pack_language_model(lm)
    if weight is None or bonus is None:
        raise TypeError("lm_weight and word_bonus must be floats with a language model")
    ids, unk = packed.token_ids, packed.unk_id
    token_ids, word_ids = None, None
    if lm_level == "word":
        if lm_tokens is not None:
            raise ValueError("lm_tokens is for lm_level='label': a word model reads the words")
        if lexicon is None:
            raise ValueError("lm_level='word' needs a lexicon (the words the model scores)")
        word_ids = torch.tensor([ids.get(w, unk) for w in lexicon.words], dtype=torch.int64)
    else:
        if lm_tokens is None or isinstance(lm_tokens, str) or len(lm_tokens) != C:
            raise ValueError(f"lm_tokens must be a sequence of {C} token strings, one per class")
        token_ids = torch.tensor(
            [unk if c == blank else ids.get(t, unk) for c, t in enumerate(lm_tokens)],
            dtype=torch.int64,
        )
    args = (
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
    return args, word_ids


class TokenTrie(NamedTuple):
    """Token sequences packed as a trie for the search (:func:`pack_token_trie`), with
    Aho-Corasick failure links. Node 0 is the root (the empty sequence).

    nodes: (V, 5) int64, per node: its first edge, the end of its edges, the index + 1 of the
        (first) sequence that ends there (else 0), its failure link (the node of its longest
        proper suffix that is also in the trie; 0 for the root and its children), its depth
        (the sequence length).
    edges: (E, 2) int64 (token, child node), sorted by token within each node.
    """

    nodes: torch.Tensor
    edges: torch.Tensor


def pack_token_trie(sequences: Iterable[Sequence[int]]) -> TokenTrie:
    """Packs token sequences (each a sequence of ints) as a :class:`TokenTrie`. Duplicates are
    one path; an empty sequence marks the root as an end."""
    children: List[Dict[int, int]] = [{}]
    ends, depth = [0], [0]
    for i, seq in enumerate(sequences):
        if isinstance(seq, str) or not isinstance(seq, Sequence):
            raise TypeError(f"sequences[{i}] must be a sequence of ints, got {type(seq).__name__}")
        if any(isinstance(t, bool) or not isinstance(t, Integral) for t in seq):
            raise TypeError(f"sequences[{i}] must hold ints only")
        node = 0
        for token in seq:
            nxt = children[node].get(int(token))
            if nxt is None:
                nxt = len(children)
                children[node][int(token)] = nxt
                children.append({})
                ends.append(0)
                depth.append(depth[node] + 1)
            node = nxt
        ends[node] = ends[node] or i + 1
    # failure links, breadth first: a child's link is its parent's link (or that one's link,
    # and so on) followed by the same token
    fail = [0] * len(children)
    todo = deque(children[0].values())
    while todo:
        node = todo.popleft()
        for token, child in children[node].items():
            back = fail[node]
            while back != 0 and token not in children[back]:
                back = fail[back]
            fail[child] = children[back].get(token, 0)
            todo.append(child)
    nodes: List[Tuple[int, int, int, int, int]] = []
    edges: List[Tuple[int, int]] = []
    for v, kids in enumerate(children):
        first = len(edges)
        edges.extend(sorted(kids.items()))
        nodes.append((first, len(edges), ends[v], fail[v], depth[v]))
    return TokenTrie(
        torch.tensor(nodes, dtype=torch.int64).reshape(-1, 5),
        torch.tensor(edges, dtype=torch.int64).reshape(-1, 2),
    )


def _check_classes(tokens: Sequence[int], name: str, C: int, blank: int) -> None:
    for token in tokens:
        if not 0 <= token < C or token == blank:
            raise ValueError(
                f"{name} holds class {token}, which must be in [0, C={C}) and not the blank "
                f"({blank})"
            )


def _spelled(word, i: int, charset) -> List[int]:
    """Hotword i as class indices: a string through the charset, or a sequence of ints."""
    name = f"hotwords[{i}]"
    if isinstance(word, str):
        if charset is None:
            raise ValueError(f"{name} is a string: spelling it needs charset= or a lexicon")
        try:
            return [charset.index(c) for c in word]
        except KeyError as missing:
            raise ValueError(
                f"{name} ({word!r}) holds {missing.args[0]!r}, not in the charset"
            ) from None
    if isinstance(word, torch.Tensor):
        word = word.tolist()
    if not isinstance(word, Sequence):
        raise TypeError(
            f"{name} must be a str or a sequence of class indices, got {type(word).__name__}"
        )
    for token in word:
        if isinstance(token, bool) or not isinstance(token, Integral):
            raise TypeError(f"{name} must hold ints, got {type(token).__name__}")
    return [int(token) for token in word]


def _trie_args(lexicon, word_delimiter, hotwords, hotword_weight, charset, C, blank):
    """The ops' lexicon and hotword arguments (Nones, -1 and 0.0 where absent)."""
    # imported here: fastcrnn.lexicon imports this module, and the ops layer keeps its imports
    # of the modules above it out of import time
    from fastcrnn.lexicon import Lexicon
    from fastcrnn.text import Charset

    lexicon_trie: Optional[TokenTrie] = None
    if lexicon is not None:
        if not isinstance(lexicon, Lexicon):
            raise TypeError(f"lexicon must be a fastcrnn.Lexicon, got {type(lexicon).__name__}")
        lexicon_trie = lexicon.token_trie()
        tokens = lexicon_trie.edges[:, 0]
        if tokens.numel() and (tokens.max() >= C or (tokens == blank).any()):
            bad = int(tokens[(tokens >= C) | (tokens == blank)][0])
            word = next(w for w, s in zip(lexicon.words, lexicon.classes) if bad in s)
            raise ValueError(
                f"lexicon word {word!r} holds class {bad}, which must be in [0, C={C}) and not "
                f"the blank ({blank})"
            )
    delimiter = -1
    if word_delimiter is not None:
        delimiter = require_int(word_delimiter, "word_delimiter")
        if lexicon_trie is None:
            raise ValueError("word_delimiter is given without lexicon (it separates its words)")
        if not 0 <= delimiter < C or delimiter == blank:
            raise ValueError(
                f"word_delimiter must be a class in [0, C={C}) other than the blank ({blank}), "
                f"got {delimiter}"
            )
        if (lexicon_trie.edges[:, 0] == delimiter).any():
            word = next(w for w, s in zip(lexicon.words, lexicon.classes) if delimiter in s)
            raise ValueError(
                f"word_delimiter ({delimiter}) must not occur inside a lexicon word, but "
                f"{word!r} holds it"
            )
    weight = _optional_real(hotword_weight, "hotword_weight")
    if weight is None or math.isinf(weight):
        raise ValueError(f"hotword_weight must be a finite float, got {hotword_weight!r}")
    if charset is not None:
        if hotwords is None:
            raise ValueError("charset is given without hotwords (it spells them)")
        if isinstance(charset, str):
            charset = Charset(charset)
        if not isinstance(charset, Charset):
            raise TypeError(f"charset must be a Charset or a str, got {type(charset).__name__}")
    elif lexicon is not None:
        charset = lexicon.charset
    hotword_trie: Optional[TokenTrie] = None
    if hotwords is not None:
        if isinstance(hotwords, str) or not isinstance(hotwords, Sequence):
            raise TypeError("hotwords must be a sequence of words (not one str)")
        spelled_words = []
        for i, word in enumerate(hotwords):
            spelled = _spelled(word, i, charset)
            if not spelled:
                raise ValueError(f"hotwords[{i}] is empty")
            _check_classes(spelled, f"hotwords[{i}]", C, blank)
            spelled_words.append(spelled)
        if spelled_words:
            hotword_trie = pack_token_trie(spelled_words)
    return (
        *(lexicon_trie if lexicon_trie is not None else (None, None)),
        delimiter,
        *(hotword_trie if hotword_trie is not None else (None, None)),
        weight,
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
    model_args,
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
            *model_args,
        )
    except ValueError as error:
        raise ArgumentValueError(str(error)) from None
