"""Dependence over many variables and conditional measures (issue 17): :func:`mi_matrix`,
the mixed discrete-continuous kNN mutual information behind ``knn_mi(...,
discrete_features=...)``, :func:`knn_cmi` and :func:`cmi_test`.

The kNN searches and radius counts run in Rust (``_core.knn_sq_dists``,
``_core.count_within`` and, for all column pairs at once, ``_core.mi_matrix``); the
finishing formulas are here.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from . import _core
from ._validate import as_points, check_choice, check_memory

#: A column with at most this fraction of distinct values looks discrete.
_DISCRETE_FRACTION = 0.5


def _distinct(col: np.ndarray) -> int:
    return int(np.unique(col).size)


def _looks_discrete(a: np.ndarray) -> np.ndarray:
    """Per column of the (n, d) array: at most half of its values are distinct."""
    n = a.shape[0]
    return np.array([_distinct(a[:, j]) <= _DISCRETE_FRACTION * n for j in range(a.shape[1])])


def _warn_discrete(named, stacklevel=4):
    """Warns, naming ``discrete_features``, about every (name, array) with a column that
    looks discrete."""
    for name, a in named:
        looks = _looks_discrete(a)
        if looks.any():
            j = int(np.flatnonzero(looks)[0])
            col = f"{name}[:, {j}]" if a.shape[1] > 1 else name
            warnings.warn(
                f"{col} has only {_distinct(a[:, j])} distinct values among {a.shape[0]}: it "
                "looks discrete, and the continuous KSG estimator is biased by ties (exact "
                "duplicates are not neighbours). Pass discrete_features=True (or a mask) to "
                "use the mixed discrete-continuous estimator of Gao et al. (2017).",
                UserWarning,
                stacklevel=stacklevel,
            )
            return


def mixed_flag(discrete_features, xa: np.ndarray, ya: np.ndarray) -> bool:
    """Whether :func:`divest.knn_mi` uses the mixture estimator: ``discrete_features`` is
    False (KSG; warns when a column looks discrete), True, or "auto" (the mixture
    estimator when any column of x or y looks discrete)."""
    if isinstance(discrete_features, str):
        if discrete_features != "auto":
            raise ValueError(
                f"discrete_features must be False, True or 'auto'; got {discrete_features!r}"
            )
        return bool(_looks_discrete(xa).any() or _looks_discrete(ya).any())
    if not isinstance(discrete_features, (bool, np.bool_)):
        raise TypeError(
            f"discrete_features must be False, True or 'auto'; got "
            f"{type(discrete_features).__name__}"
        )
    if not discrete_features:
        _warn_discrete([("x", xa), ("y", ya)])
    return bool(discrete_features)


def _digamma_int(m):
    from .divergence import _digamma_int

    return _digamma_int(m)


def gao_mi(xc: np.ndarray, yc: np.ndarray, k: int, algorithm: str) -> float:
    """Mixed discrete-continuous kNN mutual information (Gao, Kannan, Oh & Viswanath 2017,
    in the form of the authors' reference code) of prepared (scaled, shifted, float64,
    C-contiguous) samples, in nats.

    ρ_i is the k-th smallest joint distance (max of the two blocks' Euclidean distances) to
    the other points, counting exact duplicates at distance 0. When ρ_i > 0, k̃_i = k and
    n_x, n_y count the points strictly within ρ_i in each marginal; when ρ_i = 0, k̃_i, n_x,
    n_y count the points equal to point i jointly and in each marginal. Every count
    includes the point itself, and I = ⟨ψ(k̃_i) + ln n − ψ(n_x) − ψ(n_y)⟩."""
    from .divergence import _RADIUS_MARGIN, _fmean

    n = xc.shape[0]
    _, inv, counts = np.unique(np.hstack([xc, yc]), axis=0, return_inverse=True, return_counts=True)
    dup = counts[inv.ravel()] - 1
    rho2 = np.zeros(n)
    need = k - dup  # positive-distance neighbours each row needs
    for m in np.unique(need[need > 0]):
        rows = np.flatnonzero(need == m)
        d2, _ = _core.knn_sq_dists(
            np.ascontiguousarray(xc[rows]),
            xc,
            int(m),
            False,
            np.ascontiguousarray(yc[rows]),
            yc,
            algorithm=algorithm,
        )
        rho2[rows] = d2[:, -1] * (1 - _RADIUS_MARGIN)
    zero = need <= 0
    nx = _core.count_within(xc, rho2, True, algorithm) + 1
    ny = _core.count_within(yc, rho2, True, algorithm) + 1
    if zero.any():
        nx[zero] = _core.count_within(xc, np.zeros(n), False, algorithm)[zero] + 1
        ny[zero] = _core.count_within(yc, np.zeros(n), False, algorithm)[zero] + 1
    kt = np.where(zero, dup + 1, k)
    return _fmean(_digamma_int(kt) + math.log(n) - _digamma_int(nx) - _digamma_int(ny))


def _discrete_mask(discrete_features, arrs, names, stacklevel=4) -> np.ndarray:
    """Boolean mask over the columns of the arrays, in order."""
    total = sum(a.shape[1] for a in arrs)
    if isinstance(discrete_features, str):
        if discrete_features != "auto":
            raise ValueError(
                "discrete_features must be False, True, 'auto', or a mask or indices over "
                f"the columns; got {discrete_features!r}"
            )
        return np.concatenate([_looks_discrete(a) for a in arrs])
    if isinstance(discrete_features, (bool, np.bool_)):
        if not discrete_features:
            _warn_discrete(list(zip(names, arrs)), stacklevel)
        return np.full(total, bool(discrete_features))
    m = np.asarray(discrete_features)
    if m.dtype == bool:
        if m.shape != (total,):
            raise ValueError(
                f"discrete_features as a mask must have one entry per column ({total}); got "
                f"shape {m.shape}"
            )
        return m.copy()
    if m.ndim != 1 or not (m.size == 0 or np.issubdtype(m.dtype, np.integer)):
        raise TypeError(
            "discrete_features must be False, True, 'auto', a boolean mask or integer column "
            "indices"
        )
    if m.size and (m.min() < -total or m.max() >= total):
        raise ValueError(f"discrete_features has a column index outside [0, {total}); got {m}")
    out = np.zeros(total, dtype=bool)
    out[m] = True
    return out


def mi_matrix(X, Y=None, *, k=3, discrete_features=False, variant=1) -> np.ndarray:
    """kNN mutual information between every pair of columns of ``X`` (each column a 1-D
    sample), or between each column of ``X`` and each column of ``Y``, in nats.

    Parameters
    ----------
    X : array_like, shape (n, p) (a 1-D array is one column)
    Y : array_like, shape (n, q), optional
        Many targets at once: ``mi_matrix(X, y)`` with a 1-D ``y`` is the (p, 1) column of
        MI between each feature and the target (scikit-learn's
        ``mutual_info_regression``).
    k : int
        Neighbours, 1 <= k < n.
    discrete_features : False, True, "auto", boolean mask or integer indices
        Which columns are discrete (over the columns of X followed by those of Y). A pair
        with a discrete column uses the mixed discrete-continuous estimator of Gao et al.
        (2017) (what ``divest.knn_mi(..., discrete_features=True)`` computes); other
        pairs use KSG-1 or KSG-2 (``variant``). "auto" marks the columns with
        at most n/2 distinct values. With False, a column that looks discrete draws a
        ``UserWarning`` naming ``discrete_features``: KSG treats exact duplicates as
        non-neighbours and is biased by ties (and fails where a point has fewer than k
        distinct neighbours).
    variant : 1 or 2
        KSG-1 or KSG-2 for the continuous pairs, as in ``divest.knn_mi(x, y, k, variant)``
        (KSG-2's joint neighbours include every point tied with the k-th, so the value
        does not depend on the order of the rows).

    Returns
    -------
    ndarray, shape (p, q) (or (p, p)), float64
        Entry (i, j) equals ``divest.knn_mi(X[:, i], Y[:, j], k, variant)`` (or the
        mixture estimate) to rounding (the mean is summed in another order). Without ``Y`` the
        matrix is symmetric and its diagonal is the estimator applied to a column and
        itself (for a continuous column ψ(n) − ψ(k) + … , large: MI of a continuous
        variable with itself is infinite). Estimates are not clipped at 0.

    The columns are used as given (KSG's max-norm is not scale-free per column):
    standardise them first to match ``mutual_info_regression``, which also adds noise of
    relative size 1e-10 and clips at 0. X and Y are divided by one power of two (exact) and
    each column is shifted by its midrange, as ``knn_mi`` does.

    Each column is sorted once; a pair costs one exact kd-tree kNN search in the plane and
    two binary searches per point (KSG-2: k + 1 neighbours, and for a point whose
    (k + 1)-th neighbour ties the k-th, a scan of the sorted x column within the joint
    radius). Pairs run in parallel on divest's threads (the result
    does not depend on their number), and Ctrl-C stops the call.

    Memory: a float64 transposed copy of X and Y and a sorted copy of each column (16
    bytes per value; KSG-2 adds the sort order, 4 bytes per value), the (p, q) result, and per thread one pair's kd-tree and neighbour
    lists (O(n·k)).

    References
    ----------
    A. Kraskov, H. Stögbauer and P. Grassberger, Phys. Rev. E 69, 066138, 2004.
    W. Gao, S. Kannan, S. Oh and P. Viswanath, "Estimating mutual information for discrete-continuous mixtures", NeurIPS 2017.
    """
    from .divergence import _check_k, _pow2_scale

    xa = as_points(X, "X")
    n, p = xa.shape
    ya = None
    if Y is not None:
        ya = as_points(Y, "Y")
        if ya.shape[0] != n:
            raise ValueError(
                f"X and Y must have the same number of observations (rows); got {n} and "
                f"{ya.shape[0]}"
            )
    k = _check_k(k, n, "X")
    variant = check_choice(variant, "variant", (1, 2), "KSG-1 or KSG-2")
    arrs = [xa] if ya is None else [xa, ya]
    mask = _discrete_mask(discrete_features, arrs, ["X"] if ya is None else ["X", "Y"])
    q = p if ya is None else ya.shape[1]
    check_memory(24 * n * (p + (0 if ya is None else q)) + 8 * p * q, "X", p, "the MI matrix")
    c = _pow2_scale(*arrs)

    def prep(a):
        t = np.ascontiguousarray(a.T, dtype=np.float64) / c
        mid = 0.5 * t.min(axis=1) + 0.5 * t.max(axis=1)
        return np.ascontiguousarray(t - mid[:, None])

    xt = prep(xa)
    if ya is None:
        return _core.mi_matrix(xt, None, k, mask.tolist(), mask.tolist(), variant)
    return _core.mi_matrix(xt, prep(ya), k, mask[:p].tolist(), mask[p:].tolist(), variant)


def _three_samples(x, y, z, check_finite=True, discrete_features=False):
    """The prepared samples and whether the mixed estimator runs."""
    from .divergence import _knn_scaled

    xa = as_points(x, "x", check_finite=check_finite)
    ya = as_points(y, "y", check_finite=check_finite)
    za = as_points(z, "z", check_finite=check_finite)
    n = xa.shape[0]
    for name, a in (("y", ya), ("z", za)):
        if a.shape[0] != n:
            raise ValueError(
                f"x and {name} must be paired samples of the same length; got {n} and {a.shape[0]}"
            )
    mixed = _cmi_mixed(discrete_features, xa, ya, za)
    # One power of two for all three (the joint max-distance, and so the estimate, is
    # unchanged) and a midrange shift per sample.
    (xc, yc, zc), _ = _knn_scaled(xa, ya, za, pooled=False)
    return xc, yc, zc, mixed


def _cmi_mixed(discrete_features, xa, ya, za) -> bool:
    """Whether :func:`knn_cmi` / :func:`cmi_test` use the mixed estimator: any column of
    x, y or z marked by ``discrete_features`` (validated over those columns in order)."""
    mask = _discrete_mask(discrete_features, [xa, ya, za], ["x", "y", "z"], stacklevel=6)
    return bool(mask.any())


def knn_cmi(
    x, y, z, k=3, *, base=None, check_finite=True, discrete_features=False, algorithm="auto"
) -> float:
    """kNN estimate of the conditional mutual information I(X; Y | Z) (Frenzel & Pompe
    2007; the KSG-style estimator that Runge's CMIknn uses), or with
    ``discrete_features``, its mixed discrete-continuous form.

    x (n, dx), y (n, dy) and z (n, dz) are paired samples (1-D arrays are one-dimensional).
    Distances in the joint space are max(‖x_i − x_j‖, ‖y_i − y_j‖, ‖z_i − z_j‖), Euclidean
    in each block (the max-norm of the papers for 1-D blocks), and the subspaces (x, z),
    (y, z), z use its restriction. With ε_i the joint distance to the k-th nearest
    neighbour and n_xz, n_yz, n_z the other points strictly within ε_i in each subspace,

        I = ψ(k) − ⟨ψ(n_xz + 1) + ψ(n_yz + 1) − ψ(n_z + 1)⟩.

    Points at joint distance zero are not neighbours (as in :func:`divest.knn_mi`); a
    point with fewer than k distinct neighbours is an error naming ``discrete_features``.

    ``discrete_features``: False (default; warns, naming ``discrete_features``, when a
    column of x, y or z has at most n/2 distinct values), True, "auto" (columns with at
    most n/2 distinct values), or a boolean mask or integer indices over the columns of
    x, y and z in that order. When any column is marked, the mixed estimator runs
    (Gao et al. 2017's form, as ``knn_mi(..., discrete_features=True)``, conditioned as
    Mesner & Shalizi 2020 do): ρ_i is the k-th smallest joint distance counting points at
    distance 0; when ρ_i > 0, k̃_i = k and the counts are of the points strictly within
    ρ_i; when ρ_i = 0, k̃_i and the counts are of the points equal to point i (jointly,
    in (x, z), (y, z) and z). Every count includes the point, and
    I = ⟨ψ(k̃_i) − ψ(n_xz) − ψ(n_yz) + ψ(n_z)⟩. It treats every column alike (only
    equalities matter), is Frenzel–Pompe on data without ties, and on discrete data with
    more than k points per cell the plug-in estimate with digammas for logarithms.

    The estimate may be slightly negative; it is not clipped. In nats or units of
    ``base``. The samples are divided by one power of two and shifted by their midranges
    (exact for the estimate). Values must be finite.

    ``algorithm``: "auto" (the trees when dx + dy + dz <= 12, else brute force),
    "kd_tree" or "brute"; all give the same value bit for bit (same distances, same
    counts, terms summed in row order). The trees: an exact kd-tree over (x, y, z) for
    the k-th neighbour (max-norm of the blocks) and one over z for the range counts, each
    z-neighbour's x and y distances checked directly; about O(n log n + Σ n_z) time, so
    n = 10⁵ with dz <= 5 takes seconds. Brute force: O(n²·(dx + dy + dz)) time. Both run
    on divest's threads; the result does not depend on their number.

    Memory: float64 copies of the samples, and for the trees tree-ordered copies of
    (x, y, z) and of z (16 bytes per value with the build's scratch) plus 2n values; brute
    force 3n values per thread. No n×n matrix.

    References
    ----------
    S. Frenzel and B. Pompe, "Partial mutual information for coupling analysis of multivariate time series", Phys. Rev. Lett. 99, 204101, 2007.
    J. Runge, "Conditional independence testing based on a nearest-neighbor estimator of conditional mutual information", AISTATS 2018.
    W. Gao, S. Kannan, S. Oh and P. Viswanath, "Estimating mutual information for discrete-continuous mixtures", NeurIPS 2017.
    O. C. Mesner and C. R. Shalizi, "Conditional mutual information estimation for mixed, discrete and continuous data", IEEE Trans. Inf. Theory 67, 464-484, 2021.
    """
    from .divergence import _check_algorithm, _check_k, _log_base

    lb = _log_base(base)
    algorithm = _check_algorithm(algorithm)
    xc, yc, zc, mixed = _three_samples(x, y, z, check_finite, discrete_features)
    k = _check_k(k, xc.shape[0], "x")
    return float(_core.cmi_stats(xc, yc, zc, k, None, mixed, algorithm)[0] / lb)


def _random_tied_neighbours(zc, nb, gen):
    """Where a point's group of equal z values has more than kk = nb.shape[1] - 1 members,
    replaces its neighbours (nb[:, 1:], all at distance 0 and tied, chosen by index) with
    kk other members of the group drawn uniformly at random (Floyd's subset sampling,
    vectorised over the group's members), so that every point of a cell does not get the
    same neighbours. O(m·kk²) per group of m members."""
    kk = nb.shape[1] - 1
    _, inv, cnt = np.unique(zc, axis=0, return_inverse=True, return_counts=True)
    order = np.argsort(inv.ravel(), kind="stable")
    starts = np.concatenate([[0], np.cumsum(cnt)])
    for g in np.flatnonzero(cnt > kk):
        members = order[starts[g] : starts[g + 1]]
        m = members.size
        pick = np.empty((m, kk), dtype=np.int64)
        for c, j in enumerate(range(m - 1 - kk, m - 1)):
            t = gen.integers(0, j + 1, size=m)
            seen = (pick[:, :c] == t[:, None]).any(axis=1)
            pick[:, c] = np.where(seen, j, t)
        nb[members, 1:] = members[(np.arange(m)[:, None] + 1 + pick) % m]


def _local_permutations(zc, k_perm, n_resamples, gen):
    """(n_resamples, n) int64 indices of Runge's local permutation scheme: each point i
    takes the x of a point among its k_perm nearest neighbours in z (itself included,
    points equal to it in z included: where more than k_perm - 1 points share its z
    value, k_perm - 1 of them drawn at random), drawn at random, without repetition where
    possible (points visited in random order). The neighbours come from the kd-tree over
    z that :func:`knn_cmi` counts with."""
    n = zc.shape[0]
    if k_perm == 1:
        nb = np.arange(n)[:, None]
    else:
        nb = np.hstack([np.arange(n)[:, None], _core.cmi_z_neighbours(zc, k_perm - 1)])
        if np.unique(zc, axis=0).shape[0] < n:
            _random_tied_neighbours(zc, nb, gen)
    out = np.empty((n_resamples, n), dtype=np.int64)
    for b in range(n_resamples):
        order = gen.permutation(n)
        cand = np.take_along_axis(nb, np.argsort(gen.random((n, k_perm)), axis=1), axis=1)
        used = np.zeros(n, dtype=bool)
        row = out[b]
        for i in order.tolist():
            c = cand[i]
            j = int(c[0])
            for m in range(1, k_perm):
                if not used[j]:
                    break
                j = int(c[m])
            row[i] = j
            used[j] = True
    return out


def cmi_test(
    x, y, z, *, k=3, k_perm=5, n_resamples=499, rng=None, discrete_features=False, algorithm="auto"
):
    """Conditional-independence test of X ⫫ Y | Z with the kNN CMI statistic
    (:func:`knn_cmi`) and Runge's (2018) local permutation scheme.

    Each resample permutes x only among points that are close in z: point i takes the x
    of one of the ``k_perm`` nearest neighbours of z_i (itself included; points equal to
    it in z are neighbours at distance 0, and where more than k_perm - 1 points share
    its z value, k_perm - 1 of them are drawn first from ``rng``), drawn at random and without
    repetition where possible, so the resampled data keep the dependence of X on Z and
    break that of X on Y given Z. The neighbours come from the same kd-tree over z that
    the statistic's counts use. The p-value is (1 + #{T_b ≥ T}) / (1 + B) over
    B = ``n_resamples`` resamples. ``discrete_features`` and ``algorithm`` are those of
    :func:`knn_cmi` (with a discrete z, use k_perm at most the smallest z-cell, so that
    points are permuted within their cell).

    The permutations are drawn from ``rng`` (None, an int seed or a Generator) in
    NumPy, in order, before the statistics are computed in Rust, so the result is
    reproducible from ``rng`` and does not depend on the number of threads.

    Returns :class:`divest.TestResult` (statistic in nats, p-value, the B resampled
    statistics). Cost: (1 + B) estimates (see :func:`knn_cmi`; the tree over z is built
    once, the joint tree once per resample). Memory: the (B, n) permutation indices and
    that of one estimate.

    References
    ----------
    J. Runge, "Conditional independence testing based on a nearest-neighbor estimator of conditional mutual information", AISTATS 2018.
    """
    from ._results import TestResult
    from ._rng import as_generator
    from ._validate import check_int
    from .dcov import _check_resamples, _perm_pvalue
    from .divergence import _check_algorithm, _check_k, _knn_scaled

    algorithm = _check_algorithm(algorithm)
    xc, yc, zc, mixed = _three_samples(x, y, z, True, discrete_features)
    n = xc.shape[0]
    k = _check_k(k, n, "x")
    k_perm = check_int(k_perm, "k_perm", minimum=1)
    if k_perm > n:
        raise ValueError(f"k_perm must be at most the number of observations ({n}); got {k_perm}")
    n_resamples = _check_resamples(n_resamples, n, max(xc.shape[1] + yc.shape[1] + zc.shape[1], 1))
    check_memory(8 * n * n_resamples, "n_resamples", n_resamples, "the permutation indices")
    gen = as_generator(rng)
    # Neighbours in z do not depend on z's scale: z alone, scaled to order one (with x and
    # y far larger, z's share of the common scale could underflow).
    (zn,), _ = _knn_scaled(as_points(z, "z"), pooled=False)
    perms = _local_permutations(zn, k_perm, n_resamples, gen)
    stats = _core.cmi_stats(xc, yc, zc, k, perms, mixed, algorithm)
    stat, null = float(stats[0]), stats[1:]
    return TestResult(stat, _perm_pvalue(stat, null), null)
