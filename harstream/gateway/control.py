"""The control plane: commands on ``{prefix}/control`` (and SIGHUP), each its own event.

A command is parsed once (:func:`parse_command`) into a typed event, :class:`Reload`,
:class:`Forget` or :class:`Refused`, and carried out by :class:`Control`:

- ``{"command": "reload"}`` loads ``model.path`` again (off the loop) and swaps it in
  without a restart: every device's stream restarts on the new model (one window of
  warm-up; calibrations kept), stats name the model in force; a bundle that fails to
  load, or names other activities, leaves the old one serving;
- ``{"command": "forget", "device": D}`` erases everything of a device: recordings and
  labels (the recorder), calibration and per-device state (the pipeline's prepare
  thread), its page history, then its retained topics.

Each command's result goes to ``{prefix}/control/result``. It runs on the event loop
and does not know the transport: what it publishes goes through ``send``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from harstream.core.engine import Engine
from harstream.core.payload import encode, valid_device_id
from harstream.errors import HarstreamError
from harstream.gateway.pipeline import Pipeline, PipelineSettings
from harstream.gateway.recorder import Recorder

__all__ = ["USAGE", "Command", "Control", "Forget", "Refused", "Reload", "parse_command"]

log = logging.getLogger("harstream.gateway")

USAGE = 'send {"command": "reload"} or {"command": "forget", "device": D}'

Send = Callable[[str, bytes, int, bool], None]


@dataclass(frozen=True, slots=True)
class Reload:
    """Load ``model.path`` again and swap it in."""


@dataclass(frozen=True, slots=True)
class Forget:
    """Erase everything of ``device`` (a device id)."""

    device: str


@dataclass(frozen=True, slots=True)
class Refused:
    """Not a command this gateway takes: ``command`` as given, and why."""

    command: str
    detail: str


Command = Reload | Forget | Refused


def parse_command(payload: bytes) -> Command:
    """A control message's command.

    >>> parse_command(b'{"command": "forget", "device": "p1"}')
    Forget(device='p1')
    >>> parse_command(b'{"command": "forget", "device": "a/b"}')
    Refused(command='forget', detail='not a device id')
    """
    try:  # orjson: strict, and a nesting limit instead of a RecursionError
        body = orjson.loads(payload)
        command = body.get("command") if isinstance(body, dict) else None
    except orjson.JSONDecodeError:
        command = None
    if command == "reload" and set(body) == {"command"}:
        return Reload()
    if command == "forget" and set(body) == {"command", "device"}:
        device = body["device"]
        if not isinstance(device, str) or not valid_device_id(device):
            return Refused("forget", "not a device id")
        return Forget(device)
    return Refused(str(command), USAGE)


class Control:
    """Carries out commands; owns the engine in force and the ``model`` stats name."""

    def __init__(
        self,
        engine: Engine,
        settings: PipelineSettings,
        pipeline: Pipeline,
        send: Send,
        *,
        recorder: Recorder | None,
        forget_history: Callable[[str], None] | None,
        load_engine: Callable[[], tuple[Engine, str]] | None,
        wall_clock: Callable[[], float],
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.pipeline = pipeline
        self.send = send
        self.recorder = recorder
        self.forget_history = forget_history  # the live page's, when it runs
        self.load_engine = load_engine  # (engine, model name) for a reload
        self.wall_clock = wall_clock
        self.topic = f"{settings.prefix}/control"
        self.model: dict[str, Any] = {"name": settings.model_name, "swaps": 0, "error": None}
        self._reloading: asyncio.Task[None] | None = None

    def handle(self, command: Command) -> None:
        if isinstance(command, Reload):
            self.request_reload()
        elif isinstance(command, Forget):
            self._forget(command.device)
        else:
            self.result(command.command, False, command.detail)

    def _forget(self, device: str) -> None:
        """Erase everything of a device: its recordings and labels (the recorder), its
        calibration (memory and state file: the prepare thread), then its retained
        topics (empty retained payloads: activity, calibration, availability, Home
        Assistant's discovery config)."""
        erased = []
        if self.recorder is not None:
            if not self.recorder.forget(device):
                self.result("forget", False, "the recorder is busy: try again")
                return
            erased.append("recordings and labels")
        loop = asyncio.get_running_loop()

        def forgotten(calibrated: bool) -> None:  # in the prepare thread
            what = [*erased, *(["calibration"] if calibrated else []), "retained topics"]
            loop.call_soon_threadsafe(self._forgotten, device, what)

        self.pipeline.forget(device, forgotten)

    def _forgotten(self, device: str, erased: list[str]) -> None:
        s = self.settings
        topics = [f"{s.prefix}/{device}/{kind}" for kind in ("activity", "calibration")]
        topics.append(f"{s.prefix}/{device}/availability")
        if s.homeassistant:
            topics.append(f"{s.discovery_prefix}/sensor/harstream_{device}/activity/config")
        for topic in topics:
            self.send(topic, b"", 1, True)  # an empty retained message deletes the retained
        if self.forget_history is not None:
            self.forget_history(device)
        log.info("forgot %s: %s", device, ", ".join(erased))
        self.result("forget", True, f"{device}: erased {', '.join(erased)}")

    def request_reload(self) -> None:
        """Load ``model.path`` again and swap it in (SIGHUP, or the control topic)."""
        if self._reloading is not None and not self._reloading.done():
            self.result("reload", False, "a reload is already under way")
            return
        self._reloading = asyncio.get_running_loop().create_task(self._reload(), name="reload")

    async def _reload(self) -> None:
        if self.load_engine is None:
            self.result("reload", False, "this gateway cannot reload its model")
            return
        try:  # loading a bundle reads files and builds an onnxruntime session: off the loop
            engine, name = await asyncio.to_thread(self.load_engine)
        except HarstreamError as exc:
            self.model["error"] = str(exc)
            log.error("reload failed, still serving %s: %s", self.model["name"], exc)
            self.result("reload", False, f"still serving {self.model['name']}: {exc}")
            return
        if engine.labels != self.engine.labels:
            detail = f"{name} names other activities ({', '.join(engine.labels)}): refused"
            self.model["error"] = detail
            self.result("reload", False, detail)
            return
        loop = asyncio.get_running_loop()
        swapped = loop.create_future()

        def done() -> None:  # called in the infer thread
            loop.call_soon_threadsafe(swapped.set_result, None)

        self.pipeline.swap(engine, name, done)
        await swapped
        self.engine = engine
        self.model = {"name": name, "swaps": self.model["swaps"] + 1, "error": None}
        log.info("now serving %s; every device's stream restarts on it", name)
        self.result("reload", True, f"now serving {name}")

    def result(self, command: str, ok: bool, detail: str) -> None:
        body = {"command": command, "ok": ok, "detail": detail, "t": round(self.wall_clock(), 3)}
        self.send(f"{self.topic}/result", encode(body), 1, False)
