"""The tests' broker: harstream's local mosquitto launcher."""

from harstream.testing.localbroker import (
    INSTALL_HINT,
    Mosquitto,
    free_port,
    mosquitto_binary,
    wait_for_port,
)

__all__ = ["INSTALL_HINT", "Mosquitto", "free_port", "mosquitto_binary", "wait_for_port"]
