"""``harstream bench``: the benchmark scenarios of harstream.benchmarks."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harstream.core.bundle import Bundle

__all__ = ["register"]


def _engine(args: argparse.Namespace, bundle: Bundle) -> list[dict[str, Any]]:
    from harstream.benchmarks.engine import engine_throughput

    devices = [1, 10] if args.quick else [int(d) for d in args.devices.split(",")]
    print(f"engine throughput, {args.message_samples}-sample messages, median of runs")
    print(f"{'backend':>8} {'mode':>9} {'devices':>8} {'samples/s':>12} {'decisions/s':>12}")
    results = []
    for backend in args.backends.split(","):
        for mode in args.modes.split(","):
            for n in devices:
                result = engine_throughput(
                    bundle,
                    devices=n,
                    mode=mode,
                    backend=backend,
                    threads=args.threads,
                    message_samples=args.message_samples,
                    min_seconds=0.3 if args.quick else 1.5,
                    repeats=1 if args.quick else 3,
                )
                results.append(result.as_dict())
                print(
                    f"{backend:>8} {mode:>9} {n:>8} {result.samples_per_s:>12,.0f} "
                    f"{result.decisions_per_s:>12,.0f}",
                    flush=True,
                )
    return results


def _e2e(args: argparse.Namespace, bundle: Bundle) -> list[dict[str, Any]]:
    from harstream.benchmarks.e2e import e2e_run

    devices = [1] if args.quick else [int(d) for d in args.devices.split(",")]
    seconds = 4.0 if args.quick else args.seconds
    print(
        f"end to end through mosquitto, {args.message_samples}-sample messages at "
        f"{50 * args.speed:g} Hz, {seconds:g} s per point"
    )
    print(  # CPU: cores busy, of the gateway, the broker and the load generator
        f"{'devices':>8} {'p50 ms':>8} {'p99 ms':>8} {'lost':>6} {'decisions':>10} "
        f"{'gateway':>8} {'broker':>7} {'loadgen':>8} {'rss MB':>7}"
    )
    results = []
    for n in devices:
        for name, path in _gateways(args):
            r = e2e_run(
                bundle,
                devices=n,
                seconds=seconds,
                message_samples=args.message_samples,
                message_format=args.message_format,
                overrides=tuple(args.gateway_set),
                gateway_pythonpath=path,
                speed=args.speed,
            )
            r["gateway"] = name
            results.append(r)
            lat = r["latency_ms"]
            print(
                f"{n:>8} {lat['p50']:>8} {lat['p99']:>8} {r['lost']:>6} "
                f"{r['decisions_received']:>10} {r['gateway_cpu_share']:>8} "
                f"{r['broker_cpu_share']:>7} {r['generator_cpu_share']:>8} "
                f"{r['gateway_rss_mb']:>7}  {name}",
                flush=True,
            )
    return results


def _gateways(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """This checkout's gateway, and the one of ``--before DIR`` (an earlier checkout)."""
    if args.before is None:
        return [("harstream", None)]
    return [("harstream", None), ("before", args.before.resolve())]


def _stages(args: argparse.Namespace, bundle: Bundle) -> list[dict[str, Any]]:
    from harstream.benchmarks.engine import gateway_stages

    devices = [100] if args.quick else [int(d) for d in args.devices.split(",")]
    print(
        f"gateway stages in process, {args.message_samples}-sample {args.message_format} "
        f"messages in batches of {args.stage_batch}: us per message"
        " (cores busy at that many devices at 50 Hz)"
    )
    results = []
    for n in devices:
        r = gateway_stages(
            bundle,
            devices=n,
            message_samples=args.message_samples,
            rounds=2 if args.quick else 10,
            batch=args.stage_batch,
            message_format=args.message_format,
        )
        results.append(r)
        parts = ", ".join(
            f"{k} {r['us_per_message'][k]:.1f} ({r['cores'][k]:.2f})" for k in r["cores"]
        )
        print(f"{n:>8} devices: {parts}", flush=True)
    return results


def _passes(r: dict[str, Any], p99_ms: float) -> bool:
    return bool(r["lost"] == 0 and r["latency_ms"]["p99"] <= p99_ms)


