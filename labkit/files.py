"""Files written atomically: a reader (or a rerun after Ctrl-C) never sees half a file.

Everything is written to a temporary name beside the target and renamed over it at the end;
on any failure, KeyboardInterrupt included, the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix last, so that writers which look at it (matplotlib, NumPy) see the real one.
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); a results file gets the permissions any new file
        # gets here (0666 less the umask), as a plain open() would have given it.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it back at once
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: setting it later could race with other threads' files


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, payload) -> Path:
    """Write ``payload`` as indented JSON, atomically; NumPy/torch scalars and arrays, and paths, allowed."""
    return write_text(path, json.dumps(payload, indent=2, default=json_default) + "\n")


def json_default(value):
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # NumPy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
