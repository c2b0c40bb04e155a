"""Recordings: readers for the UCI files, checks, downloads (and later the real-rate player).

Imports nothing of ``harstream`` or ``training``.
"""

from replay.errors import DataError
from replay.hapt import iter_hapt
from replay.recording import ACTIVITIES, BASIC_ACTIVITIES, Recording
from replay.ucihar import iter_uci_har

__all__ = [
    "ACTIVITIES",
    "BASIC_ACTIVITIES",
    "DataError",
    "Recording",
    "iter_hapt",
    "iter_uci_har",
]
