"""2-D grids with a full bandwidth matrix (issue 11, fullerr): the binning-error estimate
in Rust (``fullerr``, separable splits of the derivative kernels) against the FFT
estimate kept in ``_kdeerr.binning_error``, and the convolution by 1-D passes along
lattice directions (``fullconv``) against the FFT convolution ``_kdegrid._conv_fft``."""

import math

import numpy as np
import pytest

import divest
from divest import _core, _kdeerr, _kdegrid


def _prec(s0, s1, rho):
    c = np.array([[s0 * s0, rho * s0 * s1], [rho * s0 * s1, s1 * s1]])
    det = c[0, 0] * c[1, 1] - c[0, 1] ** 2
    return np.array([[c[1, 1], -c[0, 1]], [-c[1, 0], c[0, 0]]]) / det


@pytest.mark.parametrize(
    "m,sd,rho,weighted,shift",
    [
        ([60, 80], (0.3, 0.4), 0.02, True, 0.5),  # r > 1 on both axes
        ([61, 33], (0.15, 0.25), -0.25, False, -1.0),
        ([50, 50], (0.5, 0.3), 0.4, True, 0.0),
        ([40, 70], (0.6, 0.6), -0.05, False, 1.0),
    ],
)
def test_rust_full_estimate_equals_the_fft_oracle(m, sd, rho, weighted, shift):
    rng = np.random.default_rng(int(100 * rho) + m[0])
    n = 6000
    x = rng.standard_normal((n, 2)) * 1.5 + shift  # some points beyond the lattice
    x[::7] = np.round(x[::7] * 10) / 10  # lattice data as well as continuous
    w = None
    if weighted:
        w = rng.random(n) + 0.1
        w /= w.sum()
        w[3] = 0.0
    prec = _prec(sd[0], sd[1], rho)
    m = np.array(m)
    lo = np.full(2, -3.0)
    delta = 6.0 / (m - 1)
    lo_c, dc, nc = _kdeerr.field_lattice(lo, delta, m, prec)
    fields = _core.kde_error_fields(
        x, w, 1.0 / n, True, lo_c, [float(v) for v in delta], lo_c, dc, nc
    )
    want = _kdeerr.binning_error(x, w, 1.0 / n, True, lo, delta, m, prec, fields.copy())
    sums = rng.standard_normal(int(np.prod(m)))
    orig = sums.copy()
    scale, fr, fa = 1.7, 1e-14, 1e-12
    got = _kdeerr.grid_error_full(sums, fields, lo, delta, m, prec, scale, fr, fa, budget=2.5e8)
    assert got is not None
    err, peak = got
    want = (want + fr * np.max(np.abs(orig)) + fa) * scale
    assert err.shape == tuple(m)
    assert np.max(np.abs(err - want)) <= 1e-12 * np.max(want)
    assert peak == err.max()
    assert np.array_equal(sums, np.maximum(orig, 0.0) * scale)


def test_rust_full_estimate_declines_costly_splits_and_keeps_the_sums():
    # A strong correlation with the grid's own lattice as the coarse one (r = 1) needs
    # nearly full-rank splits on a large grid: Rust declines, the sums stay as they were.
    m = np.array([700, 700])
    lo = np.zeros(2)
    delta = np.full(2, 0.01)
    prec = _prec(0.06, 0.06, 0.95)
    lo_c, dc, nc = _kdeerr.field_lattice(lo, delta, m, prec)
    fields = np.ones(3 * int(np.prod(nc)))
    sums = -np.ones(int(np.prod(m)))
    assert _kdeerr.grid_error_full(sums, fields, lo, delta, m, prec, 1.0, 0.0, 0.0, 2.5e8) is None
    assert np.all(sums == -1.0)
    # A budget below the splits' cost declines too (the FFT's price on one thread).
    m, prec = np.array([60, 80]), _prec(0.3, 0.4, 0.02)
    lo_c, dc, nc = _kdeerr.field_lattice(lo, delta, m, prec)
    fields = np.ones(3 * int(np.prod(nc)))
    sums = -np.ones(int(np.prod(m)))
    assert _kdeerr.grid_error_full(sums, fields, lo, delta, m, prec, 1.0, 0.0, 0.0, 1e3) is None
    assert np.all(sums == -1.0)
    assert _kdeerr.grid_error_full(sums, fields, lo, delta, m, prec, 1.0, 0.0, 0.0, 2.5e8)


def test_rust_full_estimate_rejects_bad_lattices():
    with pytest.raises(ValueError, match="nodes on axis"):
        _core.kde_grid_error_full(
            np.zeros(4), np.zeros(300), [2, 2], [0.1, 0.1], [1.0, 0.1, 0.1, 1.0],
            [1, 1], [2, 2], [10, 10], 1.0, 0.0, 0.0, 1e9,
        )  # fmt: skip
    with pytest.raises(ValueError, match="symmetric positive definite"):
        _core.kde_grid_error_full(
            np.zeros(4), np.zeros(192), [2, 2], [0.1, 0.1], [1.0, 2.0, 2.0, 1.0],
            [1, 1], [2, 2], [8, 8], 1.0, 0.0, 0.0, 1e9,
        )  # fmt: skip
    with pytest.raises(ValueError, match="sums has"):
        _core.kde_grid_error_full(
            np.zeros(3), np.zeros(192), [2, 2], [0.1, 0.1], [1.0, 0.1, 0.1, 1.0],
            [1, 1], [2, 2], [8, 8], 1.0, 0.0, 0.0, 1e9,
        )  # fmt: skip


