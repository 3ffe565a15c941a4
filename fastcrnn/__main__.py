"""`python -m fastcrnn <command>` (also the `fastcrnn` console script)."""

import sys


def main(argv=None):
    from fastcrnn.ocr.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
