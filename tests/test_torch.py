"""divest.torch: gradients (gradcheck in float64, finite differences of the NumPy functions,
plain PyTorch formulas), zero loss and zero gradients on identical inputs, no NaN at zero
probabilities, torch.compile, and bad input."""

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.autograd import gradcheck  # noqa: E402

import divest  # noqa: E402
import divest.torch as dt  # noqa: E402

F64 = torch.float64
MEASURES = ["kl", "reverse_kl", "js", "hellinger", "tv", "chi2", "neyman_chi2", "triangular",
            "jeffreys"]  # fmt: skip


def _t(a, grad=True):
    return torch.tensor(np.asarray(a), dtype=F64, requires_grad=grad)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, dtype=F64, generator=g).requires_grad_()
    y = torch.randn(3, 5, dtype=F64, generator=g).requires_grad_()
    return x, y


# ------------------------------------------------------------------ discrete divergences


@pytest.mark.parametrize("f", MEASURES)
def test_f_divergence_gradcheck_logits_probs_logs(f, logits):
    x, y = logits
    assert gradcheck(lambda a, b: dt.f_divergence(a, b, f, from_logits=True), (x, y))
    p = torch.softmax(x, -1).detach().requires_grad_()
    q = torch.softmax(y, -1).detach().requires_grad_()
    assert gradcheck(lambda a, b: dt.f_divergence(a, b, f, normalize=True), (p, q))
    lp = torch.log_softmax(x, -1).detach().requires_grad_()
    lq = torch.log_softmax(y, -1).detach().requires_grad_()
    assert gradcheck(
        lambda a, b: dt.f_divergence(a, b, f, log_input=True, normalize=True), (lp, lq)
    )


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0, 7.0, math.inf])
def test_renyi_gradcheck(alpha, logits):
    x, y = logits
    assert gradcheck(lambda a, b: dt.renyi(a, b, alpha, from_logits=True), (x, y))
    p = torch.softmax(x, -1).detach().requires_grad_()
    q = torch.softmax(y, -1).detach().requires_grad_()
    assert gradcheck(lambda a, b: dt.renyi(a, b, alpha, normalize=True), (p, q))


@pytest.mark.parametrize("alpha", [-3.0, -1.0, 0.0, 0.4, 1.0, 2.5])
def test_alpha_divergence_gradcheck(alpha, logits):
    x, y = logits
    assert gradcheck(
        lambda a, b: dt.f_divergence(a, b, "alpha", alpha=alpha, from_logits=True), (x, y)
    )


@pytest.mark.parametrize("fn", [dt.kl, dt.js, dt.js_distance, dt.hellinger, dt.tv, dt.chi2])
def test_named_functions_gradcheck_and_values(fn, logits):
    x, y = logits
    assert gradcheck(lambda a, b: fn(a, b, from_logits=True, temperature=1.7), (x, y))
    got = fn(x, y, from_logits=True).detach().numpy()
    want = getattr(divest, fn.__name__)(x.detach().numpy(), y.detach().numpy(), from_logits=True)
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)


def test_kl_matches_torch_log_softmax_kl_div():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 7, dtype=F64, generator=g)
    t = torch.randn(4, 7, dtype=F64, generator=g)
    a, b = s.clone().requires_grad_(), t.clone().requires_grad_()
    ref = torch.nn.functional.kl_div(
        torch.log_softmax(b, -1), torch.log_softmax(a, -1), log_target=True, reduction="batchmean"
    )
    ref.backward()
    c, d = s.clone().requires_grad_(), t.clone().requires_grad_()
    got = dt.kl(c, d, from_logits=True, reduction="batchmean")
    got.backward()
    assert abs(got.item() - ref.item()) < 1e-14
    torch.testing.assert_close(c.grad, a.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(d.grad, b.grad, rtol=1e-10, atol=1e-14)


def test_js_matches_plain_torch_formula():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(3, 6, dtype=F64, generator=g), torch.randn(3, 6, dtype=F64, generator=g)
    a, b = s.clone().requires_grad_(), t.clone().requires_grad_()
    p, q = torch.softmax(a, -1), torch.softmax(b, -1)
    m = (p + q) / 2
    ref = (0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)).sum()
    ref.backward()
    c, d = s.clone().requires_grad_(), t.clone().requires_grad_()
    got = dt.js(c, d, from_logits=True, reduction="sum")
    got.backward()
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(c.grad, a.grad, rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(d.grad, b.grad, rtol=1e-9, atol=1e-13)


def test_gradient_matches_finite_differences_of_numpy():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=6), rng.normal(size=6)
    xt, yt = _t(x), _t(y)
    for name in ["kl", "js", "hellinger", "chi2"]:
        fn = getattr(dt, name)
        xt.grad = yt.grad = None
        fn(xt, yt, from_logits=True).backward()
        h = 1e-6
        for i in range(6):
            e = np.zeros(6)
            e[i] = h
            np_fn = getattr(divest, name)
            fd = (np_fn(x + e, y, from_logits=True) - np_fn(x - e, y, from_logits=True)) / (2 * h)
            assert abs(fd - xt.grad[i].item()) < 1e-7, name
            fd = (np_fn(x, y + e, from_logits=True) - np_fn(x, y - e, from_logits=True)) / (2 * h)
            assert abs(fd - yt.grad[i].item()) < 1e-7, name


