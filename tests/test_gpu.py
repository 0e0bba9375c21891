"""GPU tests (marked ``gpu``; skipped without CuPy and a CUDA device). Each fused kernel
against the xp algorithm on the same device and against the Rust engine in float64, the
public calls on CuPy arrays and on PyTorch CUDA tensors, an input beyond 2³¹ elements,
and compute-sanitizer on small cases. Run them all with ``benches/gpu/run.sh``."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import divest
from divest import _backend, _gpu

pytestmark = pytest.mark.gpu
cp = pytest.importorskip("cupy")
if not _backend.gpu_available():
    pytest.skip("no usable CUDA GPU", allow_module_level=True)


@pytest.fixture
def fused_and_xp():
    """Runs a computation with the fused kernels and then with the xp path (both CuPy)."""

    def both(fn):
        _gpu._use(cp, fused=True)
        a = fn()
        _gpu._use(cp, fused=False)
        try:
            b = fn()
        finally:
            _gpu._use(cp, fused=True)
        return a, b

    return both


def _h(a):
    return cp.asnumpy(a) if isinstance(a, cp.ndarray) else np.asarray(a)


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("d", [1, 3, 17, 64, 70])  # 70: the run-time-d kernel
def test_lse_kernel_kde_logpdf_and_score(fused_and_xp, d):
    x = RNG.normal(size=(1000, d))
    q = RNG.normal(size=(700, d))
    w = RNG.random(1000)
    w[::7] = 0
    host = divest.KDE(x, weights=w)
    (lf, sf), (lx, sx) = fused_and_xp(
        lambda: (
            divest.KDE(cp.asarray(x), weights=cp.asarray(w)).logpdf(cp.asarray(q)),
            divest.KDE(cp.asarray(x), weights=cp.asarray(w)).score(cp.asarray(q)),
        )
    )
    assert isinstance(lf, cp.ndarray) and lf.dtype == cp.float64
    np.testing.assert_allclose(_h(lf), _h(lx), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_h(lf), host.logpdf(q), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(_h(sf), _h(sx), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(_h(sf), host.score(q), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("gemm", ["0", "1"])
def test_lse_gemm_and_register_routes(monkeypatch, gemm):
    monkeypatch.setenv("DIVEST_GPU_GEMM", gemm)
    x = RNG.normal(size=(9000, 24))  # more than one 8192 tile each way
    q = RNG.normal(size=(8300, 24))
    got = divest.KDE(cp.asarray(x)).logpdf(cp.asarray(q[::1]))
    want = divest.KDE(x).logpdf(q[:500])
    np.testing.assert_allclose(_h(got)[:500], want, rtol=1e-9, atol=1e-9)


def test_lse_kernel_leave_one_out(fused_and_xp):
    x = RNG.normal(size=(800, 3))
    a, b = fused_and_xp(lambda: divest.KDE(cp.asarray(x)).loo_logpdf())
    np.testing.assert_allclose(_h(a), _h(b), rtol=1e-12)
    np.testing.assert_allclose(_h(a), divest.KDE(x).loo_logpdf(), rtol=1e-10)


def test_lse_kernel_float32_within_1e3_nats_of_rust():
    x = RNG.normal(size=(5000, 64)).astype(np.float32)
    q = RNG.normal(size=(500, 64)).astype(np.float32)
    got = divest.KDE(cp.asarray(x)).logpdf(cp.asarray(q))
    assert got.dtype == cp.float32
    want = divest.KDE(x.astype(np.float64)).logpdf(q.astype(np.float64))
    assert np.abs(_h(got) - want).max() < 1e-3


@pytest.mark.parametrize("p", [1, 2])
def test_lse_kernel_sinkhorn_divergence(fused_and_xp, p):
    x, y = RNG.random((600, 3)), RNG.random((500, 3)) + 0.1
    want = divest.sinkhorn_divergence(x, y, eps=0.01, p=p)
    rf, rx = fused_and_xp(
        lambda: divest.sinkhorn_divergence(cp.asarray(x), cp.asarray(y), eps=0.01, p=p)
    )
    for r in (rf, rx):
        assert float(r.value) == pytest.approx(want.value, rel=1e-9)
        assert r.n_iter == want.n_iter
        np.testing.assert_allclose(_h(r.grad), want.grad, atol=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_sum_kernel_energy_mmd_cs_dcov(fused_and_xp, unbiased):
    x = RNG.normal(size=(900, 5))
    y = RNG.normal(size=(800, 5)) + 0.2
    z = x[:, :2] + RNG.normal(size=(900, 2))
    X, Y, Z = cp.asarray(x), cp.asarray(y), cp.asarray(z)
    calls = {
        "energy": (
            lambda: divest.energy_distance(X, Y, 1.3, unbiased),
            divest.energy_distance(x, y, 1.3, unbiased),
        ),
        "mmd": (
            lambda: divest.mmd(X, Y, 1.5, unbiased=unbiased),
            divest.mmd(x, y, 1.5, unbiased=unbiased),
        ),
        "mmd_lap": (
            lambda: divest.mmd(X, Y, 1.5, "laplacian", unbiased),
            divest.mmd(x, y, 1.5, "laplacian", unbiased),
        ),
        "cs": (lambda: divest.cs_divergence(X, Y), divest.cs_divergence(x, y)),
        "dcov": (
            lambda: divest.dcov_sqr(X, Z, 1.0, unbiased),
            divest.dcov_sqr(x, z, 1.0, unbiased),
        ),
        "dcor": (
            lambda: divest.dcor_sqr(X, Z, 0.7, unbiased),
            divest.dcor_sqr(x, z, 0.7, unbiased),
        ),
    }
    for name, (fn, want) in calls.items():
        a, b = fused_and_xp(fn)
        assert float(a) == pytest.approx(float(b), rel=1e-11), name
        assert float(a) == pytest.approx(want, rel=1e-9, abs=1e-13), name


def test_sum_kernel_runtime_dimension(fused_and_xp):
    x = RNG.normal(size=(300, 70))  # beyond the compiled dimensions: the run-time-d kernel
    y = RNG.normal(size=(200, 70))
    a, b = fused_and_xp(lambda: divest.energy_distance(cp.asarray(x), cp.asarray(y)))
    assert float(a) == pytest.approx(float(b), rel=1e-11)
    assert float(a) == pytest.approx(divest.energy_distance(x, y), rel=1e-9)


def test_every_kernel_instance_compiles_on_this_device():
    _gpu._kernels()


def test_batch_sinkhorn_kernel(fused_and_xp):
    nb, n, m = 300, 24, 20
    a = RNG.random((nb, n))
    b = RNG.random((nb, m))
    a /= a.sum(1, keepdims=True)
    b /= b.sum(1, keepdims=True)
    c = RNG.random((nb, n, m))
    want = divest.sinkhorn_batch(a, b, c, 0.05, tol=1e-12, return_plan=True)
    rf, rx = fused_and_xp(
        lambda: divest.sinkhorn_batch(
            cp.asarray(a), cp.asarray(b), cp.asarray(c), 0.05, tol=1e-10, return_plan=True
        )
    )
    for r in (rf, rx):
        np.testing.assert_allclose(_h(r.plan), want.plan, atol=1e-9)
        np.testing.assert_allclose(_h(r.linear_cost), want.linear_cost, rtol=1e-8)
        assert bool(r.converged.all())
    np.testing.assert_array_equal(_h(rf.n_iter), _h(rx.n_iter))  # same iterates


def test_dense_sinkhorn_row_and_column_kernels(fused_and_xp):
    c = RNG.random((700, 500))  # one large problem: the row/column kernels
    a = RNG.random(700)
    a[3] = 0
    a /= a.sum()
    want = divest.sinkhorn(a, None, c, 0.05, tol=1e-11)
    rf, rx = fused_and_xp(
        lambda: divest.sinkhorn(cp.asarray(a), None, cp.asarray(c), 0.05, tol=1e-10)
    )
    for r in (rf, rx):
        np.testing.assert_allclose(_h(r.plan), want.plan, atol=1e-10)
        assert float(r.cost) == pytest.approx(want.cost, rel=1e-8)
    assert rf.n_iter == rx.n_iter


def test_dense_sinkhorn_on_device():
    c = RNG.random((300, 200))
    want = divest.sinkhorn(None, None, c, 0.05, tol=1e-11)
    got = divest.sinkhorn(None, None, cp.asarray(c), 0.05, tol=1e-10)
    np.testing.assert_allclose(_h(got.plan), want.plan, atol=1e-9)


@pytest.mark.parametrize("measure", ["kl", "js", "tv", "hellinger"])
def test_discrete_kernel(fused_and_xp, measure):
    lp = RNG.normal(size=(64, 3000)) * 3
    lq = RNG.normal(size=(64, 3000)) * 3
    fn = getattr(divest, measure)
    want = fn(lp, lq, from_logits=True)
    a, b = fused_and_xp(lambda: fn(cp.asarray(lp), cp.asarray(lq), from_logits=True))
    np.testing.assert_allclose(_h(a), _h(b), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(_h(a), want, rtol=1e-10, atol=1e-14)
    p = np.exp(lp - lp.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = np.exp(lq - lq.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    a, b = fused_and_xp(lambda: fn(cp.asarray(p), cp.asarray(q)))
    np.testing.assert_allclose(_h(a), fn(p, q), rtol=1e-10, atol=1e-14)


def test_float32_stays_float32():
    x = cp.asarray(RNG.normal(size=(100, 3)), dtype=cp.float32)
    assert divest.KDE(x).logpdf(x).dtype == cp.float32
    assert divest.kl(x[:, :2] ** 2 + 0.1, x[:, :2] ** 2 + 0.2, normalize=True).dtype == cp.float32
    r = divest.sinkhorn_divergence(x, x + 0.1, eps=0.1)
    assert r.grad.dtype == cp.float32


def test_torch_cuda_round_trip():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x = torch.randn(300, 3, device="cuda", dtype=torch.float64)
    y = torch.randn(200, 3, device="cuda", dtype=torch.float64) + 0.5
    e = divest.energy_distance(x, y)
    assert isinstance(e, torch.Tensor) and e.is_cuda
    assert float(e) == pytest.approx(
        divest.energy_distance(x.cpu().numpy(), y.cpu().numpy()), rel=1e-10
    )
    lp = divest.KDE(x).logpdf(y)
    assert isinstance(lp, torch.Tensor) and lp.device == x.device
    np.testing.assert_allclose(
        lp.cpu().numpy(), divest.KDE(x.cpu().numpy()).logpdf(y.cpu().numpy()), rtol=1e-10
    )
    with pytest.raises(TypeError, match="does not mix"):
        divest.energy_distance(x, y.cpu().numpy())


def test_inputs_beyond_2_31_elements():
    free, _ = cp.cuda.runtime.memGetInfo()
    n = 2**31 // 16 + 1000  # (n, 16) float32: more than 2³¹ elements
    if free < 3 * n * 16 * 4:
        pytest.skip("not enough GPU memory")
    x = cp.zeros((n, 16), dtype=cp.float32)
    x[-1] = 1.0  # the one non-zero row sits past element 2³¹
    y = cp.zeros((1, 16), dtype=cp.float32)
    # Σ_ij |x_i − y_j| = |x_last| = 4 exactly; a 32-bit index would miss or misplace it.
    total = _gpu._psum(x, y, None, None, "power", 1.0)
    assert float(total) == 4.0
    h = cp.zeros((1,), dtype=cp.float32)
    lse = _gpu._lse(x, y, h, 0.5)
    assert float(lse[-1]) == pytest.approx(-8.0) and float(lse[0]) == 0.0
    del x, lse


def test_compute_sanitizer_small_cases(tmp_path):
    tool = shutil.which("compute-sanitizer")
    if tool is None:
        pytest.skip("compute-sanitizer not on PATH")
    script = tmp_path / "small.py"
    script.write_text(
        textwrap.dedent(
            """
            import cupy as cp, numpy as np, divest
            r = np.random.default_rng(0)
            x, y = cp.asarray(r.normal(size=(37, 3))), cp.asarray(r.normal(size=(29, 3)))
            divest.KDE(x).logpdf(y); divest.KDE(x).score(y)
            divest.energy_distance(x, y); divest.mmd(x, y, 1.0); divest.dcov_sqr(x, x[:, :2])
            divest.sinkhorn_divergence(x, y, eps=0.1)
            a = cp.full((5, 7), 1 / 7); c = cp.asarray(r.random((5, 7, 7)))
            divest.sinkhorn_batch(a, a, c, 0.1)
            p = cp.asarray(r.random((3, 33))); divest.kl(p, p[::-1], normalize=True)
            for t in (cp.float32,):
                divest.KDE(x.astype(t)).logpdf(y.astype(t))
            """
        )
    )
    env = dict(os.environ)
    out = subprocess.run(
        [tool, "--tool", "memcheck", "--error-exitcode", "1", sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    text = out.stdout + out.stderr
    if "Device not supported" in text:  # e.g. under gVisor
        pytest.skip("compute-sanitizer does not support this device here")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "ERROR SUMMARY: 0 errors" in text
