"""LMDB text-line datasets in the crnn.pytorch format (read and write).

Layout: key ``num-samples`` -> the count as ASCII digits; for i in 1..count (1-indexed)
``image-%09d`` -> an encoded image (PNG, JPEG, ...) and ``label-%09d`` -> the UTF-8 label.
"""

import io
import os
import weakref
from typing import Iterable, Optional, Tuple, Union

from PIL import Image, UnidentifiedImageError

from fastcrnn.ocr.data._index import wrap_index
from fastcrnn.ocr.progress import interactive

__all__ = ["LmdbDataset", "write_lmdb", "read_label_file", "image_to_bytes"]


def _lmdb():
    try:
        import lmdb
    except ImportError as exc:
        raise ImportError(
            "LMDB datasets need the lmdb package: pip install 'fastcrnn[ocr]'"
        ) from exc
    return lmdb


def image_to_bytes(image: Union[Image.Image, bytes, str, os.PathLike], fmt: str = "PNG") -> bytes:
    """Encoded image bytes from a PIL image (encoded as ``fmt``), encoded bytes (checked to
    decode) or a path to an image file (stored as is once checked)."""
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        return buf.getvalue()
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            data = f.read()
        what = f"image file {os.fspath(image)!r}"
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data, what = bytes(image), "image bytes"
    else:
        raise TypeError(f"image must be a PIL image, bytes or a path, got {type(image).__name__}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.width == 0 or im.height == 0:
                raise ValueError(f"{what} is empty (0 pixels)")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{what} is not a readable image: {exc}") from None
    return data


def write_lmdb(
    path: Union[str, os.PathLike],
    samples: Iterable[Tuple[object, str]],
    map_size: int = 1 << 28,
    commit_every: int = 1000,
    progress: bool = False,
) -> int:
    """Writes ``(image, label)`` pairs to a new crnn.pytorch-format LMDB at ``path``.

    ``image`` is anything :func:`image_to_bytes` accepts; ``label`` a str (stored UTF-8). The map
    grows as needed. Refuses to write into an existing non-empty LMDB (FileExistsError).
    Returns the number of samples written.
    """
    lmdb = _lmdb()
    path = os.fspath(path)
    if os.path.exists(os.path.join(path, "data.mdb")):
        raise FileExistsError(f"{path!r} already holds an LMDB database; choose a new folder")
    os.makedirs(path, exist_ok=True)
    env = lmdb.open(path, map_size=map_size)
    cache = {}
    count = 0

    def flush(items):
        nonlocal env
        while True:
            try:
                with env.begin(write=True) as txn:
                    for k, v in items.items():
                        txn.put(k, v)
                return
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)

    iterator = samples
    if progress and interactive():
        from tqdm import tqdm

        iterator = tqdm(samples, desc=f"writing {path}", unit="img")
    try:
        for image, label in iterator:
            if not isinstance(label, str):
                raise TypeError(
                    f"sample {count + 1}: label must be a str, got {type(label).__name__}"
                )
            count += 1
            try:
                data = image_to_bytes(image)
            except ValueError as exc:
                raise ValueError(f"sample {count}: {exc}") from None
            cache[b"image-%09d" % count] = data
            cache[b"label-%09d" % count] = label.encode("utf-8")
            if len(cache) >= 2 * commit_every:
                flush(cache)
                cache = {}
        cache[b"num-samples"] = str(count).encode()
        flush(cache)
    finally:
        env.close()
    return count


