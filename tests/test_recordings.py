from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from harstream.evaluation.metrics import segments
from replay import DataError, iter_hapt, iter_uci_har
from replay.hapt import find_raw_dir

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def hapt(tmp_path: Path) -> Path:
    """A writable copy of the mini HAPT folder, for corrupting."""
    return Path(shutil.copytree(DATA / "hapt-mini", tmp_path / "hapt"))


@pytest.fixture
def uci(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DATA / "uci-har-mini", tmp_path / "uci"))


def raw_text(path: Path) -> np.ndarray:
    return np.array([[float(v) for v in line.split()] for line in path.read_text().splitlines()])


def test_hapt_yields_subjects_and_experiments_in_order(hapt: Path) -> None:
    recordings = list(iter_hapt(hapt))
    assert [(r.subject, r.experiment) for r in recordings] == [(1, "exp01"), (9, "exp17")]
    first = recordings[0]
    assert first.samples.shape == (3700, 6) and first.samples.dtype == np.float64
    acc = raw_text(hapt / "RawData" / "acc_exp01_user01.txt")
    gyro = raw_text(hapt / "RawData" / "gyro_exp01_user01.txt")
    np.testing.assert_array_equal(first.samples, np.hstack([acc, gyro]))
    assert [r.subject for r in iter_hapt(hapt, subjects=[9])] == [9]


def test_hapt_labels_are_one_based_and_end_inclusive(hapt: Path) -> None:
    labels = next(iter_hapt(hapt)).labels
    # labels.txt row "1 1 5 250 1232" then "1 1 7 1233 1392": 1-based, inclusive
    assert labels[248] == 0 and labels[249] == 5 and labels[1231] == 5 and labels[1232] == 7
    assert labels[1391] == 7 and labels[1392] == 4
    assert int(np.sum(labels == 5)) == (1232 - 250 + 1) + (3374 - 2360 + 1)
    assert segments(next(iter_hapt(hapt)).labels)[:2] == [(5, 249, 1232), (7, 1232, 1392)]


def test_find_raw_dir_accepts_both_levels(hapt: Path) -> None:
    assert find_raw_dir(hapt) == find_raw_dir(hapt / "RawData") == hapt / "RawData"
    with pytest.raises(DataError, match=r"no HAPT RawData/labels\.txt"):
        find_raw_dir(hapt.parent)


def corrupt_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda raw: (raw / "gyro_exp17_user09.txt").unlink(),
            r"gyro_exp17_user09\.txt: missing \(its pair acc_exp17_user09\.txt exists\)",
        ),
        (
            lambda raw: corrupt_line(raw / "acc_exp01_user01.txt", 17, "0.1 0.2"),
            r"acc_exp01_user01\.txt:17: expected 3 columns, found 2",
        ),
        (
            lambda raw: corrupt_line(raw / "gyro_exp01_user01.txt", 5, "0.1 abc 0.3"),
            r"gyro_exp01_user01\.txt:5: not a number: '0.1 abc 0.3'",
        ),
        (
            lambda raw: corrupt_line(raw / "gyro_exp01_user01.txt", 9, "0.1 nan 0.3"),
            r"gyro_exp01_user01\.txt:9: non-finite value",
        ),
        (
            lambda raw: corrupt_line(raw / "labels.txt", 3, "1 1 4 1393 9999"),
            r"labels\.txt:3: segment ends at sample 9999, past the end of experiment 1 \(3700",
        ),
        (
            lambda raw: corrupt_line(raw / "labels.txt", 2, "1 1 13 1233 1392"),
            r"labels\.txt:2: activity 13 is not in 1..12",
        ),
        (
            lambda raw: corrupt_line(raw / "labels.txt", 2, "1 1 7 1233"),
            r"labels\.txt:2: expected 5 columns, found 4",
        ),
        (
            lambda raw: corrupt_line(raw / "labels.txt", 2, "1 1 7 1233 x"),
            r"labels\.txt:2: not an integer",
        ),
        (
            lambda raw: corrupt_line(raw / "labels.txt", 2, "1 1 7 1200 1392"),
            r"labels\.txt:2: segment overlaps another one",
        ),
        (
            lambda raw: corrupt_line(raw / "labels.txt", 2, "1 4 7 1233 1392"),
            r"labels\.txt:2: user 4, but experiment 1 is user 1",
        ),
        (
            lambda raw: corrupt_line(raw / "gyro_exp01_user01.txt", 300, ""),
            r"gyro_exp01_user01\.txt:300: expected 3 columns, found 0",
        ),
    ],
)
def test_hapt_malformed_files_name_file_and_line(hapt: Path, damage, expected: str) -> None:
    damage(hapt / "RawData")
    with pytest.raises(DataError, match=expected):
        list(iter_hapt(hapt))


def test_hapt_acc_and_gyro_lengths_must_match(hapt: Path) -> None:
    path = hapt / "RawData" / "gyro_exp17_user09.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-5]) + "\n")
    with pytest.raises(DataError, match=r"gyro_exp17_user09\.txt: 4195 rows, but acc"):
        list(iter_hapt(hapt, subjects=[9]))


def test_uci_har_windows_stitch_back_into_the_original_streams() -> None:
    hapt = {r.subject: r for r in iter_hapt(DATA / "hapt-mini")}
    streams = list(iter_uci_har(DATA / "uci-har-mini"))
    assert {s.subject for s in streams} == {1, 9}
    for stream in streams:
        original = hapt[stream.subject]
        assert len(set(stream.labels.tolist())) == 1  # one stream per labelled segment here
        # find where the stream starts in the raw recording and compare sample by sample
        start = int(
            np.argmin(
                np.abs(original.samples[:, 0] - stream.samples[0, 0])
                + np.abs(original.samples[:, 3] - stream.samples[0, 3])
            )
        )
        np.testing.assert_allclose(
            stream.samples, original.samples[start : start + len(stream)], rtol=1e-6, atol=1e-7
        )
        assert np.all(original.labels[start : start + len(stream)] == stream.labels)
    # one stream per segment long enough for a window: the breaks were found
    runs = [
        s for r in hapt.values() for s in segments(r.labels) if s[0] <= 6 and s[2] - s[1] >= 128
    ]
    assert len(streams) == len(runs)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda root: (root / "test" / "Inertial Signals" / "body_gyro_y_test.txt").unlink(),
            r"body_gyro_y_test\.txt: missing",
        ),
        (
            lambda root: corrupt_line(
                root / "train" / "Inertial Signals" / "total_acc_x_train.txt",
                4,
                " 1.0e+000 2.0e+000",
            ),
            r"total_acc_x_train\.txt:4: expected 128 columns, found 2",
        ),
        (
            lambda root: corrupt_line(root / "train" / "y_train.txt", 6, "7"),
            r"y_train\.txt:6: activity 7 is not in 1..6",
        ),
        (
            lambda root: corrupt_line(root / "train" / "subject_train.txt", 2, "one"),
            r"subject_train\.txt:2: not a number",
        ),
        (
            lambda root: (root / "test" / "y_test.txt").write_text("1\n2\n"),
            r"subject_test\.txt: 37 rows, but y_test\.txt has 2",
        ),
    ],
)
def test_uci_har_malformed_files_name_file_and_line(uci: Path, damage, expected: str) -> None:
    damage(uci / "UCI HAR Dataset")
    with pytest.raises(DataError, match=expected):
        list(iter_uci_har(uci))
