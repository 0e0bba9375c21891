"""Input handling shared by the API: dtypes, layouts, no mutation, clear errors."""

import numpy as np
import pytest

import divest

RNG = np.random.default_rng(7)


def test_layouts_and_integer_inputs_give_the_same_answer():
    x = RNG.standard_normal((300, 5))
    q = RNG.standard_normal((50, 5))
    ref = divest.KDE(x).logpdf(q)
    np.testing.assert_allclose(
        divest.KDE(np.asfortranarray(x)).logpdf(np.asfortranarray(q)), ref, rtol=1e-13
    )
    big = np.zeros((300, 10))
    big[:, ::2] = x
    np.testing.assert_allclose(divest.KDE(big[:, ::2]).logpdf(q[::1]), ref, rtol=1e-13)
    xi = RNG.integers(-5, 5, size=(200, 2))
    np.testing.assert_allclose(
        divest.KDE(xi).logpdf(xi[:10]), divest.KDE(xi.astype(float)).logpdf(xi[:10].astype(float))
    )
    assert divest.KDE(x.tolist()).logpdf(q.tolist()).dtype == np.float64


def test_inputs_are_never_modified():
    x = RNG.standard_normal((100, 3))
    q = RNG.standard_normal((20, 3))
    w = RNG.random(100)
    copies = [a.copy() for a in (x, q, w)]
    for a in (x, q, w):
        a.setflags(write=False)
    kde = divest.KDE(x, weights=w)
    kde.logpdf(q, return_ess=True)
    kde.score(q)
    kde.loo_logpdf()
    kde.resample(10, rng=0)
    divest.select_bandwidth(x, weights=w, warn_edge=False)
    for a, c in zip((x, q, w), copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (np.zeros((0, 2)), ValueError, "empty"),
        (np.array([[1.0, np.nan]]), ValueError, "NaN or inf"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), ValueError, "NaN or inf"),
        (np.ones((2, 2), dtype=complex), TypeError, "complex"),
        (np.array([["a", "b"]]), TypeError, "real numbers"),
        (np.zeros((2, 2, 2)), ValueError, "shape"),
        (3.0, ValueError, "scalar"),
    ],
)
def test_bad_data(bad, exc, match):
    with pytest.raises(exc, match=match):
        divest.KDE(bad, bandwidth=1.0)


def test_bad_points_weights_bandwidths_kernels():
    x = RNG.standard_normal((50, 3))
    kde = divest.KDE(x)
    with pytest.raises(ValueError, match="dimension 2 but the data have dimension 3"):
        kde.logpdf(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN or inf"):
        kde.logpdf(np.full((1, 3), np.nan))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        divest.KDE(x, weights=-np.ones(50))
    with pytest.raises(ValueError, match="must not all be zero"):
        divest.KDE(x, weights=np.zeros(50))
    with pytest.raises(ValueError, match=r"weights must have shape \(50,\)"):
        divest.KDE(x, weights=np.ones(49))
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        divest.KDE(x, bandwidth=0.0)
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        divest.KDE(x, bandwidth=-0.5)
    with pytest.raises(ValueError, match="positive"):
        divest.KDE(x, bandwidth=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="expected 3"):
        divest.KDE(x, bandwidth=[1.0, 1.0])
    with pytest.raises(ValueError, match="positive definite"):
        divest.KDE(x, bandwidth=np.diag([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="symmetric"):
        divest.KDE(x, bandwidth=np.array([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(ValueError, match="bandwidth must be 'scott'"):
        divest.KDE(x, bandwidth="scot")
    with pytest.raises(ValueError, match="kernel must be one of"):
        divest.KDE(x, kernel="gauss")
    with pytest.raises(ValueError, match="singular"):
        divest.KDE(np.column_stack([x[:, 0], x[:, 0], x[:, 1]]))
    with pytest.raises(ValueError, match="at least 2 data points"):
        divest.KDE(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="singular"):
        divest.KDE(np.ones((10, 1)))
    with pytest.raises(ValueError, match="grid"):
        divest.select_bandwidth(x, grid=[0.5, -1.0])
    with pytest.raises(ValueError, match="at least 2 data points with positive weight"):
        divest.KDE(x, bandwidth=1.0, weights=np.eye(50)[0]).loo_logpdf()
    with pytest.raises(ValueError, match="size must be at least 0"):
        kde.resample(-1)
    with pytest.raises(TypeError, match="rng"):
        kde.resample(3, rng="seed")
    # a constant column is fine with an explicit bandwidth
    assert np.isfinite(divest.KDE(np.ones((10, 2)), bandwidth=0.5).logpdf(np.ones((1, 2)))).all()


def test_check_finite_false_lets_nan_through_without_crashing():
    x = RNG.standard_normal((20, 2))
    out = divest.KDE(x, bandwidth=1.0).logpdf(np.array([[np.nan, 0.0]]), check_finite=False)
    assert out.shape == (1,)


def test_misaligned_arrays_are_read_like_aligned_ones():
    # A float64 buffer at an odd byte offset (np.frombuffer, unpickled network data) used
    # to be refused with "array must be C-contiguous".
    raw = bytearray(8 * 12 + 1)
    a = np.frombuffer(raw, dtype=np.float64, offset=1, count=12)
    assert not a.flags.aligned
    w = np.random.default_rng(3).random(12) + 0.1
    a[:] = w / w.sum()
    b = np.ascontiguousarray(a[::-1])
    assert divest.kl(a, b) == divest.kl(a.copy(), b)
    pts = np.frombuffer(raw, dtype=np.float64, offset=1, count=12).reshape(6, 2)
    assert np.array_equal(divest.KDE(pts).logpdf(pts), divest.KDE(pts.copy()).logpdf(pts.copy()))
    assert divest.energy_distance(pts, pts[::-1] + 1) == divest.energy_distance(
        pts.copy(), pts[::-1] + 1
    )
