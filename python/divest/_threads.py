"""Thread controls for divest's own pools (sized by DIVEST_NUM_THREADS by default).

Two levels: :func:`set_num_threads` sets the process default; ``with divest.threads(n):``
overrides it for the calling thread only (other threads keep their own setting), and the
override follows the call into divest's worker threads. Results never depend on either.
"""

from __future__ import annotations

import contextlib
import os

from . import _core
from ._validate import check_int

__all__ = ["get_num_threads", "set_num_threads", "threads", "MAX_THREADS"]

#: Largest thread count accepted by :func:`set_num_threads` and :func:`threads`.
MAX_THREADS: int = int(_core.MAX_THREADS)


def _check_n(n) -> int:
    v = check_int(n, "n", minimum=1)
    if v > MAX_THREADS:
        raise ValueError(
            f"n must be at most {MAX_THREADS} threads; got {v} (use a count near the number "
            "of cores)"
        )
    return v


def get_num_threads() -> int:
    """Number of threads divest kernels called from this thread use: the value of the
    innermost ``with divest.threads(n):`` block in this thread, else the process default."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Sets the process default number of threads (1 <= n <= MAX_THREADS = 4096).

    Threads inside a ``with divest.threads(m):`` block keep m. Results do not depend on
    the thread count.
    """
    _core.set_num_threads(_check_n(n))


@contextlib.contextmanager
def threads(n: int):
    """Context manager: ``with divest.threads(1): ...`` runs the block's divest calls with
    n threads (1 <= n <= MAX_THREADS).

    The setting belongs to the calling thread: blocks in other threads, and the process
    default, are not affected, and nested blocks restore the outer value on exit.
    """
    old = _core._set_thread_override(_check_n(n))
    try:
        yield
    finally:
        _core._set_thread_override(old)


if hasattr(os, "register_at_fork"):
    # A forked child must not touch the parent's worker threads or locks: the hook gives
    # the child its own (empty) pool cache without taking any lock.
    os.register_at_fork(after_in_child=_core._after_fork_child)
