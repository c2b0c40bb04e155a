"""Import boundaries of docs/design.md: the core pulls in neither torch nor the MQTT client;
replay imports nothing of harstream or training; harstream imports replay only in the CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The pure core, every module of it, plus the package root and the config reader.
CORE = [
    "harstream",
    "harstream.config",
    *(f"harstream.core.{p.stem}" for p in (REPO / "harstream" / "core").glob("*.py")),
]
# Packages, and harstream's own I/O, evaluation and CLI code: the core loads none of them
# (torchnet is the torch network: only the torch backend imports it, lazily).
HEAVY = ["torch", "aiomqtt", "paho", "matplotlib", "pandas", "sklearn", "onnxruntime"]
IO = ["harstream.gateway", "harstream.cli", "harstream.testing", "harstream.benchmarks"]


def loaded_after(modules: list[str]) -> set[str]:
    """Every module name (dotted, in full) in sys.modules after importing ``modules``."""
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    return set(out.split())


def within(names: set[str], packages: list[str]) -> set[str]:
    """The names that are one of ``packages`` or inside one of them."""
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in packages)}


def test_core_imports_no_torch_and_no_mqtt_client() -> None:
    assert (
        within(loaded_after([m for m in CORE if not m.endswith("torchnet")]), HEAVY + IO) == set()
    )


def test_the_check_sees_submodules() -> None:  # a top-level-only check could never fail
    loaded = loaded_after(["harstream.testing.localbroker"])
    assert within(loaded, IO) == {"harstream.testing", "harstream.testing.localbroker"}


def test_replay_imports_nothing_of_the_others() -> None:
    loaded = loaded_after(["replay", "replay.verify", "replay.fetch"])
    assert within(loaded, ["harstream", "training"]) == set()


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "path", sorted((REPO / "harstream").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO))
)
def test_harstream_imports_replay_only_in_the_cli_and_never_training(path: Path) -> None:
    names = imports_of(path)
    assert "training" not in names
    if "cli" not in path.relative_to(REPO / "harstream").parts:
        assert "replay" not in names


@pytest.mark.parametrize("path", sorted((REPO / "replay").glob("*.py")), ids=lambda p: p.name)
def test_replay_modules_import_neither_harstream_nor_training(path: Path) -> None:
    assert imports_of(path) & {"harstream", "training"} == set()


def test_public_names_are_sorted_and_complete() -> None:
    import harstream
    import replay

    for module in (harstream, replay):
        assert list(module.__all__) == sorted(module.__all__)
        assert all(hasattr(module, name) for name in module.__all__)


#: Every package and top-level module, lowest first: a module may import its own layer
#: and the ones below, never one above (lazy imports inside functions count too; see
#: tests/test_import_cycles.py). docs/design.md draws the same order.
LAYERS = [
    ["replay", "harstream._version", "harstream.errors"],
    ["harstream", "harstream.core", "harstream.evaluation"],
    ["harstream.config", "harstream.recordings", "harstream.brokers", "harstream.natsserver"],
    ["harstream.gateway"],
    ["harstream.runtime"],
    ["harstream.testing"],
    ["harstream.benchmarks"],
    ["harstream.cli"],
    ["harstream.__main__", "training"],
]
#: Arrows up that are still there, each to be cut by the work that owns its modules: a new
#: one fails the test, and so does one of these once cut (then strike it here).
KNOWN_UP: set[tuple[str, str]] = set()


def layer_of(module: str) -> tuple[str, int]:
    """The unit (package or top-level module) ``module`` belongs to, and its layer."""
    units = {unit: k for k, layer in enumerate(LAYERS) for unit in layer}
    parts = module.split(".")
    # harstream's own packages and modules are each a unit; replay and training are one
    unit = ".".join(parts[:2]) if parts[0] == "harstream" else parts[0]
    if unit not in units:
        raise AssertionError(f"{module}: in no layer of LAYERS (add its package there)")
    return unit, units[unit]


def arrows_up(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(unit, unit above it) for each import in ``graph`` (module -> the modules it
    imports) that points to a higher layer."""
    up = set()
    for name, targets in graph.items():
        unit, layer = layer_of(name)
        for target in targets:
            other, other_layer = layer_of(target)
            if other_layer > layer:
                up.add((unit, other))
    return up


def test_no_module_imports_a_layer_above_its_own() -> None:
    from tests.test_import_cycles import imports, module_files

    modules = module_files()
    graph = {name: imports(name, path, modules) for name, path in modules.items()}
    assert arrows_up(graph) == KNOWN_UP


def test_the_layer_check_sees_an_arrow_up() -> None:
    assert layer_of("harstream.gateway.service") == ("harstream.gateway", 3)
    graph = {
        "harstream.core.engine": {"harstream.errors"},  # down: fine
        "harstream.gateway.service": {"harstream.gateway.routes", "harstream.cli.serve"},
    }
    assert arrows_up(graph) == {("harstream.gateway", "harstream.cli")}
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("harstream.newpackage.module")


#: "Small flat modules, one concept each" (docs/design.md): the gateway's at most this long
MAX_GATEWAY_MODULE_LINES = 350


@pytest.mark.parametrize(
    "path",
    sorted((REPO / "harstream" / "gateway").glob("*.py")),
    ids=lambda p: p.name,
)
def test_every_gateway_module_is_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_GATEWAY_MODULE_LINES, f"{path.name}: {lines} lines; split it by concern"
