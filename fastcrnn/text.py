"""Character sets and the CTC label converter (text <-> class indices).

Class 0 is the CTC blank; the i-th character of a :class:`Charset` (0-based) is class ``i + 1``.
"""

import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union, cast

import torch

if TYPE_CHECKING:
    from fastcrnn.ops.decode import GreedyDecoding

__all__ = ["Charset", "LabelConverter"]

_UNKNOWN_POLICIES = ("error", "skip")


def _fold(ch: str) -> str:
    """Case folding used by case-insensitive charsets: str.lower() when it keeps one character."""
    low = ch.lower()
    return low if len(low) == 1 else ch


class Charset:
    """An ordered alphabet of distinct single characters; class 0 is reserved for the CTC blank.

    Args:
        chars: the characters, as a string (each code point is one character) or a sequence of
            one-character strings. Must be non-empty, without duplicates.
        case_insensitive: crnn.pytorch's ``strLabelConverter(alphabet, ignore_case=True)``
            layout: every alphabet entry is lower-cased (``str.lower``) in place and keeps its
            class, so there are always ``len(chars) + 1`` classes; texts are lower-cased before
            :meth:`index`. Entries that become equal (``"aA"``) keep a class each, as
            crnn.pytorch's do: decoding either gives the lower-case character, encoding gives
            the LAST of them (crnn.pytorch's ``dict[char] = i + 1`` loop), so the earlier ones
            never appear in a target. A character whose lower case is several characters (only
            ``"İ"``) is kept as it is: lower-casing the whole string would shift every later
            class, as ``alphabet.lower()`` does in crnn.pytorch.

    ``alphabet`` holds the entries as given, ``chars`` the character of each class (folded when
    case-insensitive). Raises ValueError for an empty alphabet, a duplicate (naming its
    position) or an entry that is not exactly one character; TypeError for a non-string input.
    """

    blank = 0

    def __init__(self, chars: Union[str, Sequence[str]], case_insensitive: bool = False):
        if isinstance(chars, Charset):
            case_insensitive = case_insensitive or chars.case_insensitive
            chars = chars.alphabet
        if not isinstance(chars, str):
            if not isinstance(chars, (list, tuple)):
                raise TypeError(
                    f"chars must be a str or a sequence of str, got {type(chars).__name__}"
                )
            for i, c in enumerate(chars):
                if not isinstance(c, str):
                    raise TypeError(f"chars[{i}] must be a str, got {type(c).__name__}")
                if len(c) != 1:
                    raise ValueError(f"chars[{i}] must be exactly one character, got {c!r}")
        if not isinstance(case_insensitive, bool):
            raise TypeError(
                f"case_insensitive must be a bool, got {type(case_insensitive).__name__}"
            )
        if len(chars) == 0:
            raise ValueError("chars must not be empty (the alphabet needs at least one character)")
        self.case_insensitive: bool = case_insensitive
        seen: Dict[str, int] = {}
        for i, c in enumerate(chars):
            if c in seen:
                raise ValueError(
                    f"chars has a duplicate character {c!r} at position {i} "
                    f"(first at position {seen[c]})"
                )
            seen[c] = i
        self.alphabet: Tuple[str, ...] = tuple(chars)
        self.chars: Tuple[str, ...] = (
            tuple(_fold(c) for c in chars) if case_insensitive else self.alphabet
        )
        # a character that occurs twice after folding maps to its last class (crnn.pytorch)
        self._index = {c: i + 1 for i, c in enumerate(self.chars)}

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: Union[str, os.PathLike], case_insensitive: bool = False) -> "Charset":
        """Reads a UTF-8 file (a BOM is allowed) with one character per line.

        Empty lines are skipped; a line's end (``\\n`` or ``\\r\\n``) is not part of it, other
        whitespace is (a line holding one space is the space character). Raises ValueError naming
        the line number for a duplicate or a line of more than one character, and for a file
        that is not valid UTF-8; FileNotFoundError when it does not exist.
        """
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"alphabet file {path!r} does not exist") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"alphabet file {path!r} is not valid UTF-8: {exc}") from None
        chars: List[str] = []
        first_line: Dict[str, int] = {}
        for lineno, line in enumerate(text.split("\n"), start=1):
            if line.endswith("\r"):
                line = line[:-1]
            if line == "":
                continue
            if len(line) != 1:
                raise ValueError(
                    f"alphabet file {path!r}, line {lineno}: expected exactly one "
                    f"character, got {line!r} ({len(line)} characters)"
                )
            if line in first_line:
                raise ValueError(
                    f"alphabet file {path!r}, line {lineno}: duplicate character "
                    f"{line!r} (first on line {first_line[line]})"
                )
            first_line[line] = lineno
            chars.append(line)
        if not chars:
            raise ValueError(f"alphabet file {path!r} holds no characters")
        return cls(chars, case_insensitive=case_insensitive)

    @classmethod
    def load(
        cls, spec: Union[str, os.PathLike, "Charset"], case_insensitive: bool = False
    ) -> "Charset":
        """An alphabet from a Charset, a path to an existing file (see :meth:`from_file`) or a
        string of characters (the ``--alphabet`` command-line convention)."""
        if isinstance(spec, Charset):
            return cls(spec.alphabet, case_insensitive=case_insensitive or spec.case_insensitive)
        if isinstance(spec, os.PathLike) or (
            isinstance(spec, str) and len(spec) > 1 and os.path.isfile(spec)
        ):
            return cls.from_file(spec, case_insensitive=case_insensitive)
        return cls(spec, case_insensitive=case_insensitive)

    # -- queries ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.chars)

    @property
    def num_classes(self) -> int:
        """Classes of a CTC model over this alphabet: the characters plus the blank."""
        return len(self.chars) + 1

    def __contains__(self, ch: str) -> bool:
        return self.normalize(ch) in self._index if isinstance(ch, str) else False

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Charset)
            and self.alphabet == other.alphabet
            and self.case_insensitive == other.case_insensitive
        )

    def __hash__(self) -> int:
        return hash((self.alphabet, self.case_insensitive))

    def __repr__(self) -> str:
        return f"Charset({self.to_string()!r}, case_insensitive={self.case_insensitive})"

    def to_string(self) -> str:
        """The alphabet as given, as one string (round-trips through
        ``Charset(s, case_insensitive=...)``)."""
        return "".join(self.alphabet)

    def folded_duplicates(self) -> List[str]:
        """The characters that two or more alphabet entries fold to (case-insensitive only):
        each has a class per entry, and only its last class is ever a training target."""
        counts: Dict[str, int] = {}
        for c in self.chars:
            counts[c] = counts.get(c, 0) + 1
        return [c for c, n in counts.items() if n > 1]

    def normalize(self, text: str) -> str:
        """The text as this charset sees it (case-folded when case-insensitive)."""
        if not self.case_insensitive:
            return text
        return "".join(_fold(c) for c in text)

    def index(self, ch: str) -> int:
        """The class of one character (1-based; KeyError when absent; the last class of a
        character that several entries fold to)."""
        return self._index[self.normalize(ch)]

    def char(self, cls_index: int) -> str:
        """The character of class ``cls_index`` in [1, len]; ValueError otherwise (0 is blank)."""
        if not 1 <= cls_index <= len(self.chars):
            raise ValueError(
                f"class index {cls_index} is not a character of this charset "
                f"(valid: 1..{len(self.chars)}; 0 is the blank)"
            )
        return self.chars[cls_index - 1]

    def extended(self, new_chars: Union[str, Sequence[str]]) -> "Charset":
        """A charset with ``new_chars`` appended (classes of existing characters unchanged).

        Raises ValueError when a new character is already present or repeated."""
        new = list(new_chars)
        if not new:
            raise ValueError("new_chars must not be empty")
        for c in new:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"new_chars entries must be single characters, got {c!r}")
            if c in self:
                folded = (
                    f" (as {self.normalize(c)!r}: the charset ignores case)"
                    if self.normalize(c) != c
                    else ""
                )
                raise ValueError(f"new_chars: character {c!r} is already in the charset{folded}")
        return Charset(list(self.alphabet) + new, case_insensitive=self.case_insensitive)


