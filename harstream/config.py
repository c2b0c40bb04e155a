"""Configuration: YAML in, frozen and validated section models out.

This is the only module that reads configuration. Every other module takes plain
values (numbers, strings, paths) from here, so the core never imports it.

Sources, later wins:
  1. the defaults written in the models below (``config/default.yaml`` mirrors them),
  2. one YAML file: ``--config FILE``, else the ``HARSTREAM_CONFIG`` environment variable,
  3. ``--set section.key=value`` overrides, each value parsed as YAML (so ``8`` is an
     int, ``true`` a bool, ``null`` None, ``[1, 2]`` a list).

Every failure raises :class:`~harstream.errors.ConfigError` whose message names the
source (file or ``--set``), the key path and the reason, e.g.
``config/pi.yaml: stream.hop: Input should be greater than 0``.

>>> cfg = load_config(overrides=["stream.hop=32", "smoothing.method=ema"])
>>> cfg.stream.hop, cfg.smoothing.method
(32, 'ema')
>>> load_config(overrides=["stream.hopp=32"])
Traceback (most recent call last):
...
harstream.errors.ConfigError: --set stream.hopp=32: stream.hopp: unknown key
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from harstream.errors import ConfigError

__all__ = [
    "AugmentConfig",
    "BatchingConfig",
    "BrokerConfig",
    "CalibrationConfig",
    "Config",
    "DashboardConfig",
    "DataConfig",
    "DeviceConfig",
    "HomeAssistantConfig",
    "HttpConfig",
    "IngestConfig",
    "LoggingConfig",
    "ModelConfig",
    "RecordingConfig",
    "ScaleConfig",
    "SensorLoggerConfig",
    "ServiceConfig",
    "SmoothingConfig",
    "StreamConfig",
    "TlsConfig",
    "TopicsConfig",
    "TrainConfig",
    "dump_config",
    "load_config",
]

ENV_VAR = "HARSTREAM_CONFIG"

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Qos = Annotated[int, Field(ge=0, le=2)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _cert_and_key_together(section: Any) -> Any:
    """A section's ``cert_file`` and ``key_file``: both or neither."""
    if (section.cert_file is None) != (section.key_file is None):
        raise ValueError("cert_file and key_file must be given together")
    return section


