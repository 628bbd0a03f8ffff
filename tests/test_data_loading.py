"""CSV finding, validation, caching and the study's splits."""

from __future__ import annotations

import gzip
import os
import shutil
import time
import zipfile

import numpy as np
import pytest

from datamodules import DataError, find_split_file, load_split, load_splits, reference_sample
from datamodules.csv_io import HEADER, default_cache_dir
from datamodules.synthetic import csv_text, synthetic_arrays, write_synthetic_csvs


def _write(path, text):
    path.write_text(text)
    return path.parent


def _good_rows(n=30):
    return csv_text(*synthetic_arrays(n, seed=3))


def _mutate_cell(text, line, column, value):
    lines = text.splitlines()
    cells = lines[line - 1].split(",")
    cells[column] = value
    lines[line - 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


# --- finding files -----------------------------------------------------------------------------


def test_reads_csv_and_gzip_alike(tmp_path):
    write_synthetic_csvs(tmp_path / "plain", n_train=50, n_test=30, seed=1)
    write_synthetic_csvs(tmp_path / "gz", n_train=50, n_test=30, seed=1, compress=True)
    plain = load_split(tmp_path / "plain", "train")
    packed = load_split(tmp_path / "gz", "train")
    assert plain[0].dtype == np.uint8 and plain[0].shape == (50, 784)
    np.testing.assert_array_equal(plain[0], packed[0])
    np.testing.assert_array_equal(plain[1], packed[1])


def test_reads_kaggle_zip_and_nested_layout(tmp_path):
    paths = write_synthetic_csvs(tmp_path / "src", n_train=40, n_test=30)
    nested = tmp_path / "kaggle" / "sign_mnist_train"
    nested.mkdir(parents=True)
    shutil.copy(paths["train"], nested / "sign_mnist_train.csv")
    assert find_split_file(tmp_path / "kaggle", "train").path == nested / "sign_mnist_train.csv"

    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(paths["train"], "sign_mnist_train/sign_mnist_train.csv")
        zf.write(paths["test"], "sign_mnist_test/sign_mnist_test.csv")
    images, labels = load_split(archive, "test")
    assert images.shape == (30, 784)
    # A folder holding only the zip works too.
    folder = tmp_path / "download"
    folder.mkdir()
    shutil.copy(archive, folder / "sign-language-mnist.zip")
    assert load_split(folder, "train")[0].shape == (40, 784)


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_split(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="no sign_mnist_train.csv"):
        load_split(tmp_path, "train")


def test_real_data_loads_with_known_shapes(real_data_dir, recwarn):
    images, labels = load_split(real_data_dir, "train")
    assert images.shape == (27455, 784) and labels.shape == (27455,)
    assert sorted(np.unique(labels)) == [k for k in range(25) if k != 9]
    assert load_split(real_data_dir, "test")[0].shape == (7172, 784)
    assert not [w for w in recwarn if "sha256" in str(w.message)]  # the shipped files are Kaggle's


# --- validation: each bad-input case names the file, the line and the problem ------------------


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.replace("pixel784", "pixel785", 1), r"header column 785 is 'pixel785'"),
        (lambda t: t.replace(",pixel784", "", 1), r"header must be .*784 columns"),
        (lambda t: _mutate_cell(t, 5, 10, "abc"), r"line 5, column 'pixel10': 'abc' is not an integer"),
        (lambda t: _mutate_cell(t, 7, 3, ""), r"line 7, column 'pixel3': an empty cell is not an integer"),
        (lambda t: _mutate_cell(t, 4, 1, "12.5"), r"line 4, column 'pixel1': .* is not an integer"),
        (lambda t: _mutate_cell(t, 6, 100, "256"), r"line 6, column 'pixel100': pixel 256 is out of range 0-255"),
        (lambda t: _mutate_cell(t, 3, 1, "-1"), r"line 3, column 'pixel1': pixel -1 is out of range"),
        (lambda t: _mutate_cell(t, 9, 0, "26"), r"line 9, column 'label': label 26 is out of range 0-25"),
        (lambda t: t.replace("\n", ",7\n", 3).replace(",7\n", "\n", 2), r"785 comma-separated values.*line 3"),
        (lambda t: t.split("\n", 1)[0] + "\n", r"header but no rows"),
    ],
    ids=["header-name", "header-count", "text-pixel", "empty-cell", "fraction", "pixel-high", "pixel-negative", "label-unknown", "extra-field", "no-rows"],
)
def test_bad_csv_is_a_one_line_error_naming_file_and_row(tmp_path, mutate, message):
    path = tmp_path / "sign_mnist_train.csv"
    path.write_text(mutate(_good_rows()))
    with pytest.raises(DataError, match=message) as info:
        load_split(tmp_path, "train")
    text = str(info.value)
    assert "\n" not in text and str(path) in text