def _search(run: Any, start: int, p99_ms: float, steps: int) -> tuple[int, list[dict[str, Any]]]:
    """The largest device count that passes: double from ``start`` until one fails, then
    bisect ``steps`` times. Returns it (0: even ``start`` fails) and every point run."""
    points: list[dict[str, Any]] = []

    def ok(n: int) -> bool:
        r = run(n)
        points.append(r)
        lat = r["latency_ms"]
        verdict = "pass" if _passes(r, p99_ms) else "FAIL"
        print(
            f"  {n:>6} devices: p50 {lat['p50']:>8} ms, p99 {lat['p99']:>8} ms, lost "
            f"{r['lost']:>6}, cpu {r['gateway_cpu_share']:>6}  {verdict}",
            flush=True,
        )
        return _passes(r, p99_ms)

    good, bad = 0, start  # when even start fails, bisect below it
    while ok(bad):
        good, bad = bad, bad * 2
    for _ in range(steps):
        middle = (good + bad) // 2
        if middle in (good, bad) or middle == 0:
            break
        good, bad = (middle, bad) if ok(middle) else (good, middle)
    return good, points


def _capacity(args: argparse.Namespace, bundle: Bundle) -> dict[str, Any]:
    """Capacity (p99 <= target, no loss) of harstream and of the baseline, in one run."""
    import tempfile

    from harstream.benchmarks.baseline import build_baseline_model
    from harstream.benchmarks.e2e import e2e_run

    seconds = 4.0 if args.quick else args.seconds
    steps = 0 if args.quick else 3
    results: dict[str, Any] = {"p99_target_ms": args.p99_ms, "seconds": seconds}
    with tempfile.TemporaryDirectory(prefix="harstream-baseline-") as tmp:
        model = build_baseline_model(Path(tmp) / "baseline.onnx")
        systems: list[tuple[str, int, Path | None, Path | None]] = [
            (name, 10 if args.quick else 1000, None, path) for name, path in _gateways(args)
        ]
        if not args.no_baseline:
            systems.append(("baseline", 5 if args.quick else 10, model, None))
        for name, start, baseline, pythonpath in systems:
            print(
                f"capacity of {name}: devices at 50 Hz, {args.message_samples}-sample "
                f"messages, {seconds:g} s per point, p99 <= {args.p99_ms:g} ms, no loss"
            )

            def run(
                n: int, baseline: Path | None = baseline, pythonpath: Path | None = pythonpath
            ) -> dict[str, Any]:
                return e2e_run(
                    bundle,
                    devices=n,
                    seconds=seconds,
                    message_samples=args.message_samples,
                    # the notebook baseline reads JSON only
                    message_format=args.message_format if baseline is None else "json",
                    overrides=tuple(args.gateway_set) if pythonpath is None else (),
                    baseline_model=baseline,
                    gateway_pythonpath=pythonpath,
                )

            if args.quick:  # one point each: the smoke test
                capacity, points = (start if _passes(r := run(start), args.p99_ms) else 0), [r]
            else:
                capacity, points = _search(run, start, args.p99_ms, steps)
            at = [p for p in points if p["devices"] == capacity]
            results[name] = {
                "capacity": capacity,
                "cpu_ms_per_device_s": at[0]["cpu_ms_per_device_s"] if at else None,
                "points": points,
            }
            print(f"  capacity of {name}: {capacity} devices", flush=True)
    ours, theirs = results["harstream"], results.get("baseline")
    before = results.get("before")
    if before and before["capacity"] and ours["capacity"]:
        results["capacity_vs_before"] = round(ours["capacity"] / before["capacity"], 2)
        print(f"harstream / before: capacity {results['capacity_vs_before']}x")
    if theirs and theirs["capacity"] and ours["capacity"]:
        results["capacity_ratio"] = round(ours["capacity"] / theirs["capacity"], 1)
        results["cpu_per_device_ratio"] = round(
            theirs["cpu_ms_per_device_s"] / ours["cpu_ms_per_device_s"], 1
        )
        print(
            f"harstream / baseline: capacity {results['capacity_ratio']}x, "
            f"CPU per device {results['cpu_per_device_ratio']}x less"
        )
    return results


def _replay(args: argparse.Namespace, bundle: Bundle) -> list[dict[str, Any]]:
    """Real-time factor of ``replay --subject 9 --speed max`` (the packaged recordings)."""
    import io
    import statistics

    from harstream.cli.live import LivePrinter
    from harstream.cli.playback import load_subject, run_replay
    from harstream.config import load_config

    recordings = load_subject(9, None)
    stream_s = sum(r.duration_s for r in recordings)
    config = load_config(overrides=[f"model.path={bundle.path}"])
    walls = []
    for _ in range(1 if args.quick else 5):
        printer = LivePrinter(io.StringIO(), total_s=stream_s, quiet=True)
        _, wall, _ = run_replay(
            recordings, config, bundle, speed=None, message_samples=25, printer=printer, device="s9"
        )
        walls.append(wall)
    wall = statistics.median(walls)
    print(
        f"replay, subject 9 at --speed max: {stream_s:.0f} s of stream in {wall:.3f} s, "
        f"{stream_s / wall:,.0f}x real time (median of {len(walls)})"
    )
    return [{"stream_s": stream_s, "wall_s": wall, "real_time_factor": stream_s / wall}]


