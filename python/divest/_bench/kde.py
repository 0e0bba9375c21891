"""KDE comparisons: scipy gaussian_kde, scikit-learn KernelDensity, a NumPy GEMM reference
and, when installed, PyTorch on the CPU."""

from __future__ import annotations

import numpy as np

import divest

from . import Case, rel_error
from . import workloads as wl


def numpy_reference(x, q, h, chunk=1024):
    """Isotropic Gaussian KDE log-density the usual NumPy way: chunked GEMM for the
    squared distances, then a max-shifted log-sum-exp (NumPy only)."""
    xn = np.einsum("ij,ij->i", x, x)
    out = np.empty(q.shape[0])
    d = x.shape[1]
    for s in range(0, q.shape[0], chunk):
        qq = q[s : s + chunk]
        d2 = np.maximum(np.einsum("ij,ij->i", qq, qq)[:, None] + xn[None, :] - 2 * qq @ x.T, 0)
        v = -0.5 * d2 / h**2
        m = v.max(axis=1, keepdims=True)
        out[s : s + chunk] = m[:, 0] + np.log(np.exp(v - m).sum(axis=1))
    return out - np.log(x.shape[0]) - 0.5 * d * np.log(2 * np.pi * h**2)


def _torch_reference(x, q, h):
    try:
        import torch
    except ImportError:
        return "PyTorch not installed"
    tx, tq = torch.from_numpy(x), torch.from_numpy(q)
    d = x.shape[1]

    def run():
        d2 = torch.cdist(tq, tx, compute_mode="use_mm_for_euclid_dist") ** 2
        v = torch.logsumexp(-0.5 * d2 / h**2, dim=1)
        return (v - np.log(x.shape[0]) - 0.5 * d * np.log(2 * np.pi * h**2)).numpy()

    return run


def cases(quick: bool):
    out = []
    n, d = wl.size(wl.KDE_LOGPDF_N, quick), 16
    x, q = wl.kde_data(n, d)
    kde = divest.KDE(x)
    peers = {}
    try:
        from scipy.stats import gaussian_kde

        gk = gaussian_kde(x.T)
        peers["scipy gaussian_kde.logpdf"] = lambda: gk.logpdf(q.T)
    except ImportError:
        peers["scipy gaussian_kde.logpdf"] = "scipy not installed"
    try:
        from sklearn.neighbors import KernelDensity

        # scikit-learn takes an isotropic bandwidth only: compare at h = 1 on whitened-free data.
        kd = KernelDensity(bandwidth=1.0).fit(x)
        peers["scikit-learn KernelDensity (h=1)"] = lambda: kd.score_samples(q)
    except ImportError:
        peers["scikit-learn KernelDensity"] = "scikit-learn not installed"
    out.append(
        Case(
            f"logpdf, n=m={n}, d={d}, Scott full covariance",
            lambda: kde.logpdf(q),
            peers={k: v for k, v in peers.items() if "scipy" in k},
            repeat=3,
            check=rel_error,
        )
    )
    kde1 = divest.KDE(x, bandwidth=1.0)
    out.append(
        Case(
            f"logpdf, n=m={n}, d={d}, isotropic h=1",
            lambda: kde1.logpdf(q),
            peers={k: v for k, v in peers.items() if "scikit" in k},
            repeat=3,
            check=rel_error,
        )
    )

    n2, d2 = wl.size(wl.KDE_WIDE_N, quick), 256
    x2, q2 = wl.kde_data(n2, d2)
    kde2 = divest.KDE(x2, bandwidth=1.0)
    peers2 = {
        "NumPy GEMM + logsumexp": lambda: numpy_reference(x2, q2, 1.0),
        "PyTorch CPU cdist + logsumexp": _torch_reference(x2, q2, 1.0),
    }
    try:
        from sklearn.neighbors import KernelDensity

        kd2 = KernelDensity(bandwidth=1.0).fit(x2)
        peers2["scikit-learn KernelDensity"] = lambda: kd2.score_samples(q2)
    except ImportError:
        pass
    out.append(
        Case(
            f"logpdf, n=m={n2}, d={d2}, isotropic h=1",
            lambda: kde2.logpdf(q2),
            peers=peers2,
            repeat=5,
            check=rel_error,
        )
    )

    for n3, d3 in wl.KDE_SELECT_SHAPES:
        if quick:
            n3 = n3 // 2
        x3 = wl.kde_select(n3, d3)
        # Both sides start from the raw data (Scott covariance, whitening, then the pass).
        out.append(
            Case(
                f"select_bandwidth (32 factors) vs one leave-one-out pass, n={n3}, d={d3}",
                lambda x3=x3: divest.select_bandwidth(x3, warn_edge=False),
                peers={
                    "divest KDE(x).loo_logpdf() (one pass)": lambda x3=x3: divest.KDE(
                        x3
                    ).loo_logpdf()
                },
                repeat=5,
            )
        )
    return out