def test_not_gzip_despite_name_and_binary_garbage(tmp_path):
    (tmp_path / "sign_mnist_train.csv.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(DataError, match="cannot read"):
        load_split(tmp_path, "train")


def test_foreign_csv_in_kaggle_format_warns_but_loads(tmp_path):
    write_synthetic_csvs(tmp_path, n_train=40, n_test=30)
    with pytest.warns(UserWarning, match="differs from the Kaggle release"):
        images, _ = load_split(tmp_path, "train", use_cache=False)
    assert images.shape == (40, 784)


# --- cache -------------------------------------------------------------------------------------


def _cache_files(cache_dir):
    return sorted(cache_dir.glob("*.npz"))


def test_cache_hit_skips_parsing_and_is_identical(real_data_dir, monkeypatch):
    from datamodules import csv_io

    cache = default_cache_dir()
    for leftover in _cache_files(cache):  # start cold, whatever earlier tests did
        leftover.unlink()
    first = load_split(real_data_dir, "test")
    assert len(_cache_files(cache)) == 1

    def no_parsing(source):
        raise AssertionError(f"{source.name} was parsed again despite a fresh cache")

    monkeypatch.setattr(csv_io, "parse_csv", no_parsing)
    second = load_split(real_data_dir, "test")  # its speed is benchmarked, not asserted
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_changed_csv_is_read_again(tmp_path):
    cache = tmp_path / "cache"
    data = tmp_path / "data"
    write_synthetic_csvs(data, n_train=40, n_test=30, seed=1)
    before = load_split(data, "train", cache_dir=cache)
    write_synthetic_csvs(data, n_train=45, n_test=30, seed=2)
    os.utime(data / "sign_mnist_train.csv", ns=(time.time_ns(), time.time_ns() + 10**9))
    after = load_split(data, "train", cache_dir=cache)
    assert before[0].shape == (40, 784) and after[0].shape == (45, 784)


@pytest.mark.parametrize("damage", ["truncate", "flip-bytes", "empty"])
def test_damaged_cache_is_rebuilt_not_read(tmp_path, damage):
    cache = tmp_path / "cache"
    write_synthetic_csvs(tmp_path / "data", n_train=60, n_test=30)
    expected = load_split(tmp_path / "data", "train", cache_dir=cache)
    (cache_file,) = _cache_files(cache)
    raw = cache_file.read_bytes()
    if damage == "truncate":  # a process killed mid-write (were it not for the atomic rename)
        cache_file.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip-bytes":  # silent corruption inside the pixel array
        middle = len(raw) // 2
        cache_file.write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle : middle + 64]) + raw[middle + 64 :])
    else:
        cache_file.write_bytes(b"")
    again = load_split(tmp_path / "data", "train", cache_dir=cache)
    np.testing.assert_array_equal(again[0], expected[0])
    np.testing.assert_array_equal(again[1], expected[1])
    # and the rebuilt cache is whole again
    with np.load(cache_file) as stored:
        np.testing.assert_array_equal(stored["images"], expected[0])


def test_unwritable_cache_folder_only_warns(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    write_synthetic_csvs(tmp_path / "data", n_train=40, n_test=30)
    with pytest.warns(UserWarning, match="could not write the data cache"):
        images, _ = load_split(tmp_path / "data", "train", cache_dir=blocker / "cache")
    assert images.shape == (40, 784)


# --- splits ------------------------------------------------------------------------------------


def test_reference_split_sizes_on_real_data(real_data_dir):
    mlp = load_splits(real_data_dir, val_fraction=1 / 6, seed=22)
    assert (len(mlp.train_labels), len(mlp.val_labels), len(mlp.test_labels)) == (22879, 4576, 7172)
    reduction = load_splits(real_data_dir, val_fraction=0.2, seed=22)
    assert (len(reduction.train_labels), len(reduction.val_labels)) == (21964, 5491)
    # disjoint and covering the train CSV
    assert len(np.intersect1d(mlp.train_index, mlp.val_index)) == 0
    assert len(mlp.train_index) + len(mlp.val_index) == 27455


def test_split_is_stratified_and_seeded(synthetic_data_dir):
    a = load_splits(synthetic_data_dir, val_fraction=0.2, seed=22)
    b = load_splits(synthetic_data_dir, val_fraction=0.2, seed=22)
    c = load_splits(synthetic_data_dir, val_fraction=0.2, seed=23)
    np.testing.assert_array_equal(a.val_index, b.val_index)
    assert not np.array_equal(a.val_index, c.val_index)
    train_share = np.bincount(a.train_labels, minlength=25) / len(a.train_labels)
    val_share = np.bincount(a.val_labels, minlength=25) / len(a.val_labels)
    assert np.abs(train_share - val_share).max() < 0.01


def test_bad_fraction_and_unstratifiable_data(synthetic_data_dir):
    with pytest.raises(DataError, match="between 0 and 1"):
        load_splits(synthetic_data_dir, val_fraction=1.5)
    with pytest.raises(DataError, match="stratified"):
        load_splits(synthetic_data_dir, limit_rows=30)  # some classes have a single row


def test_reference_sample_matches_pandas():
    import pandas as pd

    frame = pd.DataFrame({"x": np.arange(100)}, index=np.arange(100) * 7)
    expected = frame.sample(n=10, random_state=22)["x"].to_numpy()
    np.testing.assert_array_equal(reference_sample(100, 10, 22), expected)
    with pytest.raises(DataError):
        reference_sample(5, 10)


def test_header_constant():
    assert HEADER[0] == "label" and HEADER[-1] == "pixel784" and len(HEADER) == 785


def test_gzip_magic_wins_over_file_name(tmp_path):
    text = _good_rows(30)
    (tmp_path / "sign_mnist_train.csv").write_bytes(gzip.compress(text.encode()))
    assert load_split(tmp_path, "train")[0].shape == (30, 784)


def test_run_main_turns_every_expected_failure_into_an_exit_code(capsys):
    from cli_kit import ArgumentParser, UsageError, run_main

    def main(argv):
        parser = ArgumentParser(prog="demo")
        parser.add_argument("--n", type=int)
        args = parser.parse_args(argv)
        if args.n == 0:
            raise UsageError("n must not be 0")
        if args.n == 1:
            raise DataError("demo.csv: line 2: bad")

    assert run_main(main, ["--n", "x"]) == 2
    assert run_main(main, ["--n", "0"]) == 2
    assert run_main(main, ["--n", "1"]) == 2
    assert run_main(main, ["--help"]) == 0
    assert run_main(main, ["--n", "5"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["demo: error: argument --n: invalid int value: 'x'", "error: n must not be 0", "error: demo.csv: line 2: bad"]
