"""What the torch places share: the device and dtype parameters, and progress lines on long loops."""

from __future__ import annotations

import time

import torch

from labkit.progress import report

# The dtype parameter's values (strings, so that parameters stay JSON-ready for results files).
DTYPES = {"float64": torch.float64, "float32": torch.float32}
# A progress line at least this often while a long loop runs.
HEARTBEAT_SECONDS = 10.0


def resolve_device(device) -> torch.device:
    """``None``: the CUDA device when torch sees one, else the CPU; otherwise ``torch.device(device)``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


class Heartbeat:
    """Progress lines for a loop: :meth:`line` always reports, :meth:`beat` only when
    :data:`HEARTBEAT_SECONDS` passed since the last line. Lines end with the seconds since the start."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = HEARTBEAT_SECONDS if seconds is None else seconds
        self.start = self.last = time.perf_counter()

    def line(self, message: str) -> None:
        self.last = time.perf_counter()
        report(f"{message}, {self.last - self.start:.1f} s")

    def beat(self, message) -> None:
        """``message``: the line, or a function making it (called only when a line is due)."""
        if time.perf_counter() - self.last >= self.seconds:
            self.line(message() if callable(message) else message)
