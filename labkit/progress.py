"""Progress reports and "where was it?" for long work, through the ``logging`` module.

Library code reports through the logger ``sign_mnist_lab`` (INFO), so a user of the library
silences or redirects it like any other logger; the scripts show it on stderr.

Long steps run inside :func:`stage` blocks. When Ctrl-C (or any exception) leaves a stage, the
exception is annotated with where it happened and what was kept (``interrupted_where`` and
``interrupted_kept``, innermost stage first), so the command line can say in one line where it
stopped and what survives, without every step catching KeyboardInterrupt itself.
"""

from __future__ import annotations

import contextlib
import logging
import time

logger = logging.getLogger("sign_mnist_lab")


def report(message: str, *args) -> None:
    """One progress line (INFO on the ``sign_mnist_lab`` logger)."""
    logger.info(message, *args)


def note(message: str, *args) -> None:
    """Something the user should know (a fallback, an ignored cache file): WARNING level."""
    logger.warning("note: " + message, *args)


_noted: set[str] = set()


def note_once(message: str) -> None:
    """:func:`note`, at most once per process for the same message."""
    if message not in _noted:
        _noted.add(message)
        note(message)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the one-line account of where it stopped and what was kept as its message."""


@contextlib.contextmanager
def stage(where: str, kept: str | None = None):
    """Run a block as the named stage: an interrupt inside it is annotated with ``where``/``kept``.

    ``where`` reads after "interrupted", e.g. "in the raw-pixel grid"; nested stages add to it
    from the outside in ("in the raw-pixel grid" + "at depth 25"). ``kept`` says what survives,
    e.g. "finished depths are cached and a rerun resumes from there"; the innermost stage that
    says what was kept wins.
    """
    try:
        yield
    except KeyboardInterrupt as exc:
        inner = getattr(exc, "interrupted_where", None)
        exc.interrupted_where = f"{where} {inner}" if inner else where
        if kept is not None and getattr(exc, "interrupted_kept", None) is None:
            exc.interrupted_kept = kept
        raise


def interruption_message(exc: KeyboardInterrupt, kept_default: str | None = None) -> str:
    """``interrupted in X; Y`` from what :func:`stage` recorded (or an :class:`Interrupted`'s text)."""
    if isinstance(exc, Interrupted) and str(exc):
        return f"interrupted {exc}"
    where = getattr(exc, "interrupted_where", None)
    kept = getattr(exc, "interrupted_kept", None) or kept_default
    text = "interrupted" + (f" {where}" if where else "")
    return f"{text}; {kept}" if kept else text


class Progress:
    """Progress lines for loops of known length: ``[title 3/10] label ... 12.3 s elapsed, ~28 s left``."""

    def __init__(self, total: int, title: str) -> None:
        self.total, self.title, self.done = total, title, 0
        self.start = time.perf_counter()

    def step(self, label: str = "") -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done)
        report(f"[{self.title} {self.done}/{self.total}] {label} ... {elapsed:.1f} s elapsed, ~{left:.0f} s left")
