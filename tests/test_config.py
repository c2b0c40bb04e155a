from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from harstream.config import Config, dump_config, load_config
from harstream.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_default_profile_mirrors_builtin_defaults() -> None:
    assert load_config(REPO / "config" / "default.yaml") == Config()


@pytest.mark.parametrize("profile", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_profile_loads_and_every_value_is_commented(profile: Path) -> None:
    load_config(profile)
    for number, line in enumerate(profile.read_text().splitlines(), start=1):
        stripped = line.strip()
        is_value = stripped and not stripped.startswith("#") and not stripped.endswith(":")
        if is_value:
            assert "#" in line, f"{profile.name}:{number}: value without a comment: {stripped}"


def test_file_values_and_typed_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "stream:\n  hop: 32\nbroker:\n  port: 1884\n")
    cfg = load_config(
        path, ["broker.host=10.0.0.2", "topics.retain_activity=false", "smoothing.ema_alpha=0.25"]
    )
    assert (cfg.stream.hop, cfg.broker.port, cfg.broker.host) == (32, 1884, "10.0.0.2")
    assert cfg.topics.retain_activity is False
    assert cfg.smoothing.ema_alpha == 0.25


def test_override_keeps_text_that_is_not_a_plain_number() -> None:
    cfg = load_config(
        overrides=[
            "broker.client_id=007",
            "data.hapt_sha256=" + "0" * 64,
            "broker.keepalive_s=60",
            "smoothing.ema_alpha=1e-1",
        ]
    )
    assert cfg.broker.client_id == "007" and cfg.data.hapt_sha256 == "0" * 64
    assert cfg.broker.keepalive_s == 60 and cfg.smoothing.ema_alpha == 0.1


def test_environment_variable_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "stream:\n  hop: 16\n")
    assert load_config(environ={"HARSTREAM_CONFIG": str(path)}).stream.hop == 16
    explicit = write(tmp_path, "stream:\n  hop: 8\n")
    assert load_config(explicit, environ={"HARSTREAM_CONFIG": str(path)}).stream.hop == 8


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(ValueError):
        cfg.stream.hop = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stream:\n  hopp: 3\n", "stream.hopp: unknown key"),
        ("streams:\n  hop: 3\n", "streams: unknown key"),
        ("stream:\n  hop: abc\n", "stream.hop: Input should be a valid integer"),
        ("stream:\n  hop: 0\n", "stream.hop: Input should be greater than 0"),
        ("stream:\n  hop: 200\n", "stream: hop (200) must not exceed window (128)"),
        (
            "train:\n  uncalibrated_p: 0.7\n  walking_p: 0.4\n  stale_p: 0.0\n",
            "train: uncalibrated_p + walking_p + stale_p (0.7 + 0.4 + 0.0) must not exceed 1",
        ),
        ("topics:\n  qos_out: 3\n", "topics.qos_out: Input should be less than or equal to 2"),
        ("smoothing:\n  method: kalman\n", "smoothing.method: Input should be 'none'"),
        ("model:\n  backend: tensorrt\n", "model.backend: Input should be 'auto', 'torch' or"),
        (
            "broker:\n  tls:\n    cert_file: a.pem\n",
            "broker.tls: cert_file and key_file must be given together",
        ),
        ("- a\n- b\n", "top level must be a mapping"),
        ("stream:\n  hop: [1\n", "line 3: invalid YAML"),
        ("stream: 5\n", "stream: Input should be a valid dictionary"),
    ],
)
def test_bad_file_names_file_key_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("stream.hop=abc", "--set stream.hop=abc: stream.hop: Input should be a valid integer"),
        ("stream.nope=1", "--set stream.nope=1: stream.nope: unknown key"),
        ("stream", "--set stream: expected section.key=value"),
        ("stream.hop.x=1", "--set stream.hop.x=1: stream.hop: Input should be a valid integer"),
        ("broker.port=70000", "--set broker.port=70000: broker.port: Input should be less than"),
    ],
)
def test_bad_override_names_itself(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert str(info.value).startswith(expected)


def test_bad_file_is_blamed_before_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "stream:\n  hop: -1\n")
    with pytest.raises(ConfigError, match=f"^{path}: stream.hop"):
        load_config(path, ["stream.hop=4"])


def test_dump_masks_password_and_round_trips(tmp_path: Path) -> None:
    cfg = load_config(overrides=["broker.username=gw", "broker.password=s3cret"])
    text = dump_config(cfg)
    assert "s3cret" not in text and "********" in text
    assert "s3cret" not in repr(cfg)
    data = yaml.safe_load(text)
    data["broker"]["password"] = "s3cret"
    path = write(tmp_path, yaml.safe_dump(data))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("topics.prefix=a/+/b", "topics.prefix: must not contain the wildcards"),
        ("topics.prefix=a//b", "topics.prefix: must not have an empty level"),
        ("homeassistant.discovery_prefix=ha/", "homeassistant.discovery_prefix: must not have"),
        ("homeassistant.discovery_prefix=ha#x", "homeassistant.discovery_prefix: must not contain"),
        ("broker.password=secret", "broker: password given without username"),
        ("broker.keepalive_s=70000", "broker.keepalive_s: Input should be less than or equal"),
        ("broker.fallbacks=[node2:abc]", "broker.fallbacks: 'node2:abc' is not host or host:port"),
        ("broker.fallbacks=[':1883']", "broker.fallbacks: ':1883' is not host"),
    ],
)
def test_what_would_break_the_mqtt_connection_fails_at_start_up(override: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        load_config(overrides=[override])


def test_fallbacks_are_host_port_pairs_with_the_brokers_port_by_default() -> None:
    config = load_config(overrides=["broker.port=1884", "broker.fallbacks=[n2, 'n3:1883']"])
    assert config.broker.endpoints() == (("n2", 1884), ("n3", 1883))


def test_a_hop_the_model_cannot_step_to_fails_naming_the_key() -> None:
    from harstream.core.bundle import load_bundle
    from harstream.runtime import build_engine

    bundle = load_bundle()  # the packaged model steps once per 8 samples
    with pytest.raises(ConfigError, match=r"stream.hop: 20, .* multiple of 8"):
        build_engine(load_config(overrides=["stream.hop=20"]), bundle)
    assert build_engine(load_config(overrides=["stream.hop=24"]), bundle).hop == 24
