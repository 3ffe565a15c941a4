"""Datasets (synthetic lines, crnn.pytorch LMDB) and the batching collate."""
from fastcrnn.ocr.data.collate import AlignCollate, Batch, image_to_tensor, resize_image  # noqa: F401
from fastcrnn.ocr.data.lmdb_dataset import (LmdbDataset, image_to_bytes, read_label_file,  # noqa: F401
                                            write_lmdb)
from fastcrnn.ocr.data.synthetic import SyntheticTextLines, find_fonts, render_text_line  # noqa: F401
