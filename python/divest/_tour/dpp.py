"""Tour section: determinantal point processes and least-squares designs."""

from __future__ import annotations

import numpy as np

from divest import dpp

from .._bench import median_time
from .._bench import workloads as wl
from .._bench.dpp import MISSING, dppy_call, finite_dpp
from . import save_figure


def _legendre(x, m):
    from numpy.polynomial import legendre

    return legendre.legvander(x, m - 1) * np.sqrt(2 * np.arange(m) + 1)


def run(report, quick=False, figures=True):
    rng = np.random.default_rng(2026)
    report.header("Determinantal point processes")

    # A DPP on a 2-D grid with a Gaussian L-ensemble: repulsive points.
    side = 30 if quick else 40
    g = np.stack(np.meshgrid(np.linspace(0, 1, side), np.linspace(0, 1, side)), -1).reshape(-1, 2)
    d2 = np.sum((g[:, None, :] - g[None, :, :]) ** 2, axis=-1)
    L = 5.0 * np.exp(-d2 / (2 * 0.08**2))
    d = dpp.DPP(L=L)
    report.line(
        f"L-ensemble on a {side}x{side} grid (Gaussian kernel): E|Y| = {d.expected_size():.1f}"
    )
    s = d.sample(rng=1)
    iid = rng.choice(len(g), size=len(s), replace=False)

    def nn(idx):
        p = g[idx]
        dd = np.sqrt(np.sum((p[:, None] - p[None]) ** 2, axis=-1)) + np.eye(len(p)) * 9
        return dd.min(axis=1).mean()

    report.line(
        f"one sample of {len(s)} points: mean nearest-neighbour distance {nn(s):.4f} "
        f"(i.i.d. points: {nn(iid):.4f})"
    )

    ns = 400 if quick else 2000
    many = d.sample(ns, rng=2)
    freq = np.bincount(np.concatenate(many), minlength=len(g)) / ns
    pi = d.inclusion_probabilities()
    z = np.max(np.abs(freq - pi) / np.sqrt(pi * (1 - pi) / ns + 1e-300))
    report.check(z < 6, f"{ns} samples: inclusion frequencies match K_ii (max |z| = {z:.2f})")

    # Timings: the benchmarks' workloads (Gaussian kernel of random 3-D points; a random
    # orthonormal basis).
    n3 = wl.size(wl.DPP_LENSEMBLE_N, quick)
    e = dpp.DPP(L=wl.dpp_gaussian_kernel(n3))
    t_s, _ = median_time(lambda: e.sample(rng=3), 21)
    FiniteDPP = finite_dpp()
    if FiniteDPP is None:
        peers = [("DPPy sample_exact('GS')", None, MISSING)]
    else:
        fl = FiniteDPP("likelihood", L_eig_dec=(e.eigenvalues, e.eigenvectors))
        rs = np.random.RandomState(0)
        tp, _ = median_time(dppy_call(lambda: fl.sample_exact(mode="GS", random_state=rs)), 3)
        peers = [("DPPy sample_exact('GS')", tp, "same eigendecomposition")]
    report.timing(f"one L-ensemble sample, N = {n3}, E|Y| = {e.expected_size():.0f}", t_s, peers)

    n, m = 5000, 100
    u = wl.dpp_basis(n, m)
    t_r, _ = median_time(lambda: dpp.sample_projection(u, method="rejection", rng=1), 21)
    t_c, _ = median_time(lambda: dpp.sample_projection(u, 16, method="chain", rng=1), 3)
    report.line(
        f"projection DPP N={n}, m={m}: rejection {t_r * 1e3:.1f} ms/sample, "
        f"chain (16 batched) {t_c / 16 * 1e3:.1f} ms/sample"
    )

    # Weighted least squares on [-1, 1]: DPP designs against i.i.d. designs.
    m = 10
    xc = rng.uniform(-1, 1, 2000)
    phi = _legendre(xc, m)
    y = 1 / (1 + 25 * xc**2)
    best = np.sqrt(np.mean((phi @ np.linalg.lstsq(phi, y, rcond=None)[0] - y) ** 2))
    reps = 20 if quick else 50
    med = {}
    for method, n_pts in (
        ("dpp", m),
        ("volume_rescaled", 2 * m),
        ("iid_optimal", 2 * m),
        ("iid", m),
        ("iid", 2 * m),
    ):
        errs = []
        for r in range(reps):
            des = dpp.least_squares_design(phi, n_pts, method=method, rng=r)
            try:
                c = dpp.weighted_least_squares(phi[des.indices], y[des.indices], des.weights)
                errs.append(np.sqrt(np.mean((phi @ c - y) ** 2)) / best)
            except ValueError:
                errs.append(np.inf)
        med[(method, n_pts)] = float(np.median(errs))
        report.line(
            f"Legendre m={m}, {method:>15} n={n_pts:>2}: median error / best = "
            f"{med[(method, n_pts)]:.3g}"
        )
    report.check(
        med[("dpp", m)] < 5 and med[("iid", m)] > 5 * med[("dpp", m)],
        "DPP designs stay near the best approximation; i.i.d. from μ does far worse",
    )

    if figures:

        def draw(plt):
            fig, ax = plt.subplots(1, 2, figsize=(8, 4))
            ax[0].scatter(*g[s].T, s=8)
            ax[0].set_title(f"DPP sample ({len(s)} points)")
            ax[1].scatter(*g[iid].T, s=8, color="C1")
            ax[1].set_title("i.i.d. uniform (same size)")
            for a in ax:
                a.set_aspect("equal")
                a.set_xticks([])
                a.set_yticks([])
            return fig

        save_figure(report, "tour_dpp.png", draw)
