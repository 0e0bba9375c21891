"""Hard edges of divest.dpp (issue 18): Ctrl-C on every long sampler, absurd sizes and
counts (never an abort, never a silent wrap-around), extreme magnitudes and unusual
array layouts. Calls that could crash or hang run in a child process, so a regression
shows as a failure rather than a dead test run."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import divest
import divest.dpp as dpp


def run_child(code: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter that imports this same divest."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(divest.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------------------
# Ctrl-C: each call below runs for minutes when left alone (many samples, each a few ms
# of rejection sampling on one core); SIGINT arrives after 1 s and must surface as
# KeyboardInterrupt within a few seconds, after which a small call still works.

_SETUP = """
import os, signal, threading, time
import numpy as np
import divest.dpp as dpp
g = np.random.default_rng(0)
X = g.standard_normal((1500, 120))
U = np.linalg.qr(X)[0]
"""

_LONG_CALLS = {
    "sample_projection": "dpp.sample_projection(U, 20_000, method='rejection', rng=0)",
    "sample_projection_auto": "dpp.sample_projection(U, 20_000, rng=0)",
    "sample_k": "D.sample_k(120, 20_000, rng=0)",
    "sample": "D.sample(20_000, rng=0)",
    "volume_sample": "dpp.volume_sample(X, 130, n_samples=20_000, rng=0)",
    "volume_rescaled_sample": "dpp.volume_rescaled_sample(X, 130, n_samples=20_000, rng=0)",
    "least_squares_design": "dpp.least_squares_design(X, 120 * 20_000, rng=0)",
}


@pytest.mark.parametrize("name", list(_LONG_CALLS))
def test_ctrl_c_stops_long_sampler(name):
    extra = ""
    if name in ("sample_k", "sample"):
        # A rank-120 L-ensemble on 800 items (k ln(k+1) < N: "auto" picks rejection).
        extra = "D = dpp.DPP(L=(X[:800] * 3) @ (X[:800] * 3).T)\n"
    code = (
        _SETUP
        + extra
        + f"""
sent = []
def fire():
    time.sleep(1.0)
    sent.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=fire, daemon=True).start()
