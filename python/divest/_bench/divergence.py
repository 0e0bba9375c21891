"""Divergence comparisons: scipy's rel_entr and jensenshannon, a NumPy softmax + KL
reference for logits, PyTorch's kl_div where installed, scipy cKDTree kNN-KL and entropy,
scikit-learn's KSG mutual information, and a NumPy cdist reference for the kernel estimators."""

from __future__ import annotations

import math

import numpy as np

import divest

from . import Case, rel_error
from . import workloads as wl


def numpy_logits_kl(z1, z2):
    """KL(softmax z1 ‖ softmax z2) per row, the usual NumPy way (forms both softmaxes)."""
    lp = z1 - z1.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    lq = z2 - z2.max(-1, keepdims=True)
    lq -= np.log(np.exp(lq).sum(-1, keepdims=True))
    return (np.exp(lp) * (lp - lq)).sum(-1)


def ckdtree_knn_kl(x, y, k):
    """Wang-Kulkarni-Verdú KL with scipy's cKDTree (the usual implementation)."""
    from scipy.spatial import cKDTree

    n, d = x.shape
    rho = cKDTree(x).query(x, k + 1)[0][:, k]
    nu = cKDTree(y).query(x, k)[0][:, k - 1]
    return d * np.mean(np.log(nu / rho)) + math.log(len(y) / (n - 1))


def ckdtree_knn_entropy(x, k):
    """Kozachenko-Leonenko entropy with scipy's cKDTree."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma, gammaln

    n, d = x.shape
    rho = cKDTree(x).query(x, k + 1)[0][:, k]
    log_cd = 0.5 * d * math.log(math.pi) - gammaln(0.5 * d + 1)
    return digamma(n) - digamma(k) + log_cd + d * np.mean(np.log(rho))


def cdist_cs(x, y, sigma):
    from scipy.spatial.distance import cdist

    def s(a, b):
        return np.log(np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2)).sum())

    return s(x, x) + s(y, y) - 2 * s(x, y)


def cdist_mmd(x, y, sigma):
    from scipy.spatial.distance import cdist

    def k(a, b):
        return np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))

    kxx, kyy = k(x, x), k(y, y)
    n, m = len(x), len(y)
    return (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * k(x, y).mean()
    )


def cases(quick: bool):
    out = []
    try:
        import scipy  # noqa: F401

        have_scipy = True
    except ImportError:
        have_scipy = False
    try:
        import torch
    except ImportError:
        torch = None

    n, k = wl.size(wl.DISCRETE_ROWS, quick), 1000
    p, q = wl.discrete_pairs(n, k)
    peers = {}
    if have_scipy:
        from scipy.special import rel_entr

        peers["scipy rel_entr(p, q).sum(-1)"] = lambda: rel_entr(p, q).sum(-1)
    else:
        peers["scipy"] = "scipy not installed"
    if torch is not None:
        tp, tq = torch.from_numpy(np.log(p)), torch.from_numpy(np.log(q))
        peers["PyTorch kl_div (CPU, log inputs)"] = lambda: (
            torch.nn.functional.kl_div(tq, tp, reduction="none", log_target=True).sum(-1).numpy()
        )
    else:
        peers["PyTorch kl_div"] = "PyTorch not installed"
    out.append(
        Case(
            f"kl, {n} pairs of {k}-category distributions",
            lambda: divest.kl(p, q),
            peers=peers,
            repeat=5,
            check=rel_error,
        )
    )
    if have_scipy:
        from scipy.spatial.distance import jensenshannon

        jpeers = {"scipy jensenshannon(axis=-1)": lambda: jensenshannon(p, q, axis=-1)}
    else:
        jpeers = {"scipy": "scipy not installed"}
    out.append(
        Case(
            f"js_distance, {n} pairs of {k}-category distributions",
            lambda: divest.js_distance(p, q),
            peers=jpeers,
            repeat=5,
            check=rel_error,
        )
    )

    rows, vocab = wl.size(wl.LOGITS_ROWS, quick), 32000
    z1, z2 = wl.logits_pair(rows, vocab)
    lpeers = {"NumPy softmax + KL (float32)": lambda: numpy_logits_kl(z1, z2)}
    if torch is not None:
        t1, t2 = torch.from_numpy(z1), torch.from_numpy(z2)
        lpeers["PyTorch log_softmax + kl_div (CPU)"] = lambda: (
            torch.nn.functional.kl_div(
                torch.log_softmax(t2, -1),
                torch.log_softmax(t1, -1),
                reduction="none",
                log_target=True,
            )
            .sum(-1)
            .numpy()
        )
    out.append(
        Case(
            f"kl from logits, {rows} x {vocab} float32",
            lambda: divest.kl(z1, z2, from_logits=True),
            peers=lpeers,
            repeat=3,
            check=rel_error,
        )
    )

    nk, dk = wl.size(wl.KNN_N, quick), 8
    x, y = wl.shifted_samples(nk, dk)
    kpeers = {"scipy cKDTree kNN-KL": (lambda: ckdtree_knn_kl(x, y, 5))} if have_scipy else {}
    out.append(
        Case(
            f"knn_kl, n=m={nk}, d={dk}, k=5",
            lambda: divest.knn_kl(x, y, 5),
            peers=kpeers,
            repeat=1,
            check=rel_error,
        )
    )
    epeers = (
        {"scipy cKDTree Kozachenko-Leonenko": (lambda: ckdtree_knn_entropy(x, 5))}
        if have_scipy
        else {}
    )
    out.append(
        Case(
            f"knn_entropy, n={nk}, d={dk}, k=5",
            lambda: divest.knn_entropy(x, 5),
            peers=epeers,
            repeat=3,
            check=rel_error,
        )
    )
    u, v = wl.correlated_normal(nk)
    try:
        from sklearn.feature_selection import mutual_info_regression

        # scikit-learn adds small noise and standardises: timing only (no value check).
        mpeers = {
            "scikit-learn mutual_info_regression (timing only)": lambda: mutual_info_regression(
                u[:, None], v, n_neighbors=3, random_state=0
            )
        }
    except ImportError:
        mpeers = {"scikit-learn": "scikit-learn not installed"}
    out.append(
        Case(
            f"knn_mi (KSG-1), n={nk}, 1-D x and y, k=3",
            lambda: divest.knn_mi(u, v, 3),
            peers=mpeers,
            repeat=3,
        )
    )

    nc, dc = wl.size(wl.KERNEL_N, quick), 8
    xc, yc = wl.shifted_samples(nc, dc)
    sigma = divest.divergence.median_sigma(xc, yc)
    if have_scipy:
        out.append(
            Case(
                f"cs_divergence, n=m={nc}, d={dc}",
                lambda: divest.cs_divergence(xc, yc, sigma),
                peers={"NumPy/scipy cdist reference": lambda: cdist_cs(xc, yc, sigma)},
                repeat=3,
                check=rel_error,
            )
        )
        out.append(
            Case(
                f"mmd (unbiased), n=m={nc}, d={dc}",
                lambda: divest.mmd(xc, yc, sigma),
                peers={"NumPy/scipy cdist reference": lambda: cdist_mmd(xc, yc, sigma)},
                repeat=3,
                check=rel_error,
            )
        )
    return out
