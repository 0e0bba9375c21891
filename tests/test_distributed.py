"""divest.distributed against the in-memory calls on the same data (bitwise where the work
splits by rows or resamples, 1e-13 relative where partial sums are combined), on a shared
in-process LocalCluster, plus one cluster with worker processes (pickling)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dask")
pytest.importorskip("distributed")

import dask.array as da  # noqa: E402
from dask.delayed import Delayed  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import divest  # noqa: E402
import divest.distributed as dd  # noqa: E402

UNEVEN = (7, 0, 10, 6)  # 23 rows: uneven chunks with an empty one


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def same_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape)
    assert got.tobytes() == want.tobytes(), np.max(np.abs(got - want))


def probs(rng, shape):
    p = rng.random(shape) + 1e-3
    return p / p.sum(-1, keepdims=True)


# ------------------------------------------------------------------- divergences

DIVS = [
    ("kl", {}),
    ("js", {"base": 2}),
    ("js_distance", {}),
    ("hellinger", {}),
    ("tv", {}),
    ("chi2", {}),
    ("renyi", {"alpha": 0.7}),
    ("f_divergence", {"f": "jeffreys"}),
]


@pytest.mark.parametrize("name,kw", DIVS)
@pytest.mark.parametrize("chunks", [UNEVEN, (23,)])
def test_batched_divergences_bitwise(client, name, kw, chunks):
    rng = np.random.default_rng(1)
    p, q = probs(rng, (23, 5)), probs(rng, (23, 5))
    pd = da.from_array(p, chunks=(chunks, 5))
    qd = da.from_array(q, chunks=(chunks, 5))
    got = getattr(dd, name)(pd, qd, **kw)
    assert isinstance(got, da.Array)
    same_bits(got.compute(), getattr(divest, name)(p, q, **kw))


def test_divergence_axis_keepdims_logits_float32_and_broadcast(client):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(6, 4, 9)).astype(np.float32)
    w = rng.normal(size=(6, 4, 9)).astype(np.float32)
    zd = da.from_array(z, chunks=((6,), (4,), (2, 0, 7)))
    wd = da.from_array(w, chunks=((6,), (4,), (2, 0, 7)))
    got = dd.kl(zd, wd, axis=0, keepdims=True, from_logits=True).compute()
    same_bits(got, divest.kl(z, w, axis=0, keepdims=True, from_logits=True))
    # one distribution q broadcast against every row of p
    p = probs(rng, (23, 5))
    q = probs(rng, (5,))
    got = dd.kl(da.from_array(p, chunks=(UNEVEN, 5)), q).compute()
    same_bits(got, divest.kl(p, q))
    # 1-D inputs: a 0-d result
    same_bits(dd.js(p[0], q).compute(), np.asarray(divest.js(p[0], q)))


def test_divergence_numpy_inputs_are_accepted(client):
    rng = np.random.default_rng(3)
    p, q = probs(rng, (40, 6)), probs(rng, (40, 6))
    same_bits(dd.hellinger(p, q).compute(), divest.hellinger(p, q))


def test_divergence_bad_chunking_and_input(client):
    rng = np.random.default_rng(4)
    p, q = probs(rng, (10, 6)), probs(rng, (10, 6))
    split = da.from_array(p, chunks=(5, 3))
    with pytest.raises(ValueError, match=r"axis 1 .*rechunk\(\{1: -1\}\)"):
        dd.kl(split, da.from_array(q, chunks=(5, 6)))
    with pytest.raises(ValueError, match="chunked alike"):
        dd.kl(da.from_array(p, chunks=(5, 6)), da.from_array(q, chunks=(4, 6)))
    with pytest.raises(TypeError, match="real numbers"):
        dd.kl(da.from_array(p.astype(complex), chunks=(5, 6)), q)
    with pytest.raises(ValueError, match="same number of categories"):
        dd.kl(p, q[:, :4])
    # Bad values are the in-memory call's errors, raised when computed.
    bad = p.copy()
    bad[3, 0] = -1.0
    with pytest.raises(ValueError, match="non-negative|negative"):
        dd.kl(da.from_array(bad, chunks=(5, 6)), q).compute()


# ---------------------------------------------------------------- sinkhorn_batch


@pytest.mark.parametrize("shared", [True, False])
def test_sinkhorn_batch_bitwise(client, shared):
    rng = np.random.default_rng(5)
    nb, n, m = 9, 4, 5
    a, b = probs(rng, (nb, n)), probs(rng, (nb, m))
    cost = rng.random((n, m)) if shared else rng.random((nb, n, m))
    want = divest.sinkhorn_batch(a, b, cost, 0.1, return_plan=True)
    ch = (4, 0, 5)
    ad = da.from_array(a, chunks=(ch, n))
    bd = da.from_array(b, chunks=(ch, m))
    cd = da.from_array(cost, chunks=(2, 3)) if shared else da.from_array(cost, chunks=(ch, n, m))
    got = dd.sinkhorn_batch(ad, bd, cd, 0.1, return_plan=True)
    for f in ("cost", "linear_cost", "f", "g", "n_iter", "converged", "marginal_error", "plan"):
        same_bits(getattr(got, f).compute(), getattr(want, f))
    # a NumPy cost (shared or per problem) is sent once, not per task
    got = dd.sinkhorn_batch(ad, bd, cost, 0.1)
    assert got.plan is None
    same_bits(got.f.compute(), want.f)


def test_sinkhorn_batch_non_convergence_warns_on_the_client(client):
    import warnings

    rng = np.random.default_rng(7)
    a, b, cost = probs(rng, (6, 4)), probs(rng, (6, 5)), rng.random((6, 4, 5))
    ad = da.from_array(a, chunks=((2, 0, 4), 4))
    bd = da.from_array(b, chunks=((2, 0, 4), 5))
    kw = dict(max_iter=2, tol=1e-12)
    with pytest.warns(divest.ConvergenceWarning, match="did not converge"):
        want = divest.sinkhorn_batch(a, b, cost, 0.01, **kw)
    res = dd.sinkhorn_batch(ad, bd, cost, 0.01, **kw)
    assert isinstance(res, dd.DaskSinkhornResult)
    with pytest.warns(divest.ConvergenceWarning, match=r"6 of 6 problems .*tol 1e-12"):
        got = res.compute()
    assert isinstance(got, divest.SinkhornResult) and got.plan is None
    for f in ("cost", "f", "g", "n_iter", "converged", "marginal_error"):
        same_bits(getattr(got, f), getattr(want, f))
    # converged problems: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = dd.sinkhorn_batch(ad, bd, cost, 1.0).compute()
    assert ok.converged.all()


def test_sinkhorn_batch_bad_chunks(client):
    a = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="chunked alike"):
        dd.sinkhorn_batch(
            da.from_array(a, chunks=(2, 3)), da.from_array(a, chunks=(3, 3)), np.ones((3, 3)), 1.0
        )
    with pytest.raises(ValueError, match="rechunk"):
        dd.sinkhorn_batch(da.from_array(a, chunks=(2, 1)), a, np.ones((3, 3)), 1.0)


# ------------------------------------------------------------------------ KDE


def test_kde_queries_chunked_bitwise(client):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(50, 2))
    q = rng.normal(size=(23, 2)) * 2
    for kernel in ("gaussian", "epanechnikov"):
        want = divest.kde_logpdf(x, q, kernel=kernel)
        got = dd.kde_logpdf(x, da.from_array(q, chunks=(UNEVEN, 2)), kernel=kernel)
        assert isinstance(got, da.Array)
        same_bits(got.compute(), want)
    lp, ess = dd.kde_logpdf(x, da.from_array(q, chunks=(UNEVEN, 2)), return_ess=True)
    wl, we = divest.kde_logpdf(x, q, return_ess=True)
    same_bits(lp.compute(), wl)
    same_bits(ess.compute(), we)
    model = divest.KDE(x, bandwidth=0.4)
    same_bits(dd.kde_logpdf(model, q).compute(), model.logpdf(q))


def test_kde_queries_1d_follow_the_sorted_choice(client):
    # n·m >= 2^20: the in-memory call sorts and sweeps; every block must do the same.
    rng = np.random.default_rng(7)
    x = rng.normal(size=2000)
    q = rng.normal(size=600)
    want = divest.kde_logpdf(x, q)
    got = dd.kde_logpdf(x, da.from_array(q, chunks=((100, 0, 500),))).compute()
    same_bits(got, want)


@pytest.mark.parametrize(
    "bandwidth,kernel,weighted",
    [
        ("scott", "gaussian", False),
        ("silverman", "gaussian", True),
        (0.3, "epanechnikov", True),
        (np.array([[0.2, 0.05], [0.05, 0.3]]), "gaussian", False),
    ],
)
def test_kde_data_chunked_within_1e13(client, bandwidth, kernel, weighted):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(60, 2)) * [1.0, 3.0] + [5.0, -2.0]
    w = rng.random(60) if weighted else None
    q = rng.normal(size=(23, 2)) * [1.0, 3.0] + [5.0, -2.0]
    want = divest.kde_logpdf(x, q, bandwidth=bandwidth, kernel=kernel, weights=w)
    xd = da.from_array(x, chunks=((20, 0, 25, 15), 2))
    wd = None if w is None else da.from_array(w, chunks=((20, 0, 25, 15),))
    got = dd.kde_logpdf(xd, da.from_array(q, chunks=(UNEVEN, 2)), bandwidth, kernel, wd).compute()
    fin = np.isfinite(want)
    assert np.array_equal(fin, np.isfinite(got))
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-13, atol=0)
    assert not fin.all() or kernel == "gaussian"


def test_kde_data_chunked_single_chunk_and_1d(client):
    rng = np.random.default_rng(9)
    x = rng.normal(size=40)
    q = np.linspace(-3, 3, 11)
    want = divest.kde_logpdf(x, q)
    got = dd.kde_logpdf(da.from_array(x, chunks=40), q).compute()
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


def test_kde_bad_input(client):
    x = da.from_array(np.random.default_rng(1).normal(size=(20, 2)), chunks=(10, 2))
    q = np.zeros((3, 2))
    with pytest.raises(ValueError, match="not available with the data chunked"):
        dd.kde_logpdf(x, q, bandwidth="loo")
    with pytest.raises(ValueError, match="return_ess"):
        dd.kde_logpdf(x, q, return_ess=True)
    with pytest.raises(ValueError, match="chunked alike"):
        dd.kde_logpdf(x, q, weights=da.ones(20, chunks=7))
    with pytest.raises(ValueError, match=r"rechunk\(\{1: -1\}\)"):
        dd.kde_logpdf(x.rechunk((10, 1)), q)
    with pytest.raises(ValueError, match="coordinates"):
        dd.kde_logpdf(np.random.default_rng(2).normal(size=(9, 3)), q)


# ------------------------------------------------------------------------ kNN


def test_knn_estimators_bitwise(client):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(23, 2))
    y = rng.normal(size=(31, 2)) + 0.5
    xd = da.from_array(x, chunks=(UNEVEN, 2))
    for alg in ("auto", "brute"):
        got = dd.knn_entropy(xd, k=3, algorithm=alg)
        assert isinstance(got, da.Array) and got.ndim == 0
        same_bits(got.compute(), np.float64(divest.knn_entropy(x, k=3, algorithm=alg)))
        got = dd.knn_kl(xd, y, k=2, base=2, algorithm=alg).compute()
        same_bits(got, np.float64(divest.knn_kl(x, y, k=2, base=2, algorithm=alg)))
    same_bits(dd.knn_entropy(x).compute(), np.float64(divest.knn_entropy(x)))


def test_knn_bad_input(client):
    x = np.random.default_rng(1).normal(size=(10, 2))
    with pytest.raises(ValueError, match="k must be smaller"):
        dd.knn_entropy(x, k=10)
    with pytest.raises(ValueError, match="coordinates"):
        dd.knn_kl(x, np.zeros((5, 3)))
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dd.knn_entropy(da.from_array(bad, chunks=(5, 2))).compute()


# ------------------------------------------------------------- resampling tests


def assert_same_test(got, want):
    assert isinstance(got, divest.TestResult)
    same_bits(np.float64(got.statistic), np.float64(want.statistic))
    same_bits(np.float64(got.pvalue), np.float64(want.pvalue))
    same_bits(got.null_distribution, want.null_distribution)


def test_dcov_and_ccdcov_tests_split_by_resamples_bitwise(client):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(30, 2))
    y = x[:, :1] ** 2 + rng.normal(size=(30, 1))
    z = rng.normal(size=30)
    xd = da.from_array(x, chunks=((10, 0, 20), 2))
    # column chunks are fine for the tests: the samples are assembled whole
    got = dd.dcov_test(
        da.from_array(x, chunks=(7, 1)), y, n_resamples=50, rng=3, resamples_per_task=7
    )
    assert isinstance(got, Delayed)
    assert_same_test(got.compute(), divest.dcov_test(x, y, n_resamples=50, rng=3))
    got = dd.dcov_test(x, y, n_resamples=20, rng=4, exponent=0.5).compute()  # one task
    assert_same_test(got, divest.dcov_test(x, y, n_resamples=20, rng=4, exponent=0.5))
    got = dd.ccdcov_test(xd, y, z, n_resamples=30, rng=5, resamples_per_task=8).compute()
    assert_same_test(got, divest.ccdcov_test(x, y, z, n_resamples=30, rng=5))
    gt = dd.dcov_test(xd, y, method="t").compute()
    wt = divest.dcov_test(x, y, method="t")
    assert (gt.statistic, gt.pvalue) == (wt.statistic, wt.pvalue)


def test_resampling_tests_with_one_range_are_one_task(client):
    # Each graph level costs a scheduler round trip: a test whose resamples fit one task
    # is one task (preparation, resamples and finish fused), still bitwise.
    rng = np.random.default_rng(21)
    x = rng.normal(size=(25, 2))
    y = x[:, :1] + rng.normal(size=(25, 1))
    s = [x, rng.normal(size=(18, 2))]
    cases = [
        (dd.dcov_test(x, y, n_resamples=40, rng=2), divest.dcov_test(x, y, n_resamples=40, rng=2)),
        (
            dd.ccdcov_test(y, x[:, :1], x[:, 1], n_resamples=33, rng=3),
            divest.ccdcov_test(y, x[:, :1], x[:, 1], n_resamples=33, rng=3),
        ),
        (dd.energy_test(*s, n_resamples=29, rng=4), divest.energy_test(*s, n_resamples=29, rng=4)),
        (
            dd.jdcov_test(x[:, :1], x[:, 1:], y, n_resamples=11, rng=5),
            divest.jdcov_test(x[:, :1], x[:, 1:], y, n_resamples=11, rng=5),
        ),
    ]
    for got, want in cases:
        assert len(dict(got.__dask_graph__())) == 1
        assert_same_test(got.compute(), want)
    # Split into ranges: a preparation, one task per range and a finish.
    got = dd.dcov_test(x, y, n_resamples=40, rng=2, resamples_per_task=15)
    assert len(dict(got.__dask_graph__())) == 5
    # A Dask input is gathered by one task first.
    got = dd.dcov_test(da.from_array(x, chunks=(10, 2)), y, n_resamples=40, rng=2)
    assert_same_test(got.compute(), cases[0][1])


def test_generator_is_advanced_like_the_in_memory_call(client):
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(12, 1)), rng.normal(size=(12, 1))
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(2):
        got = dd.dcov_test(x, y, n_resamples=9, rng=g1, resamples_per_task=4).compute()
        assert_same_test(got, divest.dcov_test(x, y, n_resamples=9, rng=g2))


def test_energy_test_split_bitwise(client):
    rng = np.random.default_rng(12)
    s = [rng.normal(size=(n, 2)) + i for i, n in enumerate((9, 12, 7))]
    parts = [da.from_array(s[0], chunks=((4, 0, 5), 2)), s[1], s[2]]
    got = dd.energy_test(*parts, n_resamples=41, rng=6, resamples_per_task=10).compute()
    assert_same_test(got, divest.energy_test(*s, n_resamples=41, rng=6))


def test_jdcov_test_split_bitwise(client):
    rng = np.random.default_rng(13)
    xs = [rng.normal(size=(15, 1)) for _ in range(3)]
    want = divest.jdcov_test(*xs, n_resamples=17, rng=7)
    got = dd.jdcov_test(*xs, n_resamples=17, rng=7, resamples_per_task=5).compute()
    assert_same_test(got, want)


def test_resampling_bad_input(client):
    x = np.zeros((10, 1)) + np.arange(10)[:, None]
    with pytest.raises(ValueError, match="n_resamples"):
        dd.dcov_test(x, x, n_resamples=0)
    with pytest.raises(ValueError, match="resamples_per_task"):
        dd.dcov_test(x, x, resamples_per_task=0)
    with pytest.raises(ValueError, match="method"):
        dd.dcov_test(x, x, method="exact")
    with pytest.raises(ValueError, match="exponent"):
        dd.energy_test(x, x, exponent=2.5)
    with pytest.raises(ValueError, match="same number of observations"):
        dd.dcov_test(x, x[:5], n_resamples=3).compute()


# ----------------------------------------------------------- worker processes


def test_worker_processes_pickle_and_threads():
    rng = np.random.default_rng(14)
    p, q = probs(rng, (23, 5)), probs(rng, (23, 5))
    x = rng.normal(size=(20, 2))
    y = rng.normal(size=(20, 1))
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        dd.configure_workers(c, 1)
        assert list(c.run(divest.get_num_threads).values()) == [1]
        got = dd.kl(da.from_array(p, chunks=(UNEVEN, 5)), q).compute()
        same_bits(got, divest.kl(p, q))
        got = dd.dcov_test(x, y, n_resamples=20, rng=1, resamples_per_task=6).compute()
        assert_same_test(got, divest.dcov_test(x, y, n_resamples=20, rng=1))
        got = dd.dcov_test(x, y, n_resamples=20, rng=1).compute()  # one fused task
        assert_same_test(got, divest.dcov_test(x, y, n_resamples=20, rng=1))
        got = dd.kde_logpdf(x, da.from_array(x, chunks=(7, 2))).compute()
        same_bits(got, divest.kde_logpdf(x, x))
        # A small Sinkhorn divergence runs as one task on the worker; its
        # non-convergence is still warned on the client.
        kw = dict(eps=0.1, tol=1e-14, max_iter=2, scaling=0.5)
        with pytest.warns(divest.ConvergenceWarning):
            got = dd.sinkhorn_divergence(da.from_array(x, chunks=7), x[::-1] + 0.5, **kw)
        assert got.converged is False
        with pytest.warns(divest.ConvergenceWarning):
            want = divest.sinkhorn_divergence(x, x[::-1] + 0.5, **kw)
        same_bits(got.f.compute(), want.f)


# ------------------------------------------------------------- sums over pairs


def close(got, want, rel=1e-13):
    assert abs(got - want) <= rel * abs(want), (got, want)


@pytest.mark.parametrize("unbiased", [False, True])
def test_energy_distance_block_pairs(client, unbiased):
    rng = np.random.default_rng(15)
    x = rng.normal(size=(23, 3))
    y = rng.normal(size=(31, 3)) + 0.5
    xd = da.from_array(x, chunks=(UNEVEN, 3))
    yd = da.from_array(y, chunks=((31,), 3))
    for e in (1.0, 0.5):
        got = dd.energy_distance(xd, yd, exponent=e, unbiased=unbiased)
        assert isinstance(got, da.Array) and got.ndim == 0
        close(float(got.compute()), divest.energy_distance(x, y, exponent=e, unbiased=unbiased))
    # magnitudes far outside the safe window are rescaled by the same power of two
    close(float(dd.energy_distance(xd * 1e200, y * 1e200).compute()),
          divest.energy_distance(x * 1e200, y * 1e200))  # fmt: skip


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_block_pairs(client, kernel, unbiased):
    rng = np.random.default_rng(16)
    x = rng.normal(size=(23, 2))
    y = rng.normal(size=(17, 2)) * 1.5 + 1.0
    xd = da.from_array(x, chunks=(UNEVEN, 2))
    yd = da.from_array(y, chunks=((5, 12), 2))
    for sigma in (None, 0.8):
        want = divest.mmd(x, y, sigma=sigma, kernel=kernel, unbiased=unbiased)
        got = float(dd.mmd(xd, yd, sigma=sigma, kernel=kernel, unbiased=unbiased).compute())
        close(got, want, 1e-12)


def test_mmd_median_subsample_and_cs(client):
    rng = np.random.default_rng(17)
    x = rng.normal(size=(700, 2))
    y = rng.normal(size=(600, 2)) + 0.3
    xd = da.from_array(x, chunks=((300, 0, 400), 2))
    yd = da.from_array(y, chunks=(250, 2))
    close(float(dd.mmd(xd, yd).compute()), divest.mmd(x, y), 1e-12)
    close(float(dd.cs_divergence(xd, yd).compute()), divest.cs_divergence(x, y), 1e-12)
    # identical samples: 0 in memory; the block-pair log-sums, summed in another order,
    # within the documented 1e-13 of the log kernel sums
    assert divest.cs_divergence(x, x) == 0.0
    assert abs(float(dd.cs_divergence(xd, x).compute())) <= 1e-13


def test_pair_sums_bad_input(client):
    x = np.random.default_rng(1).normal(size=(10, 2))
    with pytest.raises(ValueError, match="same dimension"):
        dd.energy_distance(x, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"rechunk\(\{1: -1\}\)"):
        dd.mmd(da.from_array(x, chunks=(5, 1)), x)
    with pytest.raises(ValueError, match="sigma"):
        dd.mmd(x, x + 1, sigma=-1.0)
    bad = x.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        dd.energy_distance(da.from_array(bad, chunks=(5, 2)), x).compute()


@pytest.mark.parametrize("unbiased", [False, True])
def test_dcov_block_pairs(client, unbiased):
    rng = np.random.default_rng(18)
    x = rng.normal(size=(23, 3))
    y = np.column_stack([x[:, 0] ** 2, x[:, 1]]) + rng.normal(size=(23, 2))
    xd = da.from_array(x, chunks=(UNEVEN, 3))
    yd = da.from_array(y, chunks=(UNEVEN, 2))
    for e in (1.0, 0.6):
        got = float(dd.dcov_sqr(xd, yd, exponent=e, unbiased=unbiased).compute())
        close(got, divest.dcov_sqr(x, y, exponent=e, unbiased=unbiased))
        got = float(dd.dcor_sqr(xd, y, exponent=e, unbiased=unbiased).compute())
        close(got, divest.dcor_sqr(x, y, exponent=e, unbiased=unbiased))
    close(float(dd.dcor(xd, yd).compute()), divest.dcor(x, y))
    close(float(dd.dcov(x * 1e100, yd).compute()), divest.dcov(x * 1e100, y))
    with pytest.raises(ValueError, match="chunked alike"):
        dd.dcov_sqr(xd, da.from_array(y, chunks=(12, 2)))
    with pytest.raises(ValueError, match="same number of observations"):
        dd.dcor(x, y[:5])


def test_kde_data_chunked_float32_and_numpy_weights(client):
    rng = np.random.default_rng(19)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    q = rng.normal(size=(9, 2)).astype(np.float32)
    w = rng.random(40)
    want = divest.kde_logpdf(x, q, weights=w)
    got = dd.kde_logpdf(da.from_array(x, chunks=(15, 2)), q, weights=w).compute()
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_sinkhorn_batch_masks_are_refused_with_a_clear_error():
    a = np.full((4, 3), 1 / 3)
    c = np.random.default_rng(0).random((4, 3, 3))
    mask = np.ones((4, 3), bool)
    with pytest.raises(ValueError, match="a_mask: padded batches with masks are not distributed"):
        dd.sinkhorn_batch(a, a, c, 0.1, a_mask=mask)


# ------------------------------------------------ point-cloud Sinkhorn divergence


def sd_clouds(seed, n=23, m=17, d=2, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d)).astype(dtype)
    y = (0.8 * rng.random((m, d)) + 0.3).astype(dtype)
    return x, y


def sd_close(got, want, scale, rel):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    assert err <= rel * scale, (err, scale)


def check_sd(got, want, rel):
    """Every field of a distributed SinkhornDivergence against the in-memory one; the
    tolerance is relative to the size of the potentials (the value is their difference)."""
    f, g = got.f.compute(), got.g.compute()
    scale = max(float(np.max(np.abs(want.f))), float(np.max(np.abs(want.g))), 1e-300)
    if rel == 0:
        same_bits(f, want.f)
        same_bits(g, want.g)
        if want.grad is not None:
            same_bits(got.grad.compute(), want.grad)
    else:
        sd_close(f, want.f, scale, rel)
        sd_close(g, want.g, scale, rel)
        if want.grad is not None:
            top = max(np.max(np.abs(want.grad)), 1e-300)
            sd_close(got.grad.compute(), want.grad, top, max(rel, 1e-12))
    assert f.dtype == want.f.dtype
    # ⟨a,|f|⟩ + ⟨b,|g|⟩ bounds the terms the value is summed from (probability weights).
    sd_close(got.value.compute(), want.value, 4 * scale, 1e-15 if rel == 0 else rel)
    sd_close(got.marginal_error.compute(), want.marginal_error, 1.0, 1e-13 if rel == 0 else rel)
    assert got.n_iter == want.n_iter and got.converged == want.converged


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("debias", [True, False])
def test_sinkhorn_divergence_one_chunk_is_bitwise(client, p, debias):
    x, y = sd_clouds(20)
    kw = dict(eps=0.01, p=p, debias=debias, scaling=0.5)
    want = divest.sinkhorn_divergence(x, y, **kw)
    got = dd.sinkhorn_divergence(
        da.from_array(x, chunks=(23, 2)), da.from_array(y, chunks=(17, 2)), **kw, one_task_pairs=0
    )
    assert isinstance(got.value, da.Array) and isinstance(got.f, da.Array)
    check_sd(got, want, 0)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("fuse", [True, False])
def test_sinkhorn_divergence_block_tree_within_1e13(client, p, fuse, monkeypatch):
    if not fuse:  # a task per block pair and per merge
        monkeypatch.setattr(dd, "_SD_FUSE_PAIRS", -1)
    x, y = sd_clouds(21, n=300, m=280, d=3)
    rng = np.random.default_rng(3)
    a, b = rng.random(300) + 0.1, rng.random(280)
    b[5] = 0.0  # a zero weight: -inf log-weight in a block
    kw = dict(eps=0.05, p=p, scaling=0.5)
    want = divest.sinkhorn_divergence(x, y, a, b, **kw)
    xd = da.from_array(x, chunks=((100, 0, 37, 163), 3))
    yd = da.from_array(y, chunks=((256, 24), 3))
    wa = da.from_array(a, chunks=((100, 0, 37, 163),))
    got = dd.sinkhorn_divergence(xd, yd, wa, b, **kw, one_task_pairs=0)
    check_sd(got, want, 1e-13)
    # The partials do differ from the in-memory sums (else the tolerance is untested).
    assert got.f.compute().tobytes() != want.f.tobytes() or p == 1


def test_sinkhorn_divergence_tol_loop_float32_and_no_grad(client):
    x, y = sd_clouds(22, n=40, m=30)
    kw = dict(eps=0.1, tol=1e-7, max_iter=500, scaling=0.5)
    want = divest.sinkhorn_divergence(x, y, **kw)
    got = dd.sinkhorn_divergence(
        da.from_array(x, chunks=(13, 2)), da.from_array(y, chunks=(30, 2)), **kw, one_task_pairs=0
    )
    assert want.converged and got.converged is True and got.n_iter == want.n_iter
    check_sd(got, want, 1e-13)
    # max_iter reached: the warning is raised on the client, at the call
    with pytest.warns(divest.ConvergenceWarning):
        got = dd.sinkhorn_divergence(
            x, y, eps=0.1, tol=1e-14, max_iter=2, scaling=0.5, one_task_pairs=0
        )
    assert got.converged is False
    with pytest.warns(divest.ConvergenceWarning):  # the same in one task
        got = dd.sinkhorn_divergence(x, y, eps=0.1, tol=1e-14, max_iter=2, scaling=0.5)
    assert got.converged is False
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    want = divest.sinkhorn_divergence(x32, y32, eps=0.1, grad=False, scaling=0.5)
    got = dd.sinkhorn_divergence(
        da.from_array(x32, chunks=20), y32, eps=0.1, grad=False, scaling=0.5, one_task_pairs=0
    )
    assert got.grad is None
    check_sd(got, want, 1e-6)


def test_sinkhorn_divergence_degenerate_and_extreme_scales(client):
    x = np.ones((5, 2))
    got = dd.sinkhorn_divergence(da.from_array(x, chunks=2), x, eps=0.1)
    check_sd(got, divest.sinkhorn_divergence(x, x, eps=0.1), 0)
    # eps beyond 1e9 D^2: the closed-form limit, computed in one task
    xs, ys = sd_clouds(23, n=9, m=8)
    got = dd.sinkhorn_divergence(da.from_array(xs, chunks=4), ys, eps=1e12)
    check_sd(got, divest.sinkhorn_divergence(xs, ys, eps=1e12), 0)
    # clouds at 1e200: rescaled by a power of two, as in memory
    want = divest.sinkhorn_divergence(xs * 1e200, ys * 1e200, eps=1e198, p=1, scaling=0.5)
    got = dd.sinkhorn_divergence(
        da.from_array(xs * 1e200, chunks=4),
        ys * 1e200,
        eps=1e198,
        p=1,
        scaling=0.5,
        one_task_pairs=0,
    )
    check_sd(got, want, 1e-13)


def sd_keys(arr, name):
    return [k for k in dict(arr.__dask_graph__()) if name in str(k)]


def test_sinkhorn_divergence_fused_row_tasks_are_the_pair_graph(client, monkeypatch):
    # Small row blocks run their column blocks, the merge tree and the update in one
    # task: the same operations in the same order as the block-pair graph.
    x, y = sd_clouds(26, n=90, m=70, d=2)
    xd = da.from_array(x, chunks=((30, 0, 25, 35), 2))
    yd = da.from_array(y, chunks=((25, 25, 20), 2))
    # (the tol loop on fused tasks: test_sinkhorn_divergence_tol_loop_float32_and_no_grad)
    for kw in (dict(eps=0.05, scaling=0.5),):
        fused = dd.sinkhorn_divergence(xd, yd, **kw, one_task_pairs=0)
        with monkeypatch.context() as mp:
            mp.setattr(dd, "_SD_FUSE_PAIRS", -1)
            pairs = dd.sinkhorn_divergence(xd, yd, **kw, one_task_pairs=0)
        assert sd_keys(fused.f, "_sd_fused") and not sd_keys(fused.f, "_sd_part")
        assert sd_keys(pairs.f, "_sd_part") and not sd_keys(pairs.f, "_sd_fused")
        assert fused.n_iter == pairs.n_iter and fused.converged == pairs.converged
        names = ("f", "g", "grad", "value", "marginal_error")
        got = da.compute(*[getattr(fused, k) for k in names])
        for a, b in zip(got, da.compute(*[getattr(pairs, k) for k in names])):
            same_bits(a, b)
        want = divest.sinkhorn_divergence(x, y, **kw)
        scale = max(np.max(np.abs(want.f)), np.max(np.abs(want.g)))
        sd_close(got[0], want.f, scale, 1e-13)
        sd_close(got[3], want.value, 4 * scale, 1e-13)


def test_sinkhorn_divergence_small_solves_are_one_task_and_bitwise(client):
    x, y = sd_clouds(25, n=60, m=50, d=3)
    rng = np.random.default_rng(4)
    a = rng.random(60) + 0.1
    kw = dict(eps=0.02, p=2, scaling=0.7)
    want = divest.sinkhorn_divergence(x, y, a, **kw)
    xd = da.from_array(x, chunks=((20, 0, 40), 3))
    got = dd.sinkhorn_divergence(xd, da.from_array(y, chunks=25), a, **kw)
    check_sd(got, want, 0)
    same_bits(np.float64(got.value.compute()), np.float64(want.value))
    # One solve task: the graph of f is the gathered clouds, the solve and its field.
    assert len([k for k in dict(got.f.__dask_graph__()) if "_sd_gathered" in str(k)]) == 1
    assert not sd_keys(got.f, "_sd_part") and not sd_keys(got.f, "_sd_fused")
    # Just above the threshold: the block graph (fused row tasks here; within 1e-13).
    got = dd.sinkhorn_divergence(xd, y, a, **kw, one_task_pairs=1)
    assert sd_keys(got.f, "_sd_fused")
    check_sd(got, want, 1e-13)


def test_sinkhorn_divergence_bad_input(client):
    x, y = sd_clouds(24)
    with pytest.raises(ValueError, match="rechunk"):
        dd.sinkhorn_divergence(da.from_array(x, chunks=(5, 1)), y, eps=0.1)
    with pytest.raises(ValueError, match="same dimension"):
        dd.sinkhorn_divergence(x, y[:, :1], eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        dd.sinkhorn_divergence(x, y, eps=-1.0)
    with pytest.raises(ValueError, match="scaling"):
        dd.sinkhorn_divergence(x, y, eps=0.1, scaling=1.5)
    with pytest.raises(ValueError, match="p"):
        dd.sinkhorn_divergence(x, y, eps=0.1, p=3)
    with pytest.raises(ValueError, match=r"a must have shape \(23,\)"):
        dd.sinkhorn_divergence(x, y, np.ones(5), eps=0.1)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN|finite"):
        dd.sinkhorn_divergence(da.from_array(bad, chunks=5), y, eps=0.1)
    with pytest.raises(ValueError, match="negative"):
        dd.sinkhorn_divergence(x, y, -np.ones(23), eps=0.1).value.compute()
    with pytest.raises(ValueError, match="empty"):
        dd.sinkhorn_divergence(x[:0], y, eps=0.1)
    with pytest.raises(ValueError, match="one_task_pairs"):
        dd.sinkhorn_divergence(x, y, eps=0.1, one_task_pairs=-1)
    with pytest.raises(TypeError, match="one_task_pairs"):
        dd.sinkhorn_divergence(x, y, eps=0.1, one_task_pairs="all")


# ------------------------------------------------------------ DPP and volume sampling


def test_dpp_samplers_split_by_sample_index_bitwise(client):
    from divest import dpp

    rng = np.random.default_rng(30)
    u = np.linalg.qr(rng.normal(size=(60, 5)))[0]
    for method in ("chain", "rejection"):
        want = dpp.sample_projection(u, 11, method=method, rng=7)
        for per in (1, 4, 11, None):
            got = dd.sample_projection(
                da.from_array(u, chunks=(25, 5)), 11, method=method, rng=7, samples_per_task=per
            )
            same_bits(got.compute(), want)
    same_bits(dd.sample_projection(u, rng=3).compute(), dpp.sample_projection(u, rng=3))
    L = rng.normal(size=(30, 30))
    model = dpp.DPP(L=L @ L.T / 30)
    want = model.sample(9, rng=5)
    got = dd.dpp_sample(model, 9, rng=5, samples_per_task=2).compute()
    assert len(got) == 9 and all(g.tobytes() == w.tobytes() for g, w in zip(got, want))
    same_bits(dd.dpp_sample(model, rng=6).compute(), model.sample(rng=6))
    same_bits(
        dd.dpp_sample_k(model, 4, 7, rng=8, samples_per_task=3).compute(),
        model.sample_k(4, 7, rng=8),
    )
    x = rng.normal(size=(50, 3))
    for per in (1, 5):
        same_bits(
            dd.volume_sample(da.from_array(x, chunks=(20, 3)), 6, rng=2, n_samples=7,
                             samples_per_task=per).compute(),
            dpp.volume_sample(x, 6, rng=2, n_samples=7),
        )  # fmt: skip
    w = rng.random(50)
    same_bits(
        dd.volume_rescaled_sample(x, 8, rng=4, p=w, n_samples=5, samples_per_task=2).compute(),
        dpp.volume_rescaled_sample(x, 8, rng=4, p=w, n_samples=5),
    )
    same_bits(dd.volume_sample(x, 4, rng=1).compute(), dpp.volume_sample(x, 4, rng=1))
    # A Generator is advanced like the in-memory call's.
    g1, g2 = np.random.default_rng(11), np.random.default_rng(11)
    dd.sample_projection(u, 3, rng=g1)
    dpp.sample_projection(u, 3, rng=g2)
    assert g1.integers(1 << 30) == g2.integers(1 << 30)


def test_dpp_samplers_bad_input(client):
    from divest import dpp

    u = np.linalg.qr(np.random.default_rng(31).normal(size=(20, 4)))[0]
    with pytest.raises(ValueError, match="samples_per_task"):
        dd.sample_projection(u, 3, samples_per_task=0)
    with pytest.raises(ValueError, match="method"):
        dd.sample_projection(u, 3, method="nope")
    with pytest.raises(ValueError, match="orthonormal"):
        dd.sample_projection(2 * u, 3).compute()
    with pytest.raises(ValueError, match="2-D"):
        dd.sample_projection(u[:, 0], 3)
    with pytest.raises(TypeError, match="DPP"):
        dd.dpp_sample(u, 3)
    model = dpp.DPP(L=u @ u.T)
    with pytest.raises(ValueError, match="rank"):
        dd.dpp_sample_k(model, 5)
    with pytest.raises(ValueError, match="at least d"):
        dd.volume_sample(u, 2)
    with pytest.raises(ValueError, match="at most N"):
        dd.volume_sample(u, 21)
    with pytest.raises(ValueError, match="p must"):
        dd.volume_rescaled_sample(u, 5, p=-np.ones(20)).compute()


# ------------------------------------------------------------------ partial dCor


@pytest.mark.parametrize("chunks", [UNEVEN, (23,)])
def test_partial_dcor_block_pairs_within_1e12(client, chunks):
    rng = np.random.default_rng(40)
    z = rng.normal(size=(23, 2))
    x = z[:, :1] + 0.5 * rng.normal(size=(23, 1))
    y = np.hstack([z[:, 1:] ** 2, x]) + rng.normal(size=(23, 2))
    for exponent in (1.0, 0.5):
        want = divest.partial_dcor(x, y, z, exponent=exponent)
        got = dd.partial_dcor(
            da.from_array(x, chunks=(chunks, 1)),
            da.from_array(y, chunks=(chunks, 2)),
            z,  # NumPy: takes the chunks of x
            exponent=exponent,
        )
        assert isinstance(got, da.Array) and got.shape == ()
        assert abs(float(got.compute()) - want) <= 1e-12, (float(got.compute()), want)
    # z explains x fully: 0, as in memory
    same = dd.partial_dcor(da.from_array(z[:, :1], chunks=(chunks, 1)), y, z[:, :1]).compute()
    assert float(same) == divest.partial_dcor(z[:, :1], y, z[:, :1]) == 0.0


def test_partial_dcor_bad_input(client):
    x = np.random.default_rng(41).normal(size=(10, 2))
    with pytest.raises(ValueError, match="same number of observations"):
        dd.partial_dcor(x, x, x[:9])
    with pytest.raises(ValueError, match="chunked alike"):
        dd.partial_dcor(da.from_array(x, chunks=5), da.from_array(x, chunks=4), x)
    with pytest.raises(ValueError, match="at least 4"):
        dd.partial_dcor(x[:3], x[:3], x[:3])
    with pytest.raises(ValueError, match="exponent"):
        dd.partial_dcor(x, x, x, exponent=2.5)
    bad = x.copy()
    bad[2, 0] = np.inf
    with pytest.raises(ValueError, match="z"):
        dd.partial_dcor(x, x, bad).compute()


# ------------------------------------------------- zarr and Parquet read on the workers


def test_kl_and_kde_on_a_zarr_array_read_by_the_workers(client, tmp_path):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(50)
    p, q = probs(rng, (41, 6)), probs(rng, (41, 6))
    zp = zarr.open_array(
        str(tmp_path / "p.zarr"), mode="w", shape=p.shape, chunks=(9, 6), dtype="f8"
    )
    zp[:] = p
    pd = da.from_zarr(str(tmp_path / "p.zarr"))
    assert pd.chunks[0] == (9, 9, 9, 9, 5)
    # the graph reads the store (no copy of the data in it)
    assert pd.nbytes > 0 and not any(isinstance(v, np.ndarray) and v.size == p.size
                                     for v in dict(pd.__dask_graph__()).values())  # fmt: skip
    same_bits(dd.kl(pd, q).compute(), divest.kl(p, q))
    x = rng.normal(size=(30, 2))
    zq = zarr.open_array(
        str(tmp_path / "q.zarr"), mode="w", shape=(50, 2), chunks=(16, 2), dtype="f8"
    )
    pts = rng.normal(size=(50, 2))
    zq[:] = pts
    qd = da.from_zarr(str(tmp_path / "q.zarr"))
    same_bits(dd.kde_logpdf(x, qd).compute(), divest.kde_logpdf(x, pts))


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # dask on pandas 3
def test_kl_and_kde_on_parquet_read_by_the_workers(client, tmp_path):
    pytest.importorskip("pyarrow")
    pytest.importorskip("pandas")
    import dask.dataframe as ddf
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(51)
    p, q = probs(rng, (37, 4)), probs(rng, (37, 4))
    path = tmp_path / "rows"
    path.mkdir()
    for i, (lo, hi) in enumerate([(0, 10), (10, 25), (25, 37)]):  # three files, uneven
        table = pa.table({f"c{j}": p[lo:hi, j] for j in range(4)})
        pq.write_table(table, path / f"part{i}.parquet")
    pd = ddf.read_parquet(str(path)).to_dask_array(lengths=True)
    assert pd.shape == (37, 4) and len(pd.chunks[0]) > 1
    same_bits(dd.kl(pd, q).compute(), divest.kl(p, q))
    pts = pd.rechunk({1: 2})[:, :2]
    x = rng.normal(size=(20, 2))
    same_bits(dd.kde_logpdf(x, pts).compute(), divest.kde_logpdf(x, p[:, :2]))


# -------------------------------------------------------------- jdcov (block pairs)


@pytest.mark.parametrize("chunks", [UNEVEN, (23,)])
def test_jdcov_block_pairs_within_1e12(client, chunks):
    rng = np.random.default_rng(60)
    x = rng.normal(size=(23, 2))
    y = x[:, :1] ** 2 + rng.normal(size=(23, 1))
    z = rng.normal(size=(23, 3)) + x[:, 1:]
    xd, zd = da.from_array(x, chunks=(chunks, 2)), da.from_array(z, chunks=(chunks, 3))
    cases = [
        dict(c=c, unbiased=ub, scale=sc) for c in (0.0, 2.5) for ub in (True, False)
        for sc in (False, True)
    ] + [dict(exponent=0.5), dict(c=1e6, unbiased=False)]  # fmt: skip
    for kw in cases:
        want = divest.jdcov(x, y, z, **kw)
        got = dd.jdcov(xd, y, zd, **kw)
        assert isinstance(got, da.Array) and got.shape == ()
        assert abs(float(got.compute()) - want) <= 1e-12 * abs(want), (kw, float(got), want)
    # two samples: dcov_sqr, as in memory
    close(float(dd.jdcov(xd, y).compute()), divest.jdcov(x, y), 1e-12)
    # magnitudes far from 1: the in-memory rescaling rule, from blockwise magnitudes
    big = dd.jdcov(xd * 1e40, y * 1e35, zd * 1e45, c=1.0).compute()
    close(float(big), divest.jdcov(x * 1e40, y * 1e35, z * 1e45, c=1.0), 1e-12)


def test_jdcov_bad_input(client):
    x = np.random.default_rng(61).normal(size=(10, 2))
    with pytest.raises(ValueError, match="at least two"):
        dd.jdcov(x)
    with pytest.raises(ValueError, match="same number of observations"):
        dd.jdcov(x, x[:9])
    with pytest.raises(ValueError, match="chunked alike"):
        dd.jdcov(da.from_array(x, chunks=5), da.from_array(x, chunks=4))
    with pytest.raises(ValueError, match="c"):
        dd.jdcov(x, x, c=-1.0)
    with pytest.raises(ValueError, match="at least 4"):
        dd.jdcov(x[:3], x[:3])
    with pytest.raises(ValueError, match="differ too much"):
        dd.jdcov(x * 1e150, x, x * 1e-150, c=1.0).compute()


# ------------------------------------------------------------------------- knn_mi


@pytest.mark.parametrize("chunks", [UNEVEN, (23,)])
def test_knn_mi_rows_bitwise(client, chunks):
    rng = np.random.default_rng(70)
    x = rng.normal(size=(23, 2))
    y = x[:, :1] + 0.3 * rng.normal(size=(23, 1))
    xd = da.from_array(x, chunks=(chunks, 2))
    for kw in (
        dict(k=3),
        dict(k=2, base=2),
        dict(k=4, algorithm="brute"),
        dict(k=3, algorithm="kd_tree"),
    ):
        got = dd.knn_mi(xd, y, **kw)
        assert isinstance(got, da.Array) and got.shape == ()
        same_bits(got.compute(), np.float64(divest.knn_mi(x, y, **kw)))
    # duplicated rows: counted in the marginal counts, as in memory
    xt = np.vstack([x, x[:3]])
    yt = np.vstack([y, y[:3] + 1.0])
    got = dd.knn_mi(da.from_array(xt, chunks=((7, 0, 10, 9),) + ((2,))), yt, k=3)
    same_bits(got.compute(), np.float64(divest.knn_mi(xt, yt, k=3)))
    # KSG-2 and the mixed estimator: one task, the in-memory call
    same_bits(dd.knn_mi(xd, y, variant=2).compute(), np.float64(divest.knn_mi(x, y, variant=2)))
    d = np.round(y * 2)
    same_bits(
        dd.knn_mi(xd, d, discrete_features=True).compute(),
        np.float64(divest.knn_mi(x, d, discrete_features=True)),
    )


def test_knn_mi_bad_input(client):
    x = np.random.default_rng(71).normal(size=(10, 2))
    with pytest.raises(ValueError, match="same number of observations"):
        dd.knn_mi(x, x[:9])
    with pytest.raises(ValueError, match="chunked alike"):
        dd.knn_mi(da.from_array(x, chunks=5), da.from_array(x, chunks=4))
    with pytest.raises(ValueError, match="k must be smaller"):
        dd.knn_mi(x, x, k=10)
    with pytest.raises(ValueError, match="variant"):
        dd.knn_mi(x, x, variant=3)
    bad = x.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN|finite"):
        dd.knn_mi(da.from_array(bad, chunks=5), x).compute()


def test_sinkhorn_batch_weight_shapes_are_checked():
    # The same messages as the in-memory batch: wrong rank, batch sizes, empty problems.
    cost = np.ones((3, 4, 5))
    a, b = np.full((3, 4), 0.25), np.full((3, 5), 0.2)
    with pytest.raises(ValueError, match="shapes \\(B, n\\) and \\(B, m\\)"):
        dd.sinkhorn_batch(da.from_array(a[0]), da.from_array(b), cost, 0.1)
    with pytest.raises(ValueError, match="same batch size"):
        dd.sinkhorn_batch(da.from_array(a), da.from_array(b[:2]), cost, 0.1)
    with pytest.raises(ValueError, match="non-empty"):
        dd.sinkhorn_batch(da.from_array(a[:, :0]), da.from_array(b), cost[:, :0], 0.1)
