"""Dependence over many variables (issue 17): dcor_matrix against a loop over dcor's
fastest 1-D method, mi_matrix against scikit-learn's mutual_info_regression, knn_cmi's
kd-trees against its brute force and a cKDTree Frenzel-Pompe."""

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
    return out + cmi_cases(quick)


def _fp_ckdtree(x, y, z, k):
    """Frenzel-Pompe CMI in plain NumPy/scipy (cKDTree, the max-norm over all
    coordinates, as Runge's CMIknn does; divest uses the Euclidean norm inside each block,
    so for a 3-D z the two values differ slightly)."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma

    xyz = np.column_stack([x, y, z])
    xz, yz = np.column_stack([x, z]), np.column_stack([y, z])
    d, _ = cKDTree(xyz).query(xyz, k + 1, p=np.inf, workers=-1)
    eps = np.nextafter(d[:, -1], 0)  # strictly within

    def count(a):
        return cKDTree(a).query_ball_point(a, eps, p=np.inf, return_length=True, workers=-1) - 1

    nxz, nyz, nz = count(xz), count(yz), count(np.asarray(z))
    return float(digamma(k) - np.mean(digamma(nxz + 1) + digamma(nyz + 1) - digamma(nz + 1)))


def cmi_cases(quick: bool):
    """knn_cmi at n = 10^4 and 10^5, dim z = 3, k = 5: the kd-trees against the brute-force
    search (the previous implementation, same value bit for bit) and a cKDTree
    Frenzel-Pompe."""
    try:
        import scipy.spatial  # noqa: F401

        have_scipy = True
    except ImportError:
        have_scipy = False
    out = []
    for n in (10**4,) if quick else (10**4, 10**5):
        rng = np.random.default_rng(n)
        z = rng.standard_normal((n, 3))
        x = z[:, 0] + rng.standard_normal(n)
        y = z[:, 1] + 0.5 * x + rng.standard_normal(n)
        # The brute force (6 minutes at 10^5) runs at 10^4 only.
        brute = (
            (lambda x=x, y=y, z=z: divest.knn_cmi(x, y, z, 5, algorithm="brute"))
            if n <= 10**4
            else "skipped at this n (quadratic: about 6 minutes)"
        )
        peers = {
            "divest algorithm='brute' (before)": brute,
            "scipy cKDTree Frenzel-Pompe (max-norm)": (
                (lambda x=x, y=y, z=z: _fp_ckdtree(x, y, z, 5))
                if have_scipy
                else "scipy not installed"
            ),
        }
        out.append(
            Case(
                f"knn_cmi, n={n}, dx=dy=1, dz=3, k=5",
                lambda x=x, y=y, z=z: divest.knn_cmi(x, y, z, 5),
                peers=peers,
                repeat=3,
                check=lambda a, b: abs(a - b),
            )
        )
    return out
