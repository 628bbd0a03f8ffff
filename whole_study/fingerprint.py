"""What a part's results depend on, as one JSON-ready dict and its digest.

A part's results are reused only when its fingerprint is the same as when they were computed:

* ``settings``: the part's profile (every field) and options, the seed, the backend asked for
  and the one it resolves to, the rows limit;
* ``data``: the sha256 of each CSV's decompressed contents (so a ``.csv`` and its ``.csv.gz``
  are the same data), from a small cache keyed by the file's path, size and modification time
  (:func:`data_identity`): a touched-but-unchanged file is hashed again and still matches;
* ``code``: the package version and a sha256 over the source files the part runs (its
  packages' ``*.py`` files, see :data:`whole_study.parts.Part.packages`), and the versions of the
  numerical libraries.

:func:`differences` names what changed, for the progress line that says why a part is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from datamodules.csv_io import KAGGLE_SHA256, SPLIT_FILES, default_data_dir, find_split_file
from labkit.files import write_json

REPO_ROOT = Path(__file__).resolve().parent.parent
_CACHE_FORMAT = 1


def data_identity(data_dir: str | os.PathLike | None, cache_file: str | os.PathLike | None = None) -> dict:
    """``{split: {"file", "sha256", "bytes"}}`` for "train" and "test", plus ``kaggle`` (both are
    the Kaggle release). ``cache_file`` keeps the digests by (path, member, size, mtime) so that
    an unchanged file is not decompressed and hashed again. DataError when a file is missing."""
    cache_path = Path(cache_file) if cache_file else None
    cache = _read_cache(cache_path)
    identity, changed = {}, False
    for split in SPLIT_FILES:
        source = find_split_file(data_dir if data_dir is not None else default_data_dir(), split)
        stat = source.path.stat()
        key = json.dumps([str(source.path.resolve()), source.member, stat.st_size, stat.st_mtime_ns])
        entry = cache.get(key)
        if entry is None:
            raw = source.read_bytes()
            entry = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
            cache[key], changed = entry, True
        identity[split] = {"file": source.base_name, **entry}
    identity["kaggle"] = all(identity[split]["sha256"] == KAGGLE_SHA256[name] for split, name in SPLIT_FILES.items())
    if cache_path is not None and changed:
        write_json(cache_path, {"format": _CACHE_FORMAT, "entries": cache})
    return identity


def _read_cache(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(payload, dict) or payload.get("format") != _CACHE_FORMAT or not isinstance(payload.get("entries"), dict):
        return {}
    return payload["entries"]


def source_digest(packages: tuple[str, ...], extra_files: tuple[str, ...] = ()) -> str:
    """sha256 over the ``*.py`` files of ``packages`` (folders under the repository root) and
    ``extra_files``, each as its path relative to the root and its bytes, in sorted order."""
    files = sorted({path for package in packages for path in (REPO_ROOT / package).rglob("*.py")}
                   | {REPO_ROOT / name for name in extra_files})
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sign-mnist-lab")
    except PackageNotFoundError:
        return None


def digest(fingerprint: dict) -> str:
    """sha256 of the fingerprint's canonical JSON."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()


def differences(old: dict | None, new: dict) -> list[str]:
    """Dotted names of what differs, two levels deep (e.g. ``settings.profile``, ``data.train``, ``code.sources``)."""
    if not isinstance(old, dict):
        return ["no fingerprint"]
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            found += [f"{key}.{sub}" for sub in sorted(set(a) | set(b)) if a.get(sub) != b.get(sub)]
        else:
            found.append(key)
    return found
