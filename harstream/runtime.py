"""Glue between a validated Config and the pure core: build the engine a command runs.

The one place that turns config values into core objects (the core never sees the
config). Checks that the config fits the bundle and fails fast with a ConfigError
naming the key when it does not.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from harstream.config import Config
from harstream.core.bundle import Bundle, load_bundle
from harstream.core.engine import Engine, WalkingCalibration
from harstream.core.inference import Model, load_model
from harstream.core.partitions import format_owned, parse_owned
from harstream.core.smoothing import hmm_transition, smoother_factory
from harstream.errors import ConfigError
from harstream.gateway.dashboard import DashboardSettings
from harstream.gateway.http import HttpSettings
from harstream.gateway.ingest import DeviceSettings, IngestSettings
from harstream.gateway.pipeline import PipelineSettings
from harstream.gateway.recorder import RecorderSettings, resolve_format
from harstream.gateway.scale import ScaleSettings
from harstream.gateway.service import GatewaySettings

if TYPE_CHECKING:
    from harstream.gateway.mqtt import MqttTransport

__all__ = [
    "build_engine",
    "default_client_id",
    "engine_loader",
    "gateway_settings",
    "http_settings",
    "imu_limits",
    "ingest_settings",
    "limit_threads",
    "mqtt_transport",
    "recorder_settings",
    "scale_settings",
    "walking_calibration",
]


def limit_threads(config: Config) -> None:
    """Cap numpy's BLAS pool for this process (onnxruntime's comes with the model)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=config.model.blas_threads, user_api="blas")


def walking_calibration(config: Config) -> WalkingCalibration | None:
    """``calibration.from_walking`` and its parameters, or None when it is off."""
    cal = config.calibration
    if not cal.from_walking:
        return None
    if cal.walking_memory_s <= cal.walking_s:
        raise ConfigError(
            f"calibration.walking_memory_s: {cal.walking_memory_s} must exceed "
            f"calibration.walking_s ({cal.walking_s})"
        )
    return WalkingCalibration(
        seconds=cal.walking_s,
        confidence=cal.walking_confidence,
        remount_deg=cal.remount_deg,
        remount_s=cal.remount_s,
        memory_s=cal.walking_memory_s,
    )


def build_engine(
    config: Config,
    bundle: Bundle | None = None,
    model: Model | None = None,
    *,
    mode: str | None = None,
) -> Engine:
    """An engine for ``config``, on ``bundle`` (default: ``model.path`` or the packaged one).
    ``model`` replaces the bundle's backend (a timed one in benchmarks); ``mode`` runs a
    stateful bundle in window mode (benchmarks compare the two)."""
    bundle = bundle if bundle is not None else load_bundle(config.model.path)
    limit_threads(config)  # process-wide, set where a command commits to running the engine
    stream = config.stream
    where = f"bundle {bundle.path}"
    if stream.rate_hz != bundle.rate_hz:
        raise ConfigError(
            f"stream.rate_hz: {stream.rate_hz} Hz, but {where} was trained at {bundle.rate_hz} Hz"
        )
    if bundle.mode == "window" and stream.window != bundle.window:
        raise ConfigError(
            f"stream.window: {stream.window}, but {where} is a window-mode model "
            f"trained on {bundle.window}-sample windows"
        )
    mode = mode or bundle.mode
    if mode == "stateful" and bundle.mode == "window":
        raise ConfigError(f"{where} is a window-mode model: it cannot carry state across hops")
    window = bundle.window if mode == "window" else max(stream.window, stream.hop)
    stride = bundle.arch.stride
    for key, value in (("stream.hop", stream.hop), ("stream.window", window)):
        if value % stride:
            raise ConfigError(
                f"{key}: {value}, but {where} steps once per {stride} samples: use a "
                f"multiple of {stride}"
            )
    smoothing = config.smoothing
    hmm = None
    if smoothing.method == "hmm":
        if bundle.activity_stats is None:
            raise ConfigError(
                f"smoothing.method: hmm needs the activity statistics {where} does not "
                "carry (retrain it, or choose another method)"
            )
        stats = bundle.activity_stats
        transition = hmm_transition(
            stats.mean_duration_s,
            stats.transitions,
            stream.hop / stream.rate_hz,
            smoothing.hmm_stickiness,
        )
        hmm = (transition, np.asarray(stats.prior))
    default_vertical = None
    if bundle.calibration is not None and config.calibration.uncalibrated == "reference":
        default_vertical = np.asarray(bundle.calibration.reference_vertical)
    walking = walking_calibration(config)
    return Engine(
        model
        if model is not None
        else load_model(bundle, config.model.backend, config.model.threads),
        bundle.preprocessor(),
        smoother_factory(
            smoothing.method,
            ema_alpha=smoothing.ema_alpha,
            majority_k=smoothing.majority_k,
            min_dwell=smoothing.min_dwell,
            switch_confidence=smoothing.switch_confidence,
            hmm=hmm,
        ),
        mode=mode,
        window=window,
        hop=stream.hop,
        rate_hz=stream.rate_hz,
        max_devices=stream.max_devices,
        idle_timeout_s=stream.idle_timeout_s,
        unknown_threshold=smoothing.unknown_threshold,
        default_vertical=default_vertical,
        walking=walking,
    )