def _transport(args: argparse.Namespace, bundle: Bundle) -> list[dict[str, Any]]:
    """The MQTT client's own CPU per message, in the gateway's integration and in
    paho's threaded one, alternating (median of 3 each)."""
    import statistics

    from harstream.benchmarks.transport import transport_cost

    rate, seconds, repeats = (300.0, 2.0, 1) if args.quick else (3000.0, 8.0, 3)
    print(
        f"MQTT client cost: {rate:g} messages/s in (QoS 1 subscription) and as many QoS 1 "
        f"answers out, {seconds:g} s, median of {repeats}"
    )
    runs: dict[str, list[dict[str, Any]]] = {"asyncio": [], "thread": []}
    for _ in range(repeats):
        for mode, done in runs.items():
            done.append(transport_cost(mode, rate, seconds))
    results = []
    for mode, done in runs.items():
        us = statistics.median(r["us_per_message"] for r in done)
        cores = statistics.median(r["cores"] for r in done)
        answered = min(r["answered"] for r in done)
        print(f"  {mode:>8}: {us:7.1f} us per message in + out, {cores:.3f} cores, {answered} out")
        results.append({"mode": mode, "us_per_message": us, "cores": cores, "runs": done})
    return results


def _field(args: argparse.Namespace, bundle: Bundle) -> list[dict[str, Any]]:
    """Field devices: the resampling path's CPU and latency against the native path's."""
    import orjson

    from harstream.benchmarks.field import field_cost
    from harstream.cli.playback import load_subject
    from harstream.config import load_config
    from harstream.core.payload import encode_imu
    from replay.phone import phone_batches

    recording = load_subject(9, None)[0]
    if args.quick:
        recording = type(recording)(9, "quick", recording.samples[:1500], recording.labels[:1500])
    native = [
        encode_imu(recording.samples[i : i + 50], seq=i) for i in range(0, len(recording), 50)
    ]
    phone = [orjson.dumps(b) for b in phone_batches(recording, rate_hz=100.0, batch_s=1.0)]
    config = load_config(overrides=[f"model.path={bundle.path}"])
    devices = [10] if args.quick else [int(d) for d in args.devices.split(",")]
    print(
        "field devices: 1 s messages, native (50 Hz, g) against Sensor Logger (100 Hz "
        "jittered, m/s2, gravity apart), decoding and engine in process"
    )
    results = []
    for n in devices:
        r = field_cost(config, bundle, native=native, phone=phone, devices=n)
        results.append(r)
        print(
            f"{n:>8} devices: CPU per device-second native {r['native']['cpu_us_per_device_s']} "
            f"us, phone {r['phone']['cpu_us_per_device_s']} us ({r['phone_over_native']}x); "
            f"a lone device's batch to decisions: native {r['native']['lone_ms']} ms, "
            f"phone {r['phone']['lone_ms']} ms",
            flush=True,
        )
    return results


def _alternating(
    args: argparse.Namespace, what: str, run: Callable[..., dict[str, Any]], bundle: Bundle
) -> dict[str, Any]:
    """A scenario of alternating e2e points (harstream.benchmarks.e2e.alternating): runs
    ``run`` at the largest device count and prints each mode's medians."""
    devices = 10 if args.quick else max(int(d) for d in args.devices.split(","))
    seconds = 4.0 if args.quick else args.seconds
    rounds = 1 if args.quick else 3
    print(
        f"{what}: {devices} devices through mosquitto, {seconds:g} s per point, the modes "
        f"in turn, {rounds} each (medians)"
    )
    result: dict[str, Any] = run(
        bundle,
        devices=devices,
        seconds=seconds,
        message_samples=args.message_samples,
        rounds=rounds,
    )
    for mode, r in result.items():
        written = r.get("bytes_per_device_hour")
        print(
            f"{mode:>10}: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, gateway CPU "
            f"{r['gateway_cpu_share']}, lost {r['lost']}"
            + (f", {written:,} bytes per device-hour" if written else "")
            + f"  (each run: {r['runs']})",
            flush=True,
        )
    return result


