"""The broker fixture gives a real mosquitto that aiomqtt can talk through."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from tests.mosquitto import Mosquitto


@pytest.mark.broker
@pytest.mark.asyncio
async def test_publish_and_receive_through_mosquitto(broker: Mosquitto, prefix: str) -> None:
    async with (
        aiomqtt.Client(broker.host, broker.port) as sub,
        aiomqtt.Client(broker.host, broker.port) as pub,
    ):
        await sub.subscribe(f"{prefix}/#", qos=1)
        await pub.publish(f"{prefix}/dev1/imu", b'{"samples": [[0,0,1,0,0,0]]}', qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(sub.messages))
        assert str(message.topic) == f"{prefix}/dev1/imu"
        assert message.payload == b'{"samples": [[0,0,1,0,0,0]]}'


@pytest.mark.broker
def test_own_broker_restarts_on_the_same_port(own_broker: Mosquitto) -> None:
    port = own_broker.port
    own_broker.restart()
    assert own_broker.port == port and own_broker.process is not None
    assert own_broker.process.poll() is None
