"""labkit: atomic files, the Ctrl-C accounting of stages, the confusion matrix, numbers as text."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

from labkit.files import atomic_path, write_json
from labkit.progress import Interrupted, interruption_message, stage


def test_atomic_write_replaces_whole_and_gets_ordinary_permissions(tmp_path):
    target = tmp_path / "out" / "results.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]


@pytest.mark.parametrize("failure", [KeyboardInterrupt, ValueError])
def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, failure):
    target = tmp_path / "figure.png"
    target.write_bytes(b"old")
    with pytest.raises(failure), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise failure()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]


def test_stages_say_where_from_the_outside_in_and_the_innermost_kept_wins():
    with pytest.raises(KeyboardInterrupt) as caught, stage("in the raw pixels grid", kept="depths are cached"):
        with stage("at depth 25"):
            raise KeyboardInterrupt
    assert interruption_message(caught.value, "nothing written") == "interrupted in the raw pixels grid at depth 25; depths are cached"
    assert interruption_message(KeyboardInterrupt(), "nothing written") == "interrupted; nothing written"
    assert interruption_message(Interrupted("at epoch 3/100; nothing written for this run")) == (
        "interrupted at epoch 3/100; nothing written for this run")


def test_stages_leave_other_errors_alone():
    with pytest.raises(ValueError) as caught, stage("somewhere"):
        raise ValueError("bad")
    assert not hasattr(caught.value, "interrupted_where")


def test_confusion_counts_and_figure():
    import numpy as np

    from labkit.confusion import confusion_counts, confusion_figure

    labels, predictions = [0, 0, 2, 24], [0, 2, 2, 0]
    assert confusion_counts(np.array(labels), np.array(predictions), [0, 2, 24]).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    figure = confusion_figure(labels, predictions, name=lambda label: f"c{label}", title="test confusion matrix")
    ax = figure.axes[0]
    assert ax.get_title() == "test confusion matrix (accuracy 0.500, 4 rows)"
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["c0", "c2", "c24"]  # only the classes that occur
    # colour: the share of each true class; numbers: the counts of the non-empty cells
    np.testing.assert_allclose(ax.images[0].get_array(), [[0.5, 0.5, 0], [0, 1, 0], [1, 0, 0]])
    cells = sorted(((int(y), int(x)), text.get_text()) for text in ax.texts for x, y in [text.get_position()])
    assert cells == [((0, 0), "1"), ((0, 1), "1"), ((1, 1), "1"), ((2, 0), "1")]  # (true, predicted)


def test_spread_over_seeds_as_text():
    from labkit.numbers import with_spread

    assert with_spread(0.91234, 0.00456) == "0.9123 ± 0.0046"
    assert with_spread(0.91234, None) == "0.9123"  # one seed: no spread
    assert with_spread(None, None) == "n/a" and with_spread(None, 0.1, missing="—") == "—"
    assert with_spread(1.5, 0.25, digits=1) == "1.5 ± 0.2"


@pytest.mark.parametrize("text, expected", [
    ("5:20:5", [5, 10, 15, 20]), ("5:21:5", [5, 10, 15, 20]), ("3", [3]), (" 3, 6,,9 ", [3, 6, 9]), ("-2:2:2", [-2, 0, 2]),
])
def test_integer_lists_and_ranges(text, expected):
    from labkit.numbers import int_list

    assert int_list(text) == expected


@pytest.mark.parametrize("text, message", [
    ("five", "'five' is not an integer (expected START:STOP:STEP"), ("3,a", "'a' is not an integer"),
    ("1:2", "expected START:STOP:STEP or a comma list of integers, got '1:2'"), ("1:x:1", "'x' is not an integer"),
    ("10:50:0", "the step must be positive in '10:50:0'"), ("50:10:10", "the grid '50:10:10' is empty"), ("", "the grid '' is empty"),
])
def test_integer_lists_say_what_is_wrong(text, message):
    from labkit.numbers import int_list

    with pytest.raises(ValueError, match=re.escape(message)):
        int_list(text, "grid")
