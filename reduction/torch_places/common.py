"""What the torch places share: the device and dtype parameters, and progress lines on long loops."""

from __future__ import annotations

import time

import numpy as np
import torch

from labkit.progress import duration, report

# The dtype parameter's values (strings, so that parameters stay JSON-ready for results files).
DTYPES = {"float64": torch.float64, "float32": torch.float32}
# A progress line at least this often while a long loop runs.
HEARTBEAT_SECONDS = 10.0


def resolve_device(device) -> torch.device:
    """``None``: the CUDA device when torch sees one, else the CPU; otherwise ``torch.device(device)``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_tensor(X: np.ndarray, device: torch.device) -> torch.Tensor:
    """``X`` as a tensor on ``device``, sharing its memory where it can; a read-only array
    (a memory map) is copied, as torch cannot share it."""
    return torch.as_tensor(X if X.flags.writeable else X.copy(), device=device)


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


class Heartbeat:
    """Progress lines for a loop: :meth:`line` always reports, :meth:`beat` only when
    :data:`HEARTBEAT_SECONDS` passed since the last line. Lines end with the time since the start;
    :meth:`left` estimates the time a loop has left from its pace since :meth:`mark`."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = HEARTBEAT_SECONDS if seconds is None else seconds
        self.start = self.last = self.marked = time.perf_counter()

    def line(self, message: str) -> None:
        self.last = time.perf_counter()
        report(f"{message} ... {duration(self.last - self.start)} elapsed")

    def beat(self, message) -> None:
        """``message``: the line, or a function making it (called only when a line is due)."""
        if time.perf_counter() - self.last >= self.seconds:
            self.line(message() if callable(message) else message)

    def mark(self) -> None:
        """The loop whose pace :meth:`left` measures starts now."""
        self.marked = time.perf_counter()

    def left(self, done: int, total: int) -> str:
        """"~2 min 05 s left" for ``done`` of ``total`` steps at the pace since :meth:`mark`."""
        seconds = (time.perf_counter() - self.marked) / max(done, 1) * max(total - done, 0)
        return f"~{duration(seconds)} left"
