"""The one error hierarchy of harstream.

::

    HarstreamError
    ├── ConfigError     a config file, key or value is wrong: fail fast at start-up
    ├── ModelError      a model bundle is missing, malformed or inconsistent: fail fast
    ├── PayloadError    one device message is bad: count it, report it, drop it, go on
    │   └── RejectedError   a well-formed message the engine will not take (capacity, old seq)
    ├── PublishError    one outgoing message the transport will not send (bad topic, too
    │                   large, queue full, not connected): count it, go on
    ├── StageError      a gateway stage died of a bug no boundary caught: the gateway says
    │                   offline and exits non-zero, for its supervisor to restart it
    └── TransportError  (harstream.gateway.transport) the broker is unreachable or the
                        connection was lost: reconnect with backoff

Third-party exceptions (pydantic, yaml, onnxruntime, json) are translated into these at
the edge with ``raise ... from exc``; nothing else in harstream raises them directly.
The recording readers in ``replay`` raise their own ``replay.DataError`` (``replay``
imports nothing of harstream); the CLI reports it like the errors above.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "HarstreamError",
    "ModelError",
    "PayloadError",
    "PublishError",
    "RejectedError",
    "StageError",
]


class HarstreamError(Exception):
    """Base of every error harstream raises on purpose."""


class ConfigError(HarstreamError):
    """A configuration source is invalid; the message names the source, key path and reason."""


class ModelError(HarstreamError):
    """A model bundle cannot be used; the message names the file, key and reason."""


class PayloadError(HarstreamError):
    """One device message is invalid. ``code`` is a short machine-readable reason."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class RejectedError(PayloadError):
    """A valid message the engine drops: device cap reached, duplicate or older seq."""


class PublishError(HarstreamError):
    """An outgoing message the transport refuses; the connection is unaffected. ``code``:
    bad_topic, too_large, queue_full, not_connected, refused."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class StageError(HarstreamError):
    """A pipeline stage of the gateway died (a bug): the gateway cannot go on."""
