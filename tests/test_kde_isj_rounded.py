"""ISJ on rounded / lattice data (divest.isj_bandwidth, KDE and kde_grid with
bandwidth="isj"): data rounded well below the bandwidth give the unrounded data's
bandwidth (and the closed-form AMISE-optimal one of the mixture), coarse integer data
give the bandwidth ISJ finds for the data spread over their cells (median over jitter
seeds), two distinct values are refused, and continuous data keep their old bits."""

import numpy as np
import pytest
from test_kde_grid import amise_bandwidth

import divest

MIXTURES = [
    ([1.0], [0.0], [1.0]),
    ([0.5, 0.5], [-1.5, 1.5], [0.5, 1.0]),
    ([0.7, 0.3], [0, 3], [1, 0.3]),
]


def sample(ws, mus, sds, n, seed):
    rng = np.random.default_rng(seed)
    c = rng.choice(len(ws), size=n, p=ws)
    return rng.normal(np.array(mus)[c], np.array(sds)[c])


@pytest.mark.parametrize("mix", MIXTURES)
@pytest.mark.parametrize("n", [2000, 100_000])
def test_rounded_below_the_bandwidth_keeps_it(mix, n):
    x = sample(*mix, n, seed=n % 97)
    h0 = divest.isj_bandwidth(x)
    target = amise_bandwidth(*mix, n)
    for frac in (20, 10, 4):
        y = np.round(x / (h0 / frac)) * (h0 / frac)
        h = divest.isj_bandwidth(y)
        assert abs(h / h0 - 1) < 0.05, (frac, h, h0)  # on main: 1e-20 .. 1e-60 or raises
        if n == 100_000:
            assert abs(h / target - 1) < 0.12, (frac, h, target)


def test_decimal_rounding_reported_cases():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(5000)
    h0 = divest.isj_bandwidth(x)
    assert divest.isj_bandwidth(np.round(x, 2)) == pytest.approx(h0, rel=0.01)
    assert divest.isj_bandwidth(np.round(x, 1)) == pytest.approx(h0, rel=0.03)
    # half units, resolution above the bandwidth: close to the unrounded data's
    z = rng.standard_normal(5000) * 1.5
    assert divest.isj_bandwidth(np.round(2 * z) / 2) == pytest.approx(
        divest.isj_bandwidth(z), rel=0.05
    )


def jitter_median(y, d, seeds=15):
    r = np.random.default_rng(5)
    return float(
        np.median(
            [divest.isj_bandwidth(y + r.uniform(-d / 2, d / 2, y.size)) for _ in range(seeds)]
        )
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda r: r.integers(0, 10, 1000),
        lambda r: r.integers(1, 6, 1000),
        lambda r: r.poisson(4.0, 2000),
        lambda r: np.r_[np.zeros(500), np.ones(300), np.full(100, 2.0)],
        lambda r: np.round(r.standard_normal(3000) * 3) / 2,
    ],
)
def test_coarse_lattice_matches_the_data_spread_over_cells(make):
    y = np.asarray(make(np.random.default_rng(4)), dtype=float)
    d = np.min(np.diff(np.unique(y)))
    h = divest.isj_bandwidth(y)
    ref = jitter_median(y, d)
    assert abs(h / ref - 1) < 0.1, (h, ref)


def test_too_discrete_raises():
    with pytest.raises(ValueError, match="3 distinct values.*only 2"):
        divest.isj_bandwidth(np.r_[np.zeros(500), np.ones(3)])
    x = np.zeros(50_000)
    x[123] = -1.0  # the strided sample misses it
    with pytest.raises(ValueError, match="only 2"):
        divest.isj_bandwidth(x)
    with pytest.raises(ValueError, match="number"):
        divest.KDE(np.r_[np.zeros(50), np.ones(50)], bandwidth="isj")


def test_continuous_data_keep_their_bits():
    # values of the old code (main before this change): no lattice is seen. The same
    # build gives them bit for bit; another build profile (LTO, one codegen unit, as
    # `pip install .` makes) moves the last bits (1.6e-13 relative seen), so compare to
    # 1e-12; Rust's isj::tests check exactly that the detection sees no lattice in such
    # data (continuous, float32-cast, duplicated records).
    rng = np.random.default_rng(3)
    z = rng.standard_normal(10**6)
    assert divest.isj_bandwidth(z) == pytest.approx(0.06720805719461498, rel=1e-12, abs=0)
    # float32 resolution (ties, but no lattice that matters) and duplicated records
    assert divest.isj_bandwidth(z.astype(np.float32).astype(float)) == pytest.approx(
        0.06720805719555616, rel=1e-12, abs=0
    )
    d = rng.standard_normal(3000)
    assert divest.isj_bandwidth(np.r_[d, d[:5]]) == pytest.approx(
        0.219743970797674, rel=1e-12, abs=0
    )


def test_rounded_weights_outliers_scale_and_kde_paths():
    rng = np.random.default_rng(6)
    y = np.round(rng.standard_normal(3000), 1)
    h = divest.isj_bandwidth(y)
    # zero weights drop points; unit weights change nothing
    w = np.r_[np.ones(2000), np.zeros(1000)]
    assert divest.isj_bandwidth(y, weights=w) == pytest.approx(
        divest.isj_bandwidth(y[:2000]), rel=1e-12
    )
    assert divest.isj_bandwidth(y, weights=np.ones(y.size)) == pytest.approx(h, rel=1e-12)
    # a far point is packed away
    assert divest.isj_bandwidth(np.r_[y, 1e7]) == pytest.approx(h, rel=3e-3)
    # scale equivariance
    for a, b in [(1e-3, 5.0), (-40.0, 1.0)]:
        assert divest.isj_bandwidth(a * y + b) == pytest.approx(abs(a) * h, rel=1e-9)
    # the KDE and one-shot grid options use it
    assert divest.KDE(y, bandwidth="isj").bandwidth[0, 0] == pytest.approx(h * h, rel=1e-12)
    g = divest.kde_grid(y, bandwidth="isj", n_points=256)
    ref = divest.KDE(y, bandwidth=h).grid(256)
    np.testing.assert_allclose(g.values, ref.values, rtol=1e-6, atol=1e-9)
