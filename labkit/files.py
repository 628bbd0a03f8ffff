"""Files written atomically, and output folders a run can use and holds alone.

Everything is written to a temporary name beside the target and renamed over it at the end;
on any failure, KeyboardInterrupt included, the temporary file is removed: a reader (or a rerun
after Ctrl-C) never sees half a file. :func:`usable_folder` checks an output location before any
work (:class:`UnusableOutput`), and :class:`FolderLock` keeps a second run out of a folder in use
(:class:`FolderInUse`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else it is removed.

    An OSError that names no file (a write that found the disk full) is raised again naming
    ``path``, so that the error says where.
    """
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
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
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


# --------------------------------------------------------------------------------------------
# Output locations: usable at all, and used by one run at a time
# --------------------------------------------------------------------------------------------


class UnusableOutput(OSError):
    """An output location that cannot be used at all (a file in the way, no permission, a
    read-only or full disk), found before any work started. ``filename`` is the path, ``strerror``
    the operating system's reason."""

    def __str__(self) -> str:
        return f"cannot write to {self.filename}: {self.strerror}"


def usable_folder(path: str | os.PathLike) -> Path:
    """Make sure ``path`` is a folder this process can write in (created, with its parents, if
    missing) by writing and removing a small file there; :class:`UnusableOutput` otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=path, prefix=".write-check.", suffix=".tmp")
        try:
            os.write(handle, b"ok\n")
        finally:
            os.close(handle)
            os.unlink(probe)
    except OSError as exc:
        raise UnusableOutput(exc.errno, exc.strerror or str(exc), str(path)) from None
    return path


class FolderInUse(RuntimeError):
    """Another run holds the output folder's lock; the message (one line) names it."""


LOCK_NAME = ".lock"


class FolderLock:
    """One run at a time per output folder: ``FOLDER/.lock`` holds the pid, host and start time
    of the run that owns the folder.

    The lock file is made by exclusive creation (written under a temporary name, then hard-linked
    to ``.lock``, which fails if it exists), so it appears whole or not at all, and of two runs
    only one can make it. A run that finds it refuses with :class:`FolderInUse` naming the
    holder, unless the holder is gone: on the same host, a pid that no longer runs (or now
    belongs to a process started after the lock was taken) is taken over with a note. A holder
    on another host cannot be checked, and is assumed alive. The lock is removed when the block
    ends, whatever ends it; a run killed outright (SIGKILL, power loss) leaves it, and the next
    run takes it over. A folder the lock created is removed again if it is still empty.

        with FolderLock(out_dir):
            ...  # write into out_dir
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._created_folder = False
        self._held = False
        self._record: dict = {}

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> None:
        self._created_folder = not self.folder.exists()
        tmp = None
        try:
            usable_folder(self.folder)
            self._record = _lock_record()
            try:
                handle, tmp = tempfile.mkstemp(dir=self.folder, prefix=".lock.", suffix=".tmp")
                with os.fdopen(handle, "w") as stream:
                    stream.write(json.dumps(self._record) + "\n")
            except OSError as exc:
                raise UnusableOutput(exc.errno, exc.strerror or str(exc), str(self.folder)) from None
            self._link(Path(tmp))
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if not self._held:
                self._remove_created_folder()

    def _link(self, tmp: Path) -> None:
        """Make ``tmp`` (our whole record) the lock file, if no live run holds it."""
        from labkit.progress import note

        for _ in range(5):  # another run may take or release the lock between the steps
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                holder = _read_lock(self.path)
                if holder is None:
                    continue  # released meanwhile: try again
                if _holder_alive(holder):
                    raise FolderInUse(f"{self.folder} is in use by another run: {_describe(holder)} "
                                      f"(lock file {self.path}); wait for it to end or choose another output folder") from None
                if self._take_over(holder):
                    note(f"{self.path} was left by {_describe(holder)}, which is no longer running; taking it over")
                continue
            except OSError as exc:
                raise UnusableOutput(exc.errno, exc.strerror or str(exc), str(self.folder)) from None
            self._held = True
            return
        raise FolderInUse(f"{self.folder}: could not take its lock {self.path} (other runs keep taking it)")

    def _take_over(self, stale: dict) -> bool:
        """Move the stale lock aside; True when it was the stale one (and is now gone)."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False  # someone else moved it first
        if _read_lock(aside) == stale:
            aside.unlink(missing_ok=True)
            return True
        # Another run took the stale lock over between our reading and moving it: give it back.
        try:
            os.link(aside, self.path)
        except FileExistsError:
            pass
        aside.unlink(missing_ok=True)
        return False

    def release(self) -> None:
        if self._held:
            self._held = False
            if _read_lock(self.path) == self._record:  # never another run's
                self.path.unlink(missing_ok=True)
        self._remove_created_folder()

    def _remove_created_folder(self) -> None:
        if self._created_folder:
            try:
                self.folder.rmdir()  # only when empty: nothing was written
            except OSError:
                pass


_PROCESS_START = time.time()


def _lock_record() -> dict:
    started = _PROCESS_START
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": started,
        "started_text": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
    }


def _read_lock(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": None, "host": None, "started": None, "started_text": "?", "command": "?"}
    return record if isinstance(record, dict) else {"pid": None}


def _describe(holder: dict) -> str:
    command = f" ({holder['command']})" if holder.get("command") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started_text', '?')}{command}"


def _holder_alive(holder: dict) -> bool:
    """False only when the holder is surely gone: same host, and its pid runs no more or was
    given to a process that started after the lock was taken."""
    pid, started = holder.get("pid"), holder.get("started")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
        return True
    if pid == os.getpid():
        return started == _PROCESS_START  # this very process (a lock not released by it is its own)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # runs, as another user
    begun = _process_start_time(pid)
    return begun is None or not isinstance(started, (int, float)) or begun <= started + 1.0


def _process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), where /proc tells (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of the line, counted after the command name
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
