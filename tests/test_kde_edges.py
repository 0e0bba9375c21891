"""KDE at hard edges (issue 18): extreme magnitudes, compact supports, huge bandwidths,
overflowing weights, unit-dependent rank tests, aliasing, memory of score."""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from scipy import stats

import divest

RNG = np.random.default_rng(1818)
COMPACT = ("tophat", "epanechnikov", "linear", "cosine")


@pytest.mark.parametrize("kernel", COMPACT)
def test_compact_kernel_score_is_zero_where_density_is_zero(kernel):
    x = RNG.standard_normal((60, 2))
    kde = divest.KDE(x, bandwidth=0.5, kernel=kernel)
    q = np.array([[100.0, 100.0], [-50.0, 3.0], [1e300, -1e300]])
    assert np.all(kde.logpdf(q) == -np.inf)
    s = kde.score(q)
    assert np.all(s == 0.0), s
    inside = kde.score(x[:5])  # inside the support: finite
    assert np.all(np.isfinite(inside))


@pytest.mark.parametrize("d", [1, 3, 12])
def test_gaussian_and_exponential_score_far_away_is_the_exact_limit(d):
    """So far that every kernel term underflows, the score is set by the nearest point:
    -(q - x_nn)/h^2 for gaussian, -(q - x_nn)/(h |q - x_nn|) for exponential."""
    x = RNG.standard_normal((80, d))
    h = 2.0
    for far in (1e160, 1e200, 1e300):
        q = np.zeros((1, d))
        q[0, 0] = far
        nn = x[np.argmax(x[:, 0])]  # |q - x|^2 = far^2 - 2 far x_0 + ...: largest x_0 wins
        g = divest.KDE(x, bandwidth=h).score(q)[0]
        want = (nn - q[0]) / h**2
        np.testing.assert_allclose(g, want, rtol=1e-12)
        e = divest.KDE(x, bandwidth=h, kernel="exponential").score(q)[0]
        u = nn - q[0]
        u = u / far / np.linalg.norm(u / far)
        np.testing.assert_allclose(e, u / h, rtol=1e-12, atol=1e-300)
        assert divest.KDE(x, bandwidth=h).logpdf(q)[0] == -np.inf  # below -1.8e308


@pytest.mark.parametrize("d", [1, 2, 10])
@pytest.mark.parametrize("exponent", [997, -1040, -1070])
def test_extreme_data_are_scale_equivariant(d, exponent):
    """Data near 1e300 or subnormal (2^-1040 is subnormal): with the rule bandwidth,
    log p_c(c y) = log p(y) - d log c and score_c(c y) = score(y) / c, c a power of two."""
    c = 2.0**exponent
    x = RNG.standard_normal((150, d))
    q = RNG.standard_normal((20, d))
    xc, qc = x * c, q * c
    # Subnormal scaling rounds the data: the oracle uses the rounded values, scaled back
    # exactly.
    x0, q0 = xc / c, qc / c
    ref = divest.KDE(x0)
    kde = divest.KDE(xc)
    np.testing.assert_allclose(
        kde.logpdf(qc), ref.logpdf(q0) - d * exponent * math.log(2), rtol=1e-12
    )
    s = kde.score(qc)
    assert not np.isnan(s).any()
    if exponent > 0:
        np.testing.assert_allclose(s * c, ref.score(q0), rtol=1e-9, atol=1e-12)
    else:
        # The score is of order 1/c > 1.8e308: ±inf is its double value; the sign holds.
        r = ref.score(q0)
        assert np.all(np.sign(s[r != 0]) == np.sign(r[r != 0]))
    ess = kde.logpdf(qc, return_ess=True)[1]
    np.testing.assert_allclose(ess, ref.logpdf(q0, return_ess=True)[1], rtol=1e-10)
    r = kde.resample(50, rng=0)
    assert np.all(np.isfinite(r))


def test_data_near_1e300_with_a_unit_bandwidth():
    x = RNG.standard_normal((40, 10)) * 1e300
    kde = divest.KDE(x, bandwidth=1.0)
    # Each data point is alone within 1e300 bandwidths: log(1/n) + the normalisation.
    want = math.log(1 / 40) - 5 * math.log(2 * math.pi)
    np.testing.assert_allclose(kde.logpdf(x[:5]), want, rtol=1e-13)
    np.testing.assert_array_equal(kde.score(x[:5]), 0.0)


