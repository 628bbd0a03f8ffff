"""labkit: atomic files and the Ctrl-C accounting of stages."""

from __future__ import annotations

import json
import os
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
