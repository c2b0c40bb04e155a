"""The systemd unit: rendered for this installation, checked by systemd-analyze."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harstream.cli import main
from harstream.cli.deploy import systemd_unit

REQUIRED = {
    "Unit": {"Description", "After", "Wants"},
    "Service": {
        "ExecStart",
        "User",
        "Restart",
        "KillSignal",
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "Environment",
    },
    "Install": {"WantedBy"},
}


def parse(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(text)
    return parser


def test_unit_runs_this_installation(tmp_path: Path, capsys) -> None:
    assert main(["deploy", "systemd", "--user", "har", "--config", "/etc/har/c.yaml"]) == 0
    unit = parse(capsys.readouterr().out)
    for section, keys in REQUIRED.items():
        assert keys <= set(unit[section]), f"[{section}] lacks {keys - set(unit[section])}"
    assert unit["Service"]["ExecStart"] == f"{sys.prefix}/bin/harstream serve"
    assert unit["Service"]["User"] == "har"
    assert "HARSTREAM_CONFIG=/etc/har/c.yaml" in unit["Service"]["Environment"]


@pytest.mark.parametrize("worker", [False, True], ids=["gateway", "worker template"])
def test_systemd_accepts_the_unit(tmp_path: Path, worker: bool) -> None:
    text = systemd_unit("root", Path(sys.prefix), Path("/etc/harstream/config.yaml"), worker)
    path = tmp_path / ("harstream@0-63.service" if worker else "harstream.service")
    path.write_text(text)
    if worker:  # systemd fills %i from the instance name
        assert "--set scale.owned=%i --set scale.worker=%H-%i" in text
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (`make test` installs it as root)")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    complaints = [line for line in result.stderr.splitlines() if str(path) in line]
    assert result.returncode == 0 and not complaints, result.stderr