def _page(args: argparse.Namespace, bundle: Bundle) -> dict[str, Any]:
    from harstream.benchmarks.page import history_bytes_per_device_hour, page_cost

    result = _alternating(args, "the live page (without, with one open)", page_cost, bundle)
    memory = history_bytes_per_device_hour(devices=20 if args.quick else 200)
    result["history"] = memory
    print(
        f"history: {memory['bytes_per_device_hour']:,} bytes per device-hour at hop 16 "
        f"({memory['runs_per_device_hour']} label runs)"
    )
    return result


def _recording(args: argparse.Namespace, bundle: Bundle) -> dict[str, Any]:
    from harstream.benchmarks.recording import recording_cost

    what = "recording (without recording.dir, with it: parquet)"
    return _alternating(args, what, recording_cost, bundle)


def _scale_setups(args: argparse.Namespace) -> list[tuple[str, str, str | None, int]]:
    """``(key, broker, nats-server binary, workers)`` of each setup: one gateway on
    mosquitto, then each nats-server (``nats``: the one found; else a binary's path,
    keyed by its version) with each worker count."""
    from harstream.natsserver import binary_version

    setups: list[tuple[str, str, str | None, int]] = []
    workers = [int(w) for w in args.workers.split(",")]
    for broker in args.brokers.split(","):
        if broker == "mosquitto":
            setups.append(("mosquitto-1", "mosquitto", None, 1))
            continue
        binary = None if broker == "nats" else broker
        name = "nats" if binary is None else f"nats-{binary_version(binary)}"
        setups += [(f"{name}-{w}", "nats", binary, w) for w in workers]
    return setups


def _scale(args: argparse.Namespace, bundle: Bundle) -> dict[str, Any]:
    """The setups in turn at each device count, ``--rounds`` times: one gateway on
    mosquitto, workers on each nats-server; the medians at the end."""
    from harstream.benchmarks.scale import scale_run

    counts = [10] if args.quick else [int(d) for d in args.devices.split(",")]
    seconds = 4.0 if args.quick else args.seconds
    rounds = 1 if args.quick else args.rounds
    setups = _scale_setups(args)
    print(
        f"scale-out: {', '.join(k for k, *_ in setups)} in turn, {seconds:g} s per point, "
        f"{rounds} rounds, {args.generators} load generator(s) (each run listed)"
    )
    out: dict[str, list[dict[str, Any]]] = {k: [] for k, *_ in setups}
    for devices in counts:
        for _ in range(rounds):
            for key, broker, binary, workers in setups:
                scaled = workers if args.per_worker else 1  # the load grows with the workers
                r = scale_run(
                    bundle,
                    devices=devices * scaled,
                    seconds=seconds,
                    workers=workers,
                    broker=broker,
                    message_samples=args.message_samples,
                    generators=args.generators * scaled,
                    nats_server=binary,
                )
                r["point"] = devices
                out[key].append(r)
                print(
                    f"{r['devices']:>6} devices, {key} ({r['server']}): p50 "
                    f"{r['latency_ms']['p50']} ms p99 {r['latency_ms']['p99']} ms, lost "
                    f"{r['lost']}, workers' CPU {r['worker_cpu_share']} (ms per device-s "
                    f"{r['worker_cpu_ms_per_device_s']}), broker CPU {r['broker_cpu_share']} "
                    f"({r['broker_cpu_us_per_message']} us per message), generators' CPU "
                    f"{r['generator_cpu_share']}",
                    flush=True,
                )
    _scale_medians(out, counts)
    return out


def _scale_medians(out: dict[str, list[dict[str, Any]]], counts: list[int]) -> None:
    """Each setup's medians at each device count, and the broker CPU per message of the
    first nats-server named over each other's at the same worker count."""
    from statistics import median

    print("medians:")
    for devices in counts:
        us: dict[tuple[str, int], float] = {}
        for key, runs in out.items():
            at = [r for r in runs if r["point"] == devices]
            per_worker = [
                median(r["worker_cpu_ms_per_device_s"][k] for r in at)
                for k in range(at[0]["workers"])
            ]
            us[at[0]["server"], at[0]["workers"]] = median(
                r["broker_cpu_us_per_message"] for r in at
            )
            print(
                f"{at[0]['devices']:>6} devices, {key} ({at[0]['server']}): p50 "
                f"{median(r['latency_ms']['p50'] for r in at)} ms, p99 "
                f"{median(r['latency_ms']['p99'] for r in at)} ms, lost "
                f"{median(r['lost'] for r in at)}, ms per device-s of each worker "
                f"{per_worker}, broker {median(r['broker_cpu_share'] for r in at)} cores, "
                f"{us[at[0]['server'], at[0]['workers']]} us per message",
                flush=True,
            )
        servers = list(dict.fromkeys(s for s, _ in us if s.startswith("nats-server")))
        for other in servers[1:]:
            for (server, workers), value in us.items():
                if server == servers[0] and (other, workers) in us:
                    print(
                        f"{devices:>6} devices, {workers} worker(s): broker CPU per message, "
                        f"{servers[0]} / {other}: {value} / {us[other, workers]} us = "
                        f"{value / us[other, workers]:.2f}x"
                    )


