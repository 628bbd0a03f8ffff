"""Progress reports and "where was it?" for long work, through the ``logging`` module.

Library code reports through the logger ``sign_mnist_lab`` (INFO), so a user of the library
silences or redirects it like any other logger; the scripts show it on stderr.

No silent minutes: :class:`Progress` reports each item of a loop as it starts and ends, with an
estimate of the time left; :func:`heartbeat` fills any silence longer than ``every`` seconds
within a block with a "still working" line (elapsed time and, where a :class:`Progress` runs
inside, its state); :func:`printed_lines` turns what a library prints (scikit-learn's
``verbose`` output) into progress lines.

Long steps run inside :func:`stage` blocks. When Ctrl-C (or any exception) leaves a stage, the
exception is annotated with where it happened and what was kept (``interrupted_where`` and
``interrupted_kept``, innermost stage first), so the command line can say in one line where it
stopped and what survives, without every step catching KeyboardInterrupt itself.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import threading
import time

logger = logging.getLogger("sign_mnist_lab")

# When the logger last said something: a heartbeat speaks only into silences.
_last_line = time.monotonic()


def report(message: str, *args) -> None:
    """One progress line (INFO on the ``sign_mnist_lab`` logger)."""
    global _last_line
    _last_line = time.monotonic()
    logger.info(message, *args)


def note(message: str, *args) -> None:
    """Something the user should know (a fallback, an ignored cache file): WARNING level."""
    global _last_line
    _last_line = time.monotonic()
    logger.warning("note: " + message, *args)


def duration(seconds: float) -> str:
    """``8.2 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


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
    """Progress lines for loops of known length: ``[title 3/10] label ... 12.3 s elapsed, ~28 s left``.

    :meth:`started` says that an item begins (several may run at once, in threads), :meth:`step`
    that one ended. ``estimate=False`` leaves out the time left, for items too unlike each other
    (a one-second PCA and a three-minute t-SNE) for an average to mean anything.
    """

    def __init__(self, total: int, title: str, estimate: bool = True) -> None:
        self.total, self.title, self.done, self.estimate = total, title, 0, estimate
        self.start = time.perf_counter()
        self.running: list[str] = []
        self.serial = next(_serials)
        _bars.append(self)
        del _bars[:-_KEPT_BARS]

    def started(self, item: str) -> None:
        """Item ``item`` (e.g. "k=40") begins: one line, and the heartbeat names it while it runs."""
        self.running.append(item)
        report(f"[{self.title}] {item}: started ({self.done}/{self.total} done) ... "
               f"{duration(time.perf_counter() - self.start)} elapsed")

    def step(self, label: str = "", item: str | None = None) -> None:
        """An item ended (``item``: the one :meth:`started` named); ``label`` says how it went."""
        if item in self.running:
            self.running.remove(item)
        self.done += 1
        left = self._left()
        report(f"[{self.title} {self.done}/{self.total}] {label} ... "
               f"{duration(time.perf_counter() - self.start)} elapsed" + (f", {left}" if left else ""))

    def _left(self) -> str:
        if not (self.estimate and 0 < self.done < self.total):
            return ""
        elapsed = time.perf_counter() - self.start
        return f"~{duration(elapsed / self.done * (self.total - self.done))} left"

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def status(self) -> str:
        """``gaussian mixture: 2/8 done, running k=40, k=35, ~5 min 10 s left``."""
        text = f"{self.title}: {self.done}/{self.total} done"
        if self.running:
            text += ", running " + ", ".join(self.running)
        left = self._left()
        return f"{text}, {left}" if left else text


_bars: list[Progress] = []  # the latest Progress objects, newest last (a heartbeat reports the newest running one)
_KEPT_BARS = 16
_serials = itertools.count()

HEARTBEAT_SECONDS = 30.0
_heartbeats: list[object] = []  # the active heartbeat blocks, innermost last: only the innermost speaks


@contextlib.contextmanager
def heartbeat(title: str, every: float = HEARTBEAT_SECONDS):
    """Within the block, whenever the logger has been silent for ``every`` seconds, one line:
    ``[title] still working ... 1 min 30 s elapsed; gaussian mixture: 2/8 done, running k=40``
    (the newest unfinished :class:`Progress` made inside the block, if any).

    A daemon thread watches the clock; it stops when the block ends, however it ends. Nested
    blocks are fine (the innermost speaks). Nothing runs when the logger would drop INFO lines.
    """
    if not logger.isEnabledFor(logging.INFO):
        yield
        return
    token, stop, began, first_bar = object(), threading.Event(), time.monotonic(), next(_serials)

    def beat() -> None:
        while not stop.wait(min(1.0, every / 4)):
            now = time.monotonic()
            if _heartbeats[-1:] != [token] or now - _last_line < every:
                continue
            bars = [bar for bar in list(_bars) if bar.serial > first_bar and not bar.finished]
            state = f"; {bars[-1].status()}" if bars else ""
            report(f"[{title}] still working ... {duration(now - began)} elapsed{state}")

    _heartbeats.append(token)
    thread = threading.Thread(target=beat, name=f"heartbeat: {title}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        _heartbeats.remove(token)
        thread.join()


class _LineForwarder(io.TextIOBase):
    """A text stream that hands each complete line written to it to ``handle``."""

    def __init__(self, handle) -> None:
        super().__init__()
        self._handle, self._partial = handle, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self._handle(line.rstrip())
        return len(text)

    def close_partial(self) -> None:
        if self._partial.strip():
            self._handle(self._partial.rstrip())
        self._partial = ""


@contextlib.contextmanager
def printed_lines(render, every: float = 10.0):
    """Within the block, what is printed to ``sys.stdout`` (scikit-learn's ``verbose`` output)
    becomes progress lines instead.

    ``render(line)`` returns ``(text, always)`` for a line to report, a list of them, or None to
    drop the line. Lines with ``always`` false are kept to one per ``every`` seconds
    (scikit-learn prints some on every iteration). If ``render`` has a ``finish()`` method, the
    lines it returns (same forms) are reported when the block ends without an error. Only this
    thread's prints are expected inside the block: the redirection is process-wide, as
    ``contextlib.redirect_stdout``'s.
    """
    last = [float("-inf")]

    def handle(rendered) -> None:
        for text, always in [rendered] if isinstance(rendered, tuple) else rendered or ():
            now = time.monotonic()
            if always or now - last[0] >= every:
                last[0] = now
                report(text)

    stream = _LineForwarder(lambda line: handle(render(line)))
    with contextlib.redirect_stdout(stream):
        yield
        stream.close_partial()
    finish = getattr(render, "finish", None)
    if finish is not None:
        handle(finish())
