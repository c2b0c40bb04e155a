"""Live terminal output of a replay: a line per decision and per transition, a progress
line on a terminal, the summary at the end.

Every decision line starts with ``[elapsed/total]`` stream time, so the progress is
readable in a log file too. Only on a TTY is a status line kept at the bottom (with
``\\r`` and an erase-line code); piped output carries no control codes.
"""

from __future__ import annotations

from typing import Any, TextIO

from harstream.core.engine import Decision

__all__ = ["LivePrinter", "clock_text", "format_summary"]

_ERASE = "\r\x1b[K"


def clock_text(seconds: float) -> str:
    """``mm:ss.s`` (or ``h:mm:ss`` past an hour).

    >>> clock_text(75.25), clock_text(3725.0)
    ('01:15.2', '1:02:05')
    """
    if seconds >= 3600:
        h, rest = divmod(int(seconds), 3600)
        return f"{h}:{rest // 60:02d}:{rest % 60:02d}"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes):02d}:{secs:04.1f}"


class LivePrinter:
    def __init__(self, out: TextIO, *, total_s: float, quiet: bool = False) -> None:
        self.out = out
        self.total_s = total_s
        self.quiet = quiet
        self.tty = out.isatty()
        self._status = False

    def _line(self, text: str) -> None:
        if self.quiet:
            return
        if self._status:
            self.out.write(_ERASE)
            self._status = False
        self.out.write(text + "\n")

    def header(self, text: str) -> None:
        self._line(text)
        self._line(f"{'[stream time]':>17} {'rec':<6} {'published':<20} {'conf':>4}   truth")

    def decision(
        self, stream_s: float, experiment: str, decision: Decision, truth: str, wrong: bool
    ) -> None:
        stamp = f"[{clock_text(stream_s)}/{clock_text(self.total_s)}]"
        mark = "  <- differs" if wrong else ""
        raw = decision.raw_activity
        if raw != decision.activity:  # smoothing holds on: say what the model sees now
            mark += f"  (model now {raw} {decision.probabilities[raw]:.2f})"
        self._line(
            f"{stamp:>17} {experiment:<6} {decision.activity:<20} "
            f"{decision.confidence:4.2f}   {truth}{mark}"
        )
        if decision.changed:
            self._line(
                f"{'':>17} {experiment:<6} transition {decision.previous} -> {decision.activity}"
            )

    def progress(self, stream_s: float, wall_s: float) -> None:
        if self.quiet or not self.tty:
            return
        left = max(self.total_s - stream_s, 0.0)
        rate = stream_s / wall_s if wall_s > 0 else 0.0
        self.out.write(
            f"{_ERASE}  played {clock_text(stream_s)} of {clock_text(self.total_s)}"
            f", {clock_text(left)} left, {rate:.1f}x real time"
        )
        self.out.flush()
        self._status = True

    def summary(self, text: str) -> None:
        if self._status:
            self.out.write(_ERASE)
            self._status = False
        self.out.write(text + "\n")
        self.out.flush()


def format_summary(report: dict[str, Any], recall: dict[str, float]) -> str:
    delay = report["detection_delay_s_median"]
    p90 = report["detection_delay_s_p90"]
    lines = [
        "",
        f"subject {report['subject']}: {report['recordings']} recording(s), "
        f"{clock_text(report['duration_s'])} of stream, {report['decisions']} decisions"
        + (" (interrupted)" if report.get("interrupted") else ""),
        f"  online accuracy   {report['online_accuracy']:.3f}   macro-F1 {report['macro_f1']:.3f}",
        "  recall            " + "  ".join(f"{name} {value:.2f}" for name, value in recall.items()),
        f"  detection delay   median {'n/a' if delay is None else f'{delay:.2f} s'}, "
        f"p90 {'n/a' if p90 is None else f'{p90:.2f} s'} over {report['segments_scored']} "
        f"segments >= 5 s ({report['detection_misses']} missed)",
        f"  switches per hour {report['switches_per_hour_pred']:.1f} published, "
        f"{report['switches_per_hour_true']:.1f} true",
        f"  real-time factor  {report['realtime_factor']:.1f}x (wall {report['wall_s']:.2f} s, "
        f"speed {report['speed']})",
    ]
    return "\n".join(lines)