class LabelConverter:
    """Converts between strings and CTC class indices (blank = 0, characters from 1).

    Args:
        charset: a :class:`Charset`, an alphabet string, or a path to an alphabet file.
        case_insensitive: fold case (see :class:`Charset`); ORed with the charset's own flag.
        unknown: what :meth:`encode` does with a character not in the charset: ``"error"``
            (default) raises ValueError naming the character and the string, ``"skip"`` drops it.
    """

    def __init__(
        self,
        charset: Union[Charset, str, os.PathLike],
        case_insensitive: bool = False,
        unknown: str = "error",
    ):
        if unknown not in _UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be one of {_UNKNOWN_POLICIES}, got {unknown!r}")
        self.charset = Charset.load(charset, case_insensitive=case_insensitive)
        self.unknown = unknown

    @property
    def num_classes(self) -> int:
        return self.charset.num_classes

    @property
    def blank(self) -> int:
        return Charset.blank

    def encode_one(self, text: str) -> List[int]:
        """The class indices of one string."""
        if not isinstance(text, str):
            raise TypeError(f"texts must hold str, got {type(text).__name__}")
        out = []
        norm = self.charset.normalize(text)
        index = self.charset._index
        for pos, ch in enumerate(norm):
            k = index.get(ch)
            if k is None:
                if self.unknown == "skip":
                    continue
                raise ValueError(
                    f"character {text[pos]!r} (position {pos}) of {text!r} is not "
                    f"in the charset; pass unknown='skip' to drop such characters"
                )
            out.append(k)
        return out

    def encode(self, texts: Iterable[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encodes a batch of strings for CTC.

        Args:
            texts: a list (or tuple) of str; a single str is rejected (TypeError) to avoid
                treating its characters as a batch.

        Returns:
            ``(targets, lengths)``: targets is a 1-D int64 tensor, the concatenated class indices
            of all strings (the "flat" CTC target layout); lengths is an (N,) int64 tensor.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of str, not a single str (wrap it: [text])")
        if isinstance(texts, torch.Tensor) or not hasattr(texts, "__iter__"):
            raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
        flat: List[int] = []
        lengths: List[int] = []
        for t in texts:
            ids = self.encode_one(t)
            flat.extend(ids)
            lengths.append(len(ids))
        return (torch.tensor(flat, dtype=torch.int64), torch.tensor(lengths, dtype=torch.int64))

    def decode_tokens(self, tokens: Sequence[int]) -> str:
        """The string of a sequence of (already collapsed, blank-free) class indices."""
        return "".join(self.charset.char(int(k)) for k in tokens)

    def decode(
        self, decoding: "GreedyDecoding", with_confidence: bool = False
    ) -> Union[str, Tuple[str, float], List[str], List[Tuple[str, float]]]:
        """Strings from a :class:`fastcrnn.GreedyDecoding` (the result of ctc_greedy_decode).

        Returns a list of str (one per batch element), or with ``with_confidence=True`` a list of
        ``(str, confidence)`` where confidence is the product of the token probabilities of the
        string (``token_probs``: for each token, its highest probability over the frames of its
        run) — 1.0 for an empty string. For an unbatched decoding (1-D tokens) a single str or
        ``(str, confidence)`` is returned.

        Raises ValueError for a row marked invalid (length -1, from unvalidated bad input
        lengths) or a token that is not a character of the charset (e.g. a model with more
        classes than this charset).
        """
        for name in ("tokens", "lengths", "token_probs"):
            if not hasattr(decoding, name):
                raise TypeError(f"decoding must be a GreedyDecoding, got {type(decoding).__name__}")
        tokens: Union[torch.Tensor, List[Any]]  # tensors, then their .tolist()
        lengths: Union[torch.Tensor, List[Any]]
        probs: Optional[torch.Tensor]
        tokens, lengths, probs = decoding.tokens, decoding.lengths, decoding.token_probs
        unbatched = tokens.dim() == 1
        if unbatched:
            tokens, lengths, probs = tokens[None], lengths.reshape(1), probs[None]
        tokens = tokens.detach().cpu().tolist()
        lengths = lengths.detach().cpu().tolist()
        probs = probs.detach().to(torch.float64).cpu() if with_confidence else None
        out: List[Any] = []  # str, or (str, confidence)
        for row, (toks, n) in enumerate(zip(tokens, lengths)):
            if n < 0:
                raise ValueError(
                    f"decoding row {row} is marked invalid (length {n}): its input "
                    f"length was out of range"
                )
            text = "".join(self._char(k, row) for k in toks[:n])
            if with_confidence:
                conf = float(torch.prod(cast(torch.Tensor, probs)[row, :n])) if n else 1.0
                out.append((text, conf))
            else:
                out.append(text)
        return out[0] if unbatched else out

    def _char(self, k: int, row: int) -> str:
        if not 1 <= k <= len(self.charset):
            raise ValueError(
                f"decoding row {row} holds class {k}, which is not a character of "
                f"the charset (1..{len(self.charset)}; the model has more classes "
                f"than the charset?)"
            )
        return self.charset.chars[k - 1]