def _failover(args: argparse.Namespace, bundle: Bundle) -> dict[str, Any]:
    """kill -9 of one of the workers (the largest of --workers) under load and its
    restart, with static ownership and with takeover, in turn."""
    from harstream.benchmarks.failover import failover_run

    devices = 10 if args.quick else int(args.devices.split(",")[-1])
    workers = max(int(w) for w in args.workers.split(","))
    seconds = 10.0 if args.quick else args.seconds
    kill_at, down = (4.0, 2.0) if args.quick else (seconds / 3, seconds / 6)
    rounds = 1 if args.quick else args.rounds
    if args.cluster > 1:
        return _node_failover(args, bundle, devices, workers, seconds, kill_at, rounds)
    print(
        f"failover: {devices} devices, {workers} workers, worker w0 killed {kill_at:g} s "
        f"into {seconds:g} s and restarted {down:g} s later; static, takeover in turn, "
        f"{rounds} rounds"
    )
    out: dict[str, list[dict[str, Any]]] = {"static": [], "takeover": []}
    for _ in range(rounds):
        for mode, runs in out.items():
            r = failover_run(
                bundle,
                devices=devices,
                workers=workers,
                seconds=seconds,
                kill_at_s=kill_at,
                down_s=down,
                takeover=mode == "takeover",
                generators=args.generators,
                message_samples=args.message_samples,
            )
            runs.append(r)
            print(
                f"{mode}: {r['dead_devices']} devices of the killed worker waited "
                f"{r['dead_wait_s']} s at most between decisions (the others "
                f"{r['others_wait_s']}; outage {r['outage_s']} s), lost {r['lost']} of "
                f"{r['decisions_expected']} ({r['shifted']} came at other stream positions: "
                f"net {r['lost_net']}), duplicates {r['duplicates']}, restarted after "
                f"{r['down_s']} s: online {r['return_s']} s later; p99 "
                f"{r['latency_ms']['p99']} ms",
                flush=True,
            )
    return out


def _node_failover(
    args: argparse.Namespace,
    bundle: Bundle,
    devices: int,
    workers: int,
    seconds: float,
    kill_at: float,
    rounds: int,
) -> dict[str, Any]:
    """kill -9 of node 1 of a NATS cluster under load (static ownership)."""
    from harstream.benchmarks.failover import failover_run

    print(
        f"failover: {devices} devices, {workers} workers and {args.generators} generators "
        f"over a {args.cluster}-node NATS cluster, node 1 killed {kill_at:g} s into "
        f"{seconds:g} s (for good); {rounds} rounds"
    )
    runs = []
    for _ in range(rounds):
        r = failover_run(
            bundle,
            devices=devices,
            workers=workers,
            seconds=seconds,
            kill_at_s=kill_at,
            generators=args.generators,
            message_samples=args.message_samples,
            cluster=args.cluster,
            kill_node=True,
        )
        runs.append(r)
        print(
            f"node 1 killed: {r['workers_moved']} worker(s) and "
            f"{r['cut_devices']} devices' generator(s) on it; longest wait between "
            f"decisions (p50 / max, s): its workers' devices {r['dead_wait_s']}, its "
            f"generators' devices {r['cut_wait_s']} (both {r['cut_and_dead_wait_s']}), the "
            f"others {r['others_wait_s']}; lost {r['lost']} of {r['decisions_expected']} "
            f"({r['shifted']} at other stream positions: net {r['lost_net']}), duplicates "
            f"{r['duplicates']}, p99 {r['latency_ms']['p99']} ms",
            flush=True,
        )
    return {"node": runs}


SCENARIOS = {
    "engine": _engine,
    "field": _field,
    "stages": _stages,
    "e2e": _e2e,
    "capacity": _capacity,
    "transport": _transport,
    "replay": _replay,
    "page": _page,
    "recording": _recording,
    "scale": _scale,
    "failover": _failover,
}


