"""Hard edges of the distance covariance family (issue 18): extreme magnitudes, undefined
statistics, rounding at the bounds of partial_dcor, resampling ceilings and Ctrl-C.

Oracles: the statistics are homogeneous (dCov² by |s|^α per argument, energy distance by
|s|^α, dcor and p-values invariant), so the value at x·s must be the value at x times the
known factor; subnormal data are compared with the same rounded numbers multiplied back by
an exact power of two."""

from __future__ import annotations

import importlib
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import divest

SCALES = [1e150, 1e-170, 1e300, 1e-300]


def _xyz(n=40, p=1, q=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    y = np.sin(2 * x[:, :1]) + 0.5 * rng.standard_normal((n, q))
    z = x[:, :1] * 0.3 + rng.standard_normal((n, 1))
    if p == 1:
        x = x[:, 0]
    if q == 1:
        y = y[:, 0]
    return x, y, z


def close_scaled(got, base, log_factor, rtol=1e-12):
    """got == base · exp(log_factor) to rtol, compared in logarithms (the factor itself may
    not be representable). Where the true value leaves the float64 range the result must
    be ±inf (above) or the correctly rounded subnormal or 0 (below)."""
    assert base != 0.0 and math.isfinite(base), base
    want_log = math.log(abs(base)) + log_factor
    sign = math.copysign(1.0, base)
    if want_log > math.log(np.finfo(float).max):
        assert got == sign * math.inf, (got, base, log_factor)
        return
    if want_log < math.log(np.finfo(float).tiny):
        want = sign * math.exp(want_log)  # subnormal or 0: absolute accuracy
        assert abs(got - want) <= rtol * abs(want) + 4 * 5e-324, (got, want)
        return
    assert math.isfinite(got) and got != 0.0, got
    assert math.copysign(1.0, got) == sign, (got, base)
    err = abs(math.log(abs(got)) - want_log)
    assert err < rtol, (got, base, log_factor, err)


@pytest.mark.parametrize("s", SCALES)
@pytest.mark.parametrize("p", [1, 3])
@pytest.mark.parametrize("a", [1.0, 0.5])
def test_scale_equivariance_at_extreme_magnitudes(s, p, a):
    x, y, z = _xyz(p=p)
    ls = math.log(s)
    xs = x * s
    for unbiased in (False, True):
        close_scaled(
            divest.dcov_sqr(xs, y, a, unbiased), divest.dcov_sqr(x, y, a, unbiased), a * ls
        )
        close_scaled(
            divest.dcov_sqr(xs, y * s, a, unbiased), divest.dcov_sqr(x, y, a, unbiased), 2 * a * ls
        )
        close_scaled(divest.dcor_sqr(xs, y, a, unbiased), divest.dcor_sqr(x, y, a, unbiased), 0.0)
        close_scaled(
            divest.energy_distance(xs, y[:30, None] * s if p == 1 else xs[:30] * 0.5, a, unbiased),
            divest.energy_distance(x, y[:30, None] if p == 1 else x[:30] * 0.5, a, unbiased),
            a * ls,
        )
    close_scaled(divest.dcov(xs, y, a), divest.dcov(x, y, a), a * ls / 2)
    close_scaled(divest.dcor(xs, y, a), divest.dcor(x, y, a), 0.0)
    close_scaled(divest.dcor(xs, y * s, a), divest.dcor(x, y, a), 0.0)
    close_scaled(divest.partial_dcor(xs, y, z * s, a), divest.partial_dcor(x, y, z, a), 0.0)
    close_scaled(
        divest.ccdcov(y, xs, z * s, exponent=a), divest.ccdcov(y, x, z, exponent=a), a * ls
    )
    # jdcov: per sample for d = 2, c = 0 or scale=True; one common factor (c rescaled) else.
    close_scaled(divest.jdcov(xs, y, exponent=a), divest.jdcov(x, y, exponent=a), a * ls)
    close_scaled(
        divest.jdcov(xs, y, z * s, c=0.0, exponent=a),
        divest.jdcov(x, y, z, c=0.0, exponent=a),
        2 * a * ls,
    )
    close_scaled(
        divest.jdcov(xs, y, z * s, scale=True, exponent=a),
        divest.jdcov(x, y, z, scale=True, exponent=a),
        0.0,
    )
    # c > 0, three samples scaled by one t (the value scales by t^(3α) with c by t^α); t
    # is s^(1/3) so that the true value stays inside the float64 range.
    t = s ** (1 / 3)
    ct = 2.0 ** (a * math.frexp(t)[1])  # a c of the data's size, so no term is negligible
    close_scaled(
        divest.jdcov(x * t, y * t, z * t, c=ct, exponent=a),
        divest.jdcov(x, y, z, c=ct / t**a, exponent=a),
        3 * a * math.log(t),
        rtol=1e-10,
    )


@pytest.mark.parametrize("s", SCALES)
def test_gradient_scales_with_the_data(s):
    x, y, _ = _xyz(n=12, p=2)
    for a in (1.0, 0.5):
        v, g = divest.dcov_sqr(x * s, y, a, return_grad=True)
        v0, g0 = divest.dcov_sqr(x, y, a, return_grad=True)
        close_scaled(v, v0, a * math.log(s))
        # F(s x) = s^α F(x), so ∇F(s x) = s^(α−1) ∇F(x).
        want = g0 * math.exp((a - 1) * math.log(s)) if a != 1.0 else g0
        if np.all(np.isfinite(want)) and np.all(np.abs(want[want != 0]) > 1e-290):
            np.testing.assert_allclose(g, want, rtol=1e-10)
        v, g = divest.jdcov(x * s, y, return_grad=True, exponent=a)
        v0, g0 = divest.jdcov(x, y, return_grad=True, exponent=a)
        close_scaled(v, v0, a * math.log(s))
        if a == 1.0:
            np.testing.assert_allclose(g, g0, rtol=1e-10)


def test_subnormal_inputs_in_float64_and_float32():
    x, y, _ = _xyz(n=30, p=2)
    for dtype, k in ((np.float64, 1060), (np.float32, 140)):
        xs = np.ldexp(x.astype(dtype), -k)  # subnormal (rounded) values of x's dtype
        assert np.all(np.abs(xs[xs != 0]) < np.finfo(dtype).tiny * 2**10)
        back = np.ldexp(xs.astype(np.float64), k)  # the same numbers, exactly, near 1
        yd = y.astype(dtype)
        close_scaled(divest.dcor(xs, yd), divest.dcor(back, yd.astype(np.float64)), 0.0, rtol=1e-9)
        close_scaled(
            divest.dcov_sqr(xs, yd),
            divest.dcov_sqr(back, yd.astype(np.float64)),
            -k * math.log(2),
            rtol=1e-9,
        )
        close_scaled(
            divest.energy_distance(xs, xs[:12]),
            divest.energy_distance(back, back[:12]),
            -k * math.log(2),
            rtol=1e-9,
        )


@pytest.mark.parametrize("s", [1e30, 1e-30, 3e38])
def test_float32_extremes_match_float64(s):
    x, y, _ = _xyz(n=30, p=2)
    x32 = (x / np.abs(x).max() * s).astype(np.float32)
    y32 = y.astype(np.float32)
    x64, y64 = x32.astype(np.float64), y32.astype(np.float64)
    for f in (divest.dcor, divest.dcov, divest.dcov_sqr):
        assert math.isclose(f(x32, y32), f(x64, y64), rel_tol=1e-12)
    assert math.isclose(
        divest.energy_distance(x32, x32[:10]), divest.energy_distance(x64, x64[:10]), rel_tol=1e-12
    )


def test_dcor_at_1e150_is_not_zero():
    x, y, _ = _xyz(n=50)
    want = divest.dcor(x, y)
    assert want > 0.3
    for s in (1e150, 1e-170, 1e300, 1e-300):
        assert math.isclose(divest.dcor(x * s, y), want, rel_tol=1e-12)
        assert math.isfinite(divest.dcov(x * s, y))
        assert math.isfinite(divest.energy_distance(x * s, y * s))


@pytest.mark.parametrize("s", SCALES)
def test_tests_give_the_same_pvalue_at_any_scale(s):
    x, y, _ = _xyz(n=30, p=2)
    r0 = divest.dcov_test(x, y, n_resamples=99, rng=3)
    r = divest.dcov_test(x * s, y, n_resamples=99, rng=3)
    assert r.pvalue == r0.pvalue and r0.pvalue < 0.5
    close_scaled(r.statistic, r0.statistic, math.log(s))
    close_scaled(float(r.null_distribution[5]), float(r0.null_distribution[5]), math.log(s))
    t0 = divest.dcov_test(x, y, method="t")
    t = divest.dcov_test(x * s, y * s, method="t")
    assert math.isclose(t.statistic, t0.statistic, rel_tol=1e-10)
    assert math.isclose(t.pvalue, t0.pvalue, rel_tol=1e-8)
    e0 = divest.energy_test(x[:15], x[15:] + 1, n_resamples=99, rng=1)
    e = divest.energy_test(x[:15] * s, (x[15:] + 1) * s, n_resamples=99, rng=1)
    assert e.pvalue == e0.pvalue and e0.pvalue < 0.5
    close_scaled(e.statistic, e0.statistic, math.log(s))
    c0 = divest.ccdcov_test(y, x, n_resamples=49, rng=2)
    c = divest.ccdcov_test(y, x * s, n_resamples=49, rng=2)
    assert c.pvalue == c0.pvalue
    j0 = divest.jdcov_test(x[:12], y[:12], n_resamples=19, rng=2)
    j = divest.jdcov_test(x[:12] * s, y[:12], n_resamples=19, rng=2)
    assert j.pvalue == j0.pvalue
    close_scaled(j.statistic, j0.statistic, math.log(s))


def test_undefined_statistics_never_get_a_pvalue():
    x, y, _ = _xyz(n=20)
    const = np.full(20, 3.0)
    r = divest.dcov_test(const, y, n_resamples=19, rng=0)
    assert r.statistic == 0.0 and r.pvalue == 1.0  # documented: no evidence
    r = divest.dcov_test(x, const, n_resamples=19, rng=0)
    assert r.statistic == 0.0 and r.pvalue == 1.0
    with pytest.raises(ValueError, match=r"^x has zero"):
        divest.dcov_test(const, y, method="t")
    with pytest.raises(ValueError, match=r"^y has zero"):
        divest.dcov_test(x, const, method="t")
    e = divest.energy_test(const[:10], const[10:], n_resamples=19, rng=0)
    assert e.statistic == 0.0 and e.pvalue == 1.0
    # the guard itself: a NaN statistic is an error, never the smallest p-value
    dmod = importlib.import_module("divest.dcov")
    with pytest.raises(ValueError, match="not finite"):
        dmod._perm_pvalue(math.nan, np.zeros(9))


def test_partial_dcor_stays_in_range():
    # x = y given z: the exact value is 1, and rounding used to give 1 + 2^-52 for some z.
    found = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((8, 1))
        z = x + 1e-3 * rng.standard_normal((8, 1))
        v = divest.partial_dcor(x, x, z)
        assert -1.0 <= v <= 1.0, (seed, v)
        found += v == 1.0
    assert found > 0


CHILD_REJECT = r"""
import divest, numpy as np
x = np.arange(10.0); y = np.sin(x)
calls = [
    lambda: divest.dcov_test(x, y, n_resamples=10**12, rng=0),
    lambda: divest.energy_test(x, y, n_resamples=10**12, rng=0),
    lambda: divest.ccdcov_test(y, x, n_resamples=10**12, rng=0),
    lambda: divest.jdcov_test(x, y, n_resamples=10**12, rng=0),
    lambda: divest.dcov_test(np.arange(2000.0), np.arange(2000.0), n_resamples=10**9),
    lambda: divest.dcov_test(x, y, n_resamples=2**70),
    lambda: divest.energy_test(*np.arange(3000.0)[:, None, None], n_resamples=10**5),
]
for f in calls:
    try:
        f()
        print("accepted")
    except ValueError as e:
        print("ValueError", "n_resamples" in str(e))
"""


def test_absurd_resample_counts_are_rejected():
    out = subprocess.run(
        [sys.executable, "-c", CHILD_REJECT], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:-1] == ["ValueError True"] * 7, out.stdout


CHILD_INTERRUPT = r"""
import sys, time, numpy as np, divest
which = sys.argv[1]
rng = np.random.default_rng(0)
n = 3000 if which == "dcov_big" else 800
x = rng.standard_normal((n, 2)); y = rng.standard_normal((n, 1))
calls = {
    "dcov": lambda: divest.dcov_test(x, y, n_resamples=10**8, rng=0),
    "dcov_big": lambda: divest.dcov_test(x, y, n_resamples=10**5, rng=0),
    "energy": lambda: divest.energy_test(x[:400], x[400:], n_resamples=10**8, rng=0),
    "jdcov": lambda: divest.jdcov_test(x, y, n_resamples=10**6, rng=0),
}
print("ready", flush=True)
try:
    calls[which]()
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
r = divest.dcov_test(x[:20], y[:20], n_resamples=9, rng=0)
print("after", r.pvalue, flush=True)
"""


@pytest.mark.parametrize("which", ["dcov", "dcov_big", "energy", "jdcov"])
def test_resampling_stops_on_ctrl_c(which):
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD_INTERRUPT, which],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        latency = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    lines = out.split("\n")
    assert lines[0] == "interrupted", out
    assert lines[1].startswith("after"), out
    assert latency < 10.0, latency


