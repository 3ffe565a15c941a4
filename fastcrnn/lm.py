"""N-gram language models for CTC decoding: ARPA loading, queries, modified Kneser-Ney training.

:class:`NGramLM` holds a back-off n-gram model of any order with the semantics of the ARPA format
and of KenLM's queries; :func:`train_char_lm` estimates one (interpolated modified Kneser-Ney)
from text; :meth:`NGramLM.to_arrays` flattens it into the few arrays a C++ decoder searches
(:class:`NGramArrays` documents the layout and :meth:`NGramArrays.advance` is the readable spec of
that query).

The module runs past 400 lines on purpose: the loader, the writer, the trainer and the flat
arrays all work on the one n-gram table layout defined here, and splitting them would spread
that layout's invariants over several files.

Tokens. A model's tokens are the ARPA words. Three are special, as in KenLM and SRILM: ``<s>``
(begin of sentence: only ever a context, never scored), ``</s>`` (end of sentence: scored) and
``<unk>`` (every token outside the vocabulary is scored as ``<unk>``). A character-level model has
one token per character and writes a space as :data:`WORD_DELIMITER` (``"<space>"``), since an
ARPA word cannot contain whitespace; :func:`text_to_tokens` is that tokenization.

Back-off semantics (ARPA, KenLM): with ``h`` the context (at most ``order - 1`` tokens, oldest
first) and ``w`` the next token, ``log10 p(w | h)`` is the stored log10 probability of the n-gram
``h + (w,)`` when the model has it, else ``log10_backoff(h) + log10 p(w | h[1:])``, where the
back-off of an n-gram the model lacks (or stores without one) is 0. The recursion ends at the
unigram of ``w``, which always exists (unknown tokens are ``<unk>``).
"""

import gzip
import math
import os
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import (
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    TextIO,
    Tuple,
    Union,
)

import numpy as np

__all__ = [
    "BOS",
    "EOS",
    "UNK",
    "WORD_DELIMITER",
    "KENLM_UNK_LOG10_PROB",
    "NGramArrays",
    "NGramLM",
    "kneser_ney_discounts",
    "text_to_tokens",
    "train_char_lm",
]

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
#: The token a space (any whitespace character) becomes in character-level models.
WORD_DELIMITER = "<space>"
#: The log10 probability KenLM gives ``<unk>`` when an ARPA file has no ``<unk>`` unigram.
KENLM_UNK_LOG10_PROB = -100.0
#: The log10 probability of the ``<s>`` unigram of a trained model: 0, as lmplz writes it.
#: ``<s>`` is never predicted (it is not part of any distribution), so the value only matters
#: to a caller who scores ``<s>`` explicitly, which then costs nothing.
BOS_LOG10_PROB = 0.0
#: lmplz's ``--discount_fallback`` discounts (D1, D2, D3+).
DISCOUNT_FALLBACK = (0.5, 1.0, 1.5)

State = Tuple[int, ...]
Entries = Sequence[Mapping[Tuple[str, ...], Tuple[float, Optional[float]]]]


def _check_token(token: Any, what: str) -> str:
    if not isinstance(token, str):
        raise TypeError(f"{what}: expected a str token, got {type(token).__name__}")
    if not token or any(c.isspace() for c in token):
        raise ValueError(
            f"{what}: a token must be a non-empty string without whitespace, got {token!r}"
        )
    return token