def read_label_file(label_file: Union[str, os.PathLike], image_root: Optional[str] = None):
    """Yields ``(image_path, label)`` from a ``path<TAB>label`` UTF-8 file (one sample a line;
    relative paths are taken from ``image_root``, default the label file's folder). Empty lines
    are skipped; a line without a tab raises ValueError naming the line number."""
    label_file = os.fspath(label_file)
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(label_file))
    with open(label_file, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            if "\t" not in line:
                raise ValueError(
                    f"{label_file!r}, line {lineno}: expected 'path<TAB>label', got {line!r}"
                )
            rel, label = line.split("\t", 1)
            full = rel if os.path.isabs(rel) else os.path.join(root, rel)
            if not os.path.isfile(full):
                raise FileNotFoundError(f"{label_file!r}, line {lineno}: image {full!r} not found")
            yield full, label


class _SharedEnv:
    """One read-only LMDB environment of a folder, shared by every dataset of this process that
    reads the folder (py-lmdb refuses to open the same environment twice in a process)."""

    def __init__(self, path: str):
        self.pid = os.getpid()
        self.env = _lmdb().open(
            path,
            max_readers=126,
            readonly=True,
            lock=False,
            readahead=False,
            meminit=False,
        )
        # closed when the last dataset using it goes away
        weakref.finalize(self, self.env.close)


# realpath -> the environment open on it; an entry lives while some dataset holds it
_SHARED_ENVS: "weakref.WeakValueDictionary[str, _SharedEnv]" = weakref.WeakValueDictionary()


def _shared_env(path: str) -> _SharedEnv:
    """The environment of ``path`` for this process, opened on first use."""
    key = os.path.realpath(path)
    shared = _SHARED_ENVS.get(key)
    if shared is not None and shared.pid != os.getpid():
        # inherited through fork(): the child must not use the parent's environment, and must
        # close its copy before opening the folder again
        shared.env.close()
        shared = None
    if shared is None:
        shared = _SharedEnv(path)
        _SHARED_ENVS[key] = shared
    return shared


class LmdbDataset:
    """Reads a crnn.pytorch-format LMDB: ``dataset[i]`` (0-based) is ``(PIL "L" image, str)``.

    Opened read-only and lazily in each process (safe with DataLoader workers); datasets of the
    same folder in one process (e.g. one LMDB as --trainRoot and --valRoot) share one
    environment. Raises
    FileNotFoundError for a missing database, ValueError when ``num-samples`` is missing or
    malformed, and ValueError naming the key for a missing or undecodable record.

    Args:
        root: the LMDB folder.
        mode: PIL mode the images are converted to ("L" grayscale by default, "RGB" possible).
    """

    def __init__(self, root: Union[str, os.PathLike], mode: str = "L"):
        self.root = os.fspath(root)
        self.mode = mode
        if not os.path.exists(os.path.join(self.root, "data.mdb")):
            raise FileNotFoundError(f"no LMDB database at {self.root!r} (data.mdb missing)")
        self._shared: Optional[_SharedEnv] = None
        with self._open().begin(write=False) as txn:
            raw = txn.get(b"num-samples")
        if raw is None:
            raise ValueError(
                f"LMDB {self.root!r} has no 'num-samples' key: not a crnn.pytorch dataset"
            )
        try:
            self.num_samples = int(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise ValueError(
                f"LMDB {self.root!r}: 'num-samples' is not an integer: {raw!r}"
            ) from None
        if self.num_samples < 0:
            raise ValueError(f"LMDB {self.root!r}: negative 'num-samples' {self.num_samples}")

    def _open(self):
        if self._shared is None or self._shared.pid != os.getpid():
            self._shared = _shared_env(self.root)
        return self._shared.env

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_shared"] = None
        return state

    def __len__(self) -> int:
        return self.num_samples

    def label(self, index: int) -> str:
        """The label of sample ``index`` (0-based) without decoding its image."""
        index = self._check_index(index)
        with self._open().begin(write=False) as txn:
            return self._get_label(txn, index)

    def _check_index(self, index) -> int:
        if isinstance(index, bool) or not hasattr(index, "__index__"):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        return wrap_index(int(index), self.num_samples)

    def _get_label(self, txn, index: int) -> str:
        key = b"label-%09d" % (index + 1)
        raw = txn.get(key)
        if raw is None:
            raise ValueError(f"LMDB {self.root!r}: key {key.decode()} is missing")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"LMDB {self.root!r}: {key.decode()} is not valid UTF-8") from None

    def __getitem__(self, index: int) -> Tuple[Image.Image, str]:
        index = self._check_index(index)
        with self._open().begin(write=False) as txn:
            key = b"image-%09d" % (index + 1)
            data = txn.get(key)
            if data is None:
                raise ValueError(f"LMDB {self.root!r}: key {key.decode()} is missing")
            label = self._get_label(txn, index)
            data = bytes(data)
        try:
            img = Image.open(io.BytesIO(data))
            img = img.convert(self.mode)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise ValueError(
                f"LMDB {self.root!r}: {key.decode()} is not a readable image ({exc})"
            ) from None
        return img, label
