"""Butterworth low-pass filters in numpy: design, steady state, and causal filtering.

Why not scipy.signal: importing it costs the gateway ~75 MB of memory and ~110 MB of
disk, for three functions. The design below is scipy's (``butter(..., output="sos")``:
analog prototype, pre-warped bilinear transform, poles paired into second-order
sections), and a test holds both to 1e-12.

Filtering runs the cascade as one linear state-space system (A, B, C, D) over blocks of
L samples at a time, with matrices precomputed per L::

    y[k]  = C A^k z0 + D x[k] + sum_{j<k} C A^(k-1-j) B x[j]
    z_L   = A^L z0 + sum_{j<L} A^(L-1-j) B x[j]

so a block is two matrix products for any number of streams at once (numpy, no Python
loop over samples). The state carries across blocks: any chunking gives the same output
up to float rounding.

>>> f = LowPass(order=3, cutoff_hz=0.3, rate_hz=50.0)
>>> x = np.ones((1, 200))  # a step, from a filter at rest
>>> _, y = f.run(np.zeros((1, f.states)), x)
>>> bool(abs(y[0, -1] - 1.0) < 0.01), bool(y[0, 5] < 0.01)  # slow rise, DC gain 1
(True, True)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["LowPass", "butter_lowpass_sos"]

_BLOCK = 256  # longer inputs are filtered block by block


def butter_lowpass_sos(order: int, cutoff_hz: float, rate_hz: float) -> np.ndarray:
    """Digital Butterworth low-pass as second-order sections (n, 6): [b0 b1 b2 1 a1 a2]."""
    if not 0 < cutoff_hz < rate_hz / 2:
        raise ValueError(f"cutoff {cutoff_hz} Hz must lie in (0, {rate_hz / 2}) Hz")
    k = np.arange(1, order + 1)
    analog = np.exp(1j * np.pi * (2 * k + order - 1) / (2 * order))  # unit-circle prototype
    warped = 2 * rate_hz * np.tan(np.pi * cutoff_hz / rate_hz)  # pre-warped cutoff, rad/s
    poles_s = analog * warped
    fs2 = 2 * rate_hz
    poles = (fs2 + poles_s) / (fs2 - poles_s)  # bilinear transform; zeros all at z = -1
    gain = np.real(np.prod(-poles_s) / np.prod(fs2 - poles_s))
    # pair complex poles with their conjugates; a real pole gets a first-order section
    complex_poles = sorted((p for p in poles if p.imag > 1e-12), key=abs)
    real_poles = sorted((p.real for p in poles if abs(p.imag) <= 1e-12), key=abs)
    sections = []
    for p in real_poles:
        sections.append([1.0, 1.0, 0.0, 1.0, -p, 0.0])
    for p in complex_poles:
        sections.append([1.0, 2.0, 1.0, 1.0, -2 * p.real, abs(p) ** 2])
    sos = np.array(sections, np.float64)
    sos[0, :3] *= gain
    return sos


def _state_space(sos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The cascade of transposed direct-form-II sections as one system (A, B, C, D)."""
    a = np.zeros((0, 0))
    b = np.zeros(0)
    c = np.zeros(0)
    d = 1.0
    for b0, b1, b2, _, a1, a2 in sos:
        # one section: y = s0 + b0 u;  s0' = s1 + b1 u - a1 y;  s1' = b2 u - a2 y
        ai = np.array([[-a1, 1.0], [-a2, 0.0]])
        bi = np.array([b1 - a1 * b0, b2 - a2 * b0])
        ci = np.array([1.0, 0.0])
        # its input u is the previous output y = c z + d x
        n = len(b)
        a_new = np.zeros((n + 2, n + 2))
        a_new[:n, :n] = a
        a_new[n:, :n] = np.outer(bi, c)
        a_new[n:, n:] = ai
        b = np.concatenate([b, bi * d])
        c = np.concatenate([b0 * c, ci])
        a = a_new
        d = b0 * d
    return a, b, c, d


class LowPass:
    """A Butterworth low-pass applied along the last axis of any (..., n) array."""

    def __init__(self, order: int, cutoff_hz: float, rate_hz: float) -> None:
        self.rate_hz = rate_hz
        self.sos = butter_lowpass_sos(order, cutoff_hz, rate_hz)
        self.a, self.b, self.c, self.d = _state_space(self.sos)
        self.states = len(self.b)
        self._steady = np.linalg.solve(np.eye(self.states) - self.a, self.b)
        self._blocks = lru_cache(maxsize=64)(self._block_matrices)

    def group_delay_s(self) -> float:
        """The delay of slow signals through the filter, in seconds (the group delay at
        a frequency far below the cutoff, where activity lives)."""
        omega = 1e-4  # rad per sample
        z = np.exp(1j * omega)
        response = self.c @ np.linalg.solve(z * np.eye(self.states) - self.a, self.b) + self.d
        return float(-np.angle(response) / omega / self.rate_hz)

    def steady_state(self, x0: np.ndarray) -> np.ndarray:
        """The state (..., states) of a filter that has seen the constant input x0 forever."""
        return np.asarray(x0, np.float64)[..., None] * self._steady

    def run(self, z: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filter x (..., n) from state z (..., states); returns (new state, y)."""
        x = np.asarray(x, np.float64)
        n = x.shape[-1]
        if n <= _BLOCK:
            return self._run_block(z, x)
        outputs = []
        for start in range(0, n, _BLOCK):
            z, y = self._run_block(z, x[..., start : start + _BLOCK])
            outputs.append(y)
        return z, np.concatenate(outputs, axis=-1)

    def _run_block(self, z: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        toeplitz, observe, power, drive = self._blocks(x.shape[-1])
        y = x @ toeplitz.T + z @ observe.T
        return z @ power.T + x @ drive.T, y

    def _block_matrices(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        a, b, c, d = self.a, self.b, self.c, self.d
        powers = [np.eye(self.states)]
        for _ in range(n):
            powers.append(a @ powers[-1])
        observe = np.array([c @ powers[k] for k in range(n)])  # (n, states): C A^k
        impulse = np.array([d] + [c @ powers[k - 1] @ b for k in range(1, n)])
        k = np.arange(n)
        lag = k[:, None] - k[None, :]
        toeplitz = np.where(lag >= 0, impulse[np.clip(lag, 0, None)], 0.0)  # (n, n)
        drive = np.stack([powers[n - 1 - j] @ b for j in range(n)], axis=1)  # (states, n)
        return toeplitz, observe, powers[n], drive
