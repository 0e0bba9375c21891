"""ISJ on data that mix a lattice with continuous values, and on data with point masses
(divest.isj_bandwidth, KDE(bandwidth="isj")). A part rounded to Δ is read as spread over
its cells and the rest as it is: the result matches the median ISJ of the same data with
only the tied part jittered over its cells (and the closed-form AMISE bandwidth at large
n). Exact repeats off any lattice (zero inflation, censoring at a limit) are point
masses: they are left out, a RuntimeWarning names them, and the bandwidth is the ISJ
bandwidth of the other values. Before, all of these gave spike-scale roots (1e-5 to
1e-6 of the data's scale) once n reached 10^4."""

import warnings

import numpy as np
import pytest
from test_kde_grid import amise_bandwidth

import divest


def quiet_isj(x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no atom warning expected
        return divest.isj_bandwidth(x, **kw)


def jitter_isj(y, d, mask, seeds=7):
    """ISJ over seeds of y with y[mask] jittered by U(−d/2, d/2)."""
    r = np.random.default_rng(5)
    out = []
    for _ in range(seeds):
        z = y.copy()
        z[mask] += r.uniform(-d / 2, d / 2, int(mask.sum()))
        out.append(quiet_isj(z))
    return np.array(out)


def jitter_median(y, d, mask, seeds=7):
    return float(np.median(jitter_isj(y, d, mask, seeds)))


def part_rounded(n, frac, d, seed):
    z = np.random.default_rng(seed).standard_normal(n)
    m = np.zeros(n, bool)
    m[: int(frac * n)] = True
    y = z.copy()
    y[m] = np.round(z[m] / d) * d
    return y, m


@pytest.mark.parametrize("n", [10_000, 100_000])
@pytest.mark.parametrize("frac, d", [(0.5, 0.1), (0.1, 0.1), (0.5, 0.01), (0.5, 0.25)])
def test_part_rounded_matches_the_tied_part_jittered(n, frac, d):
    y, m = part_rounded(n, frac, d, seed=n % 89)
    h = quiet_isj(y)  # before: 4e-5 .. 4e-4
    if d == 0.25 and n == 100_000:
        # the jittered data's ISJ is bimodal over seeds here (0.047 .. 0.064 and
        # 0.101 .. 0.104: two roots of the fixed point); the expected spectrum's root
        # is one of them
        got = jitter_isj(y, d, m, seeds=9)
        assert np.min(np.abs(got / h - 1)) < 0.03, (h, got)
    else:
        ref = jitter_median(y, d, m)
        assert abs(h / ref - 1) < 0.03, (h, ref)
    if n == 100_000:
        target = amise_bandwidth([1.0], [0.0], [1.0], n)
        assert abs(h / target - 1) < 0.08, (h, target)


def test_half_integers_give_the_spread_model():
    # the rounded half spread over integer cells is a step density: ISJ (and the
    # jittered reference) follow its steps, well below the unrounded data's bandwidth
    y, m = part_rounded(20_000, 0.5, 1.0, seed=3)
    h = quiet_isj(y)
    ref = jitter_median(y, 1.0, m)
    assert abs(h / ref - 1) < 0.1, (h, ref)
    assert h < 0.8 * amise_bandwidth([1.0], [0.0], [1.0], 20_000)


def test_part_rounded_scale_weights_and_far_point():
    y, _ = part_rounded(20_000, 0.5, 0.1, seed=4)
    h = quiet_isj(y)
    for a, b in [(1e-3, 5.0), (-40.0, 1.0)]:
        assert quiet_isj(a * y + b) == pytest.approx(abs(a) * h, rel=1e-6)
    assert quiet_isj(y, weights=np.full(y.size, 3.0)) == pytest.approx(h, rel=1e-12)
    # a far point is packed away on the mixed path too
    assert quiet_isj(np.r_[y, 1e6]) == pytest.approx(h, rel=5e-3)


ATOMS = {
    "zero-inflated": lambda z, r: np.where(r.random(z.size) < 0.2, 0.0, 2 + z),
    "censored above": lambda z, r: np.minimum(z, 2.0),
    "censored both": lambda z, r: np.clip(z, -2.0, 2.0),
    "rare zeros": lambda z, r: np.where(r.random(z.size) < 0.01, 0.0, 2 + z),
}


@pytest.mark.parametrize("case", sorted(ATOMS))
@pytest.mark.parametrize("n", [10_000, 100_000])
def test_point_masses_are_left_out_and_named(case, n):
    r = np.random.default_rng(n % 97)
    y = ATOMS[case](r.standard_normal(n), r)
    vals, counts = np.unique(y, return_counts=True)
    atoms = vals[counts > 2]
    assert 1 <= atoms.size <= 2
    rest = y[~np.isin(y, atoms)]
    with pytest.warns(RuntimeWarning, match="point masses") as rec:
        h = divest.isj_bandwidth(y)  # before: 4e-5 .. 2e-4 (rare zeros at 10^4: fine)
    msg = str(rec[0].message)
    for a in atoms:
        assert f"{a:.6g} (" in msg, msg
    # the bandwidth of the other values, with their own sample size
    assert h == pytest.approx(quiet_isj(rest), rel=1e-9)
    if case in ("zero-inflated", "rare zeros") and n == 100_000:
        target = amise_bandwidth([1.0], [2.0], [1.0], rest.size)
        assert abs(h / target - 1) < 0.08, (h, target)


def test_small_atom_found_by_its_spike():
    # 0.13 % at one value: too rare for the tie count of the 4096-point sample, but at
    # n = 10^6 its spike pulled the root to 1.4 cells (0.001 against 0.066)
    z = np.random.default_rng(1).standard_normal(10**6)
    y = np.minimum(z, 3.0)
    with pytest.warns(RuntimeWarning, match=r"3 \(0\.1"):
        h = divest.isj_bandwidth(y)
    assert h == pytest.approx(quiet_isj(z[z < 3.0]), rel=1e-9)
    assert abs(h / amise_bandwidth([1.0], [0.0], [1.0], 10**6) - 1) < 0.05


def test_point_masses_weights_kde_and_errors():
    r = np.random.default_rng(8)
    y = np.where(r.random(5000) < 0.3, 0.0, 1 + r.standard_normal(5000))
    w = r.uniform(0.5, 2.0, y.size)
    keep = y != 0.0
    with pytest.warns(RuntimeWarning, match="point masses"):
        hw = divest.isj_bandwidth(y, weights=w)
    assert hw == pytest.approx(quiet_isj(y[keep], weights=w[keep]), rel=1e-9)
    # KDE(bandwidth="isj") warns and uses that bandwidth
    with pytest.warns(RuntimeWarning, match="point masses"):
        k = divest.KDE(y, bandwidth="isj")
    assert k.bandwidth[0, 0] == pytest.approx(quiet_isj(y[keep]) ** 2, rel=1e-9)
    # so does the one-shot grid
    with pytest.warns(RuntimeWarning, match="point masses"):
        g = divest.kde_grid(y, bandwidth="isj", n_points=256)
    ref = divest.KDE(y, bandwidth=float(np.sqrt(k.bandwidth[0, 0]))).grid(256)
    np.testing.assert_allclose(g.values, ref.values, rtol=1e-6, atol=1e-9)
    # mostly point masses with too few other values: a ValueError naming x and the fix
    z = np.r_[np.zeros(400), np.full(300, 1.0), np.full(300, 2.5), [0.3, 0.3 + 1e-7]]
    with pytest.raises(ValueError, match="x is too discrete.*point masses.*number"):
        divest.isj_bandwidth(z)
    # the user's array is not modified
    y0 = y.copy()
    with pytest.warns(RuntimeWarning):
        divest.isj_bandwidth(y, weights=w)
    np.testing.assert_array_equal(y, y0)


def test_continuous_and_pure_lattice_paths_unchanged():
    # no ties: no warning, and the pinned value of the old path (tests/test_kde_isj_rounded)
    z = np.random.default_rng(3).standard_normal(10**6)
    assert quiet_isj(z) == pytest.approx(0.06720805719461498, rel=1e-12, abs=0)
    # a pure lattice keeps last session's reading (no warning, Δ from the sample)
    x = np.random.default_rng(1).standard_normal(5000)
    assert quiet_isj(np.round(x, 1)) == pytest.approx(quiet_isj(x), rel=0.03)
    # sharp but continuous features (root near the cells' scale, no ties): unchanged
    r = np.random.default_rng(2)
    s = np.r_[r.normal(0, 1e-4, 20_000), r.uniform(-50, 50, 200)]
    h = quiet_isj(s)
    assert 0 < h < 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mostly_rounded_and_mostly_atom(seed):
    # 90 % rounded: the few untied values' smallest gap can pass for a lattice step in
    # the sample; the root then falls to the cells' scale and the tie scan reads it
    y, m = part_rounded(10_000, 0.9, 0.2, seed=seed)
    h = quiet_isj(y)
    assert abs(h / jitter_median(y, 0.2, m) - 1) < 0.05, h
    # an atom holding 40 % of a small sample
    r = np.random.default_rng(seed)
    z = r.standard_normal(200) * 1e-3 - 263.0
    z[:80] = z[100]
    with pytest.warns(RuntimeWarning, match="point masses"):
        h = divest.isj_bandwidth(z)
    assert h == pytest.approx(quiet_isj(np.unique(z[80:][z[80:] != z[100]])), rel=1e-9)