def _bins(kde, m, ext):
    """The corrected bins and lattice of ``_grid_nd`` for a 2-D Gaussian grid."""
    x = np.asarray(kde._x, dtype=np.float64)
    hsd = np.sqrt(np.diag(kde.bandwidth))
    m = np.array(m)
    delta = (ext[:, 1] - ext[:, 0]) / (m - 1)
    lk = np.ceil(8.6 * hsd / delta).astype(np.int64)
    pad = lk + 1
    nb = m + 2 * pad
    lo_b = ext[:, 0] - pad * delta
    bins, _ = _core.kde_bin_corrected_nd(
        x, None, 1.0 / x.shape[0], [float(v) for v in lo_b], [float(v) for v in delta],
        [int(v) for v in nb],
    )  # fmt: skip
    return bins.reshape(tuple(int(v) for v in nb)), m, delta, lk, pad, nb


@pytest.mark.parametrize(
    "rho,scale,m",
    [
        (0.002, (1.0, 1.0), (190, 210)),
        (0.3, (1.0, 2.0), (160, 230)),
        (-0.6, (0.5, 1.0), (200, 170)),
    ],
)
def test_full_conv_passes_equal_the_fft_oracle(rho, scale, m):
    rng = np.random.default_rng(3)
    c = np.array(
        [[scale[0] ** 2, rho * scale[0] * scale[1]], [rho * scale[0] * scale[1], scale[1] ** 2]]
    )
    x = rng.multivariate_normal([0.0, 1.0], c, size=4000)
    kde = divest.KDE(x)  # Scott's full matrix
    ext = np.array([[x[:, a].min() - 1.0, x[:, a].max() + 1.0] for a in range(2)])
    bins, m, delta, lk, pad, nb = _bins(kde, m, ext)
    ci = kde._chol_inv
    pl = np.einsum("ki,kj->ij", ci, ci) * np.outer(delta, delta)
    det = pl[0, 0] * pl[1, 1] - pl[0, 1] ** 2
    cov = [pl[1, 1] / det, -pl[0, 1] / det, pl[0, 0] / det]
    got = _core.kde_grid_conv_full(
        bins.reshape(-1), [int(v) for v in nb], [int(v) for v in m], [int(v) for v in pad], cov
    )
    assert got is not None
    want = _kdegrid._conv_fft(kde, bins, lk, pad, m, delta)
    assert np.max(np.abs(got.reshape(want.shape) - want)) <= 1e-13 * np.max(want)


def test_full_conv_declines_a_kernel_too_narrow_for_the_lattice():
    # Less than two nodes per standard deviation: no accurate split, the FFT runs.
    assert (
        _core.kde_grid_conv_full(np.zeros(100), [10, 10], [2, 2], [4, 4], [2.3, 0.3, 2.3]) is None
    )
    with pytest.raises(ValueError, match="inside the bin lattice"):
        _core.kde_grid_conv_full(np.zeros(100), [10, 10], [8, 8], [4, 4], [20.0, 0.3, 20.0])


@pytest.mark.parametrize("rho", [0.05, 0.5])
def test_full_grid_equals_the_fft_path_and_the_exact_sums(rho, monkeypatch):
    # KDE.grid with Scott's full matrix: Rust passes and estimate (checked to have run)
    # against the same call with both declined (the FFT paths), and the values against
    # the exact sums.
    rng = np.random.default_rng(11)
    x = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=20_000)
    kde = divest.KDE(x)
    ran = []
    real = {k: getattr(_core, k) for k in ("kde_grid_conv_full", "kde_grid_error_full")}

    def spy(name):
        def call(*a):
            if name == "kde_grid_error_full":
                a = (*a[:-1], 2.5e8)  # the largest budget, whatever the FFT's price here
            out = real[name](*a)
            ran.append((name, out is not None))
            return out

        return call

    for k in real:
        monkeypatch.setattr(_core, k, spy(k))
    shape = (240, 256)
    r = kde.grid(shape)
    # The passes ran; the estimate's splits too at the weak correlation (at 0.5 on the
    # grid's own lattice they would cost more than the FFT, which then runs).
    assert ran == [("kde_grid_conv_full", True), ("kde_grid_error_full", rho < 0.1)]
    for k in real:
        monkeypatch.setattr(_core, k, lambda *a: None)
    f = kde.grid(shape)
    peak = f.values.max()
    assert np.max(np.abs(r.values - f.values)) <= 1e-13 * peak
    assert np.max(np.abs(r.errors - f.errors)) <= 1e-12 * f.errors.max()
    assert math.isclose(r.error, f.error, rel_tol=1e-12)
    g = np.arange(0, shape[0], 9), np.arange(0, shape[1], 7)
    gx, gy = np.meshgrid(r.grid[0][g[0]], r.grid[1][g[1]], indexing="ij")
    ref = kde.pdf(np.column_stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
    true = np.max(np.abs(r.values[np.ix_(*g)] - ref))
    assert true <= 1e-4 * peak
    assert true <= 3 * r.error
