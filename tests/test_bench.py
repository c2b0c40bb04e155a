"""`harstream bench --quick`: the benchmark scenarios run (numbers are not asserted)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from harstream.cli import main
from harstream.core.bundle import Bundle


@pytest.mark.broker
def test_bench_quick_runs_every_scenario(
    bundle_factory: Callable[..., Bundle], tmp_path: Path, capsys
) -> None:
    bundle = bundle_factory("gru", "stateful")
    code = main(
        [
            "bench",
            "--quick",
            "--scenarios",
            "engine,stages,e2e,capacity,transport,field,replay,page,recording,scale,failover",
            "--model",
            str(bundle.path),
            "--modes",
            "stateful",
            "--message-samples",
            "32",
            "--generators",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "bench.json").read_text())
    assert {r["devices"] for r in results["engine"]} == {1, 10}
    assert all(r["samples_per_s"] > 0 for r in results["engine"])
    (e2e,) = results["e2e"]
    assert e2e["devices"] == 1 and e2e["lost"] == 0 and e2e["messages_sent"] > 0
    assert e2e["gateway_rss_mb"] > 0 and e2e["gateway_ready_s"] > 0
    capacity = results["capacity"]  # one point each for harstream and the baseline
    for name, devices in (("harstream", 10), ("baseline", 5)):
        (point,) = capacity[name]["points"]
        assert point["devices"] == devices and point["decisions_received"] > 0
        assert capacity[name]["capacity"] in (0, devices)
    (stages,) = results["stages"]
    assert stages["devices"] == 100 and stages["us_per_message"]["inference"] > 0
    assert set(stages["cores"]) == {"decode", "prepare", "inference", "complete_rest", "encode"}
    (field,) = results["field"]
    assert field["native"]["decisions"] == field["phone"]["decisions"] > 0
    modes = {r["mode"]: r for r in results["transport"]}
    assert set(modes) == {"asyncio", "thread"}
    assert all(r["runs"][0]["answered"] == r["runs"][0]["sent"] for r in modes.values())
    page = results["page"]  # the gateway without its page and with one open
    assert page["without"]["lost"] == page["with page"]["lost"] == 0
    assert all(page[m]["p99_ms"] > 0 for m in ("without", "with page"))
    assert 10_000 < page["history"]["bytes_per_device_hour"] < 200_000
    recording = results["recording"]  # the gateway without recording and with it
    assert recording["without"]["lost"] == recording["recording"]["lost"] == 0
    assert recording["recording"]["bytes_per_device_hour"] > 1_000_000  # 180,000 samples
    scale = results["scale"]  # one gateway on mosquitto, 1 and 2 workers on NATS
    assert [len(scale[k]) for k in ("mosquitto-1", "nats-1", "nats-2")] == [1, 1, 1]
    (two,) = scale["nats-2"]
    assert two["workers"] == 2 and len(two["worker_cpu_share"]) == 2
    assert (
        two["generators"] == 2 and two["devices"] == 10 and two["server"].startswith("nats-server ")
    )
    assert sum(two["worker_devices"]) == 10 and len(two["worker_cpu_ms_per_device_s"]) == 2
    assert two["decisions_received"] > 0 and two["broker_cpu_us_per_message"] > 0
    failover = results["failover"]  # kill -9 of worker w0 of 2, and its restart
    for mode in ("static", "takeover"):
        (run,) = failover[mode]
        assert run["dead_devices"] > 0 and run["duplicates"] == 0 and run["return_s"] > 0
        assert run["decisions_received"] > 0 and run["takeover"] == (mode == "takeover")
    (replay,) = results["replay"]
    assert replay["stream_s"] > 600 and replay["real_time_factor"] > 1
    out = capsys.readouterr().out
    assert "samples/s" in out and "capacity of baseline" in out
