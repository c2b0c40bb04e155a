"""Live labels: ``{prefix}/{device}/label`` messages checked and stored.

A label says which activity a device's wearer does from ``start`` (and/or until
``end``); it is stored at once in the device's labels file (:mod:`harstream.recordings`
holds the format), after checks against the device's sessions on disk and the samples
still buffered (the open session's, whose start may run a little ahead of them, and
the previous session's, whose last part may not be written yet). Any problem is a
PayloadError ``bad_label`` naming it. Runs in the prepare thread; no state of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson

from harstream.errors import PayloadError
from harstream.recordings import (
    Label,
    check_labels,
    labels_lock,
    parse_time,
    read_labels,
    read_sessions,
    write_labels,
)

__all__ = ["decode_label", "store_label"]


def decode_label(
    payload: bytes, activities: Sequence[str]
) -> tuple[str, float | None, float | None]:
    """A live label ``{"activity": A, "start": t}``, ``{"activity": A, "end": t}`` or
    both (epoch seconds or ISO 8601): (activity, start, end). PayloadError ``bad_label``."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("bad_label", f"not JSON: {exc}") from None
    if (
        not isinstance(body, dict)
        or set(body) - {"activity", "start", "end"}
        or not ({"start", "end"} & set(body))
    ):
        raise PayloadError(
            "bad_label", 'send {"activity": A, "start": t} and/or {"activity": A, "end": t}'
        )
    activity = body.get("activity")
    if activity not in activities:
        raise PayloadError(
            "bad_label", f"unknown activity {activity!r} (one of {', '.join(activities)})"
        )
    times: list[float | None] = []
    for key in ("start", "end"):
        value = body.get(key)
        if value is None:
            times.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise PayloadError("bad_label", f"{key}: epoch seconds or ISO 8601")
        try:
            times.append(parse_time(value))
        except ValueError as exc:
            raise PayloadError("bad_label", f"{key}: {exc}") from None
    return str(activity), times[0], times[1]


def store_label(
    root: Path,
    device: str,
    payload: bytes,
    activities: Sequence[str],
    buffered: list[tuple[float, float]],
) -> str:
    """Check a live label and add it to the device's labels; ``buffered``: the spans
    (device time) of its samples not yet on disk. Returns what was stored."""
    activity, start, end = decode_label(payload, activities)
    try:
        with labels_lock(root):  # `data labels import` may be adding to the file
            return _add(root, device, activity, start, end, activities, buffered)
    except OSError as exc:
        raise PayloadError("bad_label", f"cannot store it: {exc}") from None


def _add(
    root: Path,
    device: str,
    activity: str,
    start: float | None,
    end: float | None,
    activities: Sequence[str],
    buffered: list[tuple[float, float]],
) -> str:
    stored = read_labels(root, device)
    opened = [lab for lab in stored if lab.end is None]
    if start is not None:
        live = any(start < b and (end is None or end > a) for a, b in buffered)
        if not live and not any(s.covers(start, end) for s in read_sessions(root, device)[0]):
            raise PayloadError("bad_label", f"{device}: {start:.3f} is outside every recording")
        # an open label ends where the next one starts
        closed = [Label(device, o.start, start, o.activity, o.source) for o in opened]
        stored = [lab for lab in stored if lab.end is not None] + closed
        new = Label(device, start, end, activity, "live")
    else:
        match = [o for o in opened if o.activity == activity]
        if not match:
            raise PayloadError("bad_label", f"{device}: no open {activity} label to end")
        stored = [lab for lab in stored if lab is not match[0]]
        new = Label(device, match[0].start, end, activity, match[0].source)
    problems = check_labels([*stored, new], list(activities))
    if problems:
        raise PayloadError("bad_label", "; ".join(problems))
    write_labels(root, device, [*stored, new])
    return new.describe()
