"""Run the study: each selected part computed or reused, then the report.

Layout of the output folder ``OUT``::

    OUT/<part>/results.json     the part's results, with "study_part": its fingerprint and conditions
    OUT/<part>/*.png            its figures (OUT/mlp/<run>/ also: TensorBoard events, results.json)
    OUT/report.md, report.html, report.json
    OUT/.cache/                 data digests and finished forest-grid depths (kept across runs)
    OUT/.partial/<part>/        a part being computed; renamed to OUT/<part> when it finishes
    OUT/.lock                   the running study's pid, host and start time (one run per folder)

A part is **reused** when ``OUT/<part>/results.json`` holds the same fingerprint digest as the
part would have now (:mod:`whole_study.fingerprint`); otherwise, or with ``force``, it is computed into
``OUT/.partial/<part>`` and only a finished part replaces ``OUT/<part>``, so an interrupted part
leaves nothing behind (and an older complete result stays until replaced). Ctrl-C raises
:class:`~labkit.progress.Interrupted` with one line: the part it stopped in, where in it, that
finished parts are kept, and that a rerun resumes at that part.

Parts not selected this time are still reported when their results match the current settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from datamodules.csv_io import DataError
from labkit.errors import SettingsError
from labkit.files import FolderLock, write_json
from labkit.progress import Interrupted, heartbeat, interruption_message, report, stage
from reduction.backend import BackendError
from whole_study import fingerprint as fp
from whole_study.parts import PART_NAMES, PARTS, REDUCTION_PARTS, Plan, StudyConfig, StudyContext, elapsed_text, library_versions

RESULTS = "results.json"
PARTIAL = ".partial"


@dataclass
class PartOutcome:
    """What happened to a part in this run."""

    name: str
    status: str  # "computed", "reused", "kept" (not selected; its results match), "not run"
    reason: str = ""
    results: dict | None = None
    seconds: float = 0.0


@dataclass
class StudyOutcome:
    out_dir: Path
    parts: dict[str, PartOutcome] = field(default_factory=dict)
    report_files: dict[str, Path] = field(default_factory=dict)

    def results(self) -> dict[str, dict]:
        """{part: results} of every part the report covers."""
        return {name: outcome.results for name, outcome in self.parts.items() if outcome.results is not None}


def run_study(config: StudyConfig, out_dir: str | os.PathLike, parts=PART_NAMES, force: bool = False,
              write_report: bool = True) -> StudyOutcome:
    """Compute or reuse each of ``parts`` (in the study's order), then write the report.

    Raises SettingsError / BackendError / DataError before any work for settings, a backend or
    data that cannot work; FolderInUse when another run holds ``out_dir`` (its lock,
    ``OUT/.lock``, is held for the whole run), UnusableOutput when ``out_dir`` cannot be written;
    Interrupted (one line) on Ctrl-C inside a part; an OSError (a full disk) as it comes, after
    removing the unfinished part.
    """
    out_dir = Path(out_dir)
    selected = [name for name in PART_NAMES if name in parts]
    context = StudyContext(config, out_dir)
    plans = {name: PARTS[name].plan(config) for name in PART_NAMES}  # every --set is checked, selected or not
    if any(name in REDUCTION_PARTS for name in selected):
        from reduction.backend import select_backend

        select_backend(config.backend)  # BackendError before any work
    with FolderLock(out_dir):  # FolderInUse (naming the other run) before touching anything of it
        return _run_parts(config, out_dir, selected, context, plans, force, write_report)


def _run_parts(config: StudyConfig, out_dir: Path, selected: list[str], context: StudyContext, plans: dict,
               force: bool, write_report: bool) -> StudyOutcome:
    started = time.perf_counter()
    report(f"[study] checking the data and earlier results in {out_dir}")
    identity = fp.data_identity(config.data_dir, context.cache_dir / "data_sha256.json")
    outcome = StudyOutcome(out_dir)
    prints = {name: part_fingerprint(name, plans[name], config, identity) for name in PART_NAMES}

    for number, name in enumerate(selected, 1):
        label = f"[study {number}/{len(selected)}] {name}"
        existing = read_results(out_dir / name)
        old = (existing or {}).get("study_part", {})
        if not force and old.get("digest") == fp.digest(prints[name]):
            outcome.parts[name] = PartOutcome(name, "reused", "same settings, data and code", existing)
            report(f"{label}: reused (computed {old.get('computed_at', '?')}; same settings, data and code) "
                   f"... {elapsed_text(time.perf_counter() - started)} elapsed")
            continue
        why = "--force" if force and existing else (
            "no earlier results" if existing is None else "changed: " + ", ".join(fp.differences(old.get("fingerprint"), prints[name])))
        report(f"{label}: computing ({why})")
        done = [other for other, part in outcome.parts.items() if part.status in ("computed", "reused")]
        results, seconds = _compute(name, plans[name], context, prints[name], identity,
                                    where=f"in part {name} ({number}/{len(selected)})", finished=done)
        outcome.parts[name] = PartOutcome(name, "computed", why, results, seconds)
        report(f"{label}: done in {elapsed_text(seconds)} ... {elapsed_text(time.perf_counter() - started)} elapsed")
        for step, entry in results.get("steps", {}).items():
            if step != "total":
                report(f"{label}   {step}: {entry['seconds']:.2f} s" + (f" on {entry['place']}" if entry.get("place") else ""))

    for name in PART_NAMES:
        if name in outcome.parts:
            continue
        existing = read_results(out_dir / name)
        if existing is not None and existing.get("study_part", {}).get("digest") == fp.digest(prints[name]):
            outcome.parts[name] = PartOutcome(name, "kept", "not selected; earlier results match", existing)
        else:
            outcome.parts[name] = PartOutcome(name, "not run", "not selected" + ("; earlier results do not match" if existing else ""))
    outcome.parts = {name: outcome.parts[name] for name in PART_NAMES}

    if write_report:
        from whole_study.report import write_report as write

        with stage("while writing the report", "every finished part's results are kept; a rerun writes the report"):
            outcome.report_files = write(out_dir, outcome.results())
        report(f"[study] report: {outcome.report_files['md']} and {outcome.report_files['html']} "
               f"... {elapsed_text(time.perf_counter() - started)} elapsed")
    return outcome


def part_fingerprint(name: str, plan: Plan, config: StudyConfig, identity: dict) -> dict:
    """What part ``name``'s results depend on (see :mod:`whole_study.fingerprint`)."""
    part = PARTS[name]
    fingerprint = {
        "part": name,
        "settings": {
            "profile": dataclasses.asdict(plan.profile),
            "options": plan.options,
            "seed": config.seed,
            "backend": part.backend(config, plan),
            "limit_rows": plan.limit_rows,
        },
        "data": {split: {"sha256": identity[split]["sha256"], "bytes": identity[split]["bytes"]} for split in ("train", "test")},
        "code": {
            "version": fp.package_version(),
            "sources": fp.source_digest(part.packages, ("whole_study/parts.py",)),
            "libraries": library_versions(),
        },
    }
    return json.loads(json.dumps(fingerprint, default=str))  # as it reads back from results.json (tuples as lists)


def conditions(plan: Plan, identity: dict) -> dict:
    """What makes the part's numbers comparable with the reference's (whole_study/report.py reads them)."""
    return {
        "kaggle_data": bool(identity["kaggle"]),
        "all_rows": plan.limit_rows is None,
        "full_profile": plan.profile.name == "full",
        "profile": plan.profile.name,
        "limit_rows": plan.limit_rows,
    }


def read_results(folder: Path) -> dict | None:
    """The part's results.json, or None when it is missing or unreadable."""
    path = folder / RESULTS
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def _compute(name: str, plan: Plan, context: StudyContext, print_: dict, identity: dict, where: str,
             finished: list[str]) -> tuple[dict, float]:
    part = PARTS[name]
    out_dir = context.out_dir
    staging, final = out_dir / PARTIAL / name, out_dir / name
    old = out_dir / PARTIAL / f"{name}.old"
    for leftover in (staging, old):  # from a run that was killed outright
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    started = time.perf_counter()
    try:
        with heartbeat(f"study: {name}"):
            results = part.compute(plan, context, staging)
        seconds = time.perf_counter() - started
        results["study_part"] = {
            "part": name,
            "digest": fp.digest(print_),
            "fingerprint": print_,
            "conditions": conditions(plan, identity),
            "computed_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "seconds": round(seconds, 3),
        }
        part.relocate(staging, final)
        write_json(staging / RESULTS, results)
    except KeyboardInterrupt as exc:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(out_dir / PARTIAL)
        inner = interruption_message(exc).removeprefix("interrupted").strip()
        kept = f"finished parts are kept ({', '.join(finished)})" if finished else "no part had finished"
        raise Interrupted(f"{where}{', ' + inner if inner else ''}; {kept}; a rerun resumes at {name}") from None
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(out_dir / PARTIAL)
        if isinstance(exc, (SettingsError, DataError, BackendError)):  # one line for the user: say which part
            raise type(exc)(f"in part {name}: {exc}") from None
        if isinstance(exc, OSError) and exc.errno is not None:  # a full disk: the path, the reason, the part
            raise OSError(exc.errno, f"{exc.strerror} (in part {name})", exc.filename, None, exc.filename2) from exc
        raise
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    _remove_if_empty(out_dir / PARTIAL)
    return results, seconds


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
