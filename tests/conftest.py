from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from tests.mosquitto import Mosquitto

if TYPE_CHECKING:
    from harstream.core.bundle import Bundle

REPO = Path(__file__).resolve().parent.parent
# The full HAPT recordings: $HARSTREAM_DATA, else beside the checkout where the build
# machines and CI keep them. A fresh clone has neither: the `slow` tests that need them
# skip, unless HARSTREAM_REQUIRE_DATA=1 (.ci/run sets it) makes their absence an error.
HAPT_DIR = Path(os.environ.get("HARSTREAM_DATA") or REPO.parent / "shared" / "data" / "hapt")
REQUIRE_DATA = os.environ.get("HARSTREAM_REQUIRE_DATA") == "1"

# Property tests draw the same examples on every run ("repeatable", the default: `make
# test` passes or fails the same way on every machine); `make fuzz` draws new ones
# ("explore"). A failure prints its reproduction blob; a find becomes a regression test.
settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One real mosquitto for the session; tests keep apart by unique topic prefixes."""
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield server
    server.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto of the test's own, for tests that stop or restart it."""
    server = Mosquitto(tmp_path / "mosquitto").start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def hapt_dir() -> Path:
    """The complete HAPT raw recordings; only `slow` tests read all of it."""
    if not (HAPT_DIR / "RawData" / "labels.txt").is_file():
        reason = (
            f"full HAPT data not found at {HAPT_DIR}: run `harstream data fetch` and set "
            "HARSTREAM_DATA=DIR (a folder holding RawData/) to run the full-data tests"
        )
        if REQUIRE_DATA:
            pytest.fail(reason + " (HARSTREAM_REQUIRE_DATA=1: CI must run them)")
        pytest.skip(reason)
    return HAPT_DIR


@pytest.fixture(scope="session")
def bundle_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Bundle]:
    """Random small bundles (GRU/LSTM x window/stateful), made once per session each."""
    from tests.bundles import random_bundle

    made: dict[tuple[object, ...], Bundle] = {}

    def make(kind: str = "gru", mode: str = "stateful", **options: object) -> Bundle:
        key = (kind, mode, *sorted(options.items()))
        if key not in made:
            made[key] = random_bundle(
                tmp_path_factory.mktemp(f"{kind}-{mode}"), kind, mode, **options
            )  # type: ignore[arg-type]
        return made[key]

    return make
