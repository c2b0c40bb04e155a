from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harstream import __version__
from harstream.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harstream", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version_and_help() -> None:
    assert run("--version").stdout.strip() == f"harstream {__version__}"
    result = run("--help")
    assert result.returncode == 0
    assert "config" in result.stdout and "data" in result.stdout


def every_command(parser=None, prefix=()):  # type: ignore[no-untyped-def]
    parser = parser or build_parser()
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from every_command(sub, (*prefix, name))


@pytest.mark.parametrize("command", list(every_command()), ids=" ".join)
def test_every_subcommand_has_help(command: tuple[str, ...], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: harstream " + " ".join(command) in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nope"],
        ["data"],
        ["data", "verify"],
        ["config", "show", "--bogus"],
        ["data", "fetch", "--dataset", "mnist"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str]) -> None:
    result = run(*argv)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harstream") and "error:" in lines[0]


def test_config_show_prints_the_effective_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run(
        "config",
        "show",
        "--config",
        str(REPO / "config" / "raspberry-pi.yaml"),
        "--set",
        "stream.hop=32",
    )
    assert result.returncode == 0, result.stderr
    assert "backend: onnx" in result.stdout and "hop: 32" in result.stdout


def test_bad_config_exits_2_naming_file_and_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.yaml"
    path.write_text("stream:\n  hop: many\n")
    result = run("config", "show", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"harstream: config error: {path}: stream.hop: Input should be a valid integer, "
        "unable to parse string as an integer"
    )