def engine_loader(config: Config) -> Callable[[], tuple[Engine, str]]:
    """What a gateway's reload calls: ``model.path`` loaded again, as an engine."""

    def load() -> tuple[Engine, str]:
        bundle = load_bundle(config.model.path)
        return build_engine(config, bundle), bundle.name

    return load


def scale_settings(config: Config) -> ScaleSettings | None:
    """Worker mode's settings; None for a gateway that takes every device."""
    scale = config.scale
    if scale.partitions is None:
        return None
    owned = parse_owned(scale.owned, scale.partitions)
    worker = scale.worker or f"{socket.gethostname()}-{format_owned(owned)}"
    worker = re.sub(r"[^A-Za-z0-9_-]", "_", worker)[:64]
    return ScaleSettings(scale.partitions, owned, worker, scale.takeover, scale.heartbeat_s)


def recorder_settings(config: Config, bundle: Bundle) -> RecorderSettings | None:
    """The recorder's settings; None when ``recording.dir`` is not set."""
    rec = config.recording
    if rec.dir is None:
        return None
    try:
        fmt = resolve_format(rec.format)
    except ImportError as exc:
        raise ConfigError(
            "recording.format: parquet needs pyarrow: pip install 'harstream[record]' (or use csv)"
        ) from exc
    return RecorderSettings(
        dir=rec.dir,
        format=fmt,
        rotate_s=rec.rotate_s,
        rotate_bytes=rec.rotate_bytes,
        max_buffer_bytes=rec.max_buffer_bytes,
        keep_days=rec.keep_days,
        max_bytes=rec.max_bytes,
        decisions=rec.decisions,
        rate_hz=config.stream.rate_hz,
        model_name=bundle.name,
        max_device_bytes=int(rec.max_device_share * rec.max_bytes),
    )


def imu_limits(config: Config) -> dict[str, Any]:
    """``decode_imu``'s limits from ``config``."""
    return {
        "rate_hz": config.stream.rate_hz,
        "max_samples": config.stream.max_samples_per_message,
        "max_bytes": config.service.max_payload_bytes,
    }


def gateway_settings(config: Config, bundle: Bundle) -> GatewaySettings:
    return GatewaySettings(
        pipeline=PipelineSettings(
            ingest=ingest_settings(config),
            qos_out=config.topics.qos_out,
            retain_activity=config.topics.retain_activity,
            max_batch=config.batching.max_batch,
            max_linger_ms=config.batching.max_linger_ms,
            queue_size=config.service.queue_size,
            queue_bytes=config.service.queue_bytes,
            error_interval_s=config.service.error_interval_s,
            homeassistant=config.homeassistant.enabled,
            discovery_prefix=config.homeassistant.discovery_prefix,
            model_name=bundle.name,
            names={d: c.name for d, c in config.devices.items() if c.name},
            calibration_s=config.calibration.seconds,
            calibration_file=config.calibration.state_file,
            live_page=config.ingest.http.port is not None and config.dashboard.enabled,
        ),
        qos_in=config.topics.qos_in,
        stats_interval_s=config.service.stats_interval_s,
        reconnect_min_s=config.broker.reconnect_min_s,
        reconnect_max_s=config.broker.reconnect_max_s,
        http=http_settings(config),
        dashboard=dashboard_settings(config),
        recording=recorder_settings(config, bundle),
        scale=scale_settings(config),
        probe_s=config.scale.probe_s,
    )