def test_t_test_docstring_states_its_low_dimensional_size():
    # The t distribution is a high-dimensional limit (Székely & Rizzo 2013); in 1-D the
    # test rejects too often. Measured here (fixed seed) and stated in the docstring.
    doc = " ".join(divest.dcov_test.__doc__.split())
    assert "not exact" in doc and "about 0.07" in doc
    rng = np.random.default_rng(11)
    reps = 3000
    rej = sum(
        divest.dcov_test(rng.standard_normal(30), rng.standard_normal(30), method="t").pvalue < 0.05
        for _ in range(reps)
    )
    # about 0.067 (0.0669 in 10^4 other runs); binomial sd 0.004 at 0.05, so the bound
    # is 2 sd above a correct size of 0.05 (the seed is fixed: deterministic).
    assert 0.058 < rej / reps < 0.08, rej / reps


def _jdcov_exact(xs, c, unbiased):
    """JdCov² of the float64 distance matrices, centred and combined in exact rationals
    (so the centred matrices sum to exactly zero, as they do in the definition)."""
    from fractions import Fraction

    n = len(xs[0])
    mats = []
    for x in xs:
        x = np.asarray(x, float).reshape(n, -1)
        a = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        a = [[Fraction(float(v)) for v in row] for row in a]
        r = [sum(row) for row in a]
        t = sum(r)
        if unbiased:
            u = [
                [
                    Fraction(0)
                    if i == j
                    else a[i][j] - r[i] / (n - 2) - r[j] / (n - 2) + t / ((n - 1) * (n - 2))
                    for j in range(n)
                ]
                for i in range(n)
            ]
        else:
            u = [[a[i][j] - r[i] / n - r[j] / n + t / n**2 for j in range(n)] for i in range(n)]
        mats.append([[-v for v in row] for row in u])
    c = Fraction(c)
    tot = Fraction(0)
    for i in range(n):
        for j in range(n):
            p = Fraction(1)
            for m in mats:
                p *= m[i][j] + c
            tot += p
    d = len(xs)
    # Documented estimators: all n² pairs, the U version with its zero diagonal.
    if unbiased:
        return float(tot / (n * (n - 3)) - c**d * Fraction(n, n - 3))
    return float(tot / n**2 - c**d)


@pytest.mark.parametrize("c", [1.0, 1e8, 1e300])
@pytest.mark.parametrize("unbiased", [False, True])
def test_jdcov_large_c_has_no_cancellation(c, unbiased):
    # Π(Û + c) − c^d used to lose every digit for c ≫ Û (and be NaN at c = 1e300, where
    # c^d overflows); the value is Σ_{m≥2} c^(d−m) e_m, which exists.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, 2))
    y = np.abs(x[:, :1]) + 0.3 * rng.standard_normal((9, 1))
    z = rng.standard_normal(9)
    want = _jdcov_exact([x, y, z], c, unbiased)
    got = divest.jdcov(x, y, z, c=c, unbiased=unbiased)
    assert math.isfinite(got)
    assert abs(got - want) <= 1e-9 * abs(want), (got, want)


def test_jdcov_mixed_magnitudes_error_names_the_samples():
    x, y, z = _xyz(n=10)
    with pytest.raises(ValueError, match=r"^xs\[1\] .*xs\[0\]"):
        divest.jdcov(x * 1e200, y * 1e-200, z)
