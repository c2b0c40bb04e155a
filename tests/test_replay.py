"""Replay: pacing (fake and real clock), sessions, CSV in/out, the CLI end to end."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from harstream.cli import main
from harstream.cli.live import LivePrinter
from harstream.cli.playback import load_subject, replay_report, run_replay
from harstream.config import load_config
from harstream.core.bundle import Bundle
from harstream.core.engine import Decision
from replay import DataError, Recording, iter_hapt
from replay.csvio import read_csv, write_csv
from replay.player import FakeClock, RealClock, play

DATA = Path(__file__).resolve().parent / "data"
DEMO = list(iter_hapt(DATA / "hapt-mini", subjects=[9]))


def minute_of(rec: Recording, seconds: float) -> Recording:
    n = int(seconds * rec.rate_hz)
    return Recording(rec.subject, rec.experiment, rec.samples[:n], rec.labels[:n])


def test_player_paces_messages_and_separates_sessions() -> None:
    a = minute_of(DEMO[0], 2.0)  # 100 samples
    b = Recording(9, "exp99", a.samples[:60], a.labels[:60])
    clock = FakeClock()
    seen = []
    for chunk in play([a, b], message_samples=25, speed=2.0, clock=clock):
        seen.append((chunk.recording.experiment, chunk.start, chunk.seq, chunk.t, clock.now()))
    # each message leaves when its last sample has been measured, at 2x real time
    assert [s[4] for s in seen] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.6])
    # the second recording's seq starts one past the first's end: a gap = a new session
    assert [s[2] for s in seen] == [0, 25, 50, 75, 101, 126, 151]
    assert seen[4][3] == pytest.approx(2.0)  # device time runs on across recordings
    assert clock.slept == pytest.approx(1.6)


def test_speed_max_never_sleeps() -> None:
    clock = FakeClock()
    chunks = list(play(DEMO, message_samples=500, speed=None, clock=clock))
    assert clock.slept == 0 and sum(len(c.samples) for c in chunks) == len(DEMO[0])


class Capture(LivePrinter):
    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(io.StringIO(), total_s=60.0)
        self.clock = clock
        self.seen: list[tuple[float, Decision, float]] = []

    def decision(
        self, stream_s: float, experiment: str, decision: Decision, truth: str, wrong: bool
    ) -> None:
        self.seen.append((stream_s, decision, self.clock()))
        super().decision(stream_s, experiment, decision, truth, wrong)


def test_a_minute_at_real_rate_runs_instantly_on_a_fake_clock(
    bundle_factory: Callable[..., Bundle],
) -> None:
    clock = FakeClock()
    printer = Capture(clock.now)
    started = time.perf_counter()
    _log, wall_s, interrupted = run_replay(
        [minute_of(DEMO[0], 60.0)],
        load_config(),
        bundle_factory("gru", "stateful"),
        speed=1.0,
        message_samples=25,
        printer=printer,
        device="d",
        clock=clock,
    )
    assert time.perf_counter() - started < 10 and not interrupted
    assert wall_s == pytest.approx(60.0)  # the fake clock's minute
    stream_times = [s for s, _, _ in printer.seen]
    assert len(stream_times) == 3000 // 64
    assert np.diff(stream_times) == pytest.approx(1.28)
    assert stream_times[0] == pytest.approx(63 / 50)
    # each decision came when the message holding its last sample was sent
    assert [c for _, _, c in printer.seen][:2] == pytest.approx([1.5, 3.0])  # samples 75, 150


def test_real_rate_never_runs_ahead_of_the_stream(bundle_factory: Callable[..., Bundle]) -> None:
    """On the real clock a decision never comes before its last sample was measured. Only
    lower bounds: a busy machine may be late, never early (the exact pacing is the fake
    clock's test above)."""
    clock = RealClock()
    printer = Capture(clock.now)
    started = clock.now()
    run_replay(
        [minute_of(DEMO[0], 4.0)],
        load_config(),
        bundle_factory("gru", "stateful"),
        speed=1.0,
        message_samples=16,
        printer=printer,
        device="d",
        clock=clock,
    )
    assert len(printer.seen) == 3
    for stream_s, _, wall in printer.seen:
        # the message holding sample k leaves once samples 0..k are measured: (k + 1) / 50
        assert wall - started >= stream_s + 1 / 50 - 1e-3


def test_interrupt_summarises_what_was_played(bundle_factory: Callable[..., Bundle]) -> None:
    class Impatient(FakeClock):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if self.t > 20.0:
                raise KeyboardInterrupt

    rec = minute_of(DEMO[0], 60.0)
    log, _, interrupted = run_replay(
        [rec],
        load_config(),
        bundle_factory("gru", "stateful"),
        speed=1.0,
        message_samples=25,
        printer=LivePrinter(io.StringIO(), total_s=60),
        device="d",
        clock=Impatient(),
    )
    assert interrupted
    report, _ = replay_report(9, log, 20.0, 1.0, True, ("a",) * 6)
    assert report["interrupted"] and report["samples"] == 1000  # 20 s played, not 60
    assert report["duration_s"] == pytest.approx(20.0)


def test_unknown_subject_points_to_data_fetch(tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"no recordings of subject 3 packaged .* `harstream data "
        r"fetch`",
    ):
        load_subject(3, None)
    with pytest.raises(DataError, match=f"subject 3 in {DATA / 'hapt-mini'}"):
        load_subject(3, DATA / "hapt-mini")


def test_packaged_demo_is_subject_9_in_full() -> None:
    recordings = load_subject(9, None)
    assert [(r.experiment, len(r)) for r in recordings] == [("exp17", 16244), ("exp18", 15621)]


def replay_cli(tmp_path: Path, model: Path, *extra: str) -> tuple[int, dict, str]:
    report = tmp_path / "r.json"
    code = main(
        [
            "replay",
            "--subject",
            "9",
            "--speed",
            "max",
            "--model",
            str(model),
            "--report",
            str(report),
            *extra,
        ]
    )
    return code, json.loads(report.read_text()), ""


def test_replay_cli_on_the_uci_har_format(
    bundle_factory: Callable[..., Bundle], tmp_path: Path, capsys
) -> None:
    code, report, _ = replay_cli(
        tmp_path,
        bundle_factory("gru", "stateful").path,
        "--format",
        "uci-har",
        "--data-dir",
        str(DATA / "uci-har-mini"),
    )
    assert code == 0
    assert report["recordings"] == 5 and report["decisions"] > 0  # 5 segments of subject 9
    assert set(report) >= {
        "subject",
        "samples",
        "duration_s",
        "decisions",
        "online_accuracy",
        "macro_f1",
        "detection_delay_s_median",
        "detection_delay_s_p90",
        "switches_per_hour_pred",
        "switches_per_hour_true",
        "switches_per_hour_in_transitions",
        "switches_per_hour_unlabelled",
        "speed",
        "wall_s",
    }
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out  # piped output carries no control codes
    assert "online accuracy" in out


def test_replay_cli_writes_a_timeline_plot(
    bundle_factory: Callable[..., Bundle], tmp_path: Path, capsys
) -> None:
    plot = tmp_path / "t.png"
    code, report, _ = replay_cli(
        tmp_path,
        bundle_factory("gru", "stateful").path,
        "--data-dir",
        str(DATA / "hapt-mini"),
        "--plot",
        str(plot),
        "--quiet",
    )
    assert code == 0 and plot.stat().st_size > 20_000
    assert report["samples"] == 4200 and report["speed"] == "max"
    out = capsys.readouterr().out
    assert "<- differs" not in out and "subject 9: 1 recording(s)" in out  # --quiet: summary only


def test_csv_export_is_lossless_and_predict_reads_it(
    bundle_factory: Callable[..., Bundle], tmp_path: Path, capsys
) -> None:
    path = write_csv(tmp_path / "rec.csv", DEMO[0])
    back = read_csv(path)
    np.testing.assert_array_equal(back.samples, DEMO[0].samples)
    np.testing.assert_array_equal(back.labels, DEMO[0].labels)
    assert back.t is not None and back.t[-1] == pytest.approx((len(DEMO[0]) - 1) / 50)
    bundle = bundle_factory("gru", "stateful")
    assert main(["predict", str(path), "--model", str(bundle.path)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == len(DEMO[0]) // 64
    assert rows[0]["seq"] == "63" and float(rows[0]["t"]) == pytest.approx(1.26)
    assert abs(sum(float(rows[0][f"p_{label}"]) for label in bundle.labels) - 1) < 1e-3
    assert main(["predict", str(path), "--json", "--model", str(bundle.path)]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["seq"] == 63 and set(first["probabilities"]) == set(bundle.labels)


def test_data_export_cli(tmp_path: Path) -> None:
    out = tmp_path / "s9-{experiment}.csv"
    assert (
        main(
            [
                "data",
                "export",
                "--subject",
                "9",
                "--data-dir",
                str(DATA / "hapt-mini"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert read_csv(tmp_path / "s9-exp17.csv").samples.shape == (4200, 6)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ax,ay,az,gx\n1,2,3,4\n", r":1: missing column\(s\) gy, gz"),
        ("ax,ay,az,gx,gy,gz\n1,2,3,4,5,6\n1,2,x,4,5,6\n", r":3: column az: not a number: 'x'"),
        ("ax,ay,az,gx,gy,gz\n1,2,3,4,5\n", r":2: 5 cells, the header has 6"),
        ("ax,ay,az,gx,gy,gz\n1,2,3,4,5,inf\n", r":2: column gz: not finite"),
        ("ax,ay,az,gx,gy,gz,activity\n1,2,3,4,5,6,JOGGING\n", r":2: unknown activity 'JOGGING'"),
        ("ax,ay,az,gx,gy,gz\n" + "1,0,0,0,0,0\n" * 10, r"10 samples, fewer than one decision"),
    ],
)
def test_predict_rejects_bad_files_with_the_line(
    bundle_factory: Callable[..., Bundle], tmp_path: Path, capsys, text: str, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    assert main(["predict", str(path), "--model", str(bundle_factory("gru", "stateful").path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err
    import re

    assert re.search(message, err), err