@pytest.mark.parametrize(
    "fn", [dt.kl, dt.js, dt.js_distance, dt.hellinger, dt.tv, dt.chi2,
           lambda a, b, **k: dt.renyi(a, b, 0.5, **k),
           lambda a, b, **k: dt.f_divergence(a, b, "alpha", alpha=0.3, **k)],
)  # fmt: skip
def test_identical_inputs_give_exact_zero_and_zero_gradient(fn):
    z = torch.randn(4, 9, dtype=torch.float32, requires_grad=True)
    w = z.detach().clone().requires_grad_()
    loss = fn(z, w, from_logits=True, reduction="sum")
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(z.grad) == 0 and torch.count_nonzero(w.grad) == 0
    p = torch.softmax(z.detach(), -1).requires_grad_()
    loss = fn(p, p.detach().clone(), normalize=True, reduction="sum")
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(p.grad) == 0


def test_no_nan_at_zero_probabilities():
    p = _t([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    q = _t([[0.2, 0.3, 0.5], [0.25, 0.25, 0.5]])
    for f in MEASURES:
        p.grad = q.grad = None
        v = dt.f_divergence(p, q, f)
        v.sum().backward()
        ok = torch.isfinite(v)  # reverse_kl, jeffreys, neyman_chi2 are inf here (p = 0 < q)
        assert f in ("reverse_kl", "jeffreys", "neyman_chi2") or ok.all(), f
        assert not torch.isnan(p.grad[ok]).any() and torch.isfinite(q.grad[ok]).all(), f
    # From logits, probabilities that underflow to 0 (logit gaps of 1000) stay finite.
    x = _t([[0.0, -1000.0, -2000.0], [3.0, 0.0, -800.0]])
    y = _t([[0.0, 0.0, 0.0], [-900.0, 0.0, 1.0]])
    for f in MEASURES:
        x.grad = y.grad = None
        v = dt.f_divergence(x, y, f, from_logits=True)
        if torch.isfinite(v).all():
            v.sum().backward()
            assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all(), f
    # One-hot targets in probability form, student logits: the usual distillation setup.
    s = torch.randn(2, 3, dtype=F64, requires_grad=True)
    lt = torch.log(p.detach())  # -inf where the target is 0
    dt.kl(lt, torch.log_softmax(s, -1), log_input=True, reduction="batchmean").backward()
    assert torch.isfinite(s.grad).all()


def test_reductions_axis_keepdims_broadcast_dtype():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 2, 3, generator=g).requires_grad_()  # categories along axis 0
    y = torch.randn(5, 1, 3, generator=g, dtype=F64).requires_grad_()
    v = dt.kl(x, y, axis=0, from_logits=True)
    assert v.shape == (2, 3) and v.dtype == F64
    want = divest.kl(x.detach().numpy(), y.detach().numpy(), axis=0, from_logits=True)
    np.testing.assert_allclose(v.detach().numpy(), want, rtol=1e-12)
    assert dt.kl(x, y, axis=0, keepdims=True, from_logits=True).shape == (1, 2, 3)
    s = dt.kl(x, y, axis=0, from_logits=True, reduction="sum")
    torch.testing.assert_close(s, v.sum())
    torch.testing.assert_close(
        dt.kl(x, y, axis=0, from_logits=True, reduction="batchmean"), v.mean()
    )
    torch.testing.assert_close(
        dt.kl(x, y, axis=0, from_logits=True, reduction="mean"), v.sum() / 30
    )
    s.backward()
    assert x.grad.shape == x.shape and y.grad.shape == y.shape
    assert x.grad.dtype == torch.float32
    # float32 stays float32, forward and backward
    a = torch.randn(3, 4).requires_grad_()
    out = dt.js(a, a.detach() + 1.0, from_logits=True, base=2)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert a.grad.dtype == torch.float32
    np.testing.assert_allclose(
        out.detach().numpy(),
        divest.js(a.detach().numpy(), a.detach().numpy() + 1, from_logits=True, base=2),
        rtol=1e-6,
    )


def test_contiguous_cpu_tensors_are_not_copied():
    t = torch.randn(4, 3)
    assert np.shares_memory(dt._np(t), t.numpy())
    u = torch.randn(3, 4).t()  # non-contiguous: copied once, values intact
    np.testing.assert_array_equal(dt._np(u), u.numpy())


# --------------------------------------------------------------------- optimal transport


@pytest.mark.parametrize("p,debias", [(2, True), (1, True), (2, False)])
def test_sinkhorn_divergence_gradcheck(p, debias):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(6, 2, dtype=F64, generator=g).requires_grad_()
    y = torch.rand(5, 2, dtype=F64, generator=g).requires_grad_()
    a = (torch.rand(6, dtype=F64, generator=g) + 0.5).requires_grad_()
    b = (torch.rand(5, dtype=F64, generator=g) + 0.5).requires_grad_()

    def f(x, y, a, b):
        return dt.sinkhorn_divergence(
            x, y, a, b, eps=0.5, p=p, debias=debias, tol=1e-13, max_iter=100000
        ).value

    assert gradcheck(f, (x, y, a, b), atol=1e-6)


def test_sinkhorn_divergence_matches_numpy_and_symmetry():
    g = torch.Generator().manual_seed(6)
    x = torch.rand(40, 3, dtype=F64, generator=g).requires_grad_()
    y = torch.rand(30, 3, dtype=F64, generator=g).requires_grad_()
    r = dt.sinkhorn_divergence(x, y, eps=0.02)
    r.value.backward()
    ref = divest.sinkhorn_divergence(x.detach().numpy(), y.detach().numpy(), eps=0.02)
    assert r.value.item() == ref.value
    np.testing.assert_array_equal(x.grad.numpy(), ref.grad)
    # The y gradient (new Rust return) equals the x gradient of the swapped problem.
    swapped = divest.sinkhorn_divergence(y.detach().numpy(), x.detach().numpy(), eps=0.02)
    np.testing.assert_allclose(y.grad.numpy(), swapped.grad, rtol=1e-9, atol=1e-12)
    # Identical clouds: zero value, zero gradients.
    z = x.detach().clone().requires_grad_()
    v = dt.sinkhorn_divergence(z, z.detach().clone(), eps=0.1).value
    v.backward()
    assert abs(v.item()) < 1e-12 and z.grad.abs().max().item() < 1e-9


def test_sinkhorn_dense_and_batch_gradients():
    g = torch.Generator().manual_seed(7)
    C = torch.rand(5, 4, dtype=F64, generator=g).requires_grad_()
    kw = dict(tol=1e-14, max_iter=100000)
    assert gradcheck(lambda C: dt.sinkhorn(None, None, C, 0.3, **kw).cost, (C,))
    CB = torch.rand(3, 5, 4, dtype=F64, generator=g).requires_grad_()
    A = torch.full((3, 5), 0.2, dtype=F64)
    B = torch.full((3, 4), 0.25, dtype=F64)
    assert gradcheck(lambda C: dt.sinkhorn_batch(A, B, C, 0.3, **kw).cost, (CB,))
    assert gradcheck(lambda C: dt.sinkhorn_batch(A, B, C, 0.3, **kw).cost, (C,))  # shared
    # The plan is the gradient of the cost.
    r = dt.sinkhorn(None, None, C, 0.3, **kw)
    r.cost.backward()
    np.testing.assert_allclose(C.grad.numpy(), r.plan.numpy(), rtol=1e-12)
    # Marginals: directional derivative along a mass-preserving direction.
    a = torch.rand(5, dtype=F64, generator=g)
    a = (a / a.sum()).requires_grad_()
    b = torch.full((4,), 0.25, dtype=F64)
    dt.sinkhorn(a, b, C.detach(), 0.3, **kw).cost.backward()
    d = torch.tensor([1.0, -1.0, 0.0, 0.5, -0.5], dtype=F64) * 1e-6
    with torch.no_grad():
        up = dt.sinkhorn(a + d, b, C.detach(), 0.3, **kw).cost
        dn = dt.sinkhorn(a - d, b, C.detach(), 0.3, **kw).cost
    assert abs((up - dn).item() / 2 - (a.grad * d).sum().item()) < 1e-12


# ----------------------------------------------------------------- sample discrepancies


def _pts(seed, n, m, d=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=F64, generator=g).requires_grad_()
    y = (torch.randn(m, d, dtype=F64, generator=g) + 0.5).requires_grad_()
    return x, y


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_gradcheck(kernel, unbiased):
    x, y = _pts(8, 8, 6)
    assert gradcheck(lambda a, b: dt.mmd(a, b, 1.3, kernel, unbiased), (x, y))


def test_cs_and_energy_gradcheck():
    x, y = _pts(9, 7, 9)
    assert gradcheck(lambda a, b: dt.cs_divergence(a, b, sigma=0.9), (x, y))
    for alpha in (0.5, 1.0, 1.5):
        for u in (False, True):
            assert gradcheck(lambda a, b, al=alpha, u=u: dt.energy_distance(a, b, al, u), (x, y))


def test_sample_discrepancies_match_plain_torch_cdist():
    x, y = _pts(10, 30, 20, d=4)
    s = 1.1

    def k(u, v):
        return torch.exp(-(torch.cdist(u, v) ** 2) / (2 * s * s))

    def mmd_ref(a, b):
        n, m = len(a), len(b)
        kxx, kyy = k(a, a), k(b, b)
        return ((kxx.sum() - kxx.diag().sum()) / (n * (n - 1))
                + (kyy.sum() - kyy.diag().sum()) / (m * (m - 1)) - 2 * k(a, b).mean())  # fmt: skip

    def energy_ref(a, b):
        return 2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean()

    def cs_ref(a, b):
        return k(a, a).sum().log() + k(b, b).sum().log() - 2 * k(a, b).sum().log()

    for ours, ref in [
        (lambda a, b: dt.mmd(a, b, s), mmd_ref),
        (lambda a, b: dt.energy_distance(a, b), energy_ref),
        (lambda a, b: dt.cs_divergence(a, b, s), cs_ref),
    ]:
        x.grad = y.grad = None
        v = ours(x, y)
        v.backward()
        gx, gy = x.grad.clone(), y.grad.clone()
        x.grad = y.grad = None
        # cdist's gradient at the zero diagonal is 0 (its subgradient), like ours; cdist
        # forms distances by matrix products beyond 25 rows (rounding ~1e-10 relative).
        w = ref(x, y)
        w.backward()
        torch.testing.assert_close(v, w, rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(gx, x.grad, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(gy, y.grad, rtol=1e-7, atol=1e-10)


def test_sample_discrepancies_identical_samples_zero():
    x, _ = _pts(11, 10, 2)
    for fn in (lambda a, b: dt.mmd(a, b, 1.0, unbiased=False), dt.cs_divergence):
        x.grad = None
        v = fn(x, x.detach().clone())
        v.backward()
        assert v.item() == 0.0 and torch.count_nonzero(x.grad) == 0


# ------------------------------------------------------------------- distance covariance


def test_dcov_family_gradcheck_and_values():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(9, 2, dtype=F64, generator=g).requires_grad_()
    y = torch.randn(9, dtype=F64, generator=g).requires_grad_()
    z = torch.randn(9, 3, dtype=F64, generator=g).requires_grad_()
    for u in (False, True):
        for al in (1.0, 1.5):
            assert gradcheck(lambda a, b, al=al, u=u: dt.dcov_sqr(a, b, al, u), (x, y))
            assert gradcheck(lambda a, b, al=al, u=u: dt.dcor_sqr(a, b, al, u), (x, y))
        for sc in (False, True):
            assert gradcheck(
                lambda a, b, c, u=u, sc=sc: dt.jdcov(a, b, c, c=0.5, unbiased=u, scale=sc),
                (x, y, z),
            )
    assert gradcheck(lambda a, b: dt.dcor(a, b), (x, y))
    assert gradcheck(lambda a, b, c: dt.ccdcov(a, b, c), (x, y, z))
    xn, yn, zn = (t.detach().numpy() for t in (x, y, z))
    assert dt.dcor(x, y).item() == pytest.approx(divest.dcor(xn, yn), rel=1e-14)
    assert dt.dcor_sqr(x, y, unbiased=True).item() == pytest.approx(
        divest.dcor_sqr(xn, yn, unbiased=True), rel=1e-14
    )
    assert dt.jdcov(x, y, z).item() == divest.jdcov(xn, yn, zn)
    assert dt.ccdcov(x, y, z).item() == pytest.approx(divest.ccdcov(xn, yn, zn), rel=1e-14)


def test_dcor_of_constant_sample_is_zero_with_zero_gradient():
    x = torch.randn(8, 2, dtype=F64, requires_grad=True)
    y = torch.ones(8, dtype=F64, requires_grad=True)
    v = dt.dcor(x, y)
    v.backward()
    assert v.item() == 0.0 and not torch.isnan(x.grad).any() and not torch.isnan(y.grad).any()


# ------------------------------------------------------------------------------------ KDE


def test_kde_gradcheck_values_and_score():
    g = torch.Generator().manual_seed(13)
    x = torch.randn(12, 2, dtype=F64, generator=g).requires_grad_()
    q = torch.randn(7, 2, dtype=F64, generator=g).requires_grad_()
    h = torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True)
    hs = torch.tensor(0.8, dtype=F64, requires_grad=True)
    assert gradcheck(lambda a, b, c: dt.kde_logpdf(a, b, c), (x, q, h))
    assert gradcheck(lambda a, b, c: dt.kde_logpdf(a, b, c), (x, q, hs))
    xn, qn = x.detach().numpy(), q.detach().numpy()
    k = dt.KDE(x, h)
    v = k.logpdf(q)
    np.testing.assert_allclose(
        v.detach().numpy(), divest.KDE(xn, np.array([0.7, 1.3])).logpdf(qn), rtol=1e-13
    )
    (gq,) = torch.autograd.grad(v.sum(), q)
    np.testing.assert_allclose(
        gq.numpy(), divest.KDE(xn, np.array([0.7, 1.3])).score(qn), rtol=1e-10, atol=1e-12
    )
    x1 = torch.randn(30, dtype=F64, generator=g)
    got = dt.kde_logpdf(x1, q[:, 0], "silverman").detach().numpy()
    np.testing.assert_allclose(got, divest.kde_logpdf(x1.numpy(), qn[:, 0], "silverman"))
    # a rule with a full covariance in d > 1 (test_kde_full_covariance_rule_and_matrix_bandwidth)
    np.testing.assert_allclose(
        dt.KDE(x, "scott").logpdf(q).detach().numpy(),
        divest.KDE(x.detach().numpy()).logpdf(qn),
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="bandwidth"):
        dt.kde_logpdf(x, q, torch.ones(3, dtype=F64))


# ----------------------------------------------------------------- compile, errors, import


def test_compiled_training_step_equals_eager():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 6).double()
    xin = torch.randn(8, 4, dtype=F64)
    teacher = torch.randn(8, 6, dtype=F64)
    attr = torch.randn(8, 2, dtype=F64)

    def step(model):
        out = model(xin)
        return (
            dt.kl(teacher, out, from_logits=True, reduction="batchmean")
            + dt.js(out, teacher, from_logits=True, temperature=2.0, reduction="sum")
            + 0.1 * dt.jdcov(out[:, :1], attr)
            + dt.mmd(out, teacher, sigma=1.0)
            + dt.sinkhorn_divergence(out, teacher, eps=0.1).value
        )

    loss = step(lin)
    loss.backward()
    ge = [p.grad.clone() for p in lin.parameters()]
    lin.zero_grad()
    # fullgraph=True: any graph break is an error. The aot_eager backend runs Dynamo and
    # AOTAutograd (fake tensors through every op's fake implementation and autograd
    # formula) without Inductor's code generation, which only adds compile time here.
    loss2 = torch.compile(step, fullgraph=True, backend="aot_eager")(lin)
    loss2.backward()
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-14)
    for a, p in zip(ge, lin.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-12, atol=1e-14)


