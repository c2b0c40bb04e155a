"""``harstream bench``: the benchmark scenarios of harstream.benchmarks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harstream.bundle import Bundle

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
        f"end to end through mosquitto, {args.message_samples}-sample messages at 50 Hz, "
        f"{seconds:g} s per point"
    )
    print(
        f"{'devices':>8} {'p50 ms':>8} {'p99 ms':>8} {'lost':>6} {'decisions':>10} "
        f"{'cpu share':>9} {'rss MB':>7}"
    )
    results = []
    for n in devices:
        r = e2e_run(
            bundle,
            devices=n,
            seconds=seconds,
            message_samples=args.message_samples,
            overrides=tuple(args.gateway_set),
        )
        results.append(r)
        lat = r["latency_ms"]
        print(
            f"{n:>8} {lat['p50']:>8} {lat['p99']:>8} {r['lost']:>6} "
            f"{r['decisions_received']:>10} {r['gateway_cpu_share']:>9} "
            f"{r['gateway_rss_mb']:>7}",
            flush=True,
        )
    return results


SCENARIOS = {"engine": _engine, "e2e": _e2e}


def cmd_bench(args: argparse.Namespace) -> int:
    from harstream.bundle import load_bundle

    bundle = load_bundle(args.model)
    print(
        f"bundle {bundle.path} ({bundle.name}, {bundle.arch.type}-{bundle.arch.hidden}x"
        f"{bundle.arch.layers}, {bundle.mode})"
    )
    results = {}
    for name in args.scenarios.split(","):
        results[name] = SCENARIOS[name](args, bundle)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bench = commands.add_parser("bench", help="measure throughput and latency")
    bench.add_argument(
        "--scenarios", default="engine", help=f"comma-separated: {', '.join(SCENARIOS)}"
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
        "--gateway-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="e2e: a config override for the gateway process (repeatable)",
    )
    bench.add_argument("--quick", action="store_true", help="a few seconds: a smoke test")
    bench.add_argument("--out", type=Path, help="write bench.json here")
    bench.set_defaults(func=cmd_bench)
