"""Lexicon-based transcription, as the CRNN paper does it: among the lexicon words near the
greedy reading (within an edit distance), the one the CTC model finds most probable.

:class:`Lexicon` holds the words as class sequences and indexes them in a BK-tree (a metric
tree over the Levenshtein distance), so a query visits only the words whose distance can be
within the bound instead of scanning the lexicon. :func:`lexicon_decode` scores every candidate
of a batch in ONE call of fastcrnn's CTC loss (the exact log-probability of each word, summed
over all of its alignments).
"""

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from fastcrnn.ops._checks import LengthsLike, decoder_scores, lengths_tensor, require_int
from fastcrnn.ops.beam import TokenTrie, pack_token_trie
from fastcrnn.ops.ctc import ctc_loss
from fastcrnn.ops.decode import ctc_greedy_decode
from fastcrnn.text import Charset

__all__ = ["Lexicon", "LexiconDecoding", "lexicon_decode", "edit_distance"]


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """The Levenshtein distance between two sequences (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


class Lexicon:
    """A word list for lexicon-based transcription.

    Args:
        words: the words (non-empty, each spelled with the charset's characters; duplicates
            are kept once, the first time).
        charset: the model's :class:`fastcrnn.text.Charset` (class i + 1 is its i-th character)
            or its alphabet string. Case-insensitive charsets fold the words as they fold text.

    ``words`` keeps them in order; ``classes[i]`` is word i as a tuple of class indices.
    :meth:`nearby` finds the words within an edit distance of a class sequence;
    :meth:`token_trie` packs the words for ``ctc_beam_search_decode(lexicon=...)``.

    A Lexicon is immutable: its BK-tree and token trie are built from the words given here and
    never change, so both are built once and kept (edit neither ``words`` nor ``classes``).
    """

    def __init__(self, words: Sequence[str], charset: Union[Charset, str]):
        if isinstance(charset, str):
            charset = Charset(charset)
        if not isinstance(charset, Charset):
            raise TypeError(f"charset must be a Charset or a str, got {type(charset).__name__}")
        if isinstance(words, str) or not isinstance(words, Sequence):
            raise TypeError("words must be a sequence of str (not one str)")
        self.charset = charset
        self.words: List[str] = []
        self.classes: List[Tuple[int, ...]] = []
        seen = set()
        for i, word in enumerate(words):
            if not isinstance(word, str):
                raise TypeError(f"words[{i}] must be a str, got {type(word).__name__}")
            try:
                spelled = tuple(charset.index(c) for c in word)
            except KeyError as missing:
                raise ValueError(
                    f"words[{i}] ({word!r}) holds {missing.args[0]!r}, not in the charset"
                ) from None
            if spelled in seen:
                continue
            seen.add(spelled)
            self.words.append(charset.normalize(word))
            self.classes.append(spelled)
        if not self.words:
            raise ValueError("words must hold at least one word")
        self._spellings = tuple(self.classes)  # what the token trie is built from
        self._trie: Optional[TokenTrie] = None
        # BK-tree: node i's children by their distance to word i
        self._children: List[Dict[int, int]] = [{}]
        for i in range(1, len(self.classes)):
            node = 0
            while True:
                d = edit_distance(self.classes[i], self.classes[node])
                nxt = self._children[node].get(d)
                if nxt is None:
                    self._children[node][d] = i
                    self._children.append({})
                    break
                node = nxt

    def __len__(self) -> int:
        return len(self.words)

    def token_trie(self) -> TokenTrie:
        """The words as a trie of class indices (:class:`fastcrnn.ops.beam.TokenTrie`), packed
        on the first call and kept: the Lexicon is immutable, so the packed trie stays valid."""
        if self._trie is None:
            self._trie = pack_token_trie(self._spellings)
        return self._trie

    def nearby(self, classes: Sequence[int], max_distance: int) -> List[int]:
        """Indices of the words within ``max_distance`` edits of ``classes``, ascending. The
        triangle inequality prunes the BK-tree: from a word at distance d only the children
        at distances in [d - max_distance, d + max_distance] can hold matches."""
        max_distance = require_int(max_distance, "max_distance")
        if max_distance < 0:
            raise ValueError(f"max_distance must be >= 0, got {max_distance}")
        query = tuple(int(c) for c in classes)
        found, todo = [], [0]
        while todo:
            node = todo.pop()
            d = edit_distance(query, self.classes[node])
            if d <= max_distance:
                found.append(node)
            for edge, child in self._children[node].items():
                if d - max_distance <= edge <= d + max_distance:
                    todo.append(child)
        return sorted(found)


class LexiconDecoding(NamedTuple):
    """The lexicon word read for each sequence.

    indices: (N,) int64, the word's index in ``Lexicon.words``; -1 when no word lies within the
        edit distance of the greedy reading (or every candidate has probability 0).
    log_probs: (N,) float64, the word's CTC log-probability; -inf where indices is -1.
    words: N strings ("" where indices is -1).
    """

    indices: torch.Tensor
    log_probs: torch.Tensor
    words: List[str]


def lexicon_decode(
    log_probs: torch.Tensor,
    lexicon: Lexicon,
    input_lengths: LengthsLike = None,
    max_edit_distance: int = 3,
    blank: int = 0,
) -> LexiconDecoding:
    """Lexicon-based transcription (the CRNN paper's): for each sequence, the lexicon word of
    highest CTC probability among those within ``max_edit_distance`` edits of its greedy
    reading. With a distance at least the longest word plus the input length, every word is a
    candidate and the answer is the lexicon's most probable word.

    Args:
        log_probs: (T, N, C) or unbatched (T, C) log-probabilities (CPU or CUDA).
        lexicon: a :class:`Lexicon` of the model's charset (C = len(charset) + 1, blank 0).
        input_lengths: (N,) in [0, T]; None: T for every sequence.
        max_edit_distance: the candidates' bound (>= 0).
        blank: the blank class (0 for a Lexicon's charset).

    Returns a :class:`LexiconDecoding` (unbatched input: 0-d tensors and a list of one word).
    Ties go to the earlier word of the lexicon.
    """
    if not isinstance(lexicon, Lexicon):
        raise TypeError(f"lexicon must be a Lexicon, got {type(lexicon).__name__}")
    scores, blank, unbatched = decoder_scores(log_probs, blank)
    T, N, C = scores.shape
    if C != lexicon.charset.num_classes:
        raise ValueError(
            f"log_probs has {C} classes but the lexicon's charset has "
            f"{lexicon.charset.num_classes} (with the blank)"
        )
    lengths = lengths_tensor(
        input_lengths, N, T, scores.device, "input_lengths", unbatched=unbatched
    )
    greedy = ctc_greedy_decode(scores, lengths, blank=blank)
    tokens = greedy.tokens.cpu().tolist()
    counts = greedy.lengths.cpu().tolist()
    pairs = []  # (sequence, word index): every candidate of the batch
    for n in range(N):
        for w in lexicon.nearby(tokens[n][: counts[n]], max_edit_distance):
            pairs.append((n, w))
    indices = torch.full((N,), -1, dtype=torch.int64)
    best = torch.full((N,), float("-inf"), dtype=torch.float64)
    if pairs:
        rows = torch.tensor([n for n, _ in pairs], device=scores.device)
        spelled = [lexicon.classes[w] for _, w in pairs]
        width = max(1, max(len(s) for s in spelled))
        targets = torch.tensor(
            [list(s) + [1] * (width - len(s)) for s in spelled], device=scores.device
        )
        nll = ctc_loss(
            scores.index_select(1, rows),
            targets,
            lengths.index_select(0, rows),
            torch.tensor([len(s) for s in spelled], device=scores.device),
            blank=blank,
            reduction="none",
        )
        word_lp = (-nll).double().cpu().tolist()
        for (n, w), lp in zip(pairs, word_lp):
            if lp > best[n]:  # pairs are in word order: ties keep the earlier word
                best[n] = lp
                indices[n] = w
    words = [lexicon.words[i] if i >= 0 else "" for i in indices.tolist()]
    if unbatched:
        return LexiconDecoding(indices[0], best[0], words[:1])
    return LexiconDecoding(indices, best, words)