@pytest.mark.parametrize("h", [1e160, 1e300, 1e-300])
@pytest.mark.parametrize("d", [1, 3])
def test_extreme_bandwidths_give_the_right_values(h, d):
    x = RNG.standard_normal((50, d))
    kde = divest.KDE(x, bandwidth=h)
    q = x[:4]
    # Every term is exp(-tiny) = 1 for a huge bandwidth; only the own point for a tiny one.
    logsum = 0.0 if h > 1 else math.log(1 / 50)
    want = logsum - d * math.log(h) - 0.5 * d * math.log(2 * math.pi)
    np.testing.assert_allclose(kde.logpdf(q), want, rtol=1e-13)
    assert np.all(np.isfinite(kde.score(q)))
    assert np.all(np.isfinite(kde.resample(10, rng=1)))
    # a per-dimension and a full bandwidth of the same size agree
    for bw in (np.full(d, h), np.eye(d) * h * h if h * h < 1e308 and h * h > 1e-300 else None):
        if bw is not None:
            np.testing.assert_allclose(divest.KDE(x, bandwidth=bw).logpdf(q), want, rtol=1e-13)


def test_bandwidth_too_small_for_the_data_is_a_clear_error():
    x = RNG.standard_normal((20, 2)) * 1e300
    with pytest.raises(ValueError, match="bandwidth"):
        divest.KDE(x, bandwidth=1e-300)


@pytest.mark.parametrize("scale", [1e307, 1e-320, 1e200])
def test_weights_whose_sum_overflows_or_underflows(scale):
    x = RNG.standard_normal((50, 2))
    raw = RNG.random(50) + 0.5
    w = raw * scale
    kde = divest.KDE(x, weights=w)
    want = divest.KDE(x, weights=raw)
    assert np.isfinite(kde.neff)
    np.testing.assert_allclose(kde.neff, want.neff, rtol=1e-9 if scale > 1e-300 else 1e-2)
    lp, ess = kde.logpdf(x[:5], return_ess=True)
    assert np.all(np.isfinite(lp)) and np.all(np.isfinite(ess))
    rtol = 1e-12 if scale > 1e-300 else 1e-2  # subnormal weights carry few digits
    np.testing.assert_allclose(lp, want.logpdf(x[:5]), rtol=rtol)
    both = np.full(50, 1.7e308)  # each finite, sum overflows
    np.testing.assert_allclose(
        divest.KDE(x, weights=both).logpdf(x[:5]), divest.KDE(x).logpdf(x[:5]), rtol=1e-13
    )
    assert divest.KDE(x, weights=both).neff == pytest.approx(50, rel=1e-12)


@pytest.mark.parametrize("rule", ["scott", "silverman"])
@pytest.mark.parametrize("ratio", [1e-8, 1e8, 1e-12])
def test_rule_rank_test_does_not_depend_on_units(rule, ratio):
    z = RNG.standard_normal((300, 3))
    z[:, 1] += 0.3 * z[:, 0]
    x = z.copy()
    x[:, 1] *= ratio
    q = x[:25] + 0.1 * RNG.standard_normal((25, 3)) * x.std(axis=0)
    got = divest.KDE(x, bandwidth=rule).logpdf(q)
    want = stats.gaussian_kde(x.T, bw_method=rule).logpdf(q.T)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # truly singular data are still rejected, whatever the units
    y = x.copy()
    y[:, 2] = 2.0 * y[:, 0]
    with pytest.raises(ValueError, match="singular"):
        divest.KDE(y, bandwidth=rule)


def test_select_bandwidth_result_does_not_alias_the_grid():
    x = RNG.standard_normal((80, 2))
    grid = np.geomspace(0.3, 2.0, 6)
    keep = grid.copy()
    sel = divest.select_bandwidth(x, grid, warn_edge=False)
    assert not np.shares_memory(sel.grid, grid)
    grid[:] = 99.0
    np.testing.assert_array_equal(sel.grid, keep)


def test_score_in_passes_is_bitwise_the_single_pass():
    x = RNG.standard_normal((70, 2))
    q = RNG.standard_normal((13000, 2))  # three passes of 6144 rows
    kde = divest.KDE(x, bandwidth=0.4)
    whole = kde.score(q)
    parts = np.concatenate([kde.score(q[i : i + 1000]) for i in range(0, len(q), 1000)])
    np.testing.assert_array_equal(whole, parts)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB on Linux")
