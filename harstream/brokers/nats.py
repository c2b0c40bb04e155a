"""The nats-server configuration harstream workers need (docs/scaling.md): written by
``harstream deploy nats`` and by the tests' and benchmarks' local servers
(:mod:`harstream.testing.localnats`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from harstream.brokers.access import ANONYMOUS_WARNING
from harstream.errors import ConfigError

__all__ = ["nats_config"]


def nats_config(
    *,
    partitions: int = 128,
    prefix: str = "harstream",
    sensor_logger: str | None = "sensor-logger",
    bind: str = "0.0.0.0",
    port: int = 4222,
    mqtt_port: int = 1883,
    ws_port: int = 8080,
    http_port: int = 8222,
    store_dir: Path = Path("/var/lib/nats"),
    server_name: str = "harstream-nats-1",
    cluster_port: int = 0,
    routes: tuple[str, ...] = (),
    authorization: str | None = None,
    anonymous: bool = False,
    mqtt_options: Mapping[str, str] | None = None,
    prof_port: int = 0,
) -> str:
    """A nats-server config for harstream workers (docs/scaling.md): the MQTT listener
    (and MQTT over websockets at ``/mqtt``), the JetStream store MQTT keeps its state in,
    and the mappings that put each device on one of ``partitions`` partitions; closed
    (``authorization``: :func:`harstream.brokers.access.nats_authorization`) unless
    ``anonymous``; ``mqtt_options``: more of the mqtt block, or other values of its
    ``ack_wait`` and ``consumer_memory_storage`` (the benchmarks compare them);
    ``prof_port``: Go's profiler there."""
    if anonymous:
        authorization = "# " + ANONYMOUS_WARNING.replace("{prefix}", prefix) + "\n"
    elif authorization is None:
        raise ConfigError("deploy nats: users (an authorization block), or --anonymous")
    subject = prefix.replace("/", ".")
    part = f"{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}"
    mappings = [
        f'  "{subject}.*.{kind}": "{subject}.{kind}.{part}"'
        for kind in ("imu", "calibrate", "label")
    ]
    if sensor_logger:
        mappings.append(f'  "{sensor_logger.replace("/", ".")}.*": "{subject}.slog.{part}"')
    cluster = ""
    if cluster_port:
        route_lines = "\n".join(f"    {r}" for r in routes)
        cluster = (
            f"cluster {{\n  name: harstream\n  listen: {bind}:{cluster_port}\n"
            f"  routes: [\n{route_lines}\n  ]\n}}\n"
        )
    websocket = (
        f"# MQTT over websockets for phone apps: ws://HOST:{ws_port}/mqtt\n"
        f"websocket {{\n  listen: {bind}:{ws_port}\n  no_tls: true\n}}\n"
        if ws_port
        else ""
    )
    extra = dict(mqtt_options or {})  # a key the block has replaces its value there
    ack_wait = extra.pop("ack_wait", '"30s"')
    memory = extra.pop("consumer_memory_storage", "true")
    if cluster_port and "stream_replicas" not in extra:
        # every node's copy of MQTT's sessions, messages and retained activities, fixed:
        # left to the server, it takes the nodes it knows when MQTT's first client comes,
        # which while a cluster starts may be 2 of 3 (R2 loses its quorum with one node:
        # sessions cannot be loaded on the others; docs/scaling.md, a node stopped)
        extra["stream_replicas"] = str(min(3, len(routes) + 1))
    more_mqtt = "".join(f"  {k}: {v}\n" for k, v in extra.items())
    profiling = (
        f"prof_port: {prof_port}          # Go pprof at http://127.0.0.1:{prof_port}/debug/pprof\n"
        if prof_port
        else ""
    )
    return f"""# nats-server configuration for harstream workers, written by
#   harstream deploy nats --partitions {partitions}
# (docs/scaling.md; needs nats-server >= 2.10: 2.9 serves MQTT with these mappings but
# caps the system at ~4,000-5,000 devices; `pip install 'harstream[scale]'` brings a
# current one, `python -m harstream.natsserver` says where). Devices
# and subscribers speak plain MQTT 3.1.1; every device gets a fixed partition by a hash
# of its id, and each worker (scale.partitions: {partitions}, scale.owned: its range)
# subscribes to its partitions. P is fixed for the life of the deployment: partitions,
# not devices, move between workers.
server_name: {server_name}
listen: {bind}:{port}              # NATS clients (nats CLI, nats-py)
{f"http: 127.0.0.1:{http_port}        # monitoring (/varz, /connz, /jsz)" if http_port else ""}
max_payload: 1MB
max_connections: 100000

# MQTT keeps sessions, unacknowledged QoS 1 messages and retained ones in JetStream
jetstream {{
  store_dir: "{store_dir}"
  max_memory_store: 256MB
  max_file_store: 8GB
}}

mqtt {{
  listen: {bind}:{mqtt_port}
  ack_wait: {ack_wait}          # a QoS 1 message not acknowledged in this time is sent again
  # unacknowledged QoS 1 messages per subscription; nats-server caps a session's total
  # at 65,535, and a worker owning all 128 partitions subscribes 4 x 128 times
  max_ack_pending: 100
  # a QoS 1 subscription's consumer keeps its state (what was delivered and acknowledged)
  # in memory, not in a file rewritten (temp file + rename) at every acknowledgement: with
  # devices publishing at QoS 1, 0.9 instead of 1.7 ms of broker CPU per message on
  # 2.15.1 (docs/scaling.md). The messages stay in the file store, and a cluster keeps
  # the state on every replica; only a restart of the whole broker forgets which queued
  # messages a worker had not yet acknowledged (those are dropped, not sent twice)
  consumer_memory_storage: {memory}
{more_mqtt}}}
{profiling}
{websocket}{cluster}
{authorization}
# {{prefix}}/{{device}}/imu -> {{prefix}}/imu/{{p}}/{{device}}, p = fnv1a32(device) % {partitions}
# (also /calibrate and /label, and the Sensor Logger app's per-phone topics)
mappings = {{
{chr(10).join(mappings)}
}}
"""
