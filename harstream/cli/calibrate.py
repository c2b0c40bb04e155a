"""``harstream calibrate DEVICE``: ask the gateway to calibrate a device, and wait.

Publishes ``{prefix}/{device}/calibrate`` (``{"seconds": S}`` or ``{"clear": true}``)
and prints what the gateway then says on ``{prefix}/{device}/calibration``. The wearer
stands still, upright, from the moment the command runs until it reports ``calibrated``
(the gateway takes the device's next S seconds of samples; it must be streaming).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time

from harstream.cli.common import add_config_options, config_from_args
from harstream.config import Config
from harstream.errors import HarstreamError

__all__ = ["register"]


async def _calibrate(config: Config, device: str, body: dict[str, object], wait_s: float) -> int:
    from harstream.runtime import mqtt_transport

    prefix = config.topics.prefix
    transport = mqtt_transport(config, client_id=f"harstream-calibrate-{device}")
    transport.clean_session = True  # a one-off client leaves no session behind
    asked = time.time()
    async with transport.session() as session:
        await session.subscribe(f"{prefix}/{device}/calibration", qos=1)
        await session.subscribe(f"{prefix}/{device}/error", qos=0)
        await session.publish(
            f"{prefix}/{device}/calibrate", json.dumps(body).encode(), qos=1, retain=False
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for batch in session.batches():
                    for incoming in batch:
                        status = json.loads(incoming.payload)
                        if incoming.topic.endswith("/error"):
                            print(f"{device}: {status.get('error')}: {status.get('detail')}")
                            if str(status.get("error", "")).endswith("calibrate"):
                                return 1
                            continue
                        if status.get("t", 0) < asked - 1:  # the retained one, from before
                            continue
                        if status.get("source") == "walking":  # learnt, not what we asked
                            continue
                        print(
                            f"{device}: {status['status']}"
                            + (f" ({status['detail']})" if status.get("detail") else "")
                            + (f"; vertical {status['vertical']}" if status["vertical"] else "")
                        )
                        if status["status"] in ("calibrated", "cleared"):
                            return 0
                        if status["status"] == "failed":
                            return 1
    raise HarstreamError(
        f"no calibration result from the gateway within {wait_s:g} s: is it running with a "
        f"model that takes calibrations, and is {device} streaming?"
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    seconds = args.seconds or config.calibration.seconds
    body: dict[str, object] = {"clear": True} if args.clear else {"seconds": seconds}
    return asyncio.run(_calibrate(config, args.device, body, args.wait or seconds + 30.0))


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cal = commands.add_parser(
        "calibrate",
        help="calibrate a device worn any way: its wearer stands still, upright, for a few "
        "seconds (the gateway learns how the device sits on the body)",
    )
    cal.add_argument("device", help="the device id")
    cal.add_argument("--seconds", type=float, help="how long (default calibration.seconds)")
    cal.add_argument("--clear", action="store_true", help="forget the device's calibration")
    cal.add_argument("--wait", type=float, help="give up after this many seconds")
    add_config_options(cal)
    cal.set_defaults(func=cmd_calibrate)
