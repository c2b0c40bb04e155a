"""The one error of the ``replay`` package.

``replay`` imports nothing of harstream (see docs/design.md), so it carries its own error;
harstream's CLI treats it like ``harstream.errors.DataError``.
"""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(Exception):
    """A recording file or data folder is wrong. The message names the file (and line)."""
