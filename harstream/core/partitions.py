"""Device partitions: which of P partitions a device id falls in (as NATS's subject
mapping ``partition(P, 1)`` computes it), and sets of partitions written as ``a-b``
lists. Pure; the gateway's worker mode (``harstream.gateway.scale``) and the config's
validation use it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["coverage", "format_owned", "parse_owned", "partition_of"]


def partition_of(device: str, partitions: int) -> int:
    """The partition NATS's ``partition(P, 1)`` gives the token ``device``: FNV-1a
    (32-bit) of its bytes, modulo P.

    >>> partition_of("phone1", 8), partition_of("watch-7", 8)
    (2, 0)
    """
    h = 0x811C9DC5
    for byte in device.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % partitions


_ITEM = re.compile(r"^(\d+)(?:-(\d+))?(?:/(\d+))?$")


def parse_owned(spec: str, partitions: int) -> frozenset[int]:
    """``all``, or comma-separated items ``a``, ``a-b`` or ``a-b/k`` (every k-th of a..b):
    ``0-63`` is the first half of 128, ``0-127/2`` and ``1-127/2`` its two interleaved
    halves. Raises ValueError naming what is wrong.

    >>> sorted(parse_owned("0-3,8,10-14/2", 16))
    [0, 1, 2, 3, 8, 10, 12, 14]
    """
    if spec.strip() == "all":
        return frozenset(range(partitions))
    owned: set[int] = set()
    for item in spec.split(","):
        match = _ITEM.match(item.strip())
        if match is None:
            raise ValueError(f"{item!r}: use all, or a, a-b or a-b/k (comma-separated)")
        a = int(match[1])
        b = int(match[2]) if match[2] is not None else a
        step = int(match[3]) if match[3] is not None else 1
        if not (0 <= a <= b < partitions) or step < 1:
            raise ValueError(f"{item!r}: partitions are 0..{partitions - 1}, a <= b, k >= 1")
        owned.update(range(a, b + 1, step))
    return frozenset(owned)


def format_owned(owned: Iterable[int]) -> str:
    """The shortest ``a-b`` list of a set of partitions.

    >>> format_owned({0, 1, 2, 5, 7, 8})
    '0-2,5,7-8'
    """
    out: list[str] = []
    for p in sorted(owned):
        if out and p == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{p}"
        else:
            out.append(str(p))
    return ",".join(out)


def coverage(partitions: int, workers: Mapping[str, frozenset[int]]) -> dict[str, str]:
    """What a set of live workers leaves unowned and owns twice (``a-b`` lists, empty
    when all is well)."""
    seen: dict[int, int] = {}
    for owned in workers.values():
        for p in owned:
            seen[p] = seen.get(p, 0) + 1
    return {
        "unowned": format_owned(p for p in range(partitions) if p not in seen),
        "overlapping": format_owned(p for p, n in seen.items() if n > 1),
    }
