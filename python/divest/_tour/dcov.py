"""Tour section: distance covariance, distance correlation and energy statistics."""

from __future__ import annotations

import numpy as np

import divest

from . import optional, timed


def run(report, quick=False, figures=True):
    rng = np.random.default_rng(2026)
    dcor = optional("dcor")
    report.header("Distance correlation and energy statistics")

    n = 3000 if quick else 5000
    x = rng.standard_normal((n, 10))
    y = np.c_[np.sin(2 * x[:, :2]), x[:, 2:5] ** 2] + 0.5 * rng.standard_normal((n, 5))
    report.line(f"non-linear dependence, n = {n}, p = 10, q = 5 (Pearson correlation "
                f"of x[:, 0] and y[:, 2]: {np.corrcoef(x[:, 0], y[:, 2])[0, 1]:+.3f})")
    t, r = timed(lambda: divest.dcor(x, y), repeat=3)
    peers = []
    if dcor is not None:
        tp, rp = timed(lambda: dcor.distance_correlation(x, y), repeat=1)
        report.check(abs(r - rp) <= 1e-10 * rp, f"dcor = {r:.12f}, equals dcor.distance_correlation "
                                               f"to {abs(r - rp) / rp:.1e} relative")
        peers.append(("dcor.distance_correlation", tp, "builds two n×n matrices"))
    else:
        peers.append(("dcor.distance_correlation", None, "dcor not installed"))
    report.timing("dcor (O(n) memory)", t, peers)

    res = divest.dcov_test(x[:1000, :3], y[:1000, :3], n_resamples=499, rng=1)
    report.line(f"dcov_test, n = 1000, 499 permutations: statistic {res.statistic:.4g}, "
                f"p = {res.pvalue:.4g}")
    report.check(res.pvalue <= 0.01, "the permutation test detects the non-linear dependence")
    ind = divest.dcov_test(x[:1000, :3], rng.standard_normal((1000, 3)), n_resamples=499, rng=1)
    report.line(f"   the same test under independence: p = {ind.pvalue:.3f}")

    m = 200_000 if quick else 1_000_000
    z = rng.standard_normal(m)
    w = z**2 + rng.standard_normal(m)
    offset = 1e10
    zs, ws = z + offset, w + offset
    t1, r1 = timed(lambda: divest.dcor(zs, ws), repeat=3)
    # Reference: the same (rounded) data, centred exactly (zs - offset is exact).
    ref = divest.dcor(zs - offset, ws - offset)
    report.line(f"1-D, n = {m}, both samples shifted by {offset:g} (e.g. ID-like columns):")
    report.check(abs(r1 - ref) <= 1e-10 * ref,
                 f"O(n log n) path: dcor = {r1:.12f} vs {ref:.12f} on exactly centred data")
    peers = []
    if dcor is not None:
        sub = 200_000
        tp, rp = timed(lambda: dcor.distance_correlation(zs[:sub], ws[:sub],
                                                          method="mergesort"), repeat=1)
        good = divest.dcor(zs[:sub], ws[:sub])
        peers.append((f"dcor mergesort (n = {sub})", tp * m / sub,
                      f"scaled to n; shifted result {float(rp):.6g} vs {good:.6g}"))
    report.timing("dcor, 1-D", t1, peers)

    a = rng.standard_normal((n, 10))
    b = rng.standard_normal((n, 10)) * 1.05
    te, e = timed(lambda: divest.energy_distance(a, b), repeat=3)
    peers = []
    if dcor is not None and not quick:
        tp, ep = timed(lambda: dcor.energy_distance(a, b), repeat=1)
        report.check(abs(e - ep) <= 1e-10 * abs(ep), f"energy distance equals dcor to "
                                                    f"{abs(e - ep) / abs(ep):.1e} relative")
        peers.append(("dcor.energy_distance", tp, ""))
    report.timing(f"energy distance, {n} vs {n}, d = 10", te, peers)
    j = divest.jdcov(x[:2000, 0], x[:2000, 1], np.sign(x[:2000, 0] * x[:2000, 1]), scale=True)
    report.line(f"jdcov of (X1, X2, sign(X1 X2)), pairwise independent but jointly dependent: "
                f"{j:.4f} (dcor of each pair: "
                f"{divest.dcor(x[:2000, 0], np.sign(x[:2000, 0] * x[:2000, 1])):.3f})")
