"""The baseline gateway: what a user would otherwise build from a notebook model.

The usual approach to serving a UCI HAR notebook: keep each device's last 128 samples,
and every 64 samples call a bidirectional GRU-128x2 on that device's standardised window
alone (batch 1), take the argmax, publish it. It is fed by the same transport as
harstream (harstream.gateway.mqtt, the same JSON decoding) and publishes the same activity
payload at QoS 1, so that the load generator measures both alike; the model runs in
onnxruntime, which is 1.3-4.8x faster than torch at batch 1 (docs/benchmarks.md), so
the baseline is not handicapped by its runtime.

The network has random weights: this measures cost, which does not depend on the
weights (accuracy of such models: ../docs/models.md). ``build_baseline_model`` needs
torch (the ``train`` extra); serving it does not.

``python -m harstream.benchmarks.baseline '{"port": ..., "prefix": ..., "model": ...}'``
runs it until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from harstream.config import load_config
from harstream.core.engine import Message
from harstream.core.payload import decode_imu, encode
from harstream.gateway.mqtt import MqttTransport
from harstream.gateway.transport import Incoming, TransportError, Will
from harstream.runtime import imu_limits

__all__ = ["WINDOW", "build_baseline_model", "serve_baseline"]

WINDOW, HOP, CHANNELS, HIDDEN, LAYERS = 128, 64, 6, 128, 2
LABELS = [
    "WALKING",
    "WALKING_UPSTAIRS",
    "WALKING_DOWNSTAIRS",
    "SITTING",
    "STANDING",
    "LAYING",
]


def build_baseline_model(path: Path) -> Path:
    """Write the baseline network (bidirectional GRU-128x2, linear head) as ONNX."""
    import torch
    from torch import nn

    class BiGru(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(CHANNELS, HIDDEN, LAYERS, batch_first=True, bidirectional=True)
            self.head = nn.Linear(2 * HIDDEN, len(LABELS))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y, _ = self.rnn(x)
            return torch.softmax(self.head(y[:, -1]), dim=-1)  # the window's last step

    torch.manual_seed(0)
    net = BiGru().eval()
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter (deprecated, fast; as training/export.py) and its note
        # on GRUs without an h0 input: batch 1 is all the baseline ever runs
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(1, WINDOW, CHANNELS),),
            str(path),
            input_names=["x"],
            output_names=["probs"],
            dynamic_axes={"x": {0: "batch"}, "probs": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path


CONFIG = load_config()  # the gateway's defaults: the same message limits as harstream's


class _Device:
    __slots__ = ("count", "window")

    def __init__(self) -> None:
        self.window = np.zeros((WINDOW, CHANNELS), np.float32)
        self.count = 0


async def serve_baseline(spec: dict[str, Any]) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(spec["model"], options, providers=["CPUExecutionProvider"])
    # a scaler fitted on training data, as the notebook pickles it: the values do not
    # change the cost
    mean = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0], np.float32)
    scale = np.array([0.4, 0.4, 0.4, 1.0, 1.0, 1.0], np.float32)
    prefix = spec["prefix"]
    start = len(prefix) + 1
    devices: dict[str, _Device] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    transport = MqttTransport("127.0.0.1", spec["port"], client_id=f"baseline-{prefix}")
    will = Will(f"{prefix}/status", b"offline", qos=1, retain=True)
    async with transport.session(will=will) as mqtt:
        await mqtt.publish(f"{prefix}/status", b"online", qos=1, retain=True)
        await mqtt.subscribe(f"{prefix}/+/imu")

        async def receive() -> None:
            async for batch in mqtt.batches():
                for message in batch:
                    handle(message)

        def handle(message: Incoming) -> None:
            if True:  # one message at a time, inference on the loop: the notebook's way
                device = message.topic[start:-4]
                m = decode_imu(device, message.payload, now=time.time(), **imu_limits(CONFIG))
                assert isinstance(m, Message)  # the load generator sends 50 Hz in g
                dev = devices.setdefault(device, _Device())
                stream = np.concatenate([dev.window, m.samples.astype(np.float32)])
                for i in range(len(m.samples)):  # sample i of the message is stream[WINDOW + i]
                    count = dev.count + i + 1
                    if count >= WINDOW and (count - WINDOW) % HOP == 0:
                        x = ((stream[i + 1 : i + 1 + WINDOW] - mean) / scale)[None]
                        probs = session.run(["probs"], {"x": x})[0][0]
                        label = int(np.argmax(probs))
                        payload = {
                            "device": device,
                            "activity": LABELS[label],
                            "confidence": round(float(probs[label]), 4),
                            "probabilities": {
                                k: round(float(v), 4) for k, v in zip(LABELS, probs, strict=True)
                            },
                            "raw_activity": LABELS[label],
                            "seq": (m.seq or 0) + i,
                            "t": round(time.time(), 3),
                            "model": "baseline-bigru128x2",
                        }
                        mqtt.publish_nowait(f"{prefix}/{device}/activity", encode(payload), 1)
                dev.window = stream[-WINDOW:]
                dev.count += len(m.samples)

        receiving = asyncio.create_task(receive())
        await stop.wait()
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError, TransportError):
            await receiving
        await mqtt.publish(f"{prefix}/status", b"offline", qos=1, retain=True)


if __name__ == "__main__":
    asyncio.run(serve_baseline(json.loads(sys.argv[1])))
