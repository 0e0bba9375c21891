"""Shared input checks. Every message names the argument, what was wrong and the fix."""

from __future__ import annotations

import numbers
import os

import numpy as np

__all__ = [
    "as_float_array",
    "as_points",
    "check_weights",
    "check_positive",
    "check_int",
    "check_choice",
    "check_nonnegative",
    "check_count",
    "check_bool",
    "check_memory",
]


def as_float_array(x, name: str, *, check_finite: bool = True, xp=None) -> np.ndarray:
    """Returns `x` as a float32 or float64 array (integers and bools become float64).

    Never copies a float array that is already usable; never modifies `x`. `xp`: the
    array namespace of a device array (CuPy) to check it with; it then stays on its
    device (nothing is copied to the host but the finiteness verdict). None: NumPy.
    """
    xn = np if xp is None else xp
    try:
        a = xn.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like of real numbers; {exc}") from None
    if a.dtype.kind == "c":
        raise TypeError(f"{name} must be real; got a complex array (dtype {a.dtype})")
    if a.dtype.kind in "biu":
        a = a.astype(np.float64)
    elif a.dtype.kind == "f":
        if a.dtype not in (np.float32, np.float64):
            a = a.astype(np.float64)
    else:
        raise TypeError(
            f"{name} must be an array of real numbers; got dtype {a.dtype}. "
            f"Convert it with {'np' if xp is None else xp.__name__}.asarray(..., dtype=float)."
        )
    if xp is None and not a.flags.aligned:
        # Misaligned buffers (np.frombuffer at an odd offset, some unpickled arrays) cannot
        # be read in place by the Rust kernels; an aligned copy can.
        a = a.copy()
    if check_finite and a.size and not bool(xn.all(xn.isfinite(a))):
        raise ValueError(
            f"{name} contains NaN or inf; remove those entries or pass check_finite=False"
        )
    return a


def as_points(
    x, name: str, *, d: int | None = None, check_finite: bool = True, xp=None
) -> np.ndarray:
    """Returns an (n, d) float array. A 1-D array is n points in one dimension, or, when
    the expected dimension `d` is larger than 1 and matches its length, a single point.
    `xp`: as in `as_float_array` (a device array stays on its device)."""
    a = as_float_array(x, name, check_finite=check_finite, xp=xp)
    if a.ndim == 0:
        raise ValueError(f"{name} must be a 1-D or 2-D array of points; got a scalar")
    if a.ndim == 1:
        if d is not None and d > 1:
            if a.shape[0] != d:
                raise ValueError(
                    f"{name} has {a.shape[0]} values but the data are {d}-dimensional; "
                    f"pass an array of shape (m, {d})"
                )
            a = a[None, :]
        else:
            a = a[:, None]
    elif a.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d); got {a.ndim} dimensions {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty; it needs at least one point")
    if a.shape[1] == 0:
        raise ValueError(f"{name} has zero columns; points need at least one coordinate")
    if d is not None and a.shape[1] != d:
        raise ValueError(
            f"{name} has dimension {a.shape[1]} but the data have dimension {d}; "
            f"pass an array of shape (m, {d})"
        )
    return a


def check_weights(
    weights, n: int, name: str = "weights", *, normalize: bool = True, of: str = "data point"
) -> np.ndarray:
    """Non-negative finite weights of length n (float64), one per `of`: normalised to sum
    to one, or with ``normalize=False`` kept as given (a C-contiguous float64 copy) for
    calls whose masses matter (unbalanced transport)."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = as_float_array(weights, name, check_finite=True).astype(np.float64, copy=False)
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), one per {of}; got {w.shape}")
    if (w < 0).any():
        raise ValueError(f"{name} must be non-negative; got minimum {w.min()!r}")
    with np.errstate(over="ignore"):
        total = w.sum()
    if normalize and total > 0 and not 2.0**-960 < total < np.inf:
        # The sum overflows (or is too small to divide by exactly): scale by the largest
        # weight first, an exact-enough rescaling that keeps every ratio.
        w = w / w.max()
        total = w.sum()
    if not total > 0:
        raise ValueError(
            f"{name} must not sum to zero (the weights must not all be zero); give at least "
            "one positive weight"
        )
    return w / total if normalize else np.ascontiguousarray(w)


def check_positive(x, name: str) -> float:
    """A finite, strictly positive scalar."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(
        x, (numbers.Real, np.floating, np.integer)
    ):
        raise TypeError(f"{name} must be a positive number; got {type(x).__name__}")
    v = float(x)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be positive and finite; got {x!r}")
    return v


def check_int(x, name: str, minimum: int = 0) -> int:
    """An integer no smaller than `minimum`."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer; got {type(x).__name__}")
    v = int(x)
    if v < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {v}")
    return v


def check_choice(x, name: str, choices, hint: str = ""):
    """One of `choices` (strings or integers, compared by type and value, so an array or
    a float never matches by accident). `hint` is added to the message, in parentheses."""
    for c in choices:
        if type(x) is type(c) or (
            isinstance(c, int)
            and isinstance(x, (numbers.Integral, np.integer))
            and not isinstance(x, (bool, np.bool_))
        ):
            if x == c:
                return c
    names = list(map(repr, choices))
    which = " or ".join(names) if len(names) == 2 else "one of " + ", ".join(names)
    hint = f" ({hint})" if hint else ""
    raise ValueError(f"{name} must be {which}{hint}; got {x!r}")


def check_nonnegative(x, name: str) -> float:
    """A finite number >= 0."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(
        x, (numbers.Real, np.floating, np.integer)
    ):
        raise TypeError(f"{name} must be a non-negative number; got {type(x).__name__}")
    v = float(x)
    if not (np.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be non-negative and finite; got {x!r}")
    return v


#: Largest count accepted by any argument (the Rust side indexes with 64-bit integers).
MAX_COUNT = 2**63 - 1


def check_count(x, name: str, minimum: int = 0) -> int:
    """A size or count argument: an integer in [minimum, 2**63 - 1]."""
    v = check_int(x, name, minimum=minimum)
    if v > MAX_COUNT:
        raise ValueError(f"{name} must be at most 2**63 - 1; got {v}")
    return v


def _memory_bytes() -> int:
    """Physical memory of this machine in bytes, or the container's limit (cgroup v2)
    when smaller; a huge number when unknown."""
    try:
        total = int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        total = 2**62
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def check_memory(nbytes: int, name: str, value: int, what: str) -> None:
    """MemoryError naming `name` when a call would allocate more than this machine's
    physical memory (checked before anything is allocated; Python ints, no overflow)."""
    limit = _memory_bytes()
    if nbytes > limit:
        raise MemoryError(
            f"{name} = {value} would need {nbytes / 2**30:.4g} GiB for {what}, more than "
            f"this machine's {limit / 2**30:.4g} GiB of memory; reduce {name}"
        )


def check_bool(v, name: str) -> bool:
    """True or False (NumPy booleans included); anything else is a TypeError."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {type(v).__name__}")
    return bool(v)
