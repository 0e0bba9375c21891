"""Thread controls for divest's own pool (sized by DIVEST_NUM_THREADS by default)."""

from __future__ import annotations

import contextlib
import os

from . import _core
from ._validate import check_int

__all__ = ["get_num_threads", "set_num_threads", "threads"]


def get_num_threads() -> int:
    """Number of threads divest kernels use."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Sets the number of threads divest kernels use (n >= 1). Results do not depend on it."""
    _core.set_num_threads(check_int(n, "n", minimum=1))


@contextlib.contextmanager
def threads(n: int):
    """Context manager: ``with divest.threads(1): ...`` runs the block with n threads."""
    old = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(old)


if hasattr(os, "register_at_fork"):
    # A forked child must not touch the parent's worker threads: drop the pool there.
    os.register_at_fork(after_in_child=_core._after_fork_child)
