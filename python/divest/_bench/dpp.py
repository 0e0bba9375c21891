"""DPP comparisons: DPPy's exact samplers (run with one BLAS thread, their fastest
setting on a small machine) when DPPy is installed. DPPy is an optional peer only."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from divest import dpp

from . import Case
from . import workloads as wl


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except ImportError:
        return contextlib.nullcontext()


def finite_dpp():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from dppy.finite_dpps import FiniteDPP
        return FiniteDPP
    except Exception:
        return None


def dppy_call(f):
    def run():
        with _one_blas_thread(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return f()

    return run


MISSING = "DPPy not installed (pip install dppy)"


def _projection_peer(FiniteDPP, u, rs):
    """DPPy's projection sampler on the basis `u`: (peers dict, the FiniteDPP or None)."""
    if FiniteDPP is None:
        return {"DPPy": MISSING}, None
    fd = FiniteDPP("correlation", projection=True, K_eig_dec=(np.ones(u.shape[1]), u))
    run = dppy_call(lambda: fd.sample_exact(mode="GS_bis", random_state=rs))
    return {"DPPy sample_exact(mode='GS_bis')": run}, fd


def cases(quick: bool):
    # The inputs are built with one BLAS thread: OpenBLAS workers that have just run
    # spin for a while after their call and would compete with the timed samplers.
    with _one_blas_thread():
        return _cases(quick)


def _cases(quick: bool):
    FiniteDPP = finite_dpp()
    rs = np.random.RandomState(0)
    out = []

    n, m = 5000, 100
    u = wl.dpp_basis(n, m)
    peers, fd = _projection_peer(FiniteDPP, u, rs)
    out.append(
        Case(
            f"projection DPP, N={n}, m={m}, one sample, method='chain'",
            lambda: dpp.sample_projection(u, method="chain", rng=1),
            peers=peers,
            repeat=21,
        )
    )
    out.append(
        Case(
            f"projection DPP, N={n}, m={m}, one sample, method='rejection'",
            lambda: dpp.sample_projection(u, method="rejection", rng=1),
            peers=peers,
            repeat=21,
        )
    )
    b = 8 if quick else 32
    peers_b = {}
    if fd is not None:
        peers_b[f"DPPy GS_bis, {b} samples in a loop"] = dppy_call(
            lambda: [fd.sample_exact(mode="GS_bis", random_state=rs) for _ in range(b)]
        )
    else:
        peers_b["DPPy"] = MISSING
    out.append(
        Case(
            f"projection DPP, N={n}, m={m}, {b} samples, method='chain' (in parallel)",
            lambda: dpp.sample_projection(u, b, method="chain", rng=1),
            peers=peers_b,
            repeat=3,
        )
    )
    ns = 200 if quick else 1000
    out.append(
        Case(
            f"projection DPP, N={n}, m={m}, {ns} samples, method='auto'",
            lambda: dpp.sample_projection(u, ns, rng=1),
            peers={
                "divest method='chain'": lambda: dpp.sample_projection(u, ns, method="chain", rng=1)
            },
            repeat=3,
        )
    )

    n2 = 10000
    u2 = wl.dpp_basis(n2, m)
    peers2, _ = _projection_peer(FiniteDPP, u2, rs)
    out.append(
        Case(
            f"projection DPP, N={n2}, m={m}, one sample, method='rejection'",
            lambda: dpp.sample_projection(u2, method="rejection", rng=1),
            peers=peers2,
            repeat=21,
        )
    )

    n3 = wl.size(wl.DPP_LENSEMBLE_N, quick)
    d = dpp.DPP(L=wl.dpp_gaussian_kernel(n3))
    peers3, peers4 = {}, {}
    if FiniteDPP is not None:
        fl = FiniteDPP("likelihood", L_eig_dec=(d.eigenvalues, d.eigenvectors))
        peers3["DPPy sample_exact(mode='GS')"] = dppy_call(
            lambda: fl.sample_exact(mode="GS", random_state=rs)
        )
        peers4["DPPy sample_exact_k_dpp(size=50, mode='GS')"] = dppy_call(
            lambda: fl.sample_exact_k_dpp(size=50, mode="GS", random_state=rs)
        )
    else:
        peers3["DPPy"] = peers4["DPPy"] = MISSING
    out.append(
        Case(
            f"L-ensemble (Gaussian kernel), N={n3}, E|Y|={d.expected_size():.0f}, "
            "one sample after the eigendecomposition",
            lambda: d.sample(rng=3),
            peers=peers3,
            repeat=21,
        )
    )
    out.append(
        Case(
            f"k-DPP, N={n3}, k=50, one sample after the eigendecomposition",
            lambda: d.sample_k(50, rng=3),
            peers=peers4,
            repeat=21,
        )
    )
    x = wl.dpp_design(n, 20)
    out.append(
        Case(
            f"volume sampling, N={n}, d=20, k=40 (no peer offers it)",
            lambda: dpp.volume_sample(x, 40, rng=5),
            repeat=21,
        )
    )
    return out
