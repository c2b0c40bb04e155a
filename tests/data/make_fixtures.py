"""Regenerate the small fixtures in tests/data from the full HAPT recordings.

    python tests/data/make_fixtures.py ../shared/data/hapt

hapt-mini/: two experiments cut from HAPT RawData, in the exact original formats
(acc/gyro text files, labels.txt with 1-based inclusive sample numbers).
uci-har-mini/: UCI HAR v1 style windows (128 samples, 50% overlap, per labelled
segment) cut from those, in the original "Inertial Signals" text format.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from harstream.evaluation.metrics import segments

HERE = Path(__file__).resolve().parent
# (experiment, user, first row, stop row): rows are re-based to start at 1
SPANS = [(1, 1, 0, 3700), (17, 9, 7800, 12000)]


def write_rows(path: Path, rows: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in rows))


def make_hapt(source: Path) -> list[tuple[int, np.ndarray, np.ndarray]]:
    raw = HERE / "hapt-mini" / "RawData"
    raw.mkdir(parents=True, exist_ok=True)
    label_rows = []
    cut = []
    labels = [
        tuple(map(int, line.split()))
        for line in (source / "RawData" / "labels.txt").read_text().splitlines()
    ]
    for exp, user, first, stop in SPANS:
        arrays = {}
        for kind in ("acc", "gyro"):
            name = f"{kind}_exp{exp:02d}_user{user:02d}.txt"
            lines = (source / "RawData" / name).read_text().splitlines()[first:stop]
            write_rows(raw / name, lines)  # untouched original text
            arrays[kind] = np.array([[float(v) for v in line.split()] for line in lines])
        per_sample = np.zeros(stop - first, np.int8)
        for e, u, activity, start, end in labels:
            if e == exp and start - 1 >= first and end <= stop:
                label_rows.append(f"{e} {u} {activity} {start - first} {end - first}")
                per_sample[start - 1 - first : end - first] = activity
        cut.append((user, np.hstack([arrays["acc"], arrays["gyro"]]), per_sample))
    write_rows(raw / "labels.txt", label_rows)
    return cut


def fmt(values: np.ndarray) -> str:
    # UCI HAR v1 writes " 1.0128170e+000" (MATLAB on Windows: 3-digit exponents)
    out = []
    for v in values:
        mantissa, exponent = f"{v:.7e}".split("e")
        out.append(f"{mantissa}e{exponent[0]}{int(exponent[1:]):03d}".rjust(16))
    return "".join(out)


def make_uci(cut: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
    root = HERE / "uci-har-mini" / "UCI HAR Dataset"
    for split, users in (("train", {1}), ("test", {9})):
        folder = root / split / "Inertial Signals"
        folder.mkdir(parents=True, exist_ok=True)
        windows, ys, subjects = [], [], []
        for user, samples, labels in cut:
            if user not in users:
                continue
            for activity, a, b in segments(labels):
                if activity > 6:
                    continue
                for s in range(a, b - 127, 64):
                    windows.append(samples[s : s + 128])
                    ys.append(activity)
                    subjects.append(user)
        w = np.array(windows)
        channels = {
            "total_acc": w[..., :3],
            "body_gyro": w[..., 3:],
            "body_acc": w[..., :3] - w[..., :3].mean(axis=1, keepdims=True),
        }
        for kind, values in channels.items():
            for i, axis in enumerate("xyz"):
                write_rows(
                    folder / f"{kind}_{axis}_{split}.txt", [fmt(row) for row in values[..., i]]
                )
        write_rows(root / split / f"y_{split}.txt", [str(y) for y in ys])
        write_rows(root / split / f"subject_{split}.txt", [str(s) for s in subjects])


if __name__ == "__main__":
    make_uci(make_hapt(Path(sys.argv[1])))
