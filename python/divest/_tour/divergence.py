"""Tour section: divergences (a batch of discrete divergences, logits, kNN and kernel
estimators against closed forms)."""

from __future__ import annotations

import numpy as np

import divest

from . import optional, timed


def run(report, quick=False, figures=True):
    rng = np.random.default_rng(7)
    special = optional("scipy.special")
    distance = optional("scipy.spatial.distance")

    report.header("Divergences")
    n, k = (2000, 1000) if quick else (10000, 1000)
    p = rng.dirichlet(np.ones(k), n)
    q = rng.dirichlet(np.ones(k), n)
    report.line(f"a batch of {n} pairs of {k}-category distributions")
    t, v = timed(lambda: divest.kl(p, q), repeat=3)
    peers = []
    if special is not None:
        ts, ref = timed(lambda: special.rel_entr(p, q).sum(-1), repeat=3)
        peers.append(("scipy rel_entr(p, q).sum(-1)", ts, ""))
        report.check(np.max(np.abs(v - ref) / ref) < 1e-12, "kl equals scipy's rel_entr sum")
    report.timing("kl", t, peers)
    t, v = timed(lambda: divest.js_distance(p, q), repeat=3)
    peers = []
    if distance is not None:
        ts, ref = timed(lambda: distance.jensenshannon(p, q, axis=-1), repeat=3)
        peers.append(("scipy jensenshannon", ts, ""))
        report.check(np.max(np.abs(v - ref) / ref) < 1e-12, "js_distance equals scipy's jensenshannon")
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
    report.check(not np.isnan(js).any() and (js >= 0).all(),
                 f"20,000 nearly identical pairs: no NaN, none negative{note}")
    report.check(np.isfinite(divest.js([0, 1], [5e-324, 1])), "js([0, 1], [5e-324, 1]) is finite")

    rows = 128 if quick else 512
    z1 = rng.standard_normal((rows, 32000)).astype(np.float32)
    z2 = rng.standard_normal((rows, 32000)).astype(np.float32)
    t, v = timed(lambda: divest.kl(z1, z2, from_logits=True), repeat=3)
    report.line(f"KL between softmaxes of {rows} x 32000 float32 logits, in log space")
    report.timing("kl(from_logits=True)", t)

    nm = 2000 if quick else 5000
    rho = 0.8
    u = rng.standard_normal(nm)
    w = rho * u + np.sqrt(1 - rho**2) * rng.standard_normal(nm)
    want = -0.5 * np.log(1 - rho**2)
    t, mi = timed(lambda: divest.knn_mi(u, w, k=5), repeat=1)
    report.check(abs(mi - want) < 0.05,
                 f"KSG mutual information of a bivariate normal (rho = {rho}, n = {nm}): "
                 f"{mi:.4f} vs closed form {want:.4f}")
    report.timing("knn_mi", t)
    x = rng.standard_normal((nm, 2))
    h = divest.knn_entropy(x, k=3)
    report.check(abs(h - np.log(2 * np.pi * np.e)) < 0.05,
                 f"Kozachenko-Leonenko entropy of N(0, I_2): {h:.4f} vs {np.log(2 * np.pi * np.e):.4f}")
    y = rng.standard_normal((nm, 8)) + 0.3
    x8 = rng.standard_normal((nm, 8))
    t, cs = timed(lambda: divest.cs_divergence(x8, y), repeat=1)
    report.timing(f"cs_divergence, n = m = {nm}, d = 8 (median heuristic), value {cs:.4f}", t)
