"""Datasets (synthetic lines, crnn.pytorch LMDB) and the batching collate."""

from fastcrnn.ocr.data.collate import (  # noqa: F401
    AlignCollate,
    Batch,
    image_to_tensor,
    resize_image,
)
from fastcrnn.ocr.data.lmdb_dataset import (  # noqa: F401
    LmdbDataset,
    image_to_bytes,
    read_label_file,
    write_lmdb,
)
from fastcrnn.ocr.data.synthetic import (  # noqa: F401
    SyntheticTextLines,
    find_fonts,
    render_text_line,
)
