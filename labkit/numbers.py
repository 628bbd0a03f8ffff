"""Numbers as the study writes and reads them: a mean with its spread over seeds, and integer
lists given as ``START:STOP:STEP`` or ``5,10,20`` (the scripts' flags, the study's ``--set``)."""

from __future__ import annotations

RANGE_FORM = "START:STOP:STEP or a comma list of integers"


def with_spread(mean: float | None, spread: float | None, digits: int = 4, missing: str = "n/a") -> str:
    """``0.9123 ± 0.0045`` (mean ± standard deviation over seeds), ``0.9123`` without a spread
    (one seed), ``missing`` without a mean."""
    if mean is None:
        return missing
    return f"{mean:.{digits}f} ± {spread:.{digits}f}" if spread is not None else f"{mean:.{digits}f}"


def int_list(text: str, what: str = "list") -> list[int]:
    """``START:STOP:STEP`` (STOP included when on the step) or a comma list ``5,10,20``.

    Raises ValueError with a one-line message naming the part that is not an integer, a range
    that is not START:STOP:STEP or has no positive step, or an empty ``what``.
    """
    text = text.strip()
    if ":" in text:
        bounds = text.split(":")
        if len(bounds) != 3:
            raise ValueError(f"expected {RANGE_FORM}, got {text!r}")
        start, stop, step = (_integer(bound) for bound in bounds)
        if step < 1:
            raise ValueError(f"the step must be positive in {text!r}")
        values = list(range(start, stop + 1, step))
    else:
        values = [_integer(part) for part in text.split(",") if part.strip()]
    if not values:
        raise ValueError(f"the {what} {text!r} is empty")
    return values


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not an integer (expected {RANGE_FORM})") from None
