"""Check a data folder before anything trains or replays from it.

``verify_data(DIR)`` looks at HAPT raw recordings (and a UCI HAR v1 folder when one is
there) and returns every problem found, not just the first: file pairs, row and
column counts, label ranges and segment bounds, the 30 subjects, and the sha256 of each
RawData file against the published originals (``checksums/hapt-rawdata.sha256``).
"""

from __future__ import annotations

import hashlib
import lzma
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from replay.errors import DataError
from replay.hapt import (
    Experiment,
    LabelRow,
    find_raw_dir,
    list_experiments,
    read_labels,
    read_matrix,
)
from replay.ucihar import find_uci_har_dir, read_split

__all__ = ["SubjectSummary", "VerifyReport", "format_report", "verify_data"]

TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)
ALL_SUBJECTS = tuple(range(1, 31))


@dataclass
class SubjectSummary:
    subject: int
    experiments: list[int] = field(default_factory=list)
    samples: int = 0
    labelled: int = 0
    segments: int = 0  # activities 1..6
    transitions: int = 0  # activities 7..12

    @property
    def split(self) -> str:
        return "test" if self.subject in TEST_SUBJECTS else "train"


@dataclass
class VerifyReport:
    root: Path
    subjects: dict[int, SubjectSummary] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def known_checksums() -> dict[str, str]:
    """sha256 of each published HAPT RawData file, by file name."""
    text = resources.files("replay").joinpath("checksums/hapt-rawdata.sha256").read_text()
    sums = {}
    for line in text.splitlines():
        digest, name = line.split(maxsplit=1)
        sums[Path(name).name] = digest
    return sums


def _sha256(path: Path) -> str:
    """sha256 of a file's content (of the decompressed content for ``.xz``)."""
    digest = hashlib.sha256()
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_data(data_dir: str | Path, checksums: bool = True) -> VerifyReport:
    root = Path(data_dir)
    report = VerifyReport(root)
    if not root.is_dir():
        report.problems.append(f"{root}: not a folder")
        return report
    has_hapt = (root / "RawData").is_dir() or (root / "labels.txt").is_file()
    has_uci = (root / "UCI HAR Dataset").is_dir() or (root / "train").is_dir()
    if not has_hapt and not has_uci:
        report.problems.append(f"{root}: neither HAPT RawData/ nor 'UCI HAR Dataset/' found")
    if has_hapt:
        _verify_hapt(report, checksums)
    if has_uci:
        _verify_uci_har(report)
    return report


def _verify_hapt(report: VerifyReport, checksums: bool) -> None:
    try:
        raw_dir = find_raw_dir(report.root)
        experiments = list_experiments(raw_dir)
        labels = read_labels(raw_dir)
    except DataError as exc:
        report.problems.append(str(exc))
        return
    rows = _check_sensor_files(report, experiments, known_checksums() if checksums else {})
    users = {exp.experiment: exp.subject for exp in experiments}
    _check_labels(report, raw_dir / "labels.txt", labels, rows, users)
    unlabelled = sorted(set(rows) - {row.experiment for row in labels})
    if unlabelled:
        report.problems.append(
            f"{raw_dir / 'labels.txt'}: no labels for experiment(s) {unlabelled}"
        )
    missing = sorted(set(ALL_SUBJECTS) - set(report.subjects))
    if missing:
        report.problems.append(f"{raw_dir}: subject(s) missing: {missing}")