def test_score_memory_does_not_grow_per_query():
    """400,000 2-D queries: the result is 6.4 MB; scoring once used about 2 KiB per query
    (827 MB). Peak RSS is measured in a fresh process (Rust allocations are invisible to
    tracemalloc)."""
    code = textwrap.dedent("""
        import resource
        import numpy as np
        import divest
        rng = np.random.default_rng(0)
        x = rng.standard_normal((100, 2))
        q = rng.standard_normal((400_000, 2))
        kde = divest.KDE(x, bandwidth=0.3)
        kde.score(q[:20_000])  # warm up: pools, caches
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        s = kde.score(q)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert np.isfinite(s).all()
        print((after - before) / 1024.0)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    extra_mib = float(out.stdout.strip())
    assert extra_mib < 100, f"score of 400k queries added {extra_mib:.0f} MiB"


@pytest.mark.parametrize(
    "kernel", ["gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine"]
)
def test_no_nan_on_awkward_finite_inputs(kernel):
    x = RNG.standard_normal((30, 2))
    cases = {
        "one sample": (x[:1], None),
        "duplicates": (np.repeat(x[:3], 5, axis=0), None),
        "zero weights": (x, np.r_[np.zeros(10), np.ones(20)]),
        "float32": (x.astype(np.float32), None),
        "fortran": (np.asfortranarray(x), None),
        "strided": (x[::2], None),
    }
    ro = x.copy()
    ro.flags.writeable = False
    cases["read-only"] = (ro, None)
    q = np.vstack([x[:4], x[:4] + 0.05, [[40.0, -40.0]]])
    for name, (data, w) in cases.items():
        kde = divest.KDE(data, bandwidth=0.6, kernel=kernel, weights=w)
        lp, ess = kde.logpdf(q, return_ess=True)
        s = kde.score(q)
        for what, v in (("logpdf", lp), ("ess", ess), ("score", s)):
            assert not np.isnan(v).any(), (name, what)
        assert np.all(np.isfinite(s)), name


def test_data_spanning_the_whole_float_range():
    x = np.array([-1.7e308, 1.7e308, 0.0])
    kde = divest.KDE(x)
    # Scott on 3 points: factor 3^(-1/5); the std is 1.7e308 (weighted cov, ddof 1).
    f = 3 ** (-1 / 5)
    h = 1.7e308 * f
    # the two outer points sit 1/f bandwidths from 0
    want = math.log((1 + 2 * math.exp(-0.5 / f**2)) / 3) - math.log(h) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(kde.logpdf([0.0]), want, rtol=1e-12)
    assert not np.isnan(kde.resample(5, rng=0)).any()  # ±inf where a draw leaves the range
    assert divest.KDE(x, bandwidth=1e308).logpdf([0.0])[0] < 0


def test_rule_with_one_weighted_point_names_the_problem():
    x = RNG.standard_normal((10, 2))
    with pytest.raises(ValueError, match="at least 2 data points with positive weight"):
        divest.KDE(x, weights=np.r_[1.0, np.zeros(9)])


def test_far_apart_clusters_in_high_dimension_loo_and_grid():
    """Clusters 1e9 bandwidths apart in d = 10: the GEMM identity |q|²+|x|²−2q·x would
    lose every digit of the within-cluster distances; the direct loop keeps them."""
    d, per = 10, 15
    centres = np.zeros((4, d))
    centres[np.arange(4), np.arange(4)] = 1e9 * np.array([1.0, -2.0, 3.0, 1.5])
    x = np.concatenate([c + RNG.standard_normal((per, d)) for c in centres])
    n = len(x)
    grid = np.array([0.5, 1.0, 2.0])
    sel = divest.select_bandwidth(x, grid, base=1.0, warn_edge=False)
    loo = divest.KDE(x, bandwidth=1.0).loo_logpdf()
    want_grid = []
    for f in grid:
        vals = []
        for i in range(n):
            same = (np.arange(n) // per == i // per) & (np.arange(n) != i)
            r2 = ((x[same] - x[i]) ** 2).sum(axis=1) / f**2  # exact differences
            lse = np.logaddexp.reduce(-0.5 * r2)
            vals.append(lse - math.log(n - 1) - d * math.log(f) - 0.5 * d * math.log(2 * math.pi))
        want_grid.append(np.mean(vals))
        if f == 1.0:
            # centring on the mean rounds each coordinate at ulp(1e9) ~ 1e-7
            np.testing.assert_allclose(loo, vals, rtol=1e-7)
    np.testing.assert_allclose(sel.loglik, want_grid, rtol=1e-7)