class _Section(BaseModel):
    """Frozen, strict about unknown keys: a typo fails instead of being ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class TlsConfig(_Section):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip host name verification; only for test CAs

    _cert_needs_key = model_validator(mode="after")(_cert_and_key_together)


class BrokerConfig(_Section):
    host: str = "localhost"
    port: Annotated[int, Field(gt=0, lt=65536)] = 1883
    transport: Literal["tcp", "websockets"] = "tcp"
    ws_path: str = "/mqtt"
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig | None = None
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    clean_session: bool = False
    session_expiry_s: Annotated[int, Field(ge=0, le=4_294_967_295)] = 86_400
    keepalive_s: Annotated[int, Field(gt=0, le=65_535)] = 30
    reconnect_min_s: PositiveFloat = 0.5
    reconnect_max_s: PositiveFloat = 30.0
    max_queued: PositiveInt = 10_000
    max_inflight: Annotated[int, Field(ge=0)] = 0
    max_publish_bytes: PositiveInt = 1 << 20
    # more nodes of the same broker cluster ("host" or "host:port"; port: broker.port),
    # tried in turn after a failed or lost connection (docs/scaling.md, a node stopped)
    fallbacks: list[str] = []

    @field_validator("fallbacks")
    @classmethod
    def _host_ports(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, port = _host_port(entry)
            if not host or any(c in host for c in "/ ") or (port and not _is_port(port)):
                raise ValueError(f"{entry!r} is not host or host:port (port 1-65535)")
        return value

    def endpoints(self) -> tuple[tuple[str, int], ...]:
        """``fallbacks`` as (host, port) pairs."""
        pairs = []
        for entry in self.fallbacks:
            host, port = _host_port(entry)
            pairs.append((host, int(port) if port else self.port))
        return tuple(pairs)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _password_needs_user(self) -> BrokerConfig:
        if self.password is not None and self.username is None:
            raise ValueError("password given without username (both or neither)")
        return self


def _host_port(entry: str) -> tuple[str, str]:
    """``host:port`` -> (host, port); ``host`` -> (host, "")."""
    host, _, port = entry.rpartition(":") if ":" in entry else (entry, "", "")
    return host, port


def _is_port(text: str) -> bool:
    return text.isdigit() and 0 < int(text) < 65536


def _topic_root(value: str) -> str:
    """The first levels of topics we publish to: the broker would drop our connection
    over a wildcard, a NUL or an empty level, so they fail here, at start-up."""
    if any(c in value for c in "+#\0"):
        raise ValueError("must not contain the wildcards + or #, or NUL")
    if "" in value.split("/"):
        raise ValueError("must not have an empty level (a leading, trailing or double /)")
    return value


TopicRoot = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_topic_root)]


class TopicsConfig(_Section):
    prefix: TopicRoot = "harstream"
    qos_in: Qos = 1
    qos_out: Qos = 1
    retain_activity: bool = True


class ModelConfig(_Section):
    path: Path | None = None  # None: the bundle packaged with harstream
    backend: Literal["auto", "torch", "onnx"] = "auto"
    threads: PositiveInt = 1  # intra-op threads of the inference backend
    blas_threads: PositiveInt = 1  # numpy's BLAS threads (the filters' block products)


class StreamConfig(_Section):
    rate_hz: PositiveFloat = 50.0
    window: PositiveInt = 128
    hop: PositiveInt = 64
    max_samples_per_message: PositiveInt = 500
    max_devices: PositiveInt = 10_000
    idle_timeout_s: PositiveFloat = 300.0
    max_gap_s: PositiveFloat = 2.0  # field devices: a longer silence restarts the stream
    reorder_window: Annotated[int, Field(ge=0)] = 2  # messages held for one missing before it

    @model_validator(mode="after")
    def _hop_fits_window(self) -> StreamConfig:
        if self.hop > self.window:
            raise ValueError(f"hop ({self.hop}) must not exceed window ({self.window})")
        return self


class SmoothingConfig(_Section):
    method: Literal["none", "ema", "majority", "hysteresis", "hmm"] = "hmm"
    ema_alpha: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    majority_k: PositiveInt = 3
    min_dwell: PositiveInt = 2
    switch_confidence: Probability = 0.9
    #: hmm: the bundle's mean activity durations are multiplied by this (> 1: stickier)
    hmm_stickiness: PositiveFloat = 1.0
    unknown_threshold: Probability = 0.0


class DashboardConfig(_Section):
    """The live page and its API on the HTTP server (``ingest.http.port``)."""

    enabled: bool = True
    token: SecretStr | None = None  # for the page and API; not the ingest token
    history_s: PositiveFloat = 3600.0  # each device's timeline
    max_runs: PositiveInt = 2000  # label runs kept per device (the oldest go first)


class CalibrationConfig(_Section):
    """Per-device calibration (models with gravity-aligned inputs; docs/models.md)."""

    #: what a device without a calibration of its own gets: ``none`` leaves it
    #: uncalibrated (walking, stairs and moving vs still in any orientation; posture
    #: guessed); ``reference`` assumes it is worn as the training phone was (upright on
    #: the waist: right there, wrong anywhere else)
    uncalibrated: Literal["none", "reference"] = "none"
    #: how long a device must stand still for a calibration
    seconds: PositiveFloat = 5.0
    #: where calibrations are kept across restarts (JSON); None: in memory only
    state_file: Path | None = None
    #: learn each device's vertical from its own walking (docs/models.md, "Calibration
    #: from walking"): a device needs no standing calibration for its posture
    from_walking: bool = True
    #: seconds of confident WALKING before the first vertical (chosen on validation)
    walking_s: PositiveFloat = 5.0
    #: the least smoothed confidence of a WALKING decision that is taken
    walking_confidence: Probability = 0.8
    #: walking that disagrees with the vertical in force by more than this (degrees) ...
    remount_deg: Annotated[float, Field(gt=0, lt=180)] = 30.0
    #: ... for this many walking seconds in a row: the device was re-mounted
    remount_s: PositiveFloat = 10.0
    #: walking seconds over which the running estimate forgets (1/e)
    walking_memory_s: PositiveFloat = 600.0


class RecordingConfig(_Section):
    """What the gateway keeps of what devices sent (off by default: it is personal data;
    docs/field-data.md). Per device and session, the samples the model saw (on its grid,
    with the device's clock) and the decisions published, in part files rotated by time
    and size."""

    dir: Path | None = None  # None: nothing is recorded
    #: parquet (pyarrow, the ``record`` extra), csv (gzip'd CSV, no extra), auto: parquet
    #: when pyarrow is installed
    format: Literal["auto", "parquet", "csv"] = "auto"
    rotate_s: PositiveFloat = 60.0  # a part file holds at most this much of a session
    rotate_bytes: PositiveInt = 4 << 20  # ... and at most this many bytes in memory
    max_buffer_bytes: PositiveInt = (
        128 << 20
    )  # all devices' unwritten samples (~72 KB a device-minute)
    keep_days: PositiveFloat = 30.0  # sessions older than this are deleted
    max_bytes: PositiveInt = 10 << 30  # the recording folder at most; beyond, recording stops
    #: one device's recordings at most this share of max_bytes (beyond, that device's
    #: samples are refused and counted; the others keep recording). Half: a device at
    #: its normal rate holds more than keep_days within it, one that floods the folder
    #: leaves the other half to the rest
    max_device_share: float = Field(default=0.5, gt=0, le=1)
    decisions: bool = True  # record the published decisions too


class ScaleConfig(_Section):
    """Worker mode on a partitioning broker (NATS with its MQTT listener; docs/scaling.md):
    this gateway serves the devices of its partitions only. Off without ``partitions``."""

    partitions: Annotated[int, Field(ge=1, le=4096)] | None = None  # P of `deploy nats`
    owned: str = "all"  # all, or a, a-b, a-b/k items: "0-63", "0-127/2"
    worker: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    probe_s: PositiveFloat = 5.0  # at start: how long to wait for the broker's mapping
    #: dynamic ownership: the live workers share a dead worker's partitions until it is
    #: back (its session then starts clean: the others served what it missed)
    takeover: bool = False
    #: a worker says `online` again this often; one not heard for 3 heartbeats is taken
    #: as dead, as its will would say (a will can be lost: docs/scaling.md)
    heartbeat_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 5.0
    #: the broker's NATS client port, whose greeting tells the server's version at start
    #: (MQTT does not): one older than 2.10 is warned about (harstream.natsserver). 4222
    #: as `deploy nats` writes it; null: not read
    nats_port: Annotated[int, Field(gt=0, lt=65536)] | None = 4222

    @model_validator(mode="after")
    def _owned_parses(self) -> ScaleConfig:
        if self.partitions is not None:
            from harstream.core.partitions import parse_owned

            parse_owned(self.owned, self.partitions)  # ValueError names the item
        return self


class BatchingConfig(_Section):
    max_batch: PositiveInt = 1024
    max_linger_ms: Annotated[float, Field(ge=0.0)] = 20.0


class SensorLoggerConfig(_Section):
    topic: TopicRoot | None = "sensor-logger"
    max_payload_bytes: PositiveInt = 1 << 20


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] | None = None  # None: no HTTP server
    token: SecretStr | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    max_body_bytes: PositiveInt = 1 << 20

    _cert_needs_key = model_validator(mode="after")(_cert_and_key_together)


class IngestConfig(_Section):
    sensor_logger: SensorLoggerConfig = SensorLoggerConfig()
    http: HttpConfig = HttpConfig()


def _axes(value: str) -> str:
    """A permutation with signs of x, y, z, like ``-y,x,z``."""
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 3 or sorted(p.lstrip("-") for p in parts) != ["x", "y", "z"]:
        raise ValueError("axes must name x, y and z once each, with optional signs: -y,x,z")
    return ",".join(parts)


class DeviceUnits(_Section):
    acc: Literal["g", "m/s2"] = "g"
    gyro: Literal["rad/s", "deg/s"] = "rad/s"


class DeviceConfig(_Section):
    name: str | None = None  # the name Home Assistant shows
    units: DeviceUnits | None = None  # when the device's messages do not say
    axes: Annotated[str, AfterValidator(_axes)] = "x,y,z"  # device axes -> harstream axes


class HomeAssistantConfig(_Section):
    enabled: bool = False
    discovery_prefix: TopicRoot = "homeassistant"


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class ServiceConfig(_Section):
    stats_interval_s: PositiveFloat = 10.0
    queue_size: PositiveInt = 10_000
    queue_bytes: PositiveInt = 64 * 1024 * 1024
    error_interval_s: Annotated[float, Field(ge=0.0)] = 5.0  # per device, on its error topic
    max_payload_bytes: PositiveInt = 65_536


class DataConfig(_Section):
    dir: Path | None = None
    hapt_url: str = (
        "https://archive.ics.uci.edu/static/public/341/"
        "smartphone+based+recognition+of+human+activities+and+postural+transitions.zip"
    )
    hapt_sha256: str | None = None
    uci_har_url: str = (
        "https://archive.ics.uci.edu/static/public/240/"
        "human+activity+recognition+using+smartphones.zip"
    )
    uci_har_sha256: str | None = None


class AugmentConfig(_Section):
    rotate_deg: Annotated[float, Field(ge=0.0, le=180.0)] = 10.0
    lie_rotate_p: Probability = 0.5
    scale: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    noise: Annotated[float, Field(ge=0.0)] = 0.0
    #: stateful crops played at a random speed, 1 +/- this (people walk at their own
    #: cadence: a slow walker's steps are as slow as another's stairs); 0: off
    time_warp: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.0


class TrainConfig(_Section):
    arch: Literal["gru", "lstm"] = "gru"
    hidden: PositiveInt = 64
    layers: PositiveInt = 2
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    #: samples per recurrent step (a linear front end over each patch when > 1)
    stride: PositiveInt = 8
    #: device: the 9 device-frame channels; aligned: the gravity-aligned channels
    inputs: Literal["device", "aligned"] = "aligned"
    #: aligned inputs: the share of training crops shown without their calibration
    uncalibrated_p: Probability = 0.35
    #: aligned inputs: the share of training crops calibrated from walking as the engine
    #: learns it live (``calibration.from_walking``): the mean gravity direction over a
    #: stretch of ``walking_vertical_s`` seconds of one of the recording's WALKING
    #: segments; in half of them the vertical arrives during the crop. The rest of the
    #: calibrated crops keep the recording's standing calibration
    walking_p: Probability = 0.3
    walking_vertical_s: tuple[PositiveFloat, PositiveFloat] = (5.0, 20.0)
    #: aligned inputs: the share of crops calibrated with a vertical that is no longer
    #: true (a device re-mounted, before walking shows it): the recording's own turned by
    #: a random rotation; the labels stay, so that walking is still read as walking
    stale_p: Probability = 0.05
    #: aligned inputs: seconds of the first STANDING segment a recording is calibrated on
    calibration_s: PositiveFloat = 5.0
    mode: Literal["window", "stateful"] = "stateful"
    window: PositiveInt = 128
    hop: PositiveInt = 64
    seq_len: PositiveInt = 1024
    #: stateful: the share of batches of short crops (``short_seq_len``), which weigh a
    #: device's first decisions after a start or reset more
    short_crop_p: Probability = 0.5
    short_seq_len: PositiveInt = 128
    #: stateful: random-order streams spliced per training subject from its own segments
    #: (``training.splice``), trained on beside its recordings so that no activity
    #: order is learned; 0: the recordings alone
    spliced_streams: Annotated[int, Field(ge=0)] = 4
    #: each spliced segment cut to a random share of its length in this range
    spliced_crop: tuple[Probability, Probability] = (0.3, 1.0)
    #: what the network is taught during a postural transition (HAPT 7-12): ``ignore``
    #: (nothing: its output there is free, and passes through walking or stairs on the
    #: way from one posture to the next), or ``destination``: the posture it leads to
    transition_targets: Literal["ignore", "destination"] = "ignore"
    #: random-order streams per validation subject that model selection also scores
    validation_streams: Annotated[int, Field(ge=0)] = 2
    #: the HMM smoother's mean activity duration (the same for every class; chosen on
    #: validation spliced streams, docs/models.md)
    hmm_duration_s: PositiveFloat = 1.5
    window_stride: PositiveInt = 32
    batch_size: PositiveInt = 32
    iterations: PositiveInt = 3200
    eval_every: PositiveInt = 100
    lr: PositiveFloat = 3e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 1e-4
    grad_clip: PositiveFloat = 1.0
    validation_subjects: list[Annotated[int, Field(ge=1, le=30)]] = [3, 8, 15, 19, 25, 29]
    refit: bool = True
    #: skip the selection run and refit on all 21 subjects for this many steps (the best
    #: step an earlier run of the same recipe selected: the same network, in less time);
    #: with several members, one count for all or a list of one per member
    refit_steps: PositiveInt | list[PositiveInt] | None = None
    #: networks trained by the recipe, member k with seed ``seed + k`` (its own selection,
    #: refit and spliced streams), averaged in one bundle (docs/models.md, ensemble)
    members: PositiveInt = 3
    seed: int = 0
    threads: PositiveInt = 2
    jobs: PositiveInt = 2
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _hop_fits_window(self) -> TrainConfig:
        if self.hop > self.window:
            raise ValueError(f"hop ({self.hop}) must not exceed window ({self.window})")
        if self.hop % self.stride or self.window % self.stride or self.seq_len % self.stride:
            raise ValueError(f"hop, window and seq_len must be multiples of stride ({self.stride})")
        if self.uncalibrated_p + self.walking_p + self.stale_p > 1.0:
            raise ValueError(
                f"uncalibrated_p + walking_p + stale_p ({self.uncalibrated_p} + "
                f"{self.walking_p} + {self.stale_p}) must not exceed 1"
            )
        if self.walking_vertical_s[0] > self.walking_vertical_s[1]:
            raise ValueError(f"walking_vertical_s {self.walking_vertical_s} is not a range")
        if isinstance(self.refit_steps, list) and len(self.refit_steps) != self.members:
            raise ValueError(
                f"refit_steps lists {len(self.refit_steps)} step counts for {self.members} members"
            )
        return self


class Config(_Section):
    broker: BrokerConfig = BrokerConfig()
    topics: TopicsConfig = TopicsConfig()
    model: ModelConfig = ModelConfig()
    stream: StreamConfig = StreamConfig()
    smoothing: SmoothingConfig = SmoothingConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    recording: RecordingConfig = RecordingConfig()
    scale: ScaleConfig = ScaleConfig()
    dashboard: DashboardConfig = DashboardConfig()
    batching: BatchingConfig = BatchingConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    logging: LoggingConfig = LoggingConfig()
    service: ServiceConfig = ServiceConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    ingest: IngestConfig = IngestConfig()
    devices: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")], DeviceConfig] = {}


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the effective config from defaults, one file and ``key=value`` overrides."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get(ENV_VAR):
        path = environ[ENV_VAR]
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        data = _read_yaml(Path(path))
        _validate(data, source)  # blame the file before any override is applied
    keys = []
    for item in overrides:
        key, value = _parse_override(item)
        _set_path(data, key, value, f"--set {item}")
        keys.append((key, item))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        # all overrides apply together (tls cert and key come in two --set); blame the one
        # whose key path meets the failing location, else the file
        loc = [str(part) for part in exc.errors()[0]["loc"]]
        for key, item in reversed(keys):
            if key[: len(loc)] == loc[: len(key)]:
                source = f"--set {item}"
                break
        _validate(data, source)
        raise  # pragma: no cover - _validate raises for the same data


def dump_config(config: Config) -> str:
    """The effective config as YAML, secrets masked."""
    data = config.model_dump(mode="json")
    if config.broker.password is not None:
        data["broker"]["password"] = "********"
    if config.ingest.http.token is not None:
        data["ingest"]["http"]["token"] = "********"
    return yaml.safe_dump(data, sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: {where}invalid YAML: {reason}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: top level must be a mapping of sections, not {type(data).__name__}"
        )
    return data


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item}: value is not valid YAML") from exc
    if isinstance(value, int | float) and not isinstance(value, bool) and str(value) != raw.strip():
        value = raw.strip()  # "007" or "1e3": keep the text; a numeric field still parses it
    return key.strip().split("."), value


def _set_path(data: dict[str, Any], keys: list[str], value: Any, source: str) -> None:
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            where = ".".join(keys[: i + 1])
            raise ConfigError(f"{source}: {where}: is a value, not a section")
        node = child
    node[keys[-1]] = value


def _validate(data: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        reason = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        reason = reason.removeprefix("Value error, ")
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(f"{source}: {where}: {reason}{suffix}") from exc
