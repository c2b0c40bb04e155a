"""``harstream replay --publish``: play a recording to the broker as a device would."""

from __future__ import annotations

import argparse
import asyncio
import time

from harstream.cli.live import clock_text
from harstream.config import Config
from harstream.core.payload import encode_imu
from harstream.runtime import mqtt_transport
from replay import Recording
from replay.player import chunks

__all__ = ["publish_recordings"]


async def _publish(
    config: Config,
    recordings: list[Recording],
    speed: float | None,
    message_samples: int,
    device: str,
    quiet: bool,
) -> int:
    topic = f"{config.topics.prefix}/{device}/imu"
    sent = 0
    started = time.monotonic()
    t0 = time.time()
    async with mqtt_transport(config, client_id=f"harstream-device-{device}").session() as session:
        for chunk in chunks(recordings, message_samples):
            if speed is not None:  # paced like replay.play, but without blocking the loop
                await asyncio.sleep(max(0.0, started + chunk.due_s / speed - time.monotonic()))
            await session.publish(
                topic,
                encode_imu(chunk.samples, chunk.seq, round(t0 + chunk.t, 3)),
                qos=config.topics.qos_in,
            )
            sent += 1
    if not quiet:
        duration = sum(r.duration_s for r in recordings)
        print(
            f"published {sent} messages ({clock_text(duration)} of stream) to {topic} in "
            f"{time.monotonic() - started:.2f} s"
        )
    return 0


def publish_recordings(
    args: argparse.Namespace, config: Config, recordings: list[Recording], speed: float | None
) -> int:
    device = args.device or f"subject{args.subject}"
    return asyncio.run(
        _publish(config, recordings, speed, args.message_samples, device, args.quiet)
    )