t0 = time.monotonic()
try:
    {_LONG_CALLS[name]}
    print("FINISHED", time.monotonic() - t0, flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", time.monotonic() - sent[0], flush=True)
s = dpp.sample_projection(U[:, :3], 4, rng=1)
assert s.shape == (4, 3), s.shape
print("AFTER OK", flush=True)
"""
    )
    try:
        r = run_child(code, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}: Ctrl-C was ignored (the child ran past 60 s)")
    out = r.stdout.split()
    assert r.returncode == 0, (r.stdout, r.stderr[-2000:])
    assert "INTERRUPTED" in out, f"{name} finished before the signal: {r.stdout}"
    latency = float(out[out.index("INTERRUPTED") + 1])
    assert latency < 10.0, f"{name}: KeyboardInterrupt {latency:.1f} s after SIGINT"
    assert "AFTER" in out


# --------------------------------------------------------------------------------------
# Absurd sizes and counts: 0 is a valid empty request; -1, 2**62, 2**64 and 10**10 give a
# ValueError/TypeError/MemoryError naming the argument. Never an abort, an OverflowError
# from the binding, or a silently empty result.

_COUNT_CALLS = {
    "sample_projection.n_samples": ("n_samples", "dpp.sample_projection(U, V, rng=0)", (None, 4)),
    "DPP.sample.n_samples": ("n_samples", "D.sample(V, rng=0)", None),
    "DPP.sample_k.n_samples": ("n_samples", "D.sample_k(2, V, rng=0)", (None, 2)),
    "DPP.sample_k.k": ("k", "D.sample_k(V, 3, rng=0)", (3, None)),
    "DPP.log_normaliser_k.k": ("k", "D.log_normaliser_k(V)", "scalar"),
    "volume_sample.n_samples": (
        "n_samples",
        "dpp.volume_sample(X, 4, n_samples=V, rng=0)",
        (None, 4),
    ),
    "volume_sample.k": ("k", "dpp.volume_sample(X, V, n_samples=2, rng=0)", (2, None)),
    "volume_rescaled_sample.n_samples": (
        "n_samples",
        "dpp.volume_rescaled_sample(X, 4, n_samples=V, rng=0)",
        (None, 4),
    ),
    "volume_rescaled_sample.k": (
        "k",
        "dpp.volume_rescaled_sample(X, V, n_samples=2, rng=0)",
        (2, None),
    ),
    "least_squares_design.n": ("n", "dpp.least_squares_design(X, V, rng=0).indices", None),
    "least_squares_design.n.vr": (
        "n",
        "dpp.least_squares_design(X, V, method='volume_rescaled', rng=0).indices",
        None,
    ),
    "least_squares_design.n.iid": (
        "n",
        "dpp.least_squares_design(X, V, method='iid_optimal', rng=0).indices",
        None,
    ),
}

_VALUES = [0, -1, 2**62, 2**64, 10**10]


@pytest.mark.parametrize("case", list(_COUNT_CALLS))
def test_absurd_counts_raise_cleanly(case):
    arg, call, _ = _COUNT_CALLS[case]
    code = f"""
import json
import numpy as np
import divest.dpp as dpp
g = np.random.default_rng(0)
X = g.standard_normal((30, 3))
U = np.linalg.qr(g.standard_normal((30, 4)))[0]
D = dpp.DPP(L=X @ X.T)
out = []
for V in {_VALUES!r}:
    try:
        r = {call}
        a = np.asarray(r) if not isinstance(r, list) else np.empty((len(r), 0))
        out.append(["ok", [int(s) for s in a.shape], float(a.astype(float).sum())
                    if a.size else 0.0])
    except (ValueError, TypeError, MemoryError, OverflowError) as e:
        out.append([type(e).__name__, str(e)])
    print(json.dumps(out[-1]), flush=True)
print("RESULT", json.dumps(out))
"""
    r = run_child(code, timeout=120)
    assert r.returncode == 0, f"{case}: child died (rc {r.returncode}): {r.stderr[-2000:]}"
    line = [s for s in r.stdout.splitlines() if s.startswith("RESULT ")][0]
    results = json.loads(line[len("RESULT ") :])
    for v, res in zip(_VALUES, results):
        if res[0] == "ok":
            shape = res[1]
            if case == "DPP.log_normaliser_k.k":
                # e_k = 0 for k above the rank (3): log e_k = -inf, a right value.
                assert v == 0 or res[2] == -math.inf, (v, res)
                continue
            # Only the empty request may succeed, with zero samples or items.
            assert v == 0, f"{case}: {v} accepted, returned shape {shape}"
            assert 0 in shape or shape == [], (case, shape)
        else:
            assert res[0] != "OverflowError", f"{case}={v}: OverflowError from the binding: {res}"
            assert arg in res[1], f"{case}={v}: message does not name {arg}: {res}"
            if v == 0:
                assert res[0] == "ValueError", (case, res)


def test_sample_projection_count_does_not_wrap_around():
    # 2**62 samples of 4 items: 2**64 items, which wrapped to an empty array.
    u = np.linalg.qr(np.random.default_rng(1).standard_normal((10, 4)))[0]
    with pytest.raises(MemoryError, match="n_samples"):
        dpp.sample_projection(u, 2**62, rng=0)
    with pytest.raises(ValueError, match="n_samples"):
        dpp.sample_projection(u, 2**64, rng=0)


def test_sample_k_zero_and_empty_requests():
    x = np.random.default_rng(2).standard_normal((8, 3))
    d = dpp.DPP(L=x @ x.T)
    assert d.sample_k(0, rng=0).shape == (0,)
    assert d.sample_k(2, 0, rng=0).shape == (0, 2)
    assert d.sample(0, rng=0) == []
    assert dpp.volume_sample(x, 3, n_samples=0, rng=0).shape == (0, 3)
    assert d.log_normaliser_k(0) == 0.0
    assert d.log_normaliser_k(4) == -math.inf
    assert d.log_normaliser_k(2**62) == -math.inf


# --------------------------------------------------------------------------------------
# Extreme magnitudes and layouts: the same answer as the well-scaled problem, or a
# ValueError naming the argument.


def _volume_probs_exact(x, k):
    """Exact volume-sampling probabilities by enumeration (float64 on a unit-scaled X)."""
    from itertools import combinations

    n, _ = x.shape
    sets = list(combinations(range(n), k))
    w = np.array([np.linalg.det(x[list(s)].T @ x[list(s)]) for s in sets])
    return sets, w / w.sum()


@pytest.mark.parametrize("scale", [1e300, 1e-300, 1e-310, 1e160, 1e-170])
def test_volume_sample_scale_invariant(scale):
    # P(S) is invariant to scaling X (and to scaling each column), so the samples are
    # valid and identical in distribution; with the same rng they are the same sets.
    g = np.random.default_rng(3)
    x = g.standard_normal((7, 2))
    ref = dpp.volume_sample(x, 3, rng=5, n_samples=200)
    got = dpp.volume_sample(x * scale, 3, rng=5, n_samples=200)
    np.testing.assert_array_equal(got, ref)
    cols = x * np.array([scale, 1.0])
    got = dpp.volume_sample(cols, 3, rng=5, n_samples=200)
    np.testing.assert_array_equal(got, ref)
    got = dpp.volume_rescaled_sample(x * scale, 3, rng=5, n_samples=50)
    np.testing.assert_array_equal(got, dpp.volume_rescaled_sample(x, 3, rng=5, n_samples=50))


def test_volume_sample_badly_scaled_columns_matches_enumeration():
    # Columns in units 1e8 apart were called rank deficient. Exact distribution check.
    g = np.random.default_rng(4)
    x = g.standard_normal((6, 2))
    sets, probs = _volume_probs_exact(x, 3)
    s = dpp.volume_sample(x * np.array([1e-8, 1e8]), 3, rng=0, n_samples=20_000)
    counts = {}
    for row in map(tuple, s):
        counts[row] = counts.get(row, 0) + 1
    obs = np.array([counts.get(t, 0) for t in sets], dtype=float)
    exp = probs * len(s)
    assert sum(counts.values()) == obs.sum()
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    assert chi2 < 60.0, chi2  # 19 degrees of freedom; 1e-5 quantile is about 53


def test_design_error_names_its_argument():
    with pytest.raises(ValueError, match="Phi_candidates"):
        dpp.least_squares_design(np.zeros((5, 2)), 3, rng=0)


@pytest.mark.parametrize("scale", [1e300, 1e-300, 1e-310])
def test_least_squares_design_extreme_scale(scale):
    g = np.random.default_rng(5)
    phi = g.standard_normal((20, 3))
    for method in ("dpp", "volume_rescaled", "iid_optimal"):
        ref = dpp.least_squares_design(phi, 5, method=method, rng=1)
        got = dpp.least_squares_design(phi * scale, 5, method=method, rng=1)
        np.testing.assert_array_equal(got.indices, ref.indices)
        np.testing.assert_allclose(got.weights, ref.weights, rtol=1e-9)


def test_optimal_weights_extreme_rows():
    phi = np.array([[3.0, 4.0], [1e-170, 1e-170], [1e300, 1e300]])
    # Closed form m / Σ φ²: 2 / 25; 2 / (2e-340) = 1e340 overflows; 2 / 2e600 underflows.
    with pytest.raises(ValueError, match="Phi row 1"):
        dpp.optimal_weights(phi)
    w = dpp.optimal_weights(phi[[0, 2]])
    assert w[0] == pytest.approx(2 / 25, rel=1e-15)
    assert w[1] == 0.0
    w = dpp.optimal_weights(np.array([[1e-150, 0.0]]))
    assert w[0] == pytest.approx(2e300, rel=1e-13)


def test_weighted_least_squares_extreme_scales():
    g = np.random.default_rng(6)
    phi = g.standard_normal((12, 3))
    y = g.standard_normal(12)
    w = g.uniform(0.5, 2.0, 12)
    ref = dpp.weighted_least_squares(phi, y, w)
    # Scaling column j by s_j divides c_j by s_j; scaling y scales c; scaling w changes
    # nothing.
    s = np.array([1e300, 1e-300, 1.0])
    got = dpp.weighted_least_squares(phi * s, y, w)
    np.testing.assert_allclose(got * s, ref, rtol=1e-10)
    np.testing.assert_allclose(
        dpp.weighted_least_squares(phi, y * 1e-300, w) * 1e300, ref, rtol=1e-10
    )
    np.testing.assert_allclose(dpp.weighted_least_squares(phi, y, w * 1e300), ref, rtol=1e-10)
    np.testing.assert_allclose(dpp.weighted_least_squares(phi, y, w * 1e-310), ref, rtol=1e-8)
    np.testing.assert_allclose(
        dpp.weighted_least_squares(phi * 1e-300, y * 1e-300, w), ref, rtol=1e-10
    )
    with pytest.raises(ValueError, match="float64 range"):
        dpp.weighted_least_squares(phi * 1e-310, y * 1e300, w)


def _l_probs(L):
    from itertools import combinations

    n = L.shape[0]
    sets = [s for r in range(n + 1) for s in combinations(range(n), r)]
    det = np.array([np.linalg.det(L[np.ix_(s, s)]) if s else 1.0 for s in sets])
    return sets, det / det.sum()


@pytest.mark.parametrize("scale", [1e300, 1e-300, 1e-310])
def test_dpp_extreme_scale_kernel(scale):
    # L and c L are different DPPs, but log_normaliser_k scales exactly: log e_k(cλ) =
    # k log c + log e_k(λ); eigenvalues scale by c.
    g = np.random.default_rng(7)
    x = g.standard_normal((6, 3))
    L = x @ x.T
    d0, d1 = dpp.DPP(L=L), dpp.DPP(L=L * scale)
    np.testing.assert_allclose(
        d1.eigenvalues, d0.eigenvalues * scale, rtol=1e-9, atol=1e-12 * scale * d0.eigenvalues.max()
    )
    for k in (1, 2, 3):
        assert d1.log_normaliser_k(k) == pytest.approx(
            d0.log_normaliser_k(k) + k * math.log(scale), rel=1e-12
        )
    s = d1.sample_k(2, 10, rng=0)
    assert s.shape == (10, 2)


def test_dpp_kernel_at_float64_limit():
    # Entries 1e308: the eigenvalue 2e308 does not exist in float64: a clear ValueError.
    with pytest.raises(ValueError, match="L has an eigenvalue beyond"):
        dpp.DPP(L=np.full((2, 2), 1e308))
    # 4e307 in every entry: eigenvalue 8e307, representable; an L-ensemble whose sample
    # takes the one direction with probability λ/(1+λ) = 1.
    d = dpp.DPP(L=np.full((2, 2), 4e307))
    assert d.rank == 1
    assert np.isfinite(d.eigenvalues).all()
    assert d.sample(rng=0).shape == (1,)
    assert d.expected_size() == 1.0


def test_dpp_float32_kernel_matches_float64():
    # A PSD kernel rounded to float32 has tiny negative eigenvalues (~1e-7 relative);
    # they are float32 rounding, not an error.
    g = np.random.default_rng(8)
    x = g.standard_normal((12, 3))
    L = x @ x.T
    d32 = dpp.DPP(L=L.astype(np.float32))
    d64 = dpp.DPP(L=L)
    assert d32.rank == 3
    np.testing.assert_allclose(
        np.sort(d32.eigenvalues)[-3:], np.sort(d64.eigenvalues)[-3:], rtol=1e-5
    )
    assert d32.sample_k(3, rng=0).shape == (3,)
    # A float32 kernel whose negative eigenvalue is real is still rejected.
    bad = L.copy()
    bad[0, 0] -= 100.0
    with pytest.raises(ValueError, match="positive semi-definite"):
        dpp.DPP(L=bad.astype(np.float32))


def test_dpp_nan_message_names_argument_without_unknown_option():
    with pytest.raises(ValueError, match="L contains NaN") as e:
        dpp.DPP(L=np.diag([np.nan, 1.0]))
    assert "check_finite" not in str(e.value)


def test_layouts_give_identical_samples():
    g = np.random.default_rng(9)
    x = g.standard_normal((9, 3))
    L = x @ x.T
    ref = dpp.DPP(L=L).sample_k(2, 20, rng=3)
    ro = L.copy()
    ro.flags.writeable = False
    for variant in (np.asfortranarray(L), ro, np.repeat(L, 2, axis=1)[:, ::2]):
        np.testing.assert_array_equal(dpp.DPP(L=variant).sample_k(2, 20, rng=3), ref)
    ref = dpp.volume_sample(x, 4, rng=3, n_samples=20)
    for variant in (np.asfortranarray(x), np.repeat(x, 2, axis=0)[::2]):
        np.testing.assert_array_equal(dpp.volume_sample(variant, 4, rng=3, n_samples=20), ref)
    u = np.linalg.qr(x)[0]
    ref = dpp.sample_projection(u, 20, rng=3)
    uro = u.copy()
    uro.flags.writeable = False
    for variant in (np.asfortranarray(u), uro, np.repeat(u, 2, axis=1)[:, ::2]):
        np.testing.assert_array_equal(dpp.sample_projection(variant, 20, rng=3), ref)
    with pytest.raises(ValueError, match="symmetric"):
        dpp.DPP(L=L + np.triu(np.ones((9, 9))))


def test_volume_rescaled_huge_weights():
    g = np.random.default_rng(10)
    x = g.standard_normal((6, 2))
    ref = dpp.volume_rescaled_sample(x, 3, rng=2, n_samples=30, p=np.arange(1.0, 7.0))
    for s in (1e307, 1e-310):
        got = dpp.volume_rescaled_sample(x, 3, rng=2, n_samples=30, p=np.arange(1.0, 7.0) * s)
        # The normalised weights agree to rounding; samples agree wherever a draw is not
        # on a rounding boundary (all of them here).
        np.testing.assert_array_equal(got, ref)
