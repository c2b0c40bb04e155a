"""Field data end to end on the small fixtures: a gateway records two devices, labels
come in by CSV and from a Sensor Logger export, ``evaluate-field`` scores them,
``finetune`` adapts the packaged bundle, and every bad input named in the issue
is refused with its reason (the real packaged model, real files, the CLI)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from harstream.cli import main
from harstream.core.bundle import load_bundle
from harstream.evaluation.metrics import segments
from harstream.recordings import read_labels, read_sessions
from replay import BASIC_ACTIVITIES, iter_hapt
from tests.gateway_helpers import MINI, imu
from tests.test_service import Harness
from training.fielddata import load_field

T0 = 1_790_000_000.0
RECORDINGS = {"waist": 1, "pocket": 9}  # device -> the fixture subject it streams


def truth_csv(path: Path, iso: bool = False) -> Path:
    """The fixtures' activity 1-6 segments as a label CSV (device,start,end,activity)."""
    lines = ["device,start,end,activity"]
    for device, subject in RECORDINGS.items():
        (r,) = iter_hapt(MINI, subjects=[subject])
        for c, a, b in segments(r.labels):
            if 1 <= c <= 6:
                start, end = T0 + a / 50, T0 + b / 50
                if iso:
                    start_s = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start))
                    start_s += f"{start % 1:.3f}"[1:] + "Z"
                    lines.append(f"{device},{start_s},{end!r},{BASIC_ACTIVITIES[c - 1]}")
                else:
                    lines.append(f"{device},{start!r},{end!r},{BASIC_ACTIVITIES[c - 1]}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged model's gateway recording both fixture subjects as two devices."""
    folder = tmp_path_factory.mktemp("recordings")

    async def go() -> None:
        async with Harness(load_bundle(), f"recording.dir={folder}") as h:
            for device, subject in RECORDINGS.items():
                (r,) = iter_hapt(MINI, subjects=[subject])
                for s in range(0, len(r), 50):
                    await h.send(device, imu(r.samples[s : s + 50], seq=s, t=T0 + s / 50))
            total = sum(len(next(iter_hapt(MINI, subjects=[s]))) for s in RECORDINGS.values())
            await h.settle(lambda: h.gateway.snapshot()["samples"] == total, 30)

    asyncio.run(go())
    return folder


def copy(recorded: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "rec"
    shutil.copytree(recorded, folder)
    return folder


def test_labels_import_evaluate_and_finetune(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = copy(recorded, tmp_path)
    assert (
        main(
            [
                "data",
                "labels",
                "import",
                str(truth_csv(tmp_path / "t.csv", iso=True)),
                "--dir",
                str(folder),
            ]
        )
        == 0
    )
    assert len(read_labels(folder, "pocket")) == 5 and len(read_labels(folder, "waist")) == 3
    # the protocol's figures on the labelled recordings, per device
    report = tmp_path / "report" / "report.json"
    assert main(["evaluate-field", str(folder), "--report", str(report)]) == 0
    body = json.loads(report.read_text())
    assert body["subjects"] == ["pocket", "waist"]
    assert body["window"]["windows"] > 40 and 0.5 < body["window"]["accuracy"] <= 1.0
    assert (tmp_path / "report" / "confusion_matrix.png").exists()
    assert (tmp_path / "report" / "report-subjects.md").read_text().count("pocket") == 1
    # fine-tuning: the waist session held out (the latest), a normal bundle with lineage
    out = tmp_path / "tuned"
    assert (
        main(
            [
                "finetune",
                "default",
                "--recordings",
                str(folder),
                "--out",
                str(out),
                "--steps",
                "5",
                "--holdout",
                "0.5",
            ]
        )
        == 0
    )
    tuned = load_bundle(out)
    lineage = tuned.training["finetune"]
    assert lineage["base"]["name"] == load_bundle().name and len(lineage["base"]["sha256"]) == 64
    assert lineage["devices"] == ["pocket"] and len(lineage["holdout_sessions"]) == 1
    assert lineage["holdout_sessions"][0].startswith("waist/") and lineage["labelled_s"] > 30
    assert {"holdout_before_window_accuracy", "holdout_after_window_accuracy"} <= set(tuned.metrics)
    assert tuned.name == load_bundle().name + "-ft"
    assert "held-out sessions" in capsys.readouterr().out


def test_bad_labels_are_refused_naming_each(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = copy(recorded, tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "device,start,end,activity\n"
        f"pocket,{T0 + 1},{T0 + 5},WALKING\n"
        f"pocket,{T0 + 4},{T0 + 6},WALKING\n"  # overlaps the first
        f"pocket,{T0 + 9},{T0 + 8},SITTING\n"  # reversed
        f"pocket,{T0 + 10},{T0 + 11},DANCING\n"  # unknown
        f"pocket,{T0 + 9000},{T0 + 9001},LAYING\n"  # outside every recording
    )
    assert main(["data", "labels", "import", str(bad), "--dir", str(folder)]) == 1
    err = capsys.readouterr().err
    for words in ("overlaps", "not after the start", "DANCING", "outside every recording"):
        assert words in err
    assert read_labels(folder, "pocket") == []  # all or none


def test_sensor_logger_annotations_become_labels(recorded: Path, tmp_path: Path) -> None:
    folder = copy(recorded, tmp_path)
    export = tmp_path / "export"
    export.mkdir()
    ns = lambda t: int(t * 1e9)  # noqa: E731
    for name in ("Accelerometer.csv", "Gravity.csv", "Gyroscope.csv"):
        rows = [f"{ns(T0 + k)},0.1,0.2,0.3" for k in range(40)]
        (export / name).write_text("time,x,y,z\n" + "\n".join(rows) + "\n")
    (export / "Annotation.csv").write_text(
        "time,seconds_elapsed,text\n"
        f"{ns(T0 + 2)},2,walking\n{ns(T0 + 10)},10,stop\n{ns(T0 + 12)},12,Walking Upstairs\n"
    )
    assert (
        main(["data", "labels", "import", str(export), "--device", "pocket", "--dir", str(folder)])
        == 0
    )
    labels = [(lab.activity, lab.start - T0, lab.end - T0) for lab in read_labels(folder, "pocket")]
    assert labels == [("WALKING", 2.0, 10.0), ("WALKING_UPSTAIRS", 12.0, 39.0)]
    (export / "Annotation.csv").write_text(f"time,text\n{ns(T0 + 2)},juggling\n")
    assert (
        main(["data", "labels", "import", str(export), "--device", "waist", "--dir", str(folder)])
        == 1
    )


def test_corrupt_parts_are_skipped_by_name_and_the_rest_used(
    recorded: Path, tmp_path: Path
) -> None:
    folder = copy(recorded, tmp_path)
    main(["data", "labels", "import", str(truth_csv(tmp_path / "t.csv")), "--dir", str(folder)])
    pocket = read_sessions(folder, "pocket")[0][0]
    whole = load_field(folder, load_bundle(), devices=["pocket"])
    part = pocket.path / pocket.parts[0]
    part.write_bytes(part.read_bytes()[:100])  # truncated
    field = load_field(folder, load_bundle())
    assert any(str(part) in p and "skipped" in p for p in field.problems)
    assert {r.subject for r in field.recordings} == {"waist"} or sum(
        len(r.labels) for r in field.recordings if r.subject == "pocket"
    ) < sum(len(r.labels) for r in whole.recordings)
    (pocket.path / "session.json").write_text("{broken")
    field = load_field(folder, load_bundle())
    assert any("unreadable session" in p for p in field.problems)
    assert {r.subject for r in field.recordings} == {"waist"}


def test_finetune_refuses_one_class_and_another_architecture(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = copy(recorded, tmp_path)
    one = tmp_path / "one.csv"
    one.write_text(f"device,start,end,activity\npocket,{T0 + 2},{T0 + 18},WALKING\n")
    main(["data", "labels", "import", str(one), "--dir", str(folder)])
    argv = ["finetune", "default", "--recordings", str(folder), "--steps", "2"]
    assert main([*argv, "--out", str(tmp_path / "x"), "--holdout", "0"]) == 1
    assert "['WALKING'] only" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(load_bundle().path, other)
    spec = json.loads((other / "bundle.json").read_text())
    spec["arch"]["hidden"] = 32
    (other / "bundle.json").write_text(json.dumps(spec))
    argv[1] = str(other)
    assert main([*argv, "--out", str(tmp_path / "y")]) == 1
    err = capsys.readouterr().err
    assert "model.pt" in err and "32x2" in err


def test_forget_erases_files(recorded: Path, tmp_path: Path) -> None:
    folder = copy(recorded, tmp_path)
    assert main(["data", "forget", "pocket", "--dir", str(folder), "--local"]) == 0
    assert {s.device for s in read_sessions(folder)[0]} == {"waist"}
    assert np.all([p.name != "pocket" for p in folder.iterdir()])


@pytest.mark.slow
@pytest.mark.broker
def test_finetuning_recovers_a_phone_worn_upside_down(hapt_dir: Path, tmp_path: Path) -> None:
    """The measurement of docs/field-data.md, one row: test subject 2's phone upside down
    (y180), never calibrated, streamed as a Sensor Logger phone through mosquitto and
    recorded; its first experiment labelled and used to fine-tune, the second scored."""
    from training.field_study import study

    (row,) = study(hapt_dir, [2], ["y180"], tmp_path).to_dict("records")
    print(row)
    # before: the packaged bundle, trained on stale verticals too, reads walking and
    # stairs under the wrong (UCI) mount (0.91 windows; one network 0.85, the scripted
    # default 0.37); after: its wearer's four labelled minutes take away at least half of
    # what it still gets wrong, windows and stream alike
    assert row["window_after"] >= 0.95
    assert 1 - row["window_after"] <= 0.5 * (1 - row["window_before"])
    assert 1 - row["online_after"] <= 0.5 * (1 - row["online_before"])
    assert 3 < row["labelled_min"] < 5


def test_a_one_session_finetune_holds_out_its_last_labels_and_says_so(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One labelled session: the last 30% of its labelled time is held out, scored
    before and after, named in the lineage and by `evaluate-field`, which can
    score it alone (--heldout)."""
    folder = copy(recorded, tmp_path)
    truth = truth_csv(tmp_path / "t.csv")
    pocket = [line for line in truth.read_text().splitlines() if not line.startswith("waist")]
    truth.write_text("\n".join(pocket) + "\n")
    assert main(["data", "labels", "import", str(truth), "--dir", str(folder)]) == 0
    out = tmp_path / "tuned"
    argv = ["finetune", "default", "--recordings", str(folder), "--steps", "3"]
    assert main([*argv, "--out", str(out), "--holdout", "0.3"]) == 0
    printed = capsys.readouterr().out
    tuned = load_bundle(out)
    lineage = tuned.training["finetune"]
    (session,) = lineage["fit_sessions"]
    holdout = lineage["holdout"]
    assert holdout["kind"] == "tail" and holdout["session"] == session and session[:7] == "pocket/"
    # 30% of the 2,778 labelled samples (55.6 s), from the end: the last two segments
    # (323 + 386 samples) and the last 124 of the third (which starts at sample 2916)
    assert holdout["labelled_s"] == pytest.approx(0.3 * 2778 / 50, abs=0.05)
    assert holdout["from_t"] == pytest.approx(T0 + (3143 - 124) / 50, abs=0.02)
    assert lineage["holdout_sessions"] == []
    metrics = tuned.metrics
    assert 0 <= metrics["holdout_before_window_accuracy"] <= 1
    assert 0 <= metrics["holdout_after_window_accuracy"] <= 1
    assert "held out: the last 30% of pocket/" in printed
    report = tmp_path / "r" / "report.json"
    base = ["evaluate-field", str(folder), "--model", str(out), "--report", str(report)]
    assert main(base) == 0
    printed = capsys.readouterr().out
    assert "was fine-tuned on" in printed and "the last 30% of pocket/" in printed
    every = json.loads(report.read_text())["window"]["windows"]
    assert main([*base, "--heldout"]) == 0
    assert "scoring what it held out only" in capsys.readouterr().out
    held = json.loads(report.read_text())["window"]["windows"]
    # the held-out tail's protocol windows: 4 (323 samples) + 5 (386) + 0 (124)
    assert held == 9 < every
    assert main(["evaluate-field", str(folder), "--heldout"]) == 1  # not fine-tuned


def test_a_one_session_finetune_too_short_to_hold_out_is_refused_with_what_to_do(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = copy(recorded, tmp_path)
    one = tmp_path / "one.csv"  # 18 s of walking: its last quarter is 2 windows
    one.write_text(f"device,start,end,activity\npocket,{T0 + 1.8},{T0 + 20.2},WALKING\n")
    main(["data", "labels", "import", str(one), "--dir", str(folder)])
    argv = ["finetune", "default", "--recordings", str(folder), "--steps", "2"]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "the only labelled session" in err and "2 whole windows" in err
    assert "Record more" in err and "--holdout 0" in err
    assert not (tmp_path / "x").exists()
