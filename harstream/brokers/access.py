"""Who may publish and read what on the broker: harstream's users file and the ACLs
``harstream deploy mosquitto|nats`` write from it.

Four roles, one broker user each (a device's user name is its device id)::

    role      publishes                            reads
    device    {prefix}/{me}/imu|label|calibrate,   {prefix}/{me}/#, {prefix}/status
              {sensor_logger}/{me}
    operator  {prefix}/control (and empties a      {prefix}/#, {discovery}/#
              device's retained topics: data forget)
    gateway   {prefix}/#, {discovery}/#            the same and {sensor_logger}/#
    worker    a gateway's topics, but of {prefix}/workers/# only {prefix}/workers/{me}
              and its /status (its user name is its scale.worker)

The users file (``/etc/harstream/users``, mode 0600) holds one line a user,
``NAME ROLE MOSQUITTO_HASH BCRYPT_HASH``: mosquitto's PBKDF2-SHA512 (``$7$``, the format
``mosquitto_passwd`` writes) for the password file of mosquitto, bcrypt for nats-server's
config. Passwords themselves are never stored. bcrypt comes with the ``deploy`` extra.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from harstream.errors import ConfigError

ANONYMOUS_WARNING = (
    "--anonymous: every client that reaches the broker may publish any device's samples, "
    "send {prefix}/control (reload, forget) and overwrite the workers' topics"
)

__all__ = [
    "ROLES",
    "Topics",
    "User",
    "add_user",
    "mosquitto_acl",
    "mosquitto_hash",
    "mosquitto_passwords",
    "nats_authorization",
    "read_users",
]

ROLES = ("device", "operator", "gateway", "worker")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a device id, a worker name: one topic level
#: names a device user cannot take: its topics would be the gateway's own
RESERVED = frozenset({"control", "status", "stats", "workers", "imu", "calibrate", "label", "slog"})
MOSQUITTO_ITERATIONS = 101  # what mosquitto_passwd (2.0) uses


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    mosquitto_hash: str
    bcrypt_hash: str


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic roots the rules are written for (from the gateway's config)."""

    prefix: str = "harstream"
    sensor_logger: str | None = "sensor-logger"
    discovery: str = "homeassistant"


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """A password as mosquitto's password file holds it (``$7$``: PBKDF2-SHA512)."""
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, MOSQUITTO_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${MOSQUITTO_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def _bcrypt(password: str) -> str:
    try:
        import bcrypt
    except ImportError as exc:
        raise ConfigError(
            "users: bcrypt is not installed; pip install 'harstream[deploy]'"
        ) from exc
    return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=11)).decode())


def read_users(path: Path) -> list[User]:
    """The users file; ConfigError names the line that is wrong."""
    if not path.exists():
        raise ConfigError(f"{path}: no users file; make users with `harstream deploy user`")
    users = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 4 or fields[1] not in ROLES or not _NAME.match(fields[0]):
            raise ConfigError(f"{path}:{number}: want NAME ROLE MOSQUITTO_HASH BCRYPT_HASH")
        users.append(User(*fields))
    return users


def add_user(path: Path, name: str, role: str, password: str | None = None) -> str:
    """Add (or replace) a user in the users file; returns its password (a new random one
    unless given)."""
    if not _NAME.match(name):
        raise ConfigError(f"user {name!r}: 1-64 of A-Z a-z 0-9 _ - (a device's id)")
    if role not in ROLES:
        raise ConfigError(f"role {role!r}: one of {', '.join(ROLES)}")
    if role == "device" and name in RESERVED:
        raise ConfigError(f"user {name!r}: reserved for the gateway's own topics")
    password = secrets.token_urlsafe(18) if password is None else password
    if not password or any(c.isspace() for c in password):
        raise ConfigError("password: not empty, no white space")
    users = [u for u in read_users(path) if u.name != name] if path.exists() else []
    users.append(User(name, role, mosquitto_hash(password), _bcrypt(password)))
    text = "# harstream users: NAME ROLE MOSQUITTO_HASH BCRYPT_HASH (harstream deploy user)\n"
    text += "".join(f"{u.name} {u.role} {u.mosquitto_hash} {u.bcrypt_hash}\n" for u in users)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(path.with_suffix(".tmp"), path)
    return password


def mosquitto_passwords(users: list[User]) -> str:
    """mosquitto's password_file."""
    return "".join(f"{u.name}:{u.mosquitto_hash}\n" for u in users)


