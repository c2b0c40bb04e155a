"""The calibration-from-walking protocol (training.walking) on the fixture recordings:
the packaged model, subject 9 (walking, then stairs) as one device."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harstream.config import load_config
from harstream.core.bundle import load_bundle
from training.walking import remounted, run_walking, subject_devices, walking_figures

MINI = Path(__file__).resolve().parent / "data" / "hapt-mini"


def test_the_vertical_arrives_online_and_a_remount_is_recovered() -> None:
    bundle = load_bundle()
    devices = subject_devices(bundle, MINI, [9], rotate="0")
    ((device, first),) = devices
    assert first == len(device.samples) and device.vertical is None  # one recording, none given
    runs = run_walking(bundle, load_config(), devices)
    figures = walking_figures(bundle, runs)
    assert figures["calibrated_devices"] == 1
    # the first walking starts at 2 s: its vertical comes after its first 5 s and settling
    assert 7.0 <= figures["first_vertical_s_median"] <= 15.0
    assert figures["accuracy"] > 0.9 and figures["windows"] > 0
    timeline = runs[0].timeline
    assert timeline[0][1] is None and timeline[-1][2] == "walking"  # none, then learnt
    ((turned, turn),) = remounted(devices, seed=0)
    np.testing.assert_array_equal(turned.samples[:turn], device.samples[:turn])
    assert not np.allclose(turned.samples[turn:, :3], device.samples[turn:, :3])
    again = walking_figures(
        bundle, run_walking(bundle, load_config(), [(turned, turn)], remount=True)
    )
    assert again["recovered"] in ("0/1", "1/1")  # counted: stairs only follow the turn
    off = load_config(overrides=["calibration.from_walking=false"])
    assert walking_figures(bundle, run_walking(bundle, off, devices))["calibrated_devices"] == 0
