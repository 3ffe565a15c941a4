"""Runnable examples (``python -m fastcrnn <name>``); each module has ``main(argv=None)``."""
