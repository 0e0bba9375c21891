"""Dependence over many variables (issue 17): dcor_matrix against a loop over dcor's
fastest 1-D method, mi_matrix against scikit-learn's mutual_info_regression."""

from __future__ import annotations

import numpy as np

import divest

from . import Case, rel_error


def _columns(n, p, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    X[:, 1::3] += 0.5 * X[:, 0:1] ** 2  # some dependence
    return X


def cases(quick: bool):
    out = []
    try:
        import dcor
    except ImportError:
        dcor = None
    n, p = 1000, (30 if quick else 200)
    X = _columns(n, p)

    def dcor_loop():
        M = np.eye(p)
        for i in range(p):
            for j in range(i + 1, p):
                M[i, j] = M[j, i] = dcor.distance_correlation(X[:, i], X[:, j], method="mergesort")
        return M

    out.append(
        Case(
            f"dcor_matrix, n={n}, p={p} ({p * (p - 1) // 2} pairs)",
            lambda: divest.dcor_matrix(X),
            peers={"loop over dcor mergesort": dcor_loop if dcor else "dcor not installed"},
            repeat=3,
            check=rel_error,
        )
    )
    try:
        from sklearn.feature_selection import mutual_info_regression
    except ImportError:
        mutual_info_regression = None
    pf = 20 if quick else 200
    F = _columns(n, pf, seed=1)
    y = F[:, 0] + F[:, 2] ** 2 + 0.3 * np.random.default_rng(2).standard_normal(n)
    Fs, ys = F / F.std(0), y / y.std()
    out.append(
        Case(
            f"mi_matrix(X, y), n={n}, {pf} features, k=3",
            lambda: np.maximum(divest.mi_matrix(Fs, ys, k=3)[:, 0], 0),
            peers={
                "sklearn mutual_info_regression": (
                    lambda: mutual_info_regression(F, y, n_neighbors=3, random_state=0)
                )
                if mutual_info_regression
                else "scikit-learn not installed"
            },
            repeat=3,
            check=lambda a, b: float(np.max(np.abs(a - b))),
        )
    )
    return out