def _check_sensor_files(
    report: VerifyReport, experiments: list[Experiment], sums: dict[str, str]
) -> dict[int, int]:
    """Each experiment's acc and gyro files readable, of one length, and (with ``sums``)
    the published originals; returns the rows of each readable experiment."""
    mismatched = []
    rows: dict[int, int] = {}
    for exp in experiments:
        summary = report.subjects.setdefault(exp.subject, SubjectSummary(exp.subject))
        summary.experiments.append(exp.experiment)
        try:
            acc, gyro = read_matrix(exp.acc_path), read_matrix(exp.gyro_path)
        except DataError as exc:
            report.problems.append(str(exc))
            continue
        if len(acc) != len(gyro):
            report.problems.append(
                f"{exp.gyro_path}: {len(gyro)} rows, but {exp.acc_path.name} has {len(acc)}"
            )
            continue
        rows[exp.experiment] = len(acc)
        summary.samples += len(acc)
        for path in (exp.acc_path, exp.gyro_path):
            name = path.name.removesuffix(".xz")
            if name in sums and _sha256(path) != sums[name]:
                mismatched.append(path.name)
    if mismatched:
        report.problems.append(
            f"{len(mismatched)} file(s) differ from the published HAPT "
            f"originals: {', '.join(mismatched[:5])}"
        )
    elif sums:
        report.notes.append("every RawData file matches the published sha256")
    return rows


def _check_labels(
    report: VerifyReport,
    labels_path: Path,
    labels: list[LabelRow],
    rows: dict[int, int],
    users: dict[int, int],
) -> None:
    """Every label row names a known experiment of its user, lies inside it and overlaps
    no other; the subjects' labelled samples, segments and transitions are counted."""
    covered: dict[int, np.ndarray] = {e: np.zeros(n, bool) for e, n in rows.items()}
    for row in labels:
        where = f"{labels_path}:{row.line}"
        if row.experiment not in users:
            report.problems.append(f"{where}: experiment {row.experiment} has no sensor files")
            continue
        if users[row.experiment] != row.subject:
            report.problems.append(
                f"{where}: user {row.subject}, but experiment "
                f"{row.experiment} is user {users[row.experiment]}"
            )
        if row.experiment not in rows:
            continue  # its files were unreadable; already reported
        if row.stop > rows[row.experiment]:
            report.problems.append(
                f"{where}: segment ends at sample {row.stop}, past the end "
                f"of experiment {row.experiment} ({rows[row.experiment]} rows)"
            )
            continue
        mask = covered[row.experiment]
        if mask[row.start : row.stop].any():
            report.problems.append(f"{where}: segment overlaps another one")
        mask[row.start : row.stop] = True
        summary = report.subjects[users[row.experiment]]
        summary.labelled += row.stop - row.start
        if row.activity <= 6:
            summary.segments += 1
        else:
            summary.transitions += 1


def _verify_uci_har(report: VerifyReport) -> None:
    try:
        root = find_uci_har_dir(report.root)
    except DataError as exc:
        report.problems.append(str(exc))
        return
    for split in ("train", "test"):
        if not (root / split).is_dir():
            report.problems.append(f"{root / split}: missing")
            continue
        try:
            windows, _, subject = read_split(root, split)
        except DataError as exc:
            report.problems.append(str(exc))
            continue
        report.notes.append(
            f"UCI HAR v1 {split}: {len(windows)} windows, subjects {sorted(set(subject.tolist()))}"
        )


def format_report(report: VerifyReport) -> str:
    lines = [f"data folder: {report.root}"]
    if report.subjects:
        lines.append(
            f"{'subject':>7} {'split':>5} {'exps':>4} {'samples':>8} {'minutes':>7} "
            f"{'labelled':>8} {'segments':>8} {'transitions':>11}"
        )
        for sid in sorted(report.subjects):
            s = report.subjects[sid]
            share = s.labelled / s.samples if s.samples else 0.0
            lines.append(
                f"{sid:>7} {s.split:>5} {len(s.experiments):>4} {s.samples:>8} "
                f"{s.samples / 50 / 60:>7.1f} {share:>8.0%} {s.segments:>8} "
                f"{s.transitions:>11}"
            )
        total = sum(s.samples for s in report.subjects.values())
        exps = sum(len(s.experiments) for s in report.subjects.values())
        lines.append(f"{'all':>7} {'':>5} {exps:>4} {total:>8} {total / 50 / 60:>7.1f}")
    lines.extend(f"ok: {note}" for note in report.notes)
    lines.extend(f"problem: {problem}" for problem in report.problems)
    lines.append("verdict: " + ("OK" if report.ok else f"{len(report.problems)} problem(s)"))
    return "\n".join(lines)
