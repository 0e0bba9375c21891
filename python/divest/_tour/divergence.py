"""Tour section: divergences (a batch of discrete divergences, logits, kNN and kernel
estimators against closed forms)."""

from __future__ import annotations

import numpy as np

import divest

from .._bench import median_time, rel_error
from .._bench import workloads as wl
from . import optional


def run(report, quick=False, figures=True):
    rng = np.random.default_rng(7)
    special = optional("scipy.special")
    distance = optional("scipy.spatial.distance")

    report.header("Divergences")
    n, k = wl.size(wl.DISCRETE_ROWS, quick), 1000
    p, q = wl.discrete_pairs(n, k)
    report.line(f"a batch of {n} pairs of {k}-category distributions")
    t, v = median_time(lambda: divest.kl(p, q), 5)
    peers = []
    if special is not None:
        ts, ref = median_time(lambda: special.rel_entr(p, q).sum(-1), 3)
        peers.append(("scipy rel_entr(p, q).sum(-1)", ts, ""))
        report.check(rel_error(v, ref) < 1e-12, "kl equals scipy's rel_entr sum")
    report.timing("kl", t, peers)
    t, v = median_time(lambda: divest.js_distance(p, q), 5)
    peers = []
    if distance is not None:
        ts, ref = median_time(lambda: distance.jensenshannon(p, q, axis=-1), 3)
        peers.append(("scipy jensenshannon", ts, ""))
        report.check(rel_error(v, ref) < 1e-12, "js_distance equals scipy's jensenshannon")
    report.timing("js_distance", t, peers)
    a = rng.random((20000, 10))
    b = a + 1e-12 * rng.random((20000, 10))
    a /= a.sum(-1, keepdims=True)
    b /= b.sum(-1, keepdims=True)
    js = divest.js(a, b)
    note = ""
    if distance is not None:
        with np.errstate(all="ignore"):
            note = f" (scipy: {int(np.isnan(distance.jensenshannon(a, b, axis=-1)).sum())} NaN)"
    report.check(
        not np.isnan(js).any() and (js >= 0).all(),
        f"20,000 nearly identical pairs: no NaN, none negative{note}",
    )
    report.check(np.isfinite(divest.js([0, 1], [5e-324, 1])), "js([0, 1], [5e-324, 1]) is finite")

    rows, vocab = wl.size(wl.LOGITS_ROWS, quick), 32000
    z1, z2 = wl.logits_pair(rows, vocab)
    t, v = median_time(lambda: divest.kl(z1, z2, from_logits=True), 3)
    report.line(f"KL between softmaxes of {rows} x {vocab} float32 logits, in log space")
    report.timing("kl(from_logits=True)", t)

    nm = wl.size(wl.KERNEL_N, quick)
    rho = 0.8
    u, w = wl.correlated_normal(nm, rho)
    want = -0.5 * np.log(1 - rho**2)
    t, mi = median_time(lambda: divest.knn_mi(u, w, k=5), 1)
    report.check(
        abs(mi - want) < 0.05,
        f"KSG mutual information of a bivariate normal (rho = {rho}, n = {nm}): "
        f"{mi:.4f} vs closed form {want:.4f}",
    )
    report.timing("knn_mi", t)
    x8, y8 = wl.shifted_samples(nm, 8)
    h = divest.knn_entropy(x8[:, :2], k=3)
    h_true = np.log(2 * np.pi * np.e)
    report.check(
        abs(h - h_true) < 0.05,
        f"Kozachenko-Leonenko entropy of N(0, I_2): {h:.4f} vs {h_true:.4f}",
    )
    t, cs = median_time(lambda: divest.cs_divergence(x8, y8), 1)
    report.timing(f"cs_divergence, n = m = {nm}, d = 8 (median heuristic), value {cs:.4f}", t)
