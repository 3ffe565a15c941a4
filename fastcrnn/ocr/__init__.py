"""The OCR application: data, training, evaluation and the CLI (needs the [ocr] extra)."""
