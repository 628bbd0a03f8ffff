"""Finding, validating, parsing and caching the Sign-MNIST CSV files.

The Kaggle release is two CSVs with a header ``label,pixel1,...,pixel784`` and one 28x28
grayscale image per row. This module turns either file into a pair of uint8 arrays
``(images [N, 784], labels [N])`` and keeps a binary cache of that pair, so that only the
first load of a given file pays for CSV parsing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from labkit.files import atomic_path

N_PIXELS = 28 * 28
HEADER = ["label"] + [f"pixel{i}" for i in range(1, N_PIXELS + 1)]
MAX_LABEL = 25  # Z; the alphabet's last letter. J (9) and Z (25) have no rows in the release.

SPLIT_FILES = {"train": "sign_mnist_train.csv", "test": "sign_mnist_test.csv"}
# sha256 of the decompressed Kaggle files (datamunge/sign-language-mnist).
KAGGLE_SHA256 = {
    "sign_mnist_train.csv": "b7ff39ad5f1210fa765ce11aa5f20c2e97fe467ffc22231aac923c863eef75c4",
    "sign_mnist_test.csv": "178c0dd21c4b0e86d58df12f14ea1e9efa795ad19d146802b3b28094a16d56ae",
}
# Bump when the cache layout or the parsing rules change, so old caches are ignored.
CACHE_VERSION = 1


class DataError(ValueError):
    """Bad input data: the message is one line that names the file and the problem."""


@dataclass(frozen=True)
class CSVSource:
    """Where one split's CSV lives: a plain/gzip file, or a member of a zip archive."""

    path: Path
    member: str | None = None  # name inside a zip archive

    @property
    def name(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    @property
    def base_name(self) -> str:
        name = Path(self.member or self.path.name).name
        return name[:-3] if name.endswith(".gz") else name

    def read_bytes(self) -> bytes:
        """The decompressed CSV text as bytes."""
        try:
            if self.member is not None:
                with zipfile.ZipFile(self.path) as archive:
                    raw = archive.read(self.member)
            else:
                raw = self.path.read_bytes()
            if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
                raw = gzip.decompress(raw)
        except (OSError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"{self.name}: cannot read ({exc})") from None
        return raw


def default_data_dir() -> Path:
    """The copy of the Kaggle CSVs shipped in the repository (``data/``)."""
    return Path(__file__).resolve().parent.parent / "data"


def default_cache_dir() -> Path:
    env = os.environ.get("SIGN_MNIST_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sign-mnist-lab"


def find_split_file(data_dir: str | os.PathLike, split: str) -> CSVSource:
    """Locate the CSV of ``split`` ("train" or "test") under ``data_dir``.

    Accepts a folder holding ``sign_mnist_<split>.csv`` or ``.csv.gz`` (directly or in the
    Kaggle download's nested folder), a zip archive holding it, or ``data_dir`` being the CSV
    file itself.
    """
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(SPLIT_FILES)}")
    data_dir = Path(data_dir)
    wanted = SPLIT_FILES[split]
    if not data_dir.exists():
        raise DataError(f"{data_dir}: no such file or directory")
    if data_dir.is_file():
        if zipfile.is_zipfile(data_dir):
            return _find_in_zip(data_dir, wanted)
        return CSVSource(data_dir)
    for candidate in (wanted, wanted + ".gz"):
        if (data_dir / candidate).is_file():
            return CSVSource(data_dir / candidate)
    # Kaggle's archive unpacks to sign_mnist_train/sign_mnist_train.csv (and the same for test).
    for candidate in sorted(data_dir.rglob(wanted + "*")):
        if candidate.is_file() and candidate.name in (wanted, wanted + ".gz"):
            return CSVSource(candidate)
    for archive in sorted(data_dir.glob("*.zip")):
        try:
            return _find_in_zip(archive, wanted)
        except DataError:
            continue
    raise DataError(f"{data_dir}: no {wanted} or {wanted}.gz found (nor a zip holding it)")


def _find_in_zip(archive: Path, wanted: str) -> CSVSource:
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            if Path(member).name in (wanted, wanted + ".gz") and "__MACOSX" not in member:
                return CSVSource(archive, member)
    raise DataError(f"{archive}: the zip archive holds no {wanted}")


def parse_csv(source: CSVSource) -> tuple[np.ndarray, np.ndarray, str]:
    """Parse and validate one CSV: returns (images uint8 [N, 784], labels uint8 [N], sha256)."""
    raw = source.read_bytes()
    sha256 = hashlib.sha256(raw).hexdigest()
    first_line = raw.split(b"\n", 1)[0].decode("utf-8", "replace").strip().lstrip("\ufeff")
    header = [h.strip() for h in first_line.split(",")]
    if header != HEADER:
        raise DataError(f"{source.name}: {_header_problem(header)}")
    try:
        frame = pd.read_csv(io.BytesIO(raw), header=0, dtype=None, engine="c", low_memory=False)
    except pd.errors.ParserError as exc:
        # pandas says e.g. "Error tokenizing data. C error: Expected 785 fields in line 7, saw 786"
        detail = str(exc).split("C error: ")[-1].strip()
        raise DataError(f"{source.name}: every row needs 785 comma-separated values: {detail}") from None
    if len(frame) == 0:
        raise DataError(f"{source.name}: the file has a header but no rows")
    values = _integer_values(frame, source)
    labels, pixels = values[:, 0], values[:, 1:]
    _check_range(labels[:, None], 0, MAX_LABEL, "label", source, column_offset=0)
    _check_range(pixels, 0, 255, "pixel", source, column_offset=1)
    return np.ascontiguousarray(pixels, dtype=np.uint8), labels.astype(np.uint8), sha256


def _header_problem(header: list[str]) -> str:
    if len(header) != len(HEADER):
        return (
            f"header must be 'label,pixel1,...,pixel784' (785 columns), "
            f"got {len(header)} columns starting {','.join(header[:3])!r}"
        )
    position = next(i for i, (got, want) in enumerate(zip(header, HEADER)) if got != want)
    return f"header column {position + 1} is {header[position]!r}, expected {HEADER[position]!r}"


def _integer_values(frame: pd.DataFrame, source: CSVSource) -> np.ndarray:
    """All cells as int64, or a DataError naming the first non-integer cell."""
    bad_columns = [c for c in frame.columns if not pd.api.types.is_integer_dtype(frame[c].dtype)]
    if bad_columns:
        first_row, first_column, first_value = None, None, None
        for column in bad_columns:
            as_number = pd.to_numeric(frame[column], errors="coerce")
            bad = as_number.isna() | (as_number != np.floor(as_number))
            row = int(np.argmax(bad.to_numpy())) if bad.any() else None
            if row is not None and (first_row is None or row < first_row):
                first_row, first_column, first_value = row, column, frame[column].iloc[row]
        if first_row is not None:
            shown = "an empty cell" if pd.isna(first_value) else f"{first_value!r}"
            raise DataError(
                f"{source.name}: line {first_row + 2}, column {first_column!r}: "
                f"{shown} is not an integer"
            )
    return frame.to_numpy(dtype=np.int64)


def _check_range(values, low, high, what, source, column_offset):
    bad = (values < low) | (values > high)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        column = HEADER[col + column_offset]
        raise DataError(
            f"{source.name}: line {row + 2}, column {column!r}: {what} {values[row, col]} "
            f"is out of range {low}-{high}"
        )


def load_split(
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 [N, 784]) and labels (uint8 [N]) of one split, from the cache when fresh."""
    source = find_split_file(data_dir if data_dir is not None else default_data_dir(), split)
    cache_file = _cache_path(source, Path(cache_dir) if cache_dir else default_cache_dir())
    if use_cache:
        cached = _read_cache(cache_file)
        if cached is not None:
            images, labels, sha256 = cached
            _warn_if_not_kaggle(source, sha256)
            return images, labels
    images, labels, sha256 = parse_csv(source)
    _warn_if_not_kaggle(source, sha256)
    if use_cache:
        _write_cache(cache_file, images, labels, sha256)
    return images, labels


_warned: set[tuple[str, str]] = set()


def _warn_if_not_kaggle(source: CSVSource, sha256: str) -> None:
    expected = KAGGLE_SHA256.get(source.base_name)
    if expected is not None and sha256 != expected and (source.name, sha256) not in _warned:
        _warned.add((source.name, sha256))  # once per file and process, not on every load
        warnings.warn(
            f"{source.name}: sha256 {sha256[:12]}... differs from the Kaggle release "
            f"({expected[:12]}...); using it as your own data",
            stacklevel=3,
        )


def _cache_path(source: CSVSource, cache_dir: Path) -> Path:
    # Keyed on where the file is, its size and its modification time: a changed or replaced
    # CSV gets a new key, and stat() is all a cache hit costs.
    stat = source.path.stat()
    key = json.dumps(
        [CACHE_VERSION, str(source.path.resolve()), source.member, stat.st_size, stat.st_mtime_ns]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return cache_dir / f"{source.base_name.removesuffix('.csv')}-{digest}.npz"


def _checksum(images: np.ndarray, labels: np.ndarray) -> int:
    return zlib.crc32(labels.tobytes(), zlib.crc32(images.tobytes()))


def _read_cache(cache_file: Path):
    """The cached arrays, or None when the cache is missing, cut off or corrupt."""
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as stored:
            images, labels = stored["images"], stored["labels"]
            meta = json.loads(str(stored["meta"]))
    except Exception:  # a half-written or damaged file: any reader error means "rebuild"
        return None
    if (
        meta.get("version") != CACHE_VERSION
        or images.dtype != np.uint8
        or images.shape != (meta.get("rows"), N_PIXELS)
        or labels.shape != (meta.get("rows"),)
        or _checksum(images, labels) != meta.get("crc32")
    ):
        return None
    return images, labels, meta["sha256"]


def _write_cache(cache_file: Path, images: np.ndarray, labels: np.ndarray, sha256: str) -> None:
    meta = {
        "version": CACHE_VERSION,
        "rows": int(len(labels)),
        "crc32": _checksum(images, labels),
        "sha256": sha256,
    }
    try:
        # Never a half-written cache under the real name, even after Ctrl-C or a kill.
        with atomic_path(cache_file) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, images=images, labels=labels, meta=np.array(json.dumps(meta)))
    except OSError as exc:  # a read-only cache folder slows loading down but is not an error
        warnings.warn(f"could not write the data cache {cache_file}: {exc}", stacklevel=3)