def test_double_backward_raises():
    x = torch.randn(2, 4, dtype=F64, requires_grad=True)
    y = torch.randn(2, 4, dtype=F64)
    (g,) = torch.autograd.grad(dt.kl(x, y, from_logits=True).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


def test_bad_input():
    p = torch.rand(2, 3)
    with pytest.raises(TypeError, match="torch.Tensor"):
        dt.kl(np.ones(3) / 3, p)
    with pytest.raises(TypeError, match=r"\.float\(\)"):
        dt.kl(p.half(), p)
    with pytest.raises(TypeError, match=r"\.float\(\)"):
        dt.mmd(p.bfloat16(), p)
    with pytest.raises(TypeError, match="float32 or float64"):
        dt.kl(torch.ones(2, 3, dtype=torch.int64), p)
    with pytest.raises(ValueError, match=r"\.cpu\(\)"):
        dt.kl(torch.empty(2, 3, device="meta"), p)
    with pytest.raises(ValueError, match=r"\.cpu\(\)"):
        dt.sinkhorn_divergence(torch.empty(4, 2, device="meta"), p, eps=0.1)
    with pytest.raises(ValueError, match="reduction"):
        dt.kl(p, p, reduction="avg", normalize=True)
    with pytest.raises(ValueError, match="temperature"):
        dt.kl(p, p, temperature=2.0)
    with pytest.raises(ValueError, match="temperature"):
        dt.kl(p, p, temperature=-1.0, from_logits=True)
    with pytest.raises(ValueError, match="sums to"):
        dt.kl(p, p)  # not normalised
    with pytest.raises(ValueError, match="categories"):
        dt.kl(p, torch.rand(2, 4), normalize=True)
    with pytest.raises(ValueError, match="base"):
        dt.tv(p, p, base=2, normalize=True)
    with pytest.raises(ValueError, match="alpha"):
        dt.renyi(p, p, -1.0, normalize=True)
    with pytest.raises(ValueError, match="same number of observations"):
        dt.dcov_sqr(torch.rand(5), torch.rand(6))
    with pytest.raises(ValueError, match="exponent"):
        dt.energy_distance(torch.rand(5, 2), torch.rand(4, 2), exponent=2.5)
    with pytest.raises(TypeError, match="sigma"):
        dt.mmd(torch.rand(5, 2), torch.rand(4, 2), sigma=torch.tensor(1.0))
    with pytest.raises(ValueError, match="dimension"):
        dt.mmd(torch.rand(5, 2), torch.rand(4, 3))
    with pytest.raises(ValueError, match="c"):
        dt.jdcov(torch.rand(5), torch.rand(5), c=-1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError):
            dt.sinkhorn(torch.tensor([0.5, 0.5]), torch.tensor([1.0]), torch.rand(2, 1), -1.0)


def test_import_divest_does_not_import_torch():
    code = "import sys, divest; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


# ----------------------------------------------------------------------------- torch.func


def _func_cases():
    g = torch.Generator().manual_seed(3)
    logits_p = torch.randn(4, 6, dtype=F64, generator=g)
    logits_q = torch.randn(4, 6, dtype=F64, generator=g)
    x = torch.randn(7, 2, dtype=F64, generator=g)
    y = torch.randn(6, 2, dtype=F64, generator=g) + 0.5
    z = torch.randn(7, 3, dtype=F64, generator=g)
    attr = torch.randn(7, 2, dtype=F64, generator=g)
    a = torch.rand(7, dtype=F64, generator=g) + 0.5
    cost = torch.rand(4, 3, dtype=F64, generator=g)
    u4, u3 = torch.full((4,), 0.25, dtype=F64), torch.full((3,), 1 / 3, dtype=F64)
    return {
        "kl_logits": (lambda t: dt.kl(t, logits_q, from_logits=True, reduction="batchmean"),
                      logits_p),
        "js_logits_second": (lambda t: dt.js(logits_p, t, from_logits=True, temperature=2.0,
                                             reduction="sum"), logits_q),
        "sinkhorn_divergence_x": (lambda t: dt.sinkhorn_divergence(t, y, eps=0.1).value, x),
        "sinkhorn_divergence_a": (lambda t: dt.sinkhorn_divergence(x, y, t, eps=0.1).value, a),
        "sinkhorn_cost": (lambda t: dt.sinkhorn(u4, u3, t, 0.1).cost, cost),
        "mmd": (lambda t: dt.mmd(t, y, sigma=1.0), x),
        "energy_distance": (lambda t: dt.energy_distance(x, t), y),
        "dcor": (lambda t: dt.dcor(t, z), x),
        "jdcov": (lambda t: dt.jdcov(t, attr, z), x),
        "kde_points": (lambda t: dt.kde_logpdf(x, t, 0.7).sum(), y),
        "kde_data": (lambda t: dt.kde_logpdf(t, y, 0.7).sum(), x),
        # A bandwidth rule is evaluated on the (wrapped, under torch.func) data.
        "kde_data_rule_1d": (lambda t: dt.kde_logpdf(t, y[:, 0], "silverman").sum(), x[:, 0]),
        "kde_bandwidth": (lambda t: dt.kde_logpdf(x, y, t).sum(), torch.tensor([0.6, 0.9], dtype=F64)),
    }  # fmt: skip


_FUNC_CASES = list(_func_cases())


@pytest.mark.parametrize("case", _FUNC_CASES)
def test_func_grad_and_jacrev_equal_eager_backward(case):
    f, arg = _func_cases()[case]
    leaf = arg.clone().requires_grad_()
    value = f(leaf)
    value.backward()
    g, v = torch.func.grad_and_value(f)(arg)
    assert torch.equal(v, value.detach())
    assert leaf.grad.abs().max() > 0  # a gradient that is identically 0 would prove nothing
    torch.testing.assert_close(g, leaf.grad, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(torch.func.grad(f)(arg), leaf.grad, rtol=1e-13, atol=1e-15)
    # jacrev runs the backward under vmap (over the cotangents): the backward ops' rule.
    torch.testing.assert_close(torch.func.jacrev(f)(arg), leaf.grad, rtol=1e-13, atol=1e-15)


def test_func_grad_kl_matches_plain_torch_formula():
    """Independent oracle: torch.func.grad of PyTorch's own log_softmax + kl_div."""
    g = torch.Generator().manual_seed(5)
    s = torch.randn(5, 7, dtype=F64, generator=g)
    t = torch.randn(5, 7, dtype=F64, generator=g)

    def ours(s_, t_):
        return dt.kl(t_, s_, from_logits=True, reduction="batchmean")

    def plain(s_, t_):
        ls, lt = torch.log_softmax(s_, -1), torch.log_softmax(t_, -1)
        return torch.nn.functional.kl_div(ls, lt, reduction="batchmean", log_target=True)

    got = torch.func.grad(ours, argnums=(0, 1))(s, t)
    want = torch.func.grad(plain, argnums=(0, 1))(s, t)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_func_jacrev_of_vector_outputs():
    g = torch.Generator().manual_seed(6)
    p = torch.randn(4, 5, dtype=F64, generator=g)
    q = torch.randn(4, 5, dtype=F64, generator=g)
    data = torch.randn(9, 2, dtype=F64, generator=g)
    pts = torch.randn(3, 2, dtype=F64, generator=g)
    for f, arg in (
        (lambda t: dt.hellinger(t, q, from_logits=True), p),  # (4,) rows
        (lambda t: dt.kde_logpdf(data, t, 0.8), pts),  # (3,) log-densities: the scores
    ):
        jac = torch.func.jacrev(f)(arg)
        leaf = arg.clone().requires_grad_()
        out = f(leaf)
        assert jac.shape == out.shape + arg.shape
        for i in range(out.shape[0]):
            (row,) = torch.autograd.grad(out[i], leaf, retain_graph=True)
            torch.testing.assert_close(jac[i], row, rtol=1e-13, atol=1e-15)
    # The score of a Gaussian KDE with one data point at 0, bandwidth h: -x / h².
    one = torch.zeros(1, 2, dtype=F64)
    score = torch.func.jacrev(lambda t: dt.kde_logpdf(one, t, 0.5).sum())(pts)
    torch.testing.assert_close(score, -pts / 0.25, rtol=1e-12, atol=1e-14)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_func_vmap_raises_clear_error_and_double_grad_raises():
    g = torch.Generator().manual_seed(7)
    p = torch.randn(3, 4, dtype=F64, generator=g)
    q = torch.randn(3, 4, dtype=F64, generator=g)
    x = torch.randn(3, 5, 2, dtype=F64, generator=g)
    y = torch.randn(5, 2, dtype=F64, generator=g)
    with pytest.raises(RuntimeError, match=r"kl, js.*does not support torch\.vmap"):
        torch.func.vmap(lambda r: dt.kl(r, q[0], from_logits=True))(p)
    with pytest.raises(RuntimeError, match=r"mmd.*does not support torch\.vmap"):
        torch.func.vmap(torch.func.grad(lambda t: dt.mmd(t, y, sigma=1.0)))(x)
    with pytest.raises(RuntimeError, match=r"sinkhorn_divergence.*does not support"):
        torch.func.vmap(lambda t: dt.sinkhorn_divergence(t, y, eps=0.1).value)(x)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.func.grad(
            lambda r: torch.func.grad(lambda u: dt.kl(u, q[0], from_logits=True))(r).sum()
        )(p[0])
    with pytest.raises(NotImplementedError, match="jvp"):
        torch.func.jacfwd(lambda r: dt.kl(r, q, from_logits=True))(p)


def test_func_functional_call_training_step():
    """A functional training step (torch.func.functional_call + grad) gives the eager
    parameter gradients."""
    torch.manual_seed(1)
    lin = torch.nn.Linear(3, 5).double()
    xin = torch.randn(6, 3, dtype=F64)
    teacher = torch.randn(6, 5, dtype=F64)
    attr = torch.randn(6, 2, dtype=F64)

    def loss(params):
        out = torch.func.functional_call(lin, params, (xin,))
        return (
            dt.kl(teacher, out, from_logits=True, reduction="batchmean")
            + 0.1 * dt.ccdcov(out[:, :1], attr)
            + dt.energy_distance(out, teacher)
        )

    params = {k: v.detach() for k, v in lin.named_parameters()}
    grads = torch.func.grad(loss)(params)
    loss(dict(lin.named_parameters())).backward()
    for k, p in lin.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, rtol=1e-13, atol=1e-15)


def test_kde_full_covariance_rule_and_matrix_bandwidth():
    # The default rule in d > 1 gives scipy's full covariance (as divest.KDE); the torch
    # KDE whitens by its Cholesky factor. Oracle: the NumPy KDE and its score.
    g = np.random.default_rng(7)
    z = g.standard_normal((40, 2))
    xn = np.column_stack([z[:, 0], 0.7 * z[:, 0] + 0.5 * z[:, 1]])
    qn = g.standard_normal((6, 2))
    ref = divest.KDE(xn)
    x = torch.tensor(xn)
    q = torch.tensor(qn, requires_grad=True)
    lp = dt.KDE(x).logpdf(q)
    np.testing.assert_allclose(lp.detach().numpy(), ref.logpdf(qn), rtol=1e-12, atol=1e-12)
    lp.sum().backward()
    np.testing.assert_allclose(q.grad.numpy(), ref.score(qn), rtol=1e-9, atol=1e-11)
    # a (d, d) covariance tensor, differentiable: gradcheck through H = A Aᵀ + I
    A = torch.tensor([[0.3, 0.1], [-0.2, 0.4]], requires_grad=True)

    def f(A, xx, qq):
        return dt.kde_logpdf(xx, qq, A @ A.T + torch.eye(2, dtype=A.dtype))

    xs = torch.tensor(xn[:8], requires_grad=True)
    qs = torch.tensor(qn[:3], requires_grad=True)
    assert torch.autograd.gradcheck(f, (A.double(), xs, qs))
    H = (A @ A.T + torch.eye(2)).detach().numpy()
    np.testing.assert_allclose(
        f(A, xs, qs).detach().numpy(),
        divest.KDE(xn[:8], bandwidth=H).logpdf(qn[:3]),
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="positive definite"):
        dt.kde_logpdf(x, q, -torch.eye(2, dtype=torch.float64))
