"""The OCR application: data, training, evaluation, the Recognizer and the CLI (needs the [ocr]
extra).

``fastcrnn.ocr.Recognizer`` and ``fastcrnn.ocr.Recognition`` are loaded on first use, so that
importing the package (as the CLI does before it checks the extra is installed) needs nothing
beyond torch.
"""

__all__ = ["Recognition", "Recognizer"]


def __getattr__(name):
    if name in __all__:
        from fastcrnn.ocr import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'fastcrnn.ocr' has no attribute {name!r}")