def dashboard_settings(config: Config) -> DashboardSettings | None:
    """The live page's settings; None when it is off."""
    board = config.dashboard
    if not board.enabled:
        return None
    return DashboardSettings(
        token=board.token.get_secret_value() if board.token is not None else None,
        history_s=board.history_s,
        max_runs=board.max_runs,
        max_devices=config.stream.max_devices,
    )


def http_settings(config: Config) -> HttpSettings | None:
    """The HTTP server's settings; None when ``ingest.http.port`` is not set."""
    http = config.ingest.http
    if http.port is None:
        return None
    return HttpSettings(
        host=http.host,
        port=http.port,
        token=http.token.get_secret_value() if http.token is not None else None,
        cert_file=http.cert_file,
        key_file=http.key_file,
        max_body_bytes=http.max_body_bytes,
        sensor_logger_topic=config.ingest.sensor_logger.topic,
        prefix=config.topics.prefix,
    )


def ingest_settings(config: Config) -> IngestSettings:
    """How device messages are decoded: limits, Sensor Logger, field-device streams."""
    return IngestSettings(
        prefix=config.topics.prefix,
        rate_hz=config.stream.rate_hz,
        max_samples_per_message=config.stream.max_samples_per_message,
        max_payload_bytes=config.service.max_payload_bytes,
        sensor_logger_topic=config.ingest.sensor_logger.topic,
        sensor_logger_max_bytes=config.ingest.sensor_logger.max_payload_bytes,
        max_gap_s=config.stream.max_gap_s,
        reorder_window=config.stream.reorder_window,
        idle_timeout_s=config.stream.idle_timeout_s,
        max_devices=config.stream.max_devices,
        devices={
            device: DeviceSettings(
                units=c.units.model_dump() if c.units is not None else {}, axes=c.axes
            )
            for device, c in config.devices.items()
        },
    )


def default_client_id(config: Config, role: str = "gateway") -> str:
    """``broker.client_id``, else one derived from the role, the topic prefix and the host
    name: stable across restarts, so a persistent session is found again (a new id per
    process would orphan one at every restart). Two gateways with the same prefix on one
    host need ``broker.client_id`` set.

    >>> import socket
    >>> default_client_id(Config()) == f"harstream-gateway-harstream-{socket.gethostname()}"[:128]
    True
    """
    if config.broker.client_id:
        return config.broker.client_id
    scale = scale_settings(config)
    if scale is not None and role == "gateway":  # a worker's session is its partitions'
        return f"harstream-worker-{config.topics.prefix}-{scale.worker}"[:128].replace("/", "_")
    raw = f"harstream-{role}-{config.topics.prefix}-{socket.gethostname()}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", raw)[:128]


def mqtt_transport(config: Config, client_id: str | None = None) -> MqttTransport:
    """The MQTT transport of ``config.broker`` (paho-mqtt is imported only here)."""
    from harstream.gateway.mqtt import MqttTransport, TlsFiles

    broker = config.broker
    tls = None
    if broker.tls is not None:
        tls = TlsFiles(
            broker.tls.ca_file, broker.tls.cert_file, broker.tls.key_file, broker.tls.insecure
        )
    return MqttTransport(
        broker.host,
        broker.port,
        client_id=client_id or default_client_id(config),
        username=broker.username,
        password=broker.password.get_secret_value() if broker.password else None,
        tls=tls,
        keepalive_s=broker.keepalive_s,
        transport=broker.transport,
        ws_path=broker.ws_path,
        protocol=broker.protocol,
        # a worker that takes over others' partitions returns clean: they served its own
        clean_session=broker.clean_session or config.scale.takeover,
        session_expiry_s=broker.session_expiry_s,
        max_queued=broker.max_queued,
        max_inflight=broker.max_inflight,
        max_payload_bytes=broker.max_publish_bytes,
        fallbacks=broker.endpoints(),
    )
