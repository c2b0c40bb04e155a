"""What the MQTT client costs the gateway, per message, in its two integrations.

A feeder process publishes ``rate`` device-sized messages per second (QoS 0) to a
private mosquitto; the measured client, in a process of its own, subscribes at QoS 1
and answers every message with one decision-sized QoS 1 publish, the gateway's traffic
shape without the gateway's work. Reported: the client process's CPU time per message
(one in and one out), and whether every answer arrived.

- ``asyncio``: harstream.gateway.mqtt, paho driven by the event loop (the gateway's);
- ``thread``: paho's own network thread (``loop_start``), callbacks in that thread.

``python -m harstream.benchmarks.transport MODE PORT RATE SECONDS`` runs one client.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harstream.testing.localbroker import Mosquitto

__all__ = ["transport_cost"]

MESSAGE = b'{"samples":[' + b",".join([b"[0.98,-0.12,0.10,0.01,-0.02,0.03]"] * 50) + b'],"seq":0}'
ANSWER = b'{"device":"d","activity":"WALKING","confidence":0.97}' + b" " * 250


def _asyncio_client(port: int, rate: float, seconds: float) -> dict[str, Any]:
    from harstream.gateway.mqtt import MqttTransport

    async def run() -> int:
        transport = MqttTransport("127.0.0.1", port, client_id="cost-asyncio", clean_session=True)
        answered = 0
        async with transport.session() as session:
            await session.subscribe("cost/+/imu", qos=1)
            print("ready", flush=True)
            deadline = time.monotonic() + seconds + 5
            async with asyncio.timeout(seconds + 10):
                async for batch in session.batches():
                    for message in batch:
                        session.publish_nowait(message.topic[:-4] + "/activity", ANSWER, qos=1)
                        answered += 1
                    if answered >= rate * seconds or time.monotonic() > deadline:
                        break
            await asyncio.sleep(0.5)  # the last PUBACKs
        return answered

    started = time.process_time()
    answered = asyncio.run(run())
    return {"answered": answered, "cpu_s": time.process_time() - started}


def _thread_client(port: int, rate: float, seconds: float) -> dict[str, Any]:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    answered = 0

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        nonlocal answered
        client.publish(message.topic[:-4] + "/activity", ANSWER, qos=1)
        answered += 1
        if answered >= rate * seconds:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="cost-thread")
    client.max_inflight_messages_set(0)  # no limit, as the gateway's (see broker.max_inflight)
    client.on_message = on_message
    started = time.process_time()
    client.connect("127.0.0.1", port)
    client.subscribe("cost/+/imu", qos=1)
    client.loop_start()
    time.sleep(0.3)
    print("ready", flush=True)
    done.wait(seconds + 5)
    time.sleep(0.5)
    client.loop_stop()
    client.disconnect()
    return {"answered": answered, "cpu_s": time.process_time() - started}


def _feed(port: int, rate: float, seconds: float) -> None:
    """Publish ``rate`` messages per second, from 100 devices, QoS 0."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="cost-feeder")
    client.connect("127.0.0.1", port)
    client.loop_start()
    began = time.monotonic()
    for i in range(int(rate * seconds)):
        delay = began + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        client.publish(f"cost/d{i % 100}/imu", MESSAGE, qos=0)
    time.sleep(0.5)
    client.loop_stop()


def transport_cost(mode: str, rate: float = 3000.0, seconds: float = 10.0) -> dict[str, Any]:
    """One run of the client in ``mode`` against a fresh broker."""
    with tempfile.TemporaryDirectory(prefix="harstream-transport-") as tmp:
        broker = Mosquitto(Path(tmp) / "broker").start()
        try:
            client = subprocess.Popen(
                [
                    *(sys.executable, "-m", "harstream.benchmarks.transport", mode),
                    *(str(broker.port), str(rate), str(seconds)),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert client.stdout is not None
            client.stdout.readline()  # "ready"
            _feed(broker.port, rate, seconds)
            out, _ = client.communicate(timeout=seconds + 30)
        finally:
            broker.stop()
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    sent = int(rate * seconds)
    result.update(
        {
            "mode": mode,
            "rate": rate,
            "sent": sent,
            "us_per_message": round(result["cpu_s"] / max(result["answered"], 1) * 1e6, 1),
            "cores": round(result["cpu_s"] / seconds, 3),
        }
    )
    return result


if __name__ == "__main__":
    mode, port, rate, seconds = (
        sys.argv[1],
        int(sys.argv[2]),
        float(sys.argv[3]),
        float(sys.argv[4]),
    )
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    client_fn = _asyncio_client if mode == "asyncio" else _thread_client
    print(json.dumps(client_fn(port, rate, seconds)), flush=True)
