"""The reference notebook's published numbers (``whole_study/reference.json``), loaded and checked.

Each value names its question (a section of the report), what it is, the number, how it is
compared (``kind``, see the file's ``kinds``), where this study's number is found in the parts'
results (``path``: alternatives, each a list of keys from the part's name down; a ``{key: value}``
element picks the list item that matches), when a comparison means something (``requires``:
``kaggle_data``, ``all_rows``, ``full_profile``), and where the reference published it (``source``).
"""

from __future__ import annotations

import json
from pathlib import Path

REFERENCE_FILE = Path(__file__).with_name("reference.json")
KINDS = ("exact", "rounded", "noisy", "grid_cell", "computed", "timing")
CONDITIONS = ("kaggle_data", "all_rows", "full_profile")


def load_reference(path: str | Path = REFERENCE_FILE) -> dict:
    """The reference file, checked: ValueError naming the first malformed entry."""
    reference = json.loads(Path(path).read_text())
    questions = {question["id"] for question in reference["questions"]}
    seen = set()
    for entry in reference["values"]:
        where = f"{path}: value {entry.get('id')!r}"
        missing = [key for key in ("id", "question", "label", "value", "kind", "path", "source") if key not in entry]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}")
        if entry["id"] in seen:
            raise ValueError(f"{where} appears twice")
        seen.add(entry["id"])
        if entry["question"] not in questions:
            raise ValueError(f"{where} names an unknown question {entry['question']!r}")
        if entry["kind"] not in KINDS:
            raise ValueError(f"{where} has an unknown kind {entry['kind']!r}")
        if entry["kind"] == "noisy" and not set(entry.get("tolerance", {})) & {"abs", "rel"}:
            raise ValueError(f"{where} is noisy but states no tolerance")
        unknown = set(entry.get("requires", [])) - set(CONDITIONS)
        if unknown:
            raise ValueError(f"{where} requires unknown condition(s) {sorted(unknown)}")
        if not entry["path"] or not all(isinstance(path_, (list, dict)) for path_ in entry["path"]):
            raise ValueError(f"{where}: path must be a list of alternatives")
    return reference
