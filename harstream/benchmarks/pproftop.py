"""The top functions of a Go CPU profile (what ``go tool pprof -top`` prints), without Go.

``python -m harstream.benchmarks.pproftop PROFILE.pb.gz [--cum] [--n 30] [--focus RE]``
reads a profile a Go program serves at ``/debug/pprof/profile`` (nats-server with
``prof_port``; :mod:`harstream.benchmarks.brokercost` ``--profile``) and prints each
function's flat and cumulative share of the CPU samples. The profile is protobuf
(github.com/google/pprof, proto/profile.proto); its message types are declared here
for the protobuf library, which parses it.
"""

from __future__ import annotations

import argparse
import gzip
import re
from collections import Counter
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["load_profile", "top"]

_F = descriptor_pb2.FieldDescriptorProto
# (message, [(field, number, type, repeated, message type)]): what this reader needs of
# profile.proto (unknown fields are skipped by the parser)
_MESSAGES: list[tuple[str, list[tuple[str, int, int, bool, str]]]] = [
    ("ValueType", [("type", 1, _F.TYPE_INT64, False, ""), ("unit", 2, _F.TYPE_INT64, False, "")]),
    (
        "Sample",
        [
            ("location_id", 1, _F.TYPE_UINT64, True, ""),
            ("value", 2, _F.TYPE_INT64, True, ""),
        ],
    ),
    (
        "Line",
        [("function_id", 1, _F.TYPE_UINT64, False, ""), ("line", 2, _F.TYPE_INT64, False, "")],
    ),
    (
        "Location",
        [
            ("id", 1, _F.TYPE_UINT64, False, ""),
            ("address", 3, _F.TYPE_UINT64, False, ""),
            ("line", 4, _F.TYPE_MESSAGE, True, ".pprof.Line"),
        ],
    ),
    ("Function", [("id", 1, _F.TYPE_UINT64, False, ""), ("name", 2, _F.TYPE_INT64, False, "")]),
    (
        "Profile",
        [
            ("sample_type", 1, _F.TYPE_MESSAGE, True, ".pprof.ValueType"),
            ("sample", 2, _F.TYPE_MESSAGE, True, ".pprof.Sample"),
            ("location", 4, _F.TYPE_MESSAGE, True, ".pprof.Location"),
            ("function", 5, _F.TYPE_MESSAGE, True, ".pprof.Function"),
            ("string_table", 6, _F.TYPE_STRING, True, ""),
            ("duration_nanos", 10, _F.TYPE_INT64, False, ""),
        ],
    ),
]


def _profile_class() -> Any:
    file = descriptor_pb2.FileDescriptorProto(name="harstream_pprof.proto", package="pprof")
    file.syntax = "proto3"
    for name, fields in _MESSAGES:
        message = file.message_type.add(name=name)
        for field, number, kind, repeated, type_name in fields:
            added = message.field.add(
                name=field,
                number=number,
                type=kind,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )
            if type_name:
                added.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("pprof.Profile"))


def load_profile(path: Path) -> Any:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    profile = _profile_class()()
    profile.ParseFromString(data)
    return profile


def top(path: Path) -> tuple[float, Counter[str], Counter[str]]:
    """The profile's CPU seconds, and each function's flat and cumulative seconds."""
    profile = load_profile(path)
    strings = profile.string_table
    names = {f.id: strings[f.name] for f in profile.function}
    # a location's functions, innermost first (inlined calls come first)
    frames = {loc.id: [names[line.function_id] for line in loc.line] for loc in profile.location}
    index = next(
        (i for i, t in enumerate(profile.sample_type) if strings[t.type] == "cpu"),
        len(profile.sample_type) - 1,
    )
    flat: Counter[str] = Counter()
    cum: Counter[str] = Counter()
    total = 0
    for sample in profile.sample:
        value = sample.value[index]
        total += value
        stack = [name for loc in sample.location_id for name in frames[loc]]
        if stack:
            flat[stack[0]] += value
        for name in set(stack):
            cum[name] += value
    scale = 1e-9  # nanoseconds
    return (
        total * scale,
        Counter({k: v * scale for k, v in flat.items()}),
        Counter({k: v * scale for k, v in cum.items()}),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--cum", action="store_true", help="sort by cumulative time")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--focus", help="only functions whose name matches this regex")
    args = parser.parse_args(argv)
    total, flat, cum = top(args.profile)
    print(f"{args.profile}: {total:.2f} s of CPU samples")
    print(f"{'flat s':>8} {'flat%':>6} {'cum s':>8} {'cum%':>6}  function")
    order = cum if args.cum else flat
    focus = re.compile(args.focus) if args.focus else None
    shown = 0
    for name, _ in order.most_common():
        if focus is not None and not focus.search(name):
            continue
        print(
            f"{flat[name]:8.2f} {100 * flat[name] / total:6.1f} "
            f"{cum[name]:8.2f} {100 * cum[name] / total:6.1f}  {name}"
        )
        shown += 1
        if shown >= args.n:
            break


if __name__ == "__main__":
    main()