def text_to_tokens(
    text: str, *, word_level: bool = False, word_delimiter: str = WORD_DELIMITER
) -> List[str]:
    """Split one line of text into LM tokens.

    Character level (default): one token per character; every whitespace character becomes
    ``word_delimiter`` (one delimiter per whitespace character, none collapsed or stripped).
    Word level: ``text.split()`` (runs of whitespace separate words; ``word_delimiter`` unused).
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    if word_level:
        return text.split()
    return [word_delimiter if c.isspace() else c for c in text]


def kneser_ney_discounts(n1: int, n2: int, n3: int, n4: int) -> Tuple[float, float, float]:
    """The modified Kneser-Ney discounts (D1, D2, D3+) of one order from its count-of-counts.

    ``n_k`` is the number of n-grams of that order whose (adjusted) count is exactly k. Chen &
    Goodman (1998), eq. 26: ``Y = n1 / (n1 + 2 n2)``, ``D_k = k - (k + 1) Y n_{k+1} / n_k``.
    Raises ValueError, as lmplz does, when n1, n2 or n3 is 0 or a discount falls outside
    [0, k] (small or artificial data).
    """
    n = (n1, n2, n3, n4)
    for k in range(3):
        if n[k] <= 0:
            raise ValueError(
                f"cannot compute Kneser-Ney discounts: no n-grams with adjusted count {k + 1} "
                f"(count-of-counts n1..n4 = {n}); small or artificial data"
            )
    y = n1 / (n1 + 2.0 * n2)
    ds = []
    for k in (1, 2, 3):
        d = k - (k + 1) * y * n[k] / n[k - 1]
        if not 0.0 <= d <= k:
            raise ValueError(
                f"Kneser-Ney discount D{k}{'+' if k == 3 else ''} = {d} is outside [0, {k}] "
                f"(count-of-counts n1..n4 = {n}); small or artificial data"
            )
        ds.append(d)
    return (ds[0], ds[1], ds[2])


def _format_float(x: float) -> str:
    # repr is the shortest string that parses back to the same double: a written model reloads
    # to exactly the probabilities it was written from.
    if x == -math.inf:
        return "-inf"
    return repr(float(x))


@dataclass(frozen=True, eq=False)  # array fields: no elementwise ==
class NGramArrays:
    """A :class:`NGramLM` as flat arrays, for a C++ (or any array-language) query.

    Rows. Every n-gram of the model is one row; row 0 is the empty context (order 0). Rows are
    grouped by order: order ``k`` (0..order) holds rows ``offsets[k]:offsets[k + 1]``. Unigram
    rows are the vocabulary in id order: the unigram of token id ``w`` is row ``1 + w``.

    Keys. ``V = len(vocab)``. The n-gram ``(w_1, ..., w_k)`` (k >= 1) has the key
    ``c * V + w_k`` where ``c`` is the row of its context ``(w_1, ..., w_{k-1})`` (row 0 for a
    unigram, so a unigram's key is its token id). Every context of a row is itself a row (missing
    ones were filled in, see :class:`NGramLM`), so keys are unique, and since context rows of
    order k-1 lie below those of order k, ``keys[1:]`` is strictly increasing over the whole
    array. Looking up (context row ``c``, token ``w``) is one search for ``c * V + w``: binary
    search in ``keys`` (or in its order's slice), or a hash map built from ``keys`` to rows.
    ``keys[0]`` is -1. The model must satisfy ``offsets[-1] * V < 2**63`` (checked).

    States. A decoder state is one row of order <= N - 1 (a row below ``offsets[N]``): the
    context that determines every later probability, i.e. the longest suffix (at most N - 1
    tokens) of the tokens so far that the model stores with a non-zero back-off or as the
    context of a longer n-gram (KenLM's state minimization); row 0 is the empty context (no
    history, ``bos=False``). ``begin_state`` is the state after ``<s>``. Two hypotheses with
    equal states get equal scores for every continuation, so a beam search may merge them.

    Query: token id ``w`` after state ``s`` (:meth:`advance` is this, in Python)::

        acc = 0
        loop:
            i = row whose key == s * V + w      (s == 0: always found, i = 1 + w)
            if found: return next_state[i], acc + log10_probs[i]
            acc += log10_backoffs[s]; s = suffix[s]

    It returns the new state and log10 p(w | history); the matched n-gram's order is the ``k``
    with ``offsets[k] <= i < offsets[k + 1]``. Each step of the loop shortens the context by
    one token, so it runs at most N times.

    Fields (R = offsets[-1] rows):
        order: int, the model order N.
        vocab: list of V token strings; a token's id is its index. ``unk_id`` is 0.
        unk_id, bos_id, eos_id: ids of ``<unk>``, ``<s>``, ``</s>``.
        offsets: int64 (N + 2,), ``offsets[0] = 0``, ``offsets[1] = 1``, ``offsets[2] = 1 + V``.
        keys: int64 (R,), see above.
        log10_probs: float (R,) (float32 unless asked otherwise), the stored log10 probability
            of each n-gram (row 0: 0).
        log10_backoffs: float (R,), each n-gram's log10 back-off weight (0 where none: order N,
            n-grams without one, row 0).
        suffix: int64 (R,), the row of the n-gram without its first token (``(w_2, ..., w_k)``;
            0 for unigrams); -1 for row 0.
        next_state: int64 (R,), the state after this n-gram has been matched as the longest
            n-gram ending in the newest token (row 0: 0).
        begin_state: int, ``next_state`` of the ``<s>`` unigram.
    """

    order: int
    vocab: List[str]
    unk_id: int
    bos_id: int
    eos_id: int
    offsets: np.ndarray
    keys: np.ndarray
    log10_probs: np.ndarray
    log10_backoffs: np.ndarray
    suffix: np.ndarray
    next_state: np.ndarray
    begin_state: int

    def find(self, context_row: int, token_id: int) -> int:
        """The row of the n-gram (context row, token id), or -1 when the model has none."""
        key = int(context_row) * len(self.vocab) + int(token_id)
        order = int(np.searchsorted(self.offsets, context_row, side="right")) - 1
        lo, hi = int(self.offsets[order + 1]), int(self.offsets[order + 2])
        i = lo + int(np.searchsorted(self.keys[lo:hi], key))
        return i if i < hi and int(self.keys[i]) == key else -1

    def row_order(self, row: int) -> int:
        """The order (number of tokens) of the n-gram at ``row`` (0 for row 0)."""
        return int(np.searchsorted(self.offsets, row, side="right")) - 1

    def advance(self, state: int, token_id: int) -> Tuple[int, float, int]:
        """Score ``token_id`` after ``state``: (next state, log10 probability, matched order).

        The reference for a C++ port: float64 accumulation of the stored values, back-offs
        first, in the order :meth:`NGramLM.advance` adds them.
        """
        if not 0 <= token_id < len(self.vocab):
            raise ValueError(f"token_id: {token_id} is outside [0, {len(self.vocab)})")
        if not 0 <= state < int(self.offsets[-2]):
            raise ValueError(f"state: {state} is not a context row of this model")
        acc = 0.0
        s = int(state)
        while True:
            i = self.find(s, token_id)
            if i >= 0:
                return int(self.next_state[i]), acc + float(self.log10_probs[i]), self.row_order(i)
            acc += float(self.log10_backoffs[s])
            s = int(self.suffix[s])


class NGramLM:
    """A back-off n-gram language model (ARPA semantics, KenLM-compatible queries).

    Build one with :meth:`from_arpa` or :func:`train_char_lm`, or directly from its entries:

    Args:
        entries: one mapping per order 1..N: ``entries[k - 1]`` maps each k-gram (a tuple of k
            token strings, oldest first) to ``(log10_prob, log10_backoff)``; the back-off is
            None where the n-gram has none (always None at order N). ``<s>`` and ``</s>`` must
            be unigrams; every token of a longer n-gram must be a unigram. Probabilities are
            <= 0 (-inf allowed), back-offs finite or -inf, no NaN.
        unk_log10_prob: the log10 probability of ``<unk>`` when ``entries`` has no ``<unk>``
            unigram (it is then added, with no back-off). Default -100, KenLM's choice; pass
            ``-math.inf`` to give unknown tokens probability 0.

    Missing contexts. ARPA files normally hold the prefix ``(w_1..w_{k-1})`` and the suffix
    ``(w_2..w_k)`` of every k-gram; where one is missing (pruned models), it is added as KenLM
    does, with the log10 probability the back-off rule gives it and no back-off, which changes
    no query result.

    Token ids: ``vocab[0]`` is ``<unk>``, then the unigrams in the order given. States
    (:meth:`begin_state`, :meth:`advance`) are tuples of token ids, the minimal context as
    described in :class:`NGramArrays`: hashable, at most ``order - 1`` ints.
    """

    def __init__(self, entries: Entries, *, unk_log10_prob: float = KENLM_UNK_LOG10_PROB):
        if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
            raise TypeError(
                "entries: expected a sequence of one mapping per order, got "
                f"{type(entries).__name__}"
            )
        if len(entries) == 0:
            raise ValueError("entries: a model needs at least the unigrams (order >= 1)")
        if not isinstance(unk_log10_prob, (int, float)) or isinstance(unk_log10_prob, bool):
            raise TypeError(
                f"unk_log10_prob: expected a float, got {type(unk_log10_prob).__name__}"
            )
        if math.isnan(unk_log10_prob) or unk_log10_prob > 0:
            raise ValueError(f"unk_log10_prob: must be <= 0 (or -inf), got {unk_log10_prob}")
        self.order = len(entries)
        N = self.order
        unigrams = entries[0]
        if not isinstance(unigrams, Mapping):
            raise TypeError(f"entries[0]: expected a mapping, got {type(unigrams).__name__}")
        self.vocab: List[str] = [UNK]
        self._ids: Dict[str, int] = {UNK: 0}
        for key in unigrams:
            if not isinstance(key, tuple) or len(key) != 1:
                raise ValueError(f"entries[0]: unigram keys are 1-tuples of a token, got {key!r}")
            tok = _check_token(key[0], "entries[0]")
            if tok != UNK:
                self._ids[tok] = len(self.vocab)
                self.vocab.append(tok)
        for special in (BOS, EOS):
            if special not in self._ids:
                raise ValueError(f"entries: the model has no {special} unigram")
        self.bos_id = self._ids[BOS]
        self.eos_id = self._ids[EOS]
        self.unk_id = 0
        # one dict over all orders: n-gram (tuple of ids) -> log10 prob; back-offs apart, only
        # where given
        self._prob: Dict[State, float] = {}
        self._backoff: Dict[State, float] = {}
        for k, table in enumerate(entries, start=1):
            what = f"entries[{k - 1}]"
            if not isinstance(table, Mapping):
                raise TypeError(f"{what}: expected a mapping, got {type(table).__name__}")
            for key, value in table.items():
                if not isinstance(key, tuple) or len(key) != k:
                    raise ValueError(f"{what}: keys are {k}-tuples of tokens, got {key!r}")
                ids = []
                for tok in key:
                    _check_token(tok, what)
                    i = self._ids.get(tok)
                    if i is None:
                        raise ValueError(f"{what}: {key!r} has {tok!r}, which is not a unigram")
                    ids.append(i)
                if not isinstance(value, tuple) or len(value) != 2:
                    raise ValueError(f"{what}[{key!r}]: expected (log10_prob, log10_backoff)")
                prob, backoff = value
                _check_prob(prob, f"{what}[{key!r}] log10_prob")
                t = tuple(ids)
                self._prob[t] = float(prob)
                if backoff is not None:
                    if k == N:
                        raise ValueError(
                            f"{what}[{key!r}]: an n-gram of the highest order has no back-off"
                        )
                    _check_backoff(backoff, f"{what}[{key!r}] log10_backoff")
                    self._backoff[t] = float(backoff)
        if (0,) not in self._prob:
            self._prob[(0,)] = float(unk_log10_prob)
        self._complete()

    # ---- construction helpers ----

    def _complete(self) -> None:
        """Add missing prefixes / suffixes (KenLM's blanks) and find the state contexts."""
        N = self.order
        by_order: List[Set[State]] = [set() for _ in range(N + 1)]
        for key in self._prob:
            by_order[len(key)].add(key)
        blanks: List[Set[State]] = [set() for _ in range(N + 1)]
        for k in range(N, 1, -1):
            for key in by_order[k]:
                for sub in (key[:-1], key[1:]):
                    if sub not in self._prob and sub not in blanks[k - 1]:
                        blanks[k - 1].add(sub)
                        by_order[k - 1].add(sub)
        # a blank's probability is what the back-off rule gives it, computed from lower orders
        # (blanks of order k only need orders < k: their own key is the only order-k lookup)
        for k in range(2, N + 1):
            for key in sorted(blanks[k]):
                self._prob[key] = self._log10_prob_ids(key[:-1], key[-1])[0]
        self.counts: Tuple[int, ...] = tuple(len(by_order[k]) for k in range(1, N + 1))
        self.num_filled = sum(len(b) for b in blanks)
        # a context that can change a later probability: it extends to a longer n-gram or it
        # has a non-zero back-off. The state is the longest suffix of the history in this set.
        ctx: Set[State] = {key[:-1] for k in range(2, N + 1) for key in by_order[k]}
        ctx.update(key for key, b in self._backoff.items() if b != 0.0)
        ctx.discard(())
        self._contexts = ctx

    @classmethod
    def from_arpa(
        cls, path: Union[str, "os.PathLike[str]"], *, unk_log10_prob: float = KENLM_UNK_LOG10_PROB
    ) -> "NGramLM":
        """Load an ARPA file (plain or ``.gz``; UTF-8).

        The format: optional text before a ``\\data\\`` line; ``ngram K=COUNT`` lines for
        K = 1..N; one ``\\K-grams:`` section per order, in order, each with exactly COUNT lines
        ``log10prob<sep>w1 ... wK[<sep>log10backoff]`` (tabs or spaces: fields are split on
        whitespace); ``\\end\\``. Blank lines are ignored anywhere. Malformed input raises
        ValueError naming the file and line. ``unk_log10_prob`` as in :class:`NGramLM`.
        """
        path = os.fspath(path)
        if not isinstance(path, str):
            raise TypeError(f"path: expected a str path, got {type(path).__name__}")
        opener = gzip.open if path.endswith(".gz") else open
        try:
            with opener(path, "rt", encoding="utf-8", newline=None) as f:
                entries = _parse_arpa(f, path)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
        try:
            return cls(entries, unk_log10_prob=unk_log10_prob)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    # ---- queries ----

    def token_id(self, token: Union[str, int]) -> int:
        """The id of ``token`` (a str, or an id checked to be in range); unknown strs give 0."""
        if isinstance(token, str):
            return self._ids.get(token, 0)
        if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
            if not 0 <= token < len(self.vocab):
                raise ValueError(f"token: id {token} is outside [0, {len(self.vocab)})")
            return int(token)
        raise TypeError(f"token: expected a str or an int id, got {type(token).__name__}")

    def _log10_prob_ids(self, context: State, w: int) -> Tuple[float, int]:
        """(log10 p(w | context), length of the matched n-gram); context already truncated."""
        acc = 0.0
        for start in range(len(context) + 1):
            key = context[start:] + (w,)
            p = self._prob.get(key)
            if p is not None:
                return acc + p, len(key)
            acc += self._backoff.get(context[start:], 0.0)
        raise AssertionError("unreachable: every token id has a unigram")

    def _ids_of(self, tokens: Sequence[Union[str, int]], what: str) -> State:
        if isinstance(tokens, str):
            raise TypeError(
                f"{what}: expected a sequence of tokens, got a str; split it first "
                "(text_to_tokens(text) for characters, text.split() for words)"
            )
        try:
            return tuple(self.token_id(t) for t in tokens)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{what}: {exc}") from None

    def log10_prob(
        self, context_tokens: Sequence[Union[str, int]], token: Union[str, int]
    ) -> float:
        """log10 p(token | context) with ARPA back-off.

        ``context_tokens``: the preceding tokens, oldest first (only the last ``order - 1``
        matter); include ``"<s>"`` yourself for a sentence start. Unknown tokens are ``<unk>``.
        """
        ctx = self._ids_of(context_tokens, "context_tokens")
        ctx = self._truncate(ctx)
        return self._log10_prob_ids(ctx, self.token_id(token))[0]

    def begin_state(self, bos: bool = True) -> State:
        """The state of a sentence start (after ``<s>``), or the empty context (``bos=False``)."""
        return self.context_state([BOS]) if bos else ()

    def context_state(self, context_tokens: Sequence[Union[str, int]]) -> State:
        """The state after the tokens ``context_tokens`` (oldest first; no ``<s>`` added)."""
        ctx = self._ids_of(context_tokens, "context_tokens")
        ctx = self._truncate(ctx)
        return self._minimize(ctx)

    def _truncate(self, ctx: State) -> State:
        """The last ``order - 1`` ids of ``ctx`` (all of them when it is shorter)."""
        return ctx[max(0, len(ctx) - (self.order - 1)) :]

    def _minimize(self, ctx: State) -> State:
        while ctx and ctx not in self._contexts:
            ctx = ctx[1:]
        return ctx

    def advance(self, state: State, token: Union[str, int]) -> Tuple[State, float]:
        """Score ``token`` after ``state``: (new state, log10 probability).

        ``state``: from :meth:`begin_state`, :meth:`context_state` or an earlier
        :meth:`advance`. ``token``: a str (unknown ones score as ``<unk>``) or a token id.
        """
        if not isinstance(state, tuple):
            raise TypeError(f"state: expected a tuple of token ids, got {type(state).__name__}")
        if state and state not in self._contexts:
            raise ValueError(f"state: {state!r} is not a state of this model")
        w = self.token_id(token)
        acc = 0.0
        for start in range(len(state) + 1):
            key = state[start:] + (w,)
            p = self._prob.get(key)
            if p is not None:
                new = key if len(key) < self.order else key[1:]
                return self._minimize(new), acc + p
            acc += self._backoff.get(state[start:], 0.0)
        raise AssertionError("unreachable: every token id has a unigram")

    def full_scores(
        self, tokens: Sequence[Union[str, int]], bos: bool = True, eos: bool = True
    ) -> List[Tuple[float, int, bool]]:
        """Per-token scores as KenLM's ``Model.full_scores``: one (log10 prob, matched n-gram
        length, is OOV) per token, plus one for ``</s>`` when ``eos``."""
        ids = self._ids_of(tokens, "tokens")
        oov = [i == 0 for i in ids]  # KenLM: <unk> itself counts as OOV too
        if eos:
            ids = ids + (self.eos_id,)
            oov.append(False)
        ctx: State = (self.bos_id,) if bos else ()
        out = []
        for w, is_oov in zip(ids, oov):
            trunc = self._truncate(ctx)
            p, n = self._log10_prob_ids(trunc, w)
            out.append((p, n, is_oov))
            ctx = ctx + (w,)
        return out

    def score(self, tokens: Sequence[Union[str, int]], bos: bool = True, eos: bool = True) -> float:
        """Total log10 probability of a sentence (a sequence of tokens, not a str).

        As KenLM's ``Model.score``: with ``bos`` the context starts at ``<s>`` (never scored);
        with ``eos`` the probability of ``</s>`` at the end is included.
        """
        state = self.begin_state(bos)
        total = 0.0
        for t in self._ids_of(tokens, "tokens"):
            state, p = self.advance(state, t)
            total += p
        if eos:
            total += self.advance(state, self.eos_id)[1]
        return total

    def entries(self) -> List[Dict[Tuple[str, ...], Tuple[float, Optional[float]]]]:
        """The model's n-grams as :class:`NGramLM` takes them (filled-in ones included)."""
        out: List[Dict[Tuple[str, ...], Tuple[float, Optional[float]]]] = [
            {} for _ in range(self.order)
        ]
        # by order, then token ids: the unigrams in vocabulary order, which a reload keeps
        for key in sorted(self._prob, key=lambda t: (len(t), t)):
            words = tuple(self.vocab[i] for i in key)
            backoff: Optional[float] = None
            if len(key) < self.order and (key in self._contexts or key in self._backoff):
                backoff = self._backoff.get(key, 0.0)
            out[len(key) - 1][words] = (self._prob[key], backoff)
        return out

    def write_arpa(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write the model as an ARPA file (UTF-8; gzip when ``path`` ends with ``.gz``).

        Numbers are written with Python's shortest round-trip repr, so :meth:`from_arpa` reads
        back exactly the same model. A back-off is written for every n-gram that has one or
        that is the context of a longer n-gram.
        """
        path = os.fspath(path)
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "wt", encoding="utf-8", newline="\n") as f:
            for line in self.arpa_lines():
                f.write(line + "\n")

    def arpa_lines(self) -> Iterator[str]:
        """The ARPA text of the model, line by line (without newlines)."""
        tables = self.entries()
        yield "\\data\\"
        for k, table in enumerate(tables, start=1):
            yield f"ngram {k}={len(table)}"
        for k, table in enumerate(tables, start=1):
            yield ""
            yield f"\\{k}-grams:"
            for words, (prob, backoff) in table.items():
                line = f"{_format_float(prob)}\t{' '.join(words)}"
                if backoff is not None:
                    line += f"\t{_format_float(backoff)}"
                yield line
        yield ""
        yield "\\end\\"

    def to_arrays(self, float_dtype: Any = np.float32) -> NGramArrays:
        """The model as flat arrays for a C++ query; the layout is :class:`NGramArrays`'s.

        ``float_dtype``: of ``log10_probs`` and ``log10_backoffs`` (np.float32 or np.float64).
        """
        float_dtype = np.dtype(float_dtype)
        if float_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"float_dtype: expected float32 or float64, got {float_dtype}")
        N, V = self.order, len(self.vocab)
        by_order: List[List[State]] = [[] for _ in range(N + 1)]
        for key in self._prob:
            by_order[len(key)].append(key)
        rows: Dict[State, int] = {(): 0}
        order_keys: List[List[int]] = [[-1]]
        order_rows: List[List[State]] = [[()]]
        for k in range(1, N + 1):
            keyed = sorted((rows[g[:-1]] * V + g[-1], g) for g in by_order[k])
            base = sum(len(r) for r in order_rows)
            for j, (_, g) in enumerate(keyed):
                rows[g] = base + j
            order_keys.append([kk for kk, _ in keyed])
            order_rows.append([g for _, g in keyed])
        R = sum(len(r) for r in order_rows)
        if R * V >= 2**63:
            raise OverflowError(f"the model has {R} n-grams and {V} tokens: keys overflow int64")
        flat: List[State] = [g for r in order_rows for g in r]
        offsets = np.cumsum([0] + [len(r) for r in order_rows]).astype(np.int64)
        keys = np.array([kk for r in order_keys for kk in r], dtype=np.int64)
        probs = np.array([0.0] + [self._prob[g] for g in flat[1:]], dtype=float_dtype)
        backoffs = np.array([self._backoff.get(g, 0.0) for g in flat], dtype=float_dtype)
        suffix = np.array([-1] + [rows[g[1:]] for g in flat[1:]], dtype=np.int64)
        nxt = [0]
        for g in flat[1:]:
            nxt.append(rows[self._minimize(g if len(g) < N else g[1:])])
        return NGramArrays(
            order=N,
            vocab=list(self.vocab),
            unk_id=0,
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            offsets=offsets,
            keys=keys,
            log10_probs=probs,
            log10_backoffs=backoffs,
            suffix=suffix,
            next_state=np.array(nxt, dtype=np.int64),
            begin_state=rows[self.begin_state()],
        )

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}-grams={c}" for k, c in enumerate(self.counts, start=1))
        return f"NGramLM(order={self.order}, vocab={len(self.vocab)}, {counts})"


def _check_prob(x: Any, what: str) -> None:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        raise TypeError(f"{what}: expected a float, got {type(x).__name__}")
    if math.isnan(x) or x > 0:
        raise ValueError(f"{what}: a log10 probability must be <= 0 (or -inf), got {x}")


def _check_backoff(x: Any, what: str) -> None:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        raise TypeError(f"{what}: expected a float, got {type(x).__name__}")
    if math.isnan(x) or x == math.inf:
        raise ValueError(f"{what}: a log10 back-off must be finite or -inf, got {x}")


# ---- ARPA parsing ----

_NGRAM_COUNT = re.compile(r"^ngram\s+(\d+)\s*=\s*(\d+)$")
_SECTION = re.compile(r"^\\(\d+)-grams:$")


def _parse_arpa(f: TextIO, path: str) -> List[Dict[Tuple[str, ...], Tuple[float, Optional[float]]]]:
    def err(lineno: int, msg: str) -> ValueError:
        return ValueError(f"{path}:{lineno}: {msg}")

    lines = enumerate(f, start=1)
    lineno = 0
    for _, raw in lines:
        if raw.strip() == "\\data\\":
            break
    else:
        raise ValueError(f"{path}: no \\data\\ line (is this an ARPA file?)")
    counts: List[int] = []
    section_line = None
    for lineno, raw in lines:
        line = raw.strip()
        if not line:
            continue
        m = _NGRAM_COUNT.match(line)
        if m:
            k, c = int(m.group(1)), int(m.group(2))
            if k != len(counts) + 1:
                raise err(lineno, f"expected the count of order {len(counts) + 1}, got {line!r}")
            counts.append(c)
            continue
        section_line = line
        break
    if not counts:
        raise err(lineno, "no 'ngram K=COUNT' lines after \\data\\")
    if section_line is None:
        raise ValueError(f"{path}: ends after the \\data\\ header, before the \\1-grams: section")
    N = len(counts)
    entries: List[Dict[Tuple[str, ...], Tuple[float, Optional[float]]]] = [{} for _ in range(N)]
    vocab: Set[str] = set()
    k = 0  # current order
    header = section_line
    while True:
        # `header` is the line that ended the previous block: the next section or \end\
        expected = f"\\{k + 1}-grams:" if k < N else "\\end\\"
        if header != expected:
            raise err(lineno, f"expected {expected}, got {header}")
        if k == N:
            break
        k += 1
        table = entries[k - 1]
        header_line = None
        for lineno, raw in lines:
            line = raw.strip()
            if not line:
                continue
            if line.startswith("\\"):
                header_line = line
                break
            fields = line.split()
            if len(fields) not in (k + 1, k + 2):
                raise err(
                    lineno,
                    f"a {k}-gram line has a log10 probability, {k} token(s) and an optional "
                    f"back-off; got {len(fields)} field(s): {line!r}",
                )
            try:
                prob = float(fields[0])
            except ValueError:
                raise err(lineno, f"log10 probability {fields[0]!r} is not a number") from None
            if math.isnan(prob) or prob > 0:
                raise err(lineno, f"log10 probability {fields[0]} is not <= 0")
            words = tuple(fields[1 : k + 1])
            backoff: Optional[float] = None
            if len(fields) == k + 2:
                if k == N:
                    raise err(lineno, f"a {k}-gram of the highest order has no back-off: {line!r}")
                try:
                    backoff = float(fields[-1])
                except ValueError:
                    raise err(lineno, f"back-off {fields[-1]!r} is not a number") from None
                if math.isnan(backoff) or backoff == math.inf:
                    raise err(lineno, f"back-off {fields[-1]} is not finite (or -inf)")
            if k == 1:
                vocab.add(words[0])
            else:
                for w in words:
                    if w not in vocab:
                        raise err(lineno, f"token {w!r} of this {k}-gram is not a unigram")
            if words in table:
                raise err(lineno, f"duplicate {k}-gram {' '.join(words)!r}")
            table[words] = (prob, backoff)
        if header_line is None:
            raise ValueError(f"{path}: ends inside the \\{k}-grams: section (no \\end\\)")
        if len(table) != counts[k - 1]:
            raise err(
                lineno,
                f"the header announces {counts[k - 1]} {k}-grams, the section has {len(table)}",
            )
        header = header_line
    for lineno, raw in lines:
        if raw.strip():
            raise err(lineno, f"text after \\end\\: {raw.strip()!r}")
    return entries


# ---- training ----


def train_char_lm(
    lines: Iterable[str],
    order: int,
    *,
    word_level: bool = False,
    word_delimiter: str = WORD_DELIMITER,
    discounts: Optional[Sequence[Tuple[float, float, float]]] = None,
    discount_fallback: Optional[Tuple[float, float, float]] = DISCOUNT_FALLBACK,
) -> NGramLM:
    """Estimate an interpolated modified Kneser-Ney n-gram model (Chen & Goodman 1998) from text.

    Args:
        lines: an iterable of str, one sentence each (a trailing newline is dropped; lines that
            are then empty are skipped). Each sentence is tokenized by :func:`text_to_tokens`
            and scored as ``<s> tokens </s>``.
        order: N >= 1.
        word_level: tokens are whitespace-separated words instead of characters.
        word_delimiter: the token of a whitespace character in character-level models (default
            ``"<space>"``); a non-empty string without whitespace, not ``<s>``/``</s>``/
            ``<unk>``, and (if one character) not occurring in the text.
        discounts: optional (D1, D2, D3+) per order 1..N to use instead of the estimates.
        discount_fallback: the discounts of an order whose estimate fails (lmplz's
            ``--discount_fallback``, default (0.5, 1.0, 1.5)); a warning names the order. None:
            raise ValueError instead, as lmplz without the flag.

    Estimation (as KenLM's lmplz): raw counts of all n-grams of the padded sentences; adjusted
    counts ``a`` are the raw counts at order N and for n-grams starting with ``<s>``, else the
    number of distinct tokens seen before the n-gram (continuation counts). Per order, the
    discounts come from the count-of-counts n1..n4 of ``a`` (:func:`kneser_ney_discounts`).
    Then ``p(w | h) = (a(hw) - D(a(hw))) / S(h) + gamma(h) p(w | h[1:])`` with ``S(h)`` the sum
    of ``a(hx)`` over x, ``gamma(h) = (D1 N1(h) + D2 N2(h) + D3+ N3+(h)) / S(h)``, ``N_j(h)``
    the number of x with ``a(hx) = j`` (>= 3 for N3+); the unigrams interpolate with the
    uniform distribution over the vocabulary without ``<s>`` (``<unk>`` and ``</s>``
    included), which is all the mass ``<unk>`` gets. The ARPA back-off of ``h`` is
    ``log10 gamma(h)``, so back-off queries reproduce the interpolated distribution; every
    context's probabilities over the vocabulary without ``<s>`` sum to 1. ``<s>`` gets
    log10 probability 0 as in lmplz. On lmplz's own test models (KenLM's
    lm/common/test_data/toy*.arpa) every value agrees to lmplz's printed precision.
    Differences from lmplz: numbers in float64 (lmplz: float32) written at full precision; no
    back-off is written for n-grams that are no context (lmplz writes 0, the same value);
    n-grams are listed in token-id order; empty lines are skipped; no pruning options.

    Counting is plain Python over dicts: memory and time grow with the number of distinct
    n-grams, which suits OCR corpora (lines of text, character-level); for corpora of many
    millions of tokens, lmplz's on-disk estimation is the tool.

    Returns: the :class:`NGramLM` (write it with :meth:`NGramLM.write_arpa`).
    """
    if isinstance(lines, (str, bytes)):
        raise TypeError(
            "lines: expected an iterable of str (one sentence each), got a single "
            f"{type(lines).__name__}; use text.splitlines()"
        )
    if not isinstance(order, int) or isinstance(order, bool):
        raise TypeError(f"order: expected an int, got {type(order).__name__}")
    if order < 1:
        raise ValueError(f"order: must be >= 1, got {order}")
    if not isinstance(word_level, bool):
        raise TypeError(f"word_level: expected a bool, got {type(word_level).__name__}")
    if not isinstance(word_delimiter, str):
        raise TypeError(f"word_delimiter: expected a str, got {type(word_delimiter).__name__}")
    if not word_delimiter or any(c.isspace() for c in word_delimiter):
        raise ValueError(
            f"word_delimiter: must be a non-empty token without whitespace, got {word_delimiter!r}"
        )
    if word_delimiter in (BOS, EOS, UNK):
        raise ValueError(f"word_delimiter: {word_delimiter!r} is a reserved token")
    if discounts is not None:
        discounts = [_check_discounts(d, f"discounts[{i}]") for i, d in enumerate(discounts)]
        if len(discounts) != order:
            raise ValueError(
                f"discounts: expected {order} triples (one per order), got {len(discounts)}"
            )
    if discount_fallback is not None:
        discount_fallback = _check_discounts(discount_fallback, "discount_fallback")

    N = order
    raw: List[Counter] = [Counter() for _ in range(N + 1)]  # raw[k]: k-gram -> count
    n_sentences = 0
    for lineno, line in enumerate(lines, start=1):
        if not isinstance(line, str):
            raise TypeError(f"lines: line {lineno} is a {type(line).__name__}, not a str")
        line = line.rstrip("\r\n")
        if not line:
            continue
        if not word_level and len(word_delimiter) == 1 and word_delimiter in line:
            raise ValueError(
                f"word_delimiter: {word_delimiter!r} occurs in the text (line {lineno}); a space "
                "and that character would be the same token"
            )
        toks = text_to_tokens(line, word_level=word_level, word_delimiter=word_delimiter)
        if not toks:
            continue
        for t in toks:
            if t in (BOS, EOS):
                raise ValueError(f"lines: line {lineno} contains the reserved token {t!r}")
        n_sentences += 1
        padded = (BOS, *toks, EOS)
        L = len(padded)
        for k in range(1, N + 1):
            ck = raw[k]
            for i in range(L - k + 1):
                ck[padded[i : i + k]] += 1
    if n_sentences == 0:
        raise ValueError("lines: no tokens to train on (every line is empty)")

    # adjusted counts: raw at order N and for n-grams starting with <s>; else the number of
    # distinct left extensions among the raw (k+1)-grams
    adj: List[Dict[Tuple[str, ...], int]] = [dict() for _ in range(N + 1)]
    adj[N] = dict(raw[N])
    for k in range(N - 1, 0, -1):
        left: Counter = Counter(g[1:] for g in raw[k + 1])
        adj[k] = {g: (c if g[0] == BOS else left[g]) for g, c in raw[k].items()}
    del adj[1][(BOS,)]  # never predicted: not part of any distribution
    adj[1].setdefault((UNK,), 0)

    # discounts per order from the count-of-counts of the adjusted counts
    D: List[Tuple[float, float, float]] = [(0.0, 0.0, 0.0)]
    for k in range(1, N + 1):
        if discounts is not None:
            D.append(discounts[k - 1])
            continue
        coc = Counter(c for c in adj[k].values() if 1 <= c <= 4)
        try:
            D.append(kneser_ney_discounts(coc[1], coc[2], coc[3], coc[4]))
        except ValueError as exc:
            if discount_fallback is None:
                raise ValueError(f"order {k}: {exc}") from None
            warnings.warn(
                f"train_char_lm: order {k}: {exc}; using the fallback discounts "
                f"D1={discount_fallback[0]} D2={discount_fallback[1]} D3+={discount_fallback[2]}",
                stacklevel=2,
            )
            D.append(discount_fallback)

    def disc(k: int, c: int) -> float:
        return 0.0 if c == 0 else D[k][min(c, 3) - 1]

    # per context: S(h) and gamma(h)
    def context_stats(k: int) -> Tuple[Dict[Tuple[str, ...], float], Dict[Tuple[str, ...], float]]:
        total: Dict[Tuple[str, ...], float] = defaultdict(float)
        disc_mass: Dict[Tuple[str, ...], float] = defaultdict(float)
        for g, c in adj[k].items():
            total[g[:-1]] += c
            disc_mass[g[:-1]] += disc(k, c)
        gamma = {h: disc_mass[h] / s for h, s in total.items()}
        return total, gamma

    prob: List[Dict[Tuple[str, ...], float]] = [dict() for _ in range(N + 1)]  # linear
    total1, gamma1 = context_stats(1)
    S1, g1 = total1[()], gamma1[()]
    uniform = 1.0 / len(adj[1])  # the vocabulary without <s>, with <unk> and </s>
    for g, c in adj[1].items():
        prob[1][g] = (c - disc(1, c)) / S1 + g1 * uniform
    backoff: List[Dict[Tuple[str, ...], float]] = [dict() for _ in range(N + 1)]
    for k in range(2, N + 1):
        total, gamma = context_stats(k)
        for g, c in adj[k].items():
            h = g[:-1]
            prob[k][g] = (c - disc(k, c)) / total[h] + gamma[h] * prob[k - 1][g[1:]]
        for h, gm in gamma.items():
            backoff[k - 1][h] = gm

    def log10(x: float) -> float:
        return math.log10(x) if x > 0 else -math.inf

    entries: List[Dict[Tuple[str, ...], Tuple[float, Optional[float]]]] = []
    for k in range(1, N + 1):
        table: Dict[Tuple[str, ...], Tuple[float, Optional[float]]] = {}
        if k == 1:
            bo = backoff[1].get((BOS,))
            table[(BOS,)] = (BOS_LOG10_PROB, None if bo is None else log10(bo))
        for g in sorted(prob[k]):
            bo = backoff[k].get(g)
            table[g] = (log10(prob[k][g]), None if bo is None else log10(bo))
        entries.append(table)
    return NGramLM(entries)


def _check_discounts(d: Any, what: str) -> Tuple[float, float, float]:
    if isinstance(d, (str, bytes)) or not isinstance(d, Sequence) or len(d) != 3:
        raise ValueError(f"{what}: expected three discounts (D1, D2, D3+), got {d!r}")
    out = []
    for j, x in enumerate(d, start=1):
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            raise TypeError(f"{what}: D{j} must be a number, got {type(x).__name__}")
        if not 0.0 <= x <= j:
            raise ValueError(f"{what}: D{j} must be within [0, {j}], got {x}")
        out.append(float(x))
    return (out[0], out[1], out[2])