def cmd_bench(args: argparse.Namespace) -> int:
    from harstream.core.bundle import load_bundle

    bundle = load_bundle(args.model)
    print(f"bundle {bundle.path} ({bundle.name}, {bundle.arch.summary}, {bundle.mode})")
    results: dict[str, Any] = {}
    for name in args.scenarios.split(","):
        results[name] = SCENARIOS[name](args, bundle)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
        if "capacity" in results:
            _plot_capacity(results["capacity"], args.out / "capacity.png")
    return 0


def _plot_capacity(capacity: dict[str, Any], path: Path) -> None:
    """p99 latency against devices, harstream and the baseline (needs matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        print("no matplotlib: capacity.png skipped (pip install 'harstream[plot]')")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in [n for n in ("harstream", "before", "baseline") if n in capacity]:
        points = sorted(capacity[name]["points"], key=lambda r: r["devices"])
        ax.plot(
            [r["devices"] for r in points],
            [r["latency_ms"]["p99"] for r in points],
            "o-",
            label=f"{name}: capacity {capacity[name]['capacity']:,}",
        )
    ax.axhline(capacity["p99_target_ms"], color="grey", linestyle="--", linewidth=1)
    ax.set(xscale="log", yscale="log", xlabel="devices at 50 Hz", ylabel="p99 latency (ms)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bench = commands.add_parser("bench", help="measure throughput and latency")
    bench.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, of: {', '.join(SCENARIOS)} (default: all)",
    )
    bench.add_argument("--model", type=Path, help="bundle folder (default: the packaged one)")
    bench.add_argument("--devices", default="1,1000", help="comma-separated device counts")
    bench.add_argument("--modes", default="window,stateful", help="engine: modes to run")
    bench.add_argument("--backends", default="onnx", help="engine: backends to run")
    bench.add_argument("--threads", type=int, default=1, help="engine: inference threads")
    bench.add_argument("--seconds", type=float, default=30.0, help="e2e: seconds per point")
    bench.add_argument(
        "--message-samples",
        type=int,
        default=25,
        help="samples per device message (25 = 0.5 s at 50 Hz)",
    )
    bench.add_argument(
        "--message-format",
        choices=["json", "frame"],
        default="json",
        help="stages, e2e and capacity: devices send JSON or the binary frame (a --before "
        "checkout from before the frame reads JSON only)",
    )
    bench.add_argument(
        "--stage-batch",
        type=int,
        default=1024,
        help="stages: messages per batch (the gateway's batches grow with load: ~5-13 at "
        "1,000 devices, up to batching.max_batch at capacity)",
    )
    bench.add_argument(
        "--gateway-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="e2e: a config override for the gateway process (repeatable)",
    )
    bench.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="e2e: devices stream this many times faster than real time (25: a replay)",
    )
    bench.add_argument(
        "--p99-ms", type=float, default=100.0, help="capacity: the latency bound (p99, ms)"
    )
    bench.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="e2e, capacity: also run the gateway of this checkout (an earlier commit: "
        "git worktree add DIR COMMIT), under the same broker and load generator",
    )
    bench.add_argument(
        "--no-baseline", action="store_true", help="capacity: skip the notebook baseline"
    )
    bench.add_argument(
        "--workers", default="1,2", help="scale: comma-separated worker counts on NATS"
    )
    bench.add_argument(
        "--generators",
        type=int,
        default=1,
        help="scale: load-generator processes, each with its own devices and subscriptions",
    )
    bench.add_argument(
        "--brokers",
        default="mosquitto,nats",
        help="scale: comma-separated, of mosquitto (one gateway), nats (the nats-server "
        "harstream.natsserver finds) and paths of nats-server binaries (compared in turn, "
        "e.g. /usr/sbin/nats-server)",
    )
    bench.add_argument("--rounds", type=int, default=3, help="scale: rounds of the setups")
    bench.add_argument(
        "--cluster",
        type=int,
        default=1,
        help="failover: a NATS cluster of N nodes, workers and generators spread over them; "
        "node 1 is killed instead of a worker",
    )
    bench.add_argument(
        "--per-worker",
        action="store_true",
        help="scale: --devices and --generators are per worker (W workers: W times as many)",
    )
    bench.add_argument("--quick", action="store_true", help="a few seconds: a smoke test")
    bench.add_argument("--out", type=Path, help="write bench.json here")
    bench.set_defaults(func=cmd_bench)
