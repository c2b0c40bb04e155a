"""The Go profile reader behind the broker-cost benchmark: a profile built with the
same protobuf messages Go writes (github.com/google/pprof, proto/profile.proto)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from harstream.benchmarks.pproftop import _profile_class, main, top


def test_flat_and_cumulative_seconds_of_a_small_profile(tmp_path: Path, capsys) -> None:
    profile = _profile_class()()
    profile.string_table.extend(["", "samples", "count", "cpu", "nanoseconds", "read", "loop"])
    for type_, unit in ((1, 2), (3, 4)):  # [samples/count, cpu/nanoseconds], as Go writes
        profile.sample_type.add(type=type_, unit=unit)
    profile.function.add(id=1, name=5)  # read
    profile.function.add(id=2, name=6)  # loop
    profile.location.add(id=10).line.add(function_id=1)
    profile.location.add(id=20).line.add(function_id=2)
    # 3 s in read called from loop, 1 s in loop itself
    profile.sample.add(location_id=[10, 20], value=[300, 3_000_000_000])
    profile.sample.add(location_id=[20], value=[100, 1_000_000_000])
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(gzip.compress(profile.SerializeToString()))
    total, flat, cum = top(path)
    assert total == pytest.approx(4.0)
    assert flat == {"read": pytest.approx(3.0), "loop": pytest.approx(1.0)}
    assert cum == {"read": pytest.approx(3.0), "loop": pytest.approx(4.0)}
    main([str(path), "--cum", "--n", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("4.00 s of CPU samples") and lines[-1].endswith("loop")
    assert len(lines) == 3  # the header, the column names, one function
