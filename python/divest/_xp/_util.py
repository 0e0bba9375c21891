"""Small shims over the few spellings that differ between namespaces."""

from __future__ import annotations

import math


def astype(xp, a, dtype):
    f = getattr(xp, "astype", None)
    if f is not None:
        return f(a, dtype)
    return a.astype(dtype)


def concat(xp, arrays, axis=0):
    f = getattr(xp, "concat", None) or xp.concatenate
    return f(arrays, axis=axis)


def tiles(n: int, size: int):
    """(start, stop) of each tile; the last one ragged, never past n."""
    size = max(1, int(size))
    for s in range(0, n, size):
        yield s, min(s + size, n)


def tile_rows(d: int, budget: int = 1 << 21) -> int:
    """A square tile edge t with t·t·d elements at most ``budget`` (at least 8)."""
    return max(8, int(math.isqrt(max(1, budget // max(1, d)))))


def safe_log(xp, s):
    """log(s) with log(0) = -inf and no warning."""
    pos = s > 0
    return xp.where(pos, xp.log(xp.where(pos, s, xp.ones_like(s))), xp.full_like(s, -math.inf))
