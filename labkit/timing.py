"""Seconds, and where it ran, per named step of a longer piece of work.

    timer = StepTimer()
    with timer.step("pca_fit") as step:
        model = PCA(...).fit(X)
        step.place = model.place_          # known only once the work is done
    timer.record("silhouettes", 1.25, "cuml")   # a step timed elsewhere
    timer.as_dict()   # {"pca_fit": {"seconds": 0.42, "place": "sklearn"}, "silhouettes": {...}}

A step that raises (Ctrl-C included) is not recorded: the dict lists finished steps only.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass


@dataclass
class Step:
    """What the body of :meth:`StepTimer.step` may fill in: where the step ran."""

    place: str | None = None


class StepTimer:
    """Named steps in the order they finished, each ``{"seconds": float, "place": str | None}``."""

    def __init__(self) -> None:
        self._steps: dict[str, tuple[float, str | None]] = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def step(self, name: str, place: str | None = None):
        """Time the block as step ``name``; the block may set ``place`` on the :class:`Step` it gets."""
        entry = Step(place)
        start = time.perf_counter()
        yield entry
        self.record(name, time.perf_counter() - start, entry.place)

    def record(self, name: str, seconds: float, place: str | None = None) -> None:
        """Record step ``name`` as taking ``seconds`` (a later record of the same name replaces it)."""
        self._steps[name] = (float(seconds), place)

    def seconds(self, name: str) -> float:
        """The unrounded seconds of a recorded step (KeyError if it was not recorded)."""
        return self._steps[name][0]

    def elapsed(self) -> float:
        """Seconds since the timer was made."""
        return time.perf_counter() - self._start

    def as_dict(self, digits: int = 3) -> dict[str, dict]:
        """``{name: {"seconds": seconds rounded to digits, "place": place}}``, JSON-ready."""
        return {name: {"seconds": round(seconds, digits), "place": place} for name, (seconds, place) in self._steps.items()}
