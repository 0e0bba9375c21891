"""Greedy MAP inference for determinantal point processes (issue 17): :func:`greedy_map`,
exported as ``divest.dpp.greedy_map``."""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _core
from ._validate import check_count, check_memory


def greedy_map(L, k=None, *, threshold=None):
    """Greedy MAP inference for the L-ensemble DPP with kernel ``L``: items added one at a
    time, each the one that most increases det(L_S) (Chen, Zhang & Zhou 2018, the fast
    incremental-Cholesky form).

    Parameters
    ----------
    L : array_like, shape (N, N)
        Symmetric positive semi-definite kernel (only the diagonal and one row per
        selected item are read; symmetry is checked to 1e-8 relative).
    k : int, optional
        Number of items to select (k-DPP MAP). The selection ends earlier when no
        candidate's pivot is positive (L has numerical rank below k).
    threshold : float, optional
        Stop when the best candidate's gain d_j² = det(L_{S∪j}) / det(L_S) is below it.
        Default: 1 without ``k`` (the greedy MAP of P(S) ∝ det(L_S): stop once no item
        increases the determinant), and the numerical floor N·ε·max diag(L) with ``k``
        (only non-positive or vanishing pivots stop it).

    Returns
    -------
    ndarray of int64
        The selected indices, in selection order.

    Stability: the pivots d_j² are updated as d_j² − e_j², which rounding can push below
    zero on (nearly) rank-deficient kernels, where the reference implementation takes the
    square root of a negative number and returns NaN-driven choices. Here a candidate
    whose pivot is not above the numerical floor is never selected, and pivots are
    clamped at 0, so the selection stays well defined and finite.

    Ties (equal gains) go to the smallest index.

    Cost: O(N·k²) time for k selected items (in Rust, parallel over the items, stops on
    Ctrl-C), O(N·k) memory for the Cholesky rows, plus a float64 C-contiguous copy of
    ``L`` when it is not one already. The result does not depend on the thread count.

    References
    ----------
    L. Chen, G. Zhang and H. Zhou, "Fast greedy MAP inference for determinantal point process to improve recommendation diversity", NeurIPS 2018.
    """
    from .dpp import _matrix

    a = _matrix(L, "L")
    N = a.shape[0]
    if a.shape != (N, N):
        raise ValueError(f"L must be a square (N, N) matrix; got shape {a.shape}")
    # Symmetry (to 1e-8 relative) and the sign of the diagonal are checked in Rust, in
    # one tiled read of L.
    diag = np.diag(a).copy()
    floor = N * np.finfo(float).eps * max(float(diag.max()), 0.0)
    if k is None:
        kmax = N
        thr = 1.0
    else:
        kmax = check_count(k, "k", minimum=1)
        if kmax > N:
            raise ValueError(f"k must be at most the number of items N = {N}; got {k}")
        thr = floor
    if threshold is not None:
        if isinstance(threshold, (bool, np.bool_)) or not isinstance(
            threshold, (numbers.Real, np.floating, np.integer)
        ):
            raise TypeError(
                f"threshold must be a non-negative number; got {type(threshold).__name__}"
            )
        thr = float(threshold)
        if not (thr >= 0 and math.isfinite(thr)):
            raise ValueError(f"threshold must be a finite number >= 0; got {threshold!r}")
    check_memory(8 * N * min(kmax, N), "k", kmax, "the incremental Cholesky rows")
    return _core.dpp_greedy_map(a, kmax, thr, floor)
