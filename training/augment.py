"""Augmentations that make sense for a phone on the waist, on unstandardised features.

The 9 channels are three 3-vectors in the device frame (body_acc, body_gyro,
total_acc), so a change of device orientation is one rotation applied to each triad.
The filters are linear, so rotating the filtered signals equals filtering rotated raw
signals (up to the per-axis median filter, a small difference).

- ``rotate_deg``: a random rotation by up to this angle about a random axis, per crop:
  the phone sits a little differently on every person.
- ``lie_rotate_p``: with this probability, each lying episode (LAYING and the
  transitions into and out of it) is turned about the device x axis (the body's long
  axis when the phone is upright on the waist) by a uniform random angle: people lie
  on their back, side or front. Training subjects lay with gravity between +y and +z
  only; a test subject who lay with gravity along -y/-z was read as walking upstairs.
  Upright postures are left alone: their small tilt about x is what tells SITTING from
  STANDING.
- ``scale``: one gain factor per crop, 1 +/- scale (sensor calibration).
- ``noise``: gaussian noise added after standardisation, in standardised units.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LYING", "augment_crop", "lying_episodes", "random_rotation", "rotate_about_x"]

#: LAYING, SIT_TO_LIE, LIE_TO_SIT, STAND_TO_LIE, LIE_TO_STAND
LYING = (6, 9, 10, 11, 12)
_MERGE_GAP = 100  # unlabelled samples (2 s) inside one lying episode


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation matrix by a uniform angle in [-max_deg, max_deg] about a random axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def rotate_about_x(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def lying_episodes(labels: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of runs of lying-related labels, short unlabelled gaps merged."""
    lying = np.isin(labels, LYING)
    idx = np.flatnonzero(lying)
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > _MERGE_GAP)
    starts = np.r_[idx[0], idx[breaks + 1]]
    stops = np.r_[idx[breaks], idx[-1]] + 1
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _rotate(x: np.ndarray, rotation: np.ndarray) -> None:
    """Rotate the three triads of x (n, 9) in place."""
    for k in range(3):
        x[:, 3 * k : 3 * k + 3] = x[:, 3 * k : 3 * k + 3] @ rotation.T


def augment_crop(
    features: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    rotate_deg: float,
    lie_rotate_p: float,
    scale: float,
) -> np.ndarray:
    """An augmented copy of one crop (n, 9) of unstandardised features."""
    x = np.array(features, np.float64)
    if lie_rotate_p > 0:
        for start, stop in lying_episodes(labels):
            if rng.random() < lie_rotate_p:
                turn = rotate_about_x(rng.uniform(-np.pi, np.pi))
                part = x[start:stop]
                _rotate(part, turn)
    if rotate_deg > 0:
        _rotate(x, random_rotation(rng, rotate_deg))
    if scale > 0:
        x *= 1.0 + rng.uniform(-scale, scale)
    return x.astype(np.float32)
