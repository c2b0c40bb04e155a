"""harstream: real-time human activity recognition from streamed IMU samples.

Importing harstream loads neither torch nor the MQTT client; those come in only
with the backend or transport that needs them.
"""

from harstream._version import __version__
from harstream.errors import (
    ConfigError,
    HarstreamError,
    ModelError,
    PayloadError,
    PublishError,
    RejectedError,
)

__all__ = [
    "ConfigError",
    "HarstreamError",
    "ModelError",
    "PayloadError",
    "PublishError",
    "RejectedError",
    "__version__",
]
