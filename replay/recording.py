"""A recording: one continuous stream of raw device samples with per-sample labels.

The shape every reader yields and every consumer (player, training, CLI) takes. It
knows nothing about files; the readers do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ACTIVITIES", "BASIC_ACTIVITIES", "Recording"]

#: HAPT's ``activity_labels.txt``: id -> name. 1..6 are the UCI HAR classes.
ACTIVITIES: dict[int, str] = {
    1: "WALKING",
    2: "WALKING_UPSTAIRS",
    3: "WALKING_DOWNSTAIRS",
    4: "SITTING",
    5: "STANDING",
    6: "LAYING",
    7: "STAND_TO_SIT",
    8: "SIT_TO_STAND",
    9: "SIT_TO_LIE",
    10: "LIE_TO_SIT",
    11: "STAND_TO_LIE",
    12: "LIE_TO_STAND",
}

#: The six classes the models predict, in class-id order (class id = activity id - 1).
BASIC_ACTIVITIES: tuple[str, ...] = tuple(ACTIVITIES[i] for i in range(1, 7))


@dataclass(frozen=True, eq=False)
class Recording:
    """``samples`` is (n, 6) float64: acc x y z in g (gravity included), gyro x y z in rad/s.

    ``labels`` is (n,) int8: 0 = unlabelled, 1..12 = the activity ids of ``ACTIVITIES``.
    """

    subject: int
    experiment: str
    samples: np.ndarray
    labels: np.ndarray
    rate_hz: float = 50.0
    source: str = ""

    def __post_init__(self) -> None:
        if self.samples.ndim != 2 or self.samples.shape[1] != 6:
            raise ValueError(f"samples must be (n, 6), got {self.samples.shape}")
        if self.labels.shape != (self.samples.shape[0],):
            raise ValueError(f"labels must be ({self.samples.shape[0]},), got {self.labels.shape}")

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return len(self) / self.rate_hz
