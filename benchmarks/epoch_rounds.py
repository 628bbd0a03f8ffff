"""Shared by the epoch benchmarks (``bench_mlp.py``, ``bench_augment.py``): ways timed in
interleaved rounds, so that a noisy neighbour slows all of them alike, and one table of medians
with their ratio to a reference way measured in the same run."""

from __future__ import annotations

import statistics
from collections.abc import Callable


def interleaved(ways: dict[str, Callable[[int], list[float]]], epochs: int, repeats: int) -> dict[str, list[float]]:
    """Each way's epoch seconds over ``repeats`` rounds, the ways taking turns in every round.

    ``ways[name](n)`` trains ``n`` epochs and returns their seconds; each call trains one epoch
    more than ``epochs``, the first, which warms up allocators and code paths and is not counted.
    """
    seconds = {name: [] for name in ways}
    for round_ in range(repeats):
        for name, way in ways.items():
            seconds[name] += way(epochs + 1)[1:]
            print(f"round {round_ + 1}: {name} done", flush=True)
    return seconds


def print_table(seconds: dict[str, list[float]], reference: str) -> None:
    """One row per way: median, min and max seconds per epoch, epochs timed, ratio to ``reference``."""
    floor = statistics.median(seconds[reference])
    print(f"\n| way | median s/epoch | min | max | epochs | ratio to {reference} |")
    print("|---|---|---|---|---|---|")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {min(values):.3f} | {max(values):.3f} | {len(values)} | {median / floor:.2f}x |")
