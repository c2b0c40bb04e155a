"""Glue between a validated Config and the pure core: build the engine a command runs.

The one place that turns config values into core objects (the core never sees the
config). Checks that the config fits the bundle and fails fast with a ConfigError
naming the key when it does not.
"""

from __future__ import annotations

from harstream.bundle import Bundle, load_bundle
from harstream.config import Config
from harstream.engine import Engine
from harstream.errors import ConfigError
from harstream.inference import Model, load_model
from harstream.preprocessing import Preprocessor
from harstream.smoothing import smoother_factory

__all__ = ["build_engine"]


def build_engine(
    config: Config, bundle: Bundle | None = None, model: Model | None = None
) -> Engine:
    """An engine for ``config``, on ``bundle`` (default: ``model.path`` or the packaged one)."""
    bundle = bundle if bundle is not None else load_bundle(config.model.path)
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
    window = bundle.window if bundle.mode == "window" else max(stream.window, stream.hop)
    smoothing = config.smoothing
    return Engine(
        model
        if model is not None
        else load_model(bundle, config.model.backend, config.model.threads),
        Preprocessor(bundle.preprocessing, bundle.mean, bundle.std),
        smoother_factory(
            smoothing.method,
            ema_alpha=smoothing.ema_alpha,
            majority_k=smoothing.majority_k,
            min_dwell=smoothing.min_dwell,
            switch_confidence=smoothing.switch_confidence,
        ),
        mode=bundle.mode,
        window=window,
        hop=stream.hop,
        rate_hz=stream.rate_hz,
        max_devices=stream.max_devices,
        idle_timeout_s=stream.idle_timeout_s,
        unknown_threshold=smoothing.unknown_threshold,
    )
