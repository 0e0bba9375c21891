"""DPP comparisons: DPPy's exact samplers (run with one BLAS thread, their fastest
setting on a small machine) when DPPy is installed. DPPy is an optional peer only."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from divest import dpp

from . import Case


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except ImportError:
        return contextlib.nullcontext()


def _dppy():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from dppy.finite_dpps import FiniteDPP
        return FiniteDPP
    except Exception:
        return None


def _dppy_call(f):
    def run():
        with _one_blas_thread(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return f()

    return run


def _orthonormal(n, m, seed):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((n, m)))[0]


def cases(quick: bool):
    # The inputs are built with one BLAS thread: OpenBLAS workers that have just run
    # spin for a while after their call and would compete with the timed samplers.
    with _one_blas_thread():
        return _cases(quick)


def _cases(quick: bool):
    FiniteDPP = _dppy()
    missing = "DPPy not installed (pip install dppy)"
    rs = np.random.RandomState(0)
    out = []

    n, m = 5000, 100
    u = _orthonormal(n, m, 0)
    peers = {}
    if FiniteDPP is not None:
        fd = FiniteDPP("correlation", projection=True, K_eig_dec=(np.ones(m), u))
        peers["DPPy sample_exact(mode='GS_bis')"] = _dppy_call(
            lambda: fd.sample_exact(mode="GS_bis", random_state=rs))
    else:
        peers["DPPy"] = missing
    out.append(Case(f"projection DPP, N={n}, m={m}, one sample, method='chain'",
                    lambda: dpp.sample_projection(u, method="chain", rng=1), peers=peers,
                    repeat=21))
    out.append(Case(f"projection DPP, N={n}, m={m}, one sample, method='rejection'",
                    lambda: dpp.sample_projection(u, method="rejection", rng=1), peers=peers,
                    repeat=21))
    b = 8 if quick else 32
    peers_b = {}
    if FiniteDPP is not None:
        peers_b[f"DPPy GS_bis, {b} samples in a loop"] = _dppy_call(
            lambda: [fd.sample_exact(mode="GS_bis", random_state=rs) for _ in range(b)])
    else:
        peers_b["DPPy"] = missing
    out.append(Case(f"projection DPP, N={n}, m={m}, {b} samples, method='chain' (in parallel)",
                    lambda: dpp.sample_projection(u, b, method="chain", rng=1), peers=peers_b,
                    repeat=3))
    ns = 200 if quick else 1000
    out.append(Case(f"projection DPP, N={n}, m={m}, {ns} samples, method='auto'",
                    lambda: dpp.sample_projection(u, ns, rng=1),
                    peers={"divest method='chain'":
                           lambda: dpp.sample_projection(u, ns, method="chain", rng=1)},
                    repeat=3))

    n2 = 10000
    u2 = _orthonormal(n2, m, 1)
    peers2 = {}
    if FiniteDPP is not None:
        fd2 = FiniteDPP("correlation", projection=True, K_eig_dec=(np.ones(m), u2))
        peers2["DPPy sample_exact(mode='GS_bis')"] = _dppy_call(
            lambda: fd2.sample_exact(mode="GS_bis", random_state=rs))
    else:
        peers2["DPPy"] = missing
    out.append(Case(f"projection DPP, N={n2}, m={m}, one sample, method='rejection'",
                    lambda: dpp.sample_projection(u2, method="rejection", rng=1), peers=peers2,
                    repeat=21))

    n3 = 1000 if quick else 2000
    g = np.random.default_rng(2).standard_normal((n3, 3))
    L = np.exp(-0.5 * np.sum((g[:, None, :] - g[None, :, :]) ** 2, axis=-1))
    d = dpp.DPP(L=L)
    peers3, peers4 = {}, {}
    if FiniteDPP is not None:
        fl = FiniteDPP("likelihood", L_eig_dec=(d.eigenvalues, d.eigenvectors))
        peers3["DPPy sample_exact(mode='GS')"] = _dppy_call(
            lambda: fl.sample_exact(mode="GS", random_state=rs))
        peers4["DPPy sample_exact_k_dpp(size=50, mode='GS')"] = _dppy_call(
            lambda: fl.sample_exact_k_dpp(size=50, mode="GS", random_state=rs))
    else:
        peers3["DPPy"] = peers4["DPPy"] = missing
    out.append(Case(f"L-ensemble (Gaussian kernel), N={n3}, E|Y|={d.expected_size():.0f}, "
                    "one sample after the eigendecomposition",
                    lambda: d.sample(rng=3), peers=peers3, repeat=21))
    out.append(Case(f"k-DPP, N={n3}, k=50, one sample after the eigendecomposition",
                    lambda: d.sample_k(50, rng=3), peers=peers4, repeat=21))
    x = np.random.default_rng(4).standard_normal((n, 20))
    out.append(Case(f"volume sampling, N={n}, d=20, k=40 (no peer offers it)",
                    lambda: dpp.volume_sample(x, 40, rng=5), repeat=21))
    return out
