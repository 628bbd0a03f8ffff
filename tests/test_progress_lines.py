"""No silent minutes: the progress log's heartbeat, scikit-learn's verbose prints forwarded to it,
and the lines of t-SNE iterations, MDS's SMACOF runs and mixture k's.

Nothing here times anything: a heartbeat is made to speak with a tiny interval and awaited; the
long steps are run small, and their lines (not their speed) are checked.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from labkit.progress import Progress, heartbeat, logger, printed_lines


@pytest.fixture
def lines():
    """The progress log's messages, as they come."""
    got: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            got.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield got
    logger.removeHandler(handler)
    logger.setLevel(level)


def _await(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_heartbeat_fills_silences_naming_the_running_items_and_stops_with_its_block(lines):
    with heartbeat("grid", every=0.05):
        bar = Progress(4, "forests raw")
        bar.started("trees 1-50")
        bar.step("trees 1-50 done", item="trees 1-50")
        bar.started("trees 51-100")
        _await(lambda: any("still working" in line for line in lines))
    beat = next(line for line in lines if "still working" in line)
    assert beat.startswith("[grid] still working ... ") and " s elapsed; forests raw: 1/4 done, running trees 51-100, ~" in beat
    assert beat.endswith(" left")
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("heartbeat")]
    count = len(lines)
    time.sleep(0.2)
    assert len(lines) == count  # silent after the block


def test_only_the_innermost_heartbeat_speaks_and_a_silenced_log_starts_none(lines):
    with heartbeat("outer", every=0.05), heartbeat("inner", every=0.05):
        _await(lambda: any("still working" in line for line in lines))
        time.sleep(0.2)
    assert {line.split("]")[0] for line in lines if "still working" in line} == {"[inner"}
    logger.setLevel(logging.WARNING)
    with heartbeat("quiet", every=0.01):
        assert not [thread for thread in threading.enumerate() if thread.name.startswith("heartbeat")]


def test_printed_lines_become_progress_lines_rate_limited_except_the_ones_that_matter(lines):
    class Render:
        def __call__(self, line):
            if line.startswith("skip"):
                return None
            return f"[x] {line}", line.startswith("!")

        def finish(self):
            return [("[x] finished", True)]

    with printed_lines(Render(), every=3600):
        print("first")  # the first line always passes
        print("second")  # within the interval: dropped
        print("skip me")
        print("! important", end="")  # a line without its newline yet
        print(" part two")
        print("last without newline", end="")
    assert lines == ["[x] first", "[x] ! important part two", "[x] finished"]


def test_tsne_reports_its_iterations_with_the_time_left(lines, single_thread):
    from reduction.estimators import TSNE
    from reduction.studies.embed import TSNELines

    X = np.random.default_rng(0).normal(size=(120, 8))
    with printed_lines(TSNELines("[tsne]", 300), every=0):
        TSNE(max_iter=300, random_state=0, backend="sklearn", verbose=2).fit(X)
    iterations = [line for line in lines if line.startswith("[tsne] iteration ")]
    assert iterations[0].startswith("[tsne] iteration 50/300: KL divergence ") and iterations[0].endswith(" left")
    assert any(line.startswith("[tsne] KL divergence after 300 iterations") for line in lines)
    assert not any("[t-SNE]" in line for line in lines)


def test_serial_mds_reports_each_smacof_run_and_its_stress(lines, single_thread, sklearn_mds):
    from reduction.estimators import MDS
    from reduction.studies.embed import SMACOFLines

    X = np.random.default_rng(0).normal(size=(40, 5))
    mds = MDS(n_init=3, max_iter=20, random_state=0, backend="sklearn", verbose=2)
    with printed_lines(SMACOFLines("[mds]", 3, 20), every=3600):
        mds.fit(X)
    started = [line for line in lines if line.endswith(": started")]
    ended = [line for line in lines if " iterations (" in line]
    assert started == [f"[mds] SMACOF run {run}/3: started" for run in (1, 2, 3)]
    assert [line.split(":")[0] for line in ended] == [f"[mds] SMACOF run {run}/3" for run in (1, 2, 3)]
    stresses = [float(line.split("stress ")[1].split()[0]) for line in ended]
    assert min(stresses) == pytest.approx(mds.stress_, rel=1e-5)  # the run kept is the lowest-stress one


def test_the_embed_study_reports_smacof_runs_when_they_run_in_this_process(lines, single_thread, sklearn_mds):
    import dataclasses

    from reduction.studies import embed

    images = np.random.default_rng(0).integers(0, 255, size=(40, 784)).astype(np.float32)
    profile = dataclasses.replace(embed.QUICK, mds_n_jobs=None)  # the reference's serial SMACOF runs
    embedding, estimator, _, _ = embed.fit_map("mds", images, profile, "sklearn", 0)
    assert embedding.shape == (40, 2)
    assert f"[mds] {estimator.n_init} SMACOF runs of up to {estimator.max_iter} iterations on 40 rows, one after another" in lines
    assert sum(line.endswith(": started") for line in lines) == estimator.n_init


def test_torchdr_tsne_reports_its_iterations_with_the_kl_divergence_and_the_time_left(lines, single_thread, monkeypatch):
    """The torch place's t-SNE (TorchDR) says, like scikit-learn's, where it is: the iteration, the
    map's KL divergence then (computed for the line) and the time left; the last line's KL
    divergence is the fitted one."""
    from reduction.estimators import TSNE

    monkeypatch.setattr("reduction.torch_places.common.HEARTBEAT_SECONDS", 0.0)  # a line at every iteration
    X = np.random.default_rng(0).normal(size=(120, 8))
    model = TSNE(perplexity=10.0, max_iter=300, random_state=0, backend="torch").fit(X)
    assert model.place_ == "torch-cpu"
    iterations = [line for line in lines if line.startswith("t-SNE (TorchDR) iteration ")]
    assert [line.split()[3].rstrip(":") for line in iterations] == [f"{i}/300" for i in range(1, 301)]
    assert all(": KL divergence " in line and " left ... " in line and line.endswith(" elapsed") for line in iterations)
    divergences = [float(line.split("KL divergence ")[1].split(",")[0]) for line in iterations]
    assert divergences[-1] == pytest.approx(model.kl_divergence_, abs=1e-4)
    assert divergences[-1] < divergences[0]  # the map improves: the numbers are the map's own
    assert any(line.startswith("t-SNE (TorchDR): P from 30 neighbours per row") for line in lines)


def test_the_embed_study_says_how_the_torch_smacof_runs(lines, single_thread, monkeypatch):
    from reduction.studies import embed

    monkeypatch.setattr("reduction.torch_places.common.HEARTBEAT_SECONDS", 0.0)
    images = np.random.default_rng(0).integers(0, 255, size=(40, 784)).astype(np.float32)
    embedding, estimator, _, details = embed.fit_map("mds", images, embed.QUICK, "torch", 0)
    assert estimator.place_ == "torch-cpu" and details["init_draws"] == "seeded"
    assert "[mds] 4 SMACOF runs of up to 300 iterations on 40 rows, as one batch on cpu" in lines
    assert any(line.startswith("SMACOF iteration 1/300: 4 of 4 start(s) running, at most ~") for line in lines)
    assert sum(line.startswith("SMACOF start ") for line in lines) == 4