def mosquitto_acl(users: list[User], topics: Topics) -> str:
    """mosquitto's acl_file: devices by pattern (%u: the user name is the device id),
    the other roles by name."""
    p, slog, ha = topics.prefix, topics.sensor_logger, topics.discovery
    lines = [
        "# written by `harstream deploy mosquitto` (harstream/brokers/access.py); what no line",
        "# allows is denied. Devices: the user name is the device id.",
        *(f"pattern write {p}/%u/{kind}" for kind in ("imu", "label", "calibrate")),
        *([f"pattern write {slog}/%u"] if slog else []),
        f"pattern read {p}/%u/#",
        f"pattern read {p}/status",
    ]
    for user in users:
        if user.role == "device":
            continue
        lines += ["", f"user {user.name}"]
        if user.role == "operator":
            lines += [f"topic write {t}" for t in _operator_writes(topics, "/")]
            lines += [f"topic read {p}/#", f"topic read {ha}/#"]
        elif user.role == "gateway":
            lines += [f"topic readwrite {p}/#", f"topic readwrite {ha}/#"]
            lines += [f"topic read {slog}", f"topic read {slog}/#"] if slog else []
        else:  # a worker (on mosquitto: no partitions; the same rules as on nats)
            lines += [f"topic write {t}" for t in _worker_writes(user.name, topics, "/")]
            lines += [f"topic read {p}/#", f"topic read {ha}/#"]
            lines += [f"topic read {slog}", f"topic read {slog}/#"] if slog else []
    return "\n".join(lines) + "\n"


def _operator_writes(topics: Topics, sep: str) -> list[str]:
    """The control topic, and what `data forget` empties when no gateway answers."""
    p, ha = topics.prefix.replace("/", sep), topics.discovery.replace("/", sep)
    one = "+" if sep == "/" else "*"
    kinds = ("activity", "calibration", "availability")
    out = [f"{p}{sep}control", *(f"{p}{sep}{one}{sep}{k}" for k in kinds)]
    return [*out, sep.join((ha, "sensor", one, "activity", "config"))]


def _worker_writes(name: str, topics: Topics, sep: str) -> list[str]:
    """What a worker publishes: decisions and the rest per device, what it forwards from
    HTTP (any device's own topics), its probes, the control results and stats, its own
    worker topics and nothing of another worker's."""
    p, slog, ha = topics.prefix.replace("/", sep), topics.sensor_logger, topics.discovery
    one, rest = ("+", "#") if sep == "/" else ("*", ">")
    kinds = ("activity", "availability", "transition", "error", "calibration")
    out = [f"{p}{sep}{one}{sep}{k}" for k in (*kinds, "imu", "label", "calibrate")]
    out += [f"{p}{sep}control{sep}result", f"{p}{sep}stats", f"{p}{sep}status"]
    out += [f"{p}{sep}workers{sep}{name}", f"{p}{sep}workers{sep}{name}{sep}status"]
    out += [f"{ha.replace('/', sep)}{sep}{rest}"]
    if slog:
        out += [f"{slog.replace('/', sep)}{sep}{one}"]
    return out


def nats_authorization(users: list[User], topics: Topics) -> str:
    """nats-server's ``authorization`` block: every user with its publish and subscribe
    permissions on subjects (MQTT topic a/b is subject a.b). ``$MQTT.sub.>``: nats-server
    2.9 delivers an MQTT client's QoS 1 messages on it, within the client's permissions.
    A publish is checked after the partition mapping: a device may publish its own
    topics as mapped (``{prefix}.imu.*.{device}``), on any partition, as its own."""
    p = topics.prefix.replace("/", ".")
    ha = topics.discovery.replace("/", ".")
    slog = topics.sensor_logger.replace("/", ".") if topics.sensor_logger else None
    mqtt = "$MQTT.sub.>"

    def mapped(device: str) -> list[str]:
        """nats-server checks a publish against the subject its mappings made of it."""
        kinds = ("imu", "label", "calibrate", *(("slog",) if slog else ()))
        return [f"{p}.{kind}.*.{device}" for kind in kinds]

    entries = []
    for user in users:
        if user.role == "device":
            me = user.name
            publish = [f"{p}.{me}.{kind}" for kind in ("imu", "label", "calibrate")]
            publish += [f"{slog}.{me}"] if slog else []
            publish += mapped(me)
            subscribe = [f"{p}.{me}", f"{p}.{me}.>", f"{p}.status", mqtt]
        elif user.role == "operator":
            publish = _operator_writes(topics, ".")
            subscribe = [p, f"{p}.>", ha, f"{ha}.>", mqtt]
        elif user.role == "gateway":
            publish = [f"{p}.>", f"{ha}.>"] + ([f"{slog}.>"] if slog else [])
            subscribe = [f"{p}.>", f"{ha}.>", mqtt] + ([f"{slog}", f"{slog}.>"] if slog else [])
        else:
            publish = _worker_writes(user.name, topics, ".") + mapped("*")
            subscribe = [f"{p}.>", f"{ha}.>", mqtt] + ([f"{slog}", f"{slog}.>"] if slog else [])
        permissions = {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
        entries.append(
            f"    {{user: {json.dumps(user.name)}, password: {json.dumps(user.bcrypt_hash)},"
            f" permissions: {json.dumps(permissions)}}}  # {user.role}"
        )
    return (
        "# users and what each may publish and subscribe to (harstream deploy user;\n"
        "# harstream/brokers/access.py): what no permission allows is denied\n"
        "authorization {\n  users = [\n" + "\n".join(entries) + "\n  ]\n}\n"
    )
