"""``harstream bench``: the benchmark suite (see harstream.bench)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register"]


def cmd_bench(args: argparse.Namespace) -> int:
    from harstream.bench import engine_throughput
    from harstream.bundle import load_bundle

    bundle = load_bundle(args.model)
    devices = [1, 10] if args.quick else [int(d) for d in args.devices.split(",")]
    results = []
    print(
        f"engine throughput, bundle {bundle.path} ({bundle.arch.type}-{bundle.arch.hidden}"
        f"x{bundle.arch.layers}), {args.message_samples}-sample messages, median of runs"
    )
    print(f"{'backend':>8} {'mode':>9} {'devices':>8} {'samples/s':>12} {'decisions/s':>12}")
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
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.json").write_text(json.dumps({"engine": results}, indent=2) + "\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bench = commands.add_parser("bench", help="measure engine throughput (samples/s)")
    bench.add_argument("--model", type=Path, help="bundle folder (default: the packaged one)")
    bench.add_argument("--devices", default="1,1000", help="comma-separated device counts")
    bench.add_argument("--modes", default="window,stateful")
    bench.add_argument("--backends", default="onnx")
    bench.add_argument("--threads", type=int, default=1, help="inference threads")
    bench.add_argument(
        "--message-samples",
        type=int,
        default=25,
        help="samples per device message (25 = 0.5 s at 50 Hz)",
    )
    bench.add_argument("--quick", action="store_true", help="a few seconds: a smoke test")
    bench.add_argument("--out", type=Path, help="write bench.json here")
    bench.set_defaults(func=cmd_bench)
