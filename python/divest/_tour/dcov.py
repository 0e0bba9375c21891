"""Tour section: distance covariance, distance correlation and energy statistics."""

from __future__ import annotations

import numpy as np

import divest

from .._bench import median_time, rel_error
from .._bench import workloads as wl
from . import optional


def run(report, quick=False, figures=True):
    rng = np.random.default_rng(2026)
    dcor = optional("dcor")
    report.header("Distance correlation and energy statistics")

    n, p, q = wl.size(wl.DCOV_N, quick), 10, 5
    x, y = wl.dcov_pair(n, p, q)
    report.line(
        f"y[:, :2] = x[:, :2]**2 + noise, n = {n}, p = {p}, q = {q} (Pearson correlation "
        f"of x[:, 0] and y[:, 0]: {np.corrcoef(x[:, 0], y[:, 0])[0, 1]:+.3f})"
    )
    t, r = median_time(lambda: divest.dcor(x, y), 3)
    peers = []
    if dcor is not None:
        tp, rp = median_time(lambda: dcor.distance_correlation(x, y), 3)
        err = rel_error(r, rp)
        report.check(
            err <= 1e-10, f"dcor = {r:.12f}, equals dcor.distance_correlation to {err:.1e} relative"
        )
        peers.append(("dcor.distance_correlation", tp, "builds two n×n matrices"))
    else:
        peers.append(("dcor.distance_correlation", None, "dcor not installed"))
    report.timing("dcor (O(n) memory)", t, peers)

    xt, yt = wl.dcov_pair(*wl.DCOV_TEST_SHAPE, seed=wl.DCOV_TEST_SEED)
    res = divest.dcov_test(xt, yt, n_resamples=499, rng=1)
    report.line(
        f"dcov_test, n = {len(xt)}, 499 permutations: statistic {res.statistic:.4g}, "
        f"p = {res.pvalue:.4g}"
    )
    report.check(res.pvalue <= 0.01, "the permutation test detects the non-linear dependence")
    ind = divest.dcov_test(xt, rng.standard_normal(yt.shape), n_resamples=499, rng=1)
    report.line(f"   the same test under independence: p = {ind.pvalue:.3f}")

    m = wl.size(wl.DCOV_1D_N, quick)
    offset = 1e10
    zs, ws = wl.dcov_1d(m, offset=offset)
    t1, r1 = median_time(lambda: divest.dcor(zs, ws), 5)
    # Reference: the same (rounded) data, centred exactly (zs - offset is exact).
    ref = divest.dcor(zs - offset, ws - offset)
    report.line(f"1-D, n = {m}, both samples shifted by {offset:g} (e.g. ID-like columns):")
    report.check(
        rel_error(r1, ref) <= 1e-10,
        f"O(n log n) path: dcor = {r1:.12f} vs {ref:.12f} on exactly centred data",
    )
    peers = []
    if dcor is not None:
        tp, rp = median_time(lambda: dcor.distance_correlation(zs, ws, method="mergesort"), 3)
        peers.append(("dcor mergesort", tp, f"its result on the shifted data: {float(rp):.6g}"))
    report.timing("dcor, 1-D", t1, peers)

    ne = wl.size(wl.ENERGY_N, quick)
    a, b = wl.energy_pair(ne)
    te, e = median_time(lambda: divest.energy_distance(a, b), 3)
    peers = []
    if dcor is not None:
        tp, ep = median_time(lambda: dcor.energy_distance(a, b), 3)
        err = rel_error(e, ep)
        report.check(err <= 1e-10, f"energy distance equals dcor to {err:.1e} relative")
        peers.append(("dcor.energy_distance", tp, ""))
    report.timing(f"energy distance, {ne} vs {ne}, d = {a.shape[1]}", te, peers)
    s = np.sign(x[:2000, 0] * x[:2000, 1])
    j = divest.jdcov(x[:2000, 0], x[:2000, 1], s, scale=True)
    report.line(
        f"jdcov of (X1, X2, sign(X1 X2)), pairwise independent but jointly dependent: "
        f"{j:.4f} (dcor of each pair: {divest.dcor(x[:2000, 0], s):.3f})"
    )
