"""`python -m fastcrnn make-lm`: train an n-gram language model from a text file, write ARPA.

Needs none of the [ocr] extra's packages: :func:`main` is dispatched before that check.
"""

import argparse
import os
import sys
import warnings
from typing import Iterator, List, Optional

from fastcrnn.lm import DISCOUNT_FALLBACK, WORD_DELIMITER, train_char_lm

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastcrnn make-lm",
        description="Train an interpolated modified Kneser-Ney n-gram LM (character-level by "
        "default: one token per character, a space as --word-delimiter) and write it as an "
        "ARPA file that KenLM and fastcrnn.lm.NGramLM.from_arpa read.",
    )
    p.add_argument("--order", type=int, required=True, help="n-gram order N >= 1")
    p.add_argument("--text", required=True, help="UTF-8 corpus, one sentence (text line) per line")
    p.add_argument("--output", required=True, help="the ARPA file to write (.gz: gzipped)")
    p.add_argument(
        "--word-level", action="store_true", help="tokens are whitespace-separated words"
    )
    p.add_argument(
        "--word-delimiter",
        default=WORD_DELIMITER,
        help=f"character-level: the token a space becomes (default {WORD_DELIMITER})",
    )
    p.add_argument(
        "--discount-fallback",
        type=float,
        nargs=3,
        metavar=("D1", "D2", "D3"),
        default=list(DISCOUNT_FALLBACK),
        help="discounts of an order whose Kneser-Ney estimate fails on small data "
        "(default %(default)s, lmplz's)",
    )
    p.add_argument(
        "--no-discount-fallback",
        action="store_true",
        help="fail instead of using --discount-fallback (lmplz's default)",
    )
    return p


def _read_lines(path: str) -> Iterator[str]:
    # decoded line by line so that a bad byte is reported with its line number
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text ({exc.reason})") from None


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "fastcrnn make-lm"
    try:
        if not os.path.isfile(args.text):
            raise FileNotFoundError(f"--text: {args.text!r} is not a file")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                lm = train_char_lm(
                    _read_lines(args.text),
                    args.order,
                    word_level=args.word_level,
                    word_delimiter=args.word_delimiter,
                    discount_fallback=None
                    if args.no_discount_fallback
                    else tuple(args.discount_fallback),
                )
            except ValueError as exc:
                # problems of the corpus name the file; "lines: " is train_char_lm's word for it
                msg = str(exc)
                if msg.startswith("lines: "):
                    msg = f"{args.text}: {msg[len('lines: ') :]}"
                raise ValueError(msg) from None
        for w in caught:
            print(f"{prog}: warning: {w.message}", file=sys.stderr)
        lm.write_arpa(args.output)
    except (ValueError, TypeError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{c} {k}-grams" for k, c in enumerate(lm.counts, start=1))
    print(f"wrote {args.output}: order {lm.order}, {len(lm.vocab)} tokens, {counts}")
    return 0
