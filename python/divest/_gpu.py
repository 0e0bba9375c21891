"""The GPU path: divest's calls on CuPy arrays (and PyTorch CUDA tensors through DLPack).

Reached only through :mod:`divest._backend` once a device array arrived and a GPU was
found. Inputs are validated on the device (one reduction and one scalar read each), the
work runs in the input dtype (float32 stays float32; integers become float64) on the
fused CUDA kernels of ``divest/cuda/kernels.cu``, compiled once per process with NVRTC
through ``cupy.RawModule``, or on the array-API algorithms of :mod:`divest._xp` where no
kernel fits (for example Sinkhorn problems too large for one block's shared memory).
Results come back on the same device, as CuPy arrays (scalars as 0-d arrays), or as
tensors when tensors came in. Only d×d bandwidth matrices and scalars cross to the host.

For tests the namespace can be NumPy (``_use(numpy, fused=False)``): the whole path,
validation and preprocessing included, then runs on the CPU against the Rust engine.
"""

from __future__ import annotations

import math
import os
import threading
import warnings

import numpy as np

from ._results import ConvergenceWarning
from ._validate import as_float_array, as_points
from ._xp.discrete import discrete_rows
from ._xp.pairs import dcov_from_sums, dcov_sums, lse_pairs, pair_sum
from ._xp.sinkhorn import sinkhorn_batch_log, sinkhorn_divergence_xp
from .cuda import fixed_dim

_xp_ns = None  # the array namespace (CuPy, or NumPy in tests)
_fused = True  # use the CUDA kernels (False: the xp algorithms only)
_lock = threading.Lock()
_BLOCK = 256


def _ns():
    global _xp_ns
    if _xp_ns is None:
        import cupy

        _xp_ns = cupy
    return _xp_ns


def _use(ns, fused: bool) -> None:
    """Select the namespace and whether the fused kernels run (tests)."""
    global _xp_ns, _fused
    _xp_ns, _fused = ns, bool(fused)


def _fused_on() -> bool:
    return _fused and os.environ.get("DIVEST_GPU_XP", "") != "1"


# ------------------------------------------------------------------- kernels (NVRTC)


def _kernels():
    """One module with every kernel instance, compiled at once (the cold-start figure of
    the benchmarks; the calls themselves compile only the instances they use)."""
    import cupy

    from . import cuda as src

    return cupy.RawModule(
        code=src.source(), options=src.NVRTC_OPTIONS, name_expressions=src.name_expressions()
    ).get_function(src.name_expressions()[0])


_modules: dict = {}


def _fn(name: str, dtype, D: int | None = None):
    """The kernel instance ``name<type>`` or ``name<type, D>``, compiled with NVRTC on first
    use and cached for the process (CuPy also caches the binary on disk)."""
    t = "float" if np.dtype(dtype) == np.float32 else "double"
    expr = f"{name}<{t}>" if D is None else f"{name}<{t}, {D}>"
    with _lock:
        mod = _modules.get(expr)
        if mod is None:
            import cupy

            from . import cuda as src

            mod = cupy.RawModule(
                code=src.source(), options=src.NVRTC_OPTIONS, name_expressions=[expr]
            )
            _modules[expr] = mod
    return mod.get_function(expr)


def _pad(a, D: int):
    """The points with zero coordinates appended up to D (no distance changes)."""
    xp = _ns()
    if a.shape[1] == D:
        return xp.ascontiguousarray(a)
    out = xp.zeros((a.shape[0], D), dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


def _scalar(dtype, v):
    return np.dtype(dtype).type(v)


def _smem_tile(d: int, itemsize: int, extra: int = 1, budget: int = 40 * 1024) -> int:
    return max(1, min(1024, budget // (itemsize * (d + extra))))


def _fits(width: int, dtype) -> bool:
    """Whether one point of ``width`` values fits the kernels' shared-memory tile (40 KiB);
    wider points (d in the thousands) take the xp path."""
    return width * np.dtype(dtype).itemsize <= 40 * 1024


def _i64(v: int):
    return np.int64(v)


# ------------------------------------------------------------- arrays in and out


def _tensor_in(a):
    """(CuPy view of a, True) for a CUDA tensor (no copy); (a, False) otherwise."""
    mod = type(a).__module__ or ""
    if mod == "torch" or mod.startswith("torch."):
        if a.requires_grad:
            a = a.detach()
        return _ns().from_dlpack(a), True
    return a, False


class _Io:
    """Converts the call's inputs, and its outputs back to tensors if tensors came in."""

    def __init__(self):
        self.torch = False

    def __call__(self, a):
        if a is None:
            return None
        a, t = _tensor_in(a)
        self.torch |= t
        return a

    def out(self, a):
        if a is None or not self.torch:
            return a
        import torch

        return torch.from_dlpack(a)


def _host(a) -> np.ndarray:
    get = getattr(a, "get", None)
    return get() if get is not None else np.asarray(a)


def _as_float(a, name, *, check_finite=True):
    """`_validate.as_float_array` on the device: the array stays where it is."""
    return as_float_array(a, name, check_finite=check_finite, xp=_ns())


def _points(a, name, *, d=None, check_finite=True):
    """`_validate.as_points` on the device, made C-contiguous there."""
    xp = _ns()
    return xp.ascontiguousarray(as_points(a, name, d=d, check_finite=check_finite, xp=xp))


def _weights(w, n, name, of):
    """Normalised float64 weights on the device (None: uniform)."""
    xp = _ns()
    if w is None:
        return xp.full((n,), 1.0 / n, dtype=xp.float64)
    w = _as_float(w, name).astype(xp.float64)
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), one per {of}; got {w.shape}")
    lo, top = (float(v) for v in _host(xp.stack([xp.min(w), xp.max(w)])))
    if lo < 0:
        raise ValueError(f"{name} must be non-negative; got minimum {lo!r}")
    if not top > 0:
        raise ValueError(
            f"{name} must not sum to zero (the weights must not all be zero); give at least "
            "one positive weight"
        )
    w = w / top
    return w / xp.sum(w)


def _same_dtype(*arrays):
    dt = np.result_type(*[np.dtype(a.dtype) for a in arrays])
    return [a if np.dtype(a.dtype) == dt else a.astype(dt) for a in arrays]


def _scalar_out(io, v):
    xp = _ns()
    return io.out(xp.asarray(v, dtype=xp.float64))


# ------------------------------------------------------------------- the two reducers


def _lse(q, x, h, coef, p=2, grad=False, exclude_self=False):
    """lse_pairs on the fused kernel (or the xp algorithm)."""
    xp = _ns()
    dt = q.dtype
    h = h.astype(dt)
    if not _fused_on() or not _fits(q.shape[1] + 1, dt):
        return lse_pairs(xp, q, x, h, coef, p=p, grad=grad, exclude_self=exclude_self)
    m, d = q.shape
    n = x.shape[0]
    it = np.dtype(dt).itemsize
    if p == 2 and not grad and not exclude_self and _use_gemm(d):
        return _lse_gemm(q, x, h, coef)
    D = fixed_dim(d)
    if D is not None:
        tile = _smem_tile(D, it)
        out = xp.empty((m,), dtype=dt)
        gout = xp.empty((m, D), dtype=dt) if grad else None
        args = (
            _pad(q, D),
            _pad(x, D),
            xp.ascontiguousarray(h),
            _scalar(dt, coef),
            _scalar(dt, p),
            _i64(m),
            _i64(n),
            np.int32(tile),
            np.int32(1 if exclude_self else 0),
            out,
            gout if grad else _null(),
        )
        grid = ((m + _BLOCK - 1) // _BLOCK,)
        _fn("lse_pairs_fixed", dt, D)(grid, (_BLOCK,), args, shared_mem=tile * (D + 1) * it)
        return (out, gout[:, :d]) if grad else out
    tile = _smem_tile(d, it)
    out = xp.empty((m,), dtype=dt)
    gout = xp.empty((m, d), dtype=dt) if grad else None
    grid = ((m + _BLOCK - 1) // _BLOCK,)
    args = (
        xp.ascontiguousarray(q),
        xp.ascontiguousarray(x),
        xp.ascontiguousarray(h),
        _scalar(dt, coef),
        _scalar(dt, p),
        _i64(m),
        _i64(n),
        _i64(d),
        np.int32(tile),
        np.int32(1 if exclude_self else 0),
        out,
        gout if grad else _null(),
    )
    _fn("lse_pairs", dt)(grid, (_BLOCK,), args, shared_mem=tile * (d + 1) * it)
    return (out, gout) if grad else out


#: Smallest dimension for the cuBLAS-tile route of the log-sum-exp (``DIVEST_GPU_GEMM``:
#: "0" never, "1" always, unset: from this dimension on).
GEMM_MIN_D = 16
_GEMM_TILE = 8192


def _use_gemm(d: int) -> bool:
    # TensorFloat-32 must stay off: ‖q‖² + ‖x‖² − 2q·x cancels. CuPy uses TF32 in matmul
    # only when CUPY_TF32=1; then the difference kernels run instead.
    if os.environ.get("CUPY_TF32", "0") not in ("", "0"):
        return False
    mode = os.environ.get("DIVEST_GPU_GEMM", "")
    return mode == "1" or (mode != "0" and d >= GEMM_MIN_D)


def _lse_gemm(q, x, h, coef):
    """The log-sum-exp of KDE through cuBLAS tiles: G = Q Xᵀ per (8192 × 8192) tile pair
    (``cupy.matmul``, FP32/FP64 without TF32), then the ``lse_merge_gemm`` epilogue turns
    G into distances and merges them into each row's running maximum and sum. Memory: one
    tile of G (256 MiB in float32) plus the norms and the (m,) accumulators."""
    xp = _ns()
    dt = q.dtype
    m, n = q.shape[0], x.shape[0]
    qn = xp.ascontiguousarray(xp.sum(q * q, axis=1))
    xn = xp.ascontiguousarray(xp.sum(x * x, axis=1))
    mx = xp.full((m,), -math.inf, dtype=dt)
    s = xp.zeros((m,), dtype=dt)
    merge = _fn("lse_merge_gemm", dt)
    C = _scalar(dt, coef)
    for i0 in range(0, m, _GEMM_TILE):
        i1 = min(i0 + _GEMM_TILE, m)
        rows = i1 - i0
        for j0 in range(0, n, _GEMM_TILE):
            j1 = min(j0 + _GEMM_TILE, n)
            g = xp.ascontiguousarray(xp.matmul(q[i0:i1], x[j0:j1].T))
            merge(
                ((rows * 32 + _BLOCK - 1) // _BLOCK,),
                (_BLOCK,),
                (
                    g,
                    qn[i0:i1],
                    xn[j0:j1],
                    h[j0:j1],
                    C,
                    _i64(rows),
                    _i64(j1 - j0),
                    mx[i0:i1],
                    s[i0:i1],
                ),
            )
    return xp.where(s > 0, mx + xp.log(xp.where(s > 0, s, 1.0)), -math.inf).astype(dt)


def _null():
    return np.uintp(0)


_KERNEL_CODE = {"power": 0, "gaussian": 1, "laplacian": 2}


def _psum(x, y, wx, wy, kernel, param, exclude_self=False):
    """pair_sum (float64 0-d array) on the fused kernel (or the xp algorithm)."""
    xp = _ns()
    dt = x.dtype
    if not _fused_on() or not _fits(x.shape[1], dt):
        return pair_sum(xp, x, y, wx, wy, kernel, param, exclude_self=exclude_self)
    n, d = x.shape
    m = y.shape[0]
    it = np.dtype(dt).itemsize
    blocks = (n + _BLOCK - 1) // _BLOCK
    partial = xp.empty((blocks,), dtype=xp.float64)
    D = fixed_dim(d)
    if D is not None:
        tile = _smem_tile(D, it, extra=0)
        args = (
            _pad(x, D),
            _pad(y, D),
            _null() if wx is None else xp.ascontiguousarray(wx.astype(dt)),
            _null() if wy is None else xp.ascontiguousarray(wy.astype(dt)),
            np.int32(_KERNEL_CODE[kernel]),
            _scalar(dt, param),
            _i64(n),
            _i64(m),
            np.int32(tile),
            np.int32(1 if exclude_self else 0),
            partial,
        )
        _fn("pair_sum_fixed", dt, D)((blocks,), (_BLOCK,), args, shared_mem=tile * D * it)
        return xp.sum(partial)
    tile = _smem_tile(d, it, extra=0)
    args = (
        xp.ascontiguousarray(x),
        xp.ascontiguousarray(y),
        _null() if wx is None else xp.ascontiguousarray(wx.astype(dt)),
        _null() if wy is None else xp.ascontiguousarray(wy.astype(dt)),
        np.int32(_KERNEL_CODE[kernel]),
        _scalar(dt, param),
        _i64(n),
        _i64(m),
        _i64(d),
        np.int32(tile),
        np.int32(1 if exclude_self else 0),
        partial,
    )
    _fn("pair_sum", dt)((blocks,), (_BLOCK,), args, shared_mem=tile * d * it)
    return xp.sum(partial)


def _dcov_sums(x, y, alpha):
    xp = _ns()
    x, y = _same_dtype(x, y)
    if not _fused_on() or not _fits(x.shape[1] + y.shape[1], x.dtype):
        return dcov_sums(xp, x, y, alpha)
    dt = x.dtype
    n, p = x.shape
    qd = y.shape[1]
    it = np.dtype(dt).itemsize
    tile = _smem_tile(p + qd, it, extra=0)
    blocks = (n + _BLOCK - 1) // _BLOCK
    ra = xp.empty((n,), dtype=xp.float64)
    rb = xp.empty((n,), dtype=xp.float64)
    partial = xp.empty((blocks, 3), dtype=xp.float64)
    args = (
        xp.ascontiguousarray(x),
        xp.ascontiguousarray(y),
        _scalar(dt, alpha),
        _i64(n),
        _i64(p),
        _i64(qd),
        np.int32(tile),
        ra,
        rb,
        partial,
    )
    _fn("dcov_sums", dt)((blocks,), (_BLOCK,), args, shared_mem=tile * (p + qd) * it)
    tot = xp.sum(partial, axis=0)
    return ra, rb, tot[0], tot[1], tot[2]


# ------------------------------------------------------------------------------ KDE


def kde_init(kde, data, bandwidth, kernel, weights, check_finite):
    """Fills a :class:`divest.KDE` for device data (Gaussian kernel; rules, numbers and
    arrays as bandwidths). Allocates float64 copies of the data and the whitened data."""
    from . import kde as K

    xp = _ns()
    io = _Io()
    data, weights = io(data), io(weights)
    kernel = K._check_kernel(kernel)
    if kernel != "gaussian":
        raise ValueError(
            f"kernel={kernel!r} is not available for GPU arrays (only 'gaussian'); pass "
            "NumPy arrays for the other kernels"
        )
    x = _points(data, "data", check_finite=check_finite)
    n, d = x.shape
    w = _weights(weights, n, "weights", "data point")
    kde._gpu = True
    kde.__class__ = _gpu_kde_class(type(kde))
    kde._io_torch = io.torch
    kde.kernel, kde.n, kde.d, kde.dtype = kernel, n, d, np.dtype(x.dtype)
    kde.weights = w
    kde.neff = float(1.0 / xp.sum(w * w))
    kde._scale = 1.0
    x64 = x.astype(xp.float64)
    mean = w @ x64
    kde._mean = _host(mean)
    kde._x = x
    kde.selection = None
    if isinstance(bandwidth, str) and bandwidth in ("scott", "silverman"):
        if n < 2 or int(xp.count_nonzero(w)) < 2:
            raise ValueError(
                f"bandwidth={bandwidth!r} needs at least 2 data points with positive weight "
                "to estimate a covariance; pass a scalar or per-dimension bandwidth instead"
            )
        xc = x64 - mean
        cov = _host((xc * w[:, None]).T @ xc) / (1.0 - kde.neff**-1)
        factor = K._rule_factor(bandwidth, kde.neff, d)
        if not np.all(np.isfinite(cov)):
            raise ValueError("the data covariance is not finite; check the data")
        sd = np.sqrt(np.diag(cov))
        if not np.all(sd > 0):
            raise ValueError(K._singular_msg(bandwidth, d))
        c = K._cholesky(cov / sd[:, None] / sd[None, :], K._singular_msg(bandwidth, d))
        if not np.all(np.isfinite(c)) or not np.all(np.diag(c) > 1e-7):
            raise ValueError(K._singular_msg(bandwidth, d))
        h, chol, rule = cov * factor**2, factor * (sd[:, None] * c), bandwidth
    elif isinstance(bandwidth, str):
        raise ValueError(
            f"bandwidth={bandwidth!r} is not available for GPU arrays: pass 'scott', "
            "'silverman', a number or an array (or select it on the host with "
            "divest.select_bandwidth on a NumPy copy)"
        )
    else:
        bw = _host(io(bandwidth)) if hasattr(bandwidth, "shape") else bandwidth
        h, chol, factor, rule = K._bandwidth_factor(bw, np.zeros((1, d)), np.ones(1), 1.0, 1.0)
    kde.factor, kde.rule, kde.bandwidth, kde._chol = factor, rule, h, chol
    kde._chol_inv = np.linalg.inv(chol)
    kde._inv_diag = None
    kde._log_det = float(np.sum(np.log(np.diag(chol))))
    kde._log_norm = K.log_kernel_norm(kernel, d)
    kde._logw = xp.where(w > 0, xp.log(xp.where(w > 0, w, 1.0)), -math.inf)
    kde._white = {}
    xw = _kde_white_data(kde, kde.dtype)
    if not bool(xp.all(xp.isfinite(xw))):
        raise ValueError(
            "bandwidth is too small for the spread of the data: the data measured in "
            "bandwidths overflow the float range; use a larger bandwidth or rescale the data"
        )


_GPU_KDE_CLASSES: dict = {}


def _gpu_kde_class(base):
    """A subclass of the KDE class (still a ``KDE``) whose host-only methods say so instead
    of failing somewhere inside NumPy, and whose ``loo_logpdf`` runs on the device."""
    with _lock:
        cls = _GPU_KDE_CLASSES.get(base)
        if cls is not None:
            return cls

        def host_only(name):
            def method(self, *args, **kwargs):
                raise ValueError(
                    f"KDE.{name} is not available for a KDE built from GPU arrays (only "
                    "logpdf, pdf, score and loo_logpdf are); build it from NumPy data"
                )

            method.__name__ = name
            return method

        ns = {
            n: host_only(n)
            for n in ("resample", "grid", "marginal", "conditional", "integrate_box", "cdf", "ppf")
        }
        ns["loo_logpdf"] = kde_loo_logpdf
        ns["__doc__"] = base.__doc__
        cls = type(base.__name__, (base,), ns)
        _GPU_KDE_CLASSES[base] = cls
        return cls


def kde_loo_logpdf(kde):
    """Leave-one-out log-density at each data point on the device (one pass of the fused
    log-sum-exp with the diagonal excluded)."""
    xp = _ns()
    if int(xp.count_nonzero(kde.weights)) < 2:
        raise ValueError("leave-one-out needs at least 2 data points with positive weight")
    xw = _kde_white_data(kde, kde.dtype)
    lse = _lse(xw, xw, kde._logw, 0.5, exclude_self=True).astype(xp.float64)
    out = lse - xp.log1p(-kde.weights) - (kde._log_norm + kde._log_det)
    io = _Io()
    io.torch = kde._io_torch
    return io.out(out.astype(kde.dtype))


def _kde_whiten(kde, p, dtype):
    xp = _ns()
    ci = xp.asarray(kde._chol_inv.T)
    z = (p.astype(xp.float64) - xp.asarray(kde._mean)) @ ci
    return xp.ascontiguousarray(z.astype(dtype))


def _kde_white_data(kde, dtype):
    key = np.dtype(dtype).str
    if key not in kde._white:
        kde._white[key] = _kde_whiten(kde, kde._x, dtype)
    return kde._white[key]


def _kde_check(kde, points):
    io = _Io()
    points = io(points)
    if not getattr(kde, "_gpu", False):
        raise TypeError(
            "this KDE holds host (NumPy) data but points are on the GPU; build the KDE "
            "from GPU data, or pass NumPy points"
        )
    io.torch |= kde._io_torch
    return io, points


def kde_logpdf(kde, points, return_ess=False, check_finite=True):
    """Log-density at device points: one fused online log-sum-exp pass over the data.
    Memory: the whitened queries (m·d) and the output."""
    io, points = _kde_check(kde, points)
    if return_ess:
        raise ValueError("return_ess=True is not available for GPU arrays; pass NumPy arrays")
    p = _points(points, "points", d=kde.d, check_finite=check_finite)
    dtype = np.result_type(kde.dtype, p.dtype)
    xw, qw = _kde_white_data(kde, dtype), _kde_whiten(kde, p, dtype)
    lse = _lse(qw, xw, kde._logw, 0.5)
    return io.out(lse - dtype.type(kde._log_norm + kde._log_det))


def kde_score(kde, points, check_finite=True):
    """Gradient of the log-density at device points, (m, d), from the same pass (the
    softmax-weighted mean of q − x_j accumulated alongside the log-sum-exp). Where every
    kernel term underflows the score is 0 here (the host path returns its limit)."""
    io, points = _kde_check(kde, points)
    xp = _ns()
    p = _points(points, "points", d=kde.d, check_finite=check_finite)
    dtype = np.result_type(kde.dtype, p.dtype)
    xw, qw = _kde_white_data(kde, dtype), _kde_whiten(kde, p, dtype)
    _, mean_dir = _lse(qw, xw, kde._logw, 0.5, grad=True)
    s = (-0.5) * mean_dir  # ∇ in whitened coordinates
    grad = s.astype(xp.float64) @ xp.asarray(kde._chol_inv)
    return io.out(grad.astype(dtype))


# ----------------------------------------------------------------- energy statistics


def _check_alpha(exponent):
    from .dcov import _check_exponent

    return _check_exponent(exponent)


def energy_distance(x, y, exponent=1.0, unbiased=False):
    """2 E|X − Y|^α − E|X − X'|^α − E|Y − Y'|^α by three tiled sum passes (float64 block
    sums). Returns a float64 0-d array on the device. Memory: O(1) beyond the inputs."""
    from ._validate import check_bool

    io = _Io()
    x, y = io(x), io(y)
    a = _check_alpha(exponent)
    unbiased = check_bool(unbiased, "unbiased")
    xa = _points(x, "x")
    ya = _points(y, "y", d=xa.shape[1])
    xa, ya = _same_dtype(xa, ya)
    n, m = xa.shape[0], ya.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise ValueError("unbiased=True needs at least 2 points in x and in y")
    exy = _psum(xa, ya, None, None, "power", a) / (n * m)
    nx, ny = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    exx = _psum(xa, xa, None, None, "power", a, exclude_self=True) / nx
    eyy = _psum(ya, ya, None, None, "power", a, exclude_self=True) / ny
    return _scalar_out(io, 2.0 * exy - exx - eyy)


def _dcov_parts(x, y, exponent, unbiased):
    from ._validate import check_bool

    a = _check_alpha(exponent)
    unbiased = check_bool(unbiased, "unbiased")
    xa, ya = _points(x, "x"), _points(y, "y")
    n = xa.shape[0]
    if ya.shape[0] != n:
        raise ValueError(
            f"x and y must have the same number of observations; got {n} and {ya.shape[0]}"
        )
    if unbiased and n < 4:
        raise ValueError(f"unbiased=True needs at least 4 observations; got {n}")
    ra, rb, ab, aa, bb = _dcov_sums(xa, ya, a)
    cov = dcov_from_sums(_ns(), ra, rb, ab, n, unbiased)
    vx = dcov_from_sums(_ns(), ra, ra, aa, n, unbiased)
    vy = dcov_from_sums(_ns(), rb, rb, bb, n, unbiased)
    return cov, vx, vy


def dcov_sqr(x, y, exponent=1.0, unbiased=False, return_grad=False):
    """Squared distance covariance from one fused pass (row sums and the cross sum).
    Returns a float64 0-d array on the device. Memory: two float64 vectors of n."""
    io = _Io()
    x, y = io(x), io(y)
    if return_grad:
        raise ValueError("return_grad=True is not available for GPU arrays; pass NumPy arrays")
    return _scalar_out(io, _dcov_parts(x, y, exponent, unbiased)[0])


def dcor_sqr(x, y, exponent=1.0, unbiased=False):
    io = _Io()
    x, y = io(x), io(y)
    xp = _ns()
    cov, vx, vy = _dcov_parts(x, y, exponent, unbiased)
    den = xp.sqrt(xp.abs(vx * vy))
    val = xp.where(den > 0, cov / xp.where(den > 0, den, 1.0), 0.0)
    return _scalar_out(io, val)


def dcor(x, y, exponent=1.0):
    io = _Io()
    x, y = io(x), io(y)
    xp = _ns()
    cov, vx, vy = _dcov_parts(x, y, exponent, False)
    den = xp.sqrt(xp.abs(vx * vy))
    val = xp.where(den > 0, cov / xp.where(den > 0, den, 1.0), 0.0)
    return _scalar_out(io, xp.sqrt(xp.clip(val, 0.0, 1.0)))


# ------------------------------------------------------------------- kernel two-sample


def _two_samples(x, y, check_finite):
    """Device version of divergence._two_samples: divided by powers of two, centred."""
    xp = _ns()
    xa = _points(x, "x", check_finite=check_finite)
    ya = _points(y, "y", d=xa.shape[1], check_finite=check_finite)
    dtype = np.float32 if (xa.dtype == np.float32 and ya.dtype == np.float32) else np.float64

    def pow2(*arrs):
        top = max(float(xp.max(xp.abs(a))) for a in arrs)
        if not (top > 0 and math.isfinite(top)):
            return 1.0
        return math.ldexp(1.0, math.frexp(top)[1] - 1)

    c0 = pow2(xa, ya)
    xs = xa.astype(xp.float64) / c0
    ys = ya.astype(xp.float64) / c0
    mean = (xp.sum(xs, axis=0) + xp.sum(ys, axis=0)) / (xs.shape[0] + ys.shape[0])
    xs, ys = xs - mean, ys - mean
    c1 = pow2(xs, ys)
    return (
        xp.ascontiguousarray((xs / c1).astype(dtype)),
        xp.ascontiguousarray((ys / c1).astype(dtype)),
        (c0, c1),
    )


def _median_sigma(xc, yc):
    """The median heuristic on the device, on the same 1000-point subsample as the host."""
    from .divergence import MEDIAN_SUBSAMPLE

    xp = _ns()
    n, m = xc.shape[0], yc.shape[0]
    total = n + m
    pooled = xp.concatenate([xc, yc]).astype(xp.float64)
    if total > MEDIAN_SUBSAMPLE:
        idx = np.sort(np.random.default_rng(0).choice(total, MEDIAN_SUBSAMPLE, replace=False))
        pooled = pooled[xp.asarray(idx)]
    k = pooled.shape[0]
    diff = pooled[:, None, :] - pooled[None, :, :]
    dist = xp.sqrt(xp.sum(diff * diff, axis=2))
    iu = np.triu_indices(k, 1)
    sigma = float(xp.median(dist[xp.asarray(iu[0]), xp.asarray(iu[1])]))
    if not sigma > 0:
        raise ValueError(
            "the median heuristic gives sigma = 0 (most pooled points coincide); pass sigma"
        )
    return sigma


def _kernel_setup(x, y, sigma, kernel, check_finite):
    from . import divergence as D
    from ._validate import check_positive

    xp = _ns()
    xc, yc, c = _two_samples(x, y, check_finite)
    s = _median_sigma(xc, yc) if sigma is None else check_positive(sigma, "sigma") / c[0] / c[1]
    inv = 1.0 / s if s > 0 else math.inf
    r2 = max(float(xp.max(xp.sum(a.astype(xp.float64) ** 2, axis=1))) for a in (xc, yc))
    diam2 = 4.0 * r2
    top = (
        0.0
        if diam2 == 0
        else (0.5 * diam2 * inv * inv if kernel == "gaussian" else math.sqrt(diam2) * inv)
    )
    if not top <= D._MAX_LOG_KERNEL:
        raise ValueError(
            f"sigma = {sigma!r} is too small for the data x and y: relative to their spread it "
            "is so small that every kernel value between distinct points underflows to 0; "
            "pass a larger sigma (or sigma=None for the median heuristic)"
        )
    scale = min(inv * inv, 1e300)
    same = xc.shape == yc.shape and bool(xp.all(xc == yc))
    return xc, yc, scale, same


def mmd(x, y, sigma=None, kernel="gaussian", unbiased=True, check_finite=True):
    """MMD² by three tiled kernel-sum passes (float64 block sums); a float64 0-d array on
    the device. Memory: float64 centred copies of the samples."""
    from ._validate import check_choice

    io = _Io()
    x, y = io(x), io(y)
    check_choice(kernel, "kernel", ("gaussian", "laplacian"))
    xc, yc, scale, same = _kernel_setup(x, y, sigma, kernel, check_finite)
    n, m = xc.shape[0], yc.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise ValueError(
            "unbiased=True needs at least 2 points in each sample; "
            "pass unbiased=False or more points"
        )
    if (not unbiased and same) or scale < 1e-290:
        return _scalar_out(io, 0.0)
    param = scale if kernel == "gaussian" else math.sqrt(scale)
    kxx = _psum(xc, xc, None, None, kernel, param, exclude_self=True)
    kyy = _psum(yc, yc, None, None, kernel, param, exclude_self=True)
    kxy = _psum(xc, yc, None, None, kernel, param)
    if unbiased:
        val = kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2.0 * kxy / (n * m)
    else:
        val = (kxx + n) / (n * n) + (kyy + m) / (m * m) - 2.0 * kxy / (n * m)
    return _scalar_out(io, val)


def cs_divergence(x, y, sigma=None, check_finite=True):
    """Cauchy-Schwarz divergence by three tiled Gaussian sum passes; float64 0-d array."""
    io = _Io()
    x, y = io(x), io(y)
    xp = _ns()
    xc, yc, scale, same = _kernel_setup(x, y, sigma, "gaussian", check_finite)
    if same or scale < 1e-290:
        return _scalar_out(io, 0.0)
    n, m = xc.shape[0], yc.shape[0]
    kxx = _psum(xc, xc, None, None, "gaussian", scale, exclude_self=True) + n
    kyy = _psum(yc, yc, None, None, "gaussian", scale, exclude_self=True) + m
    kxy = _psum(xc, yc, None, None, "gaussian", scale)
    val = xp.log(kxx) + xp.log(kyy) - 2.0 * xp.log(kxy)
    return _scalar_out(io, xp.maximum(val, 0.0))


# ----------------------------------------------------------------- discrete divergences

_MEASURE_CODE = {"kl": 0, "js": 1, "tv": 2, "hellinger": 3}
_KIND_CODE = {"prob": 0, "logits": 1, "log": 2}


def divergence(p, q, measure, axis, keepdims, base, from_logits, log_input, normalize, sqrt=False):
    """kl, js, tv, hellinger (and js_distance) on device arrays: one block per row, every
    reduction of a row fused (log totals, normalisation, the sum of terms)."""
    from . import divergence as D
    from ._validate import check_bool

    io = _Io()
    p, q = io(p), io(q)
    xp = _ns()
    kind = D._input_kind(from_logits, log_input)
    normalize = check_bool(normalize, "normalize")
    if base is not None and measure not in D._LOGARITHMIC:
        raise ValueError(f"base applies to logarithmic divergences only; {measure!r} has no base")
    lb = D._log_base(base)
    pm, qm, batch, k, ax, dtype = D._aligned(p, q, axis, xp=xp)
    pr = xp.ascontiguousarray(xp.broadcast_to(pm, batch + (k,)).astype(dtype, copy=False))
    qr = xp.ascontiguousarray(xp.broadcast_to(qm, batch + (k,)).astype(dtype, copy=False))
    pr, qr = pr.reshape(-1, k), qr.reshape(-1, k)
    rows = pr.shape[0]
    fused = _fused_on() and rows > 0
    bad_msg = (
        "p and q must be finite and non-negative probabilities"
        if kind == "prob"
        else "p and q contain NaN or +inf; log inputs must be < inf"
    )
    # Validation: the kernel flags invalid rows in the same pass (NaN log totals); the xp
    # path checks signs and finiteness with two reductions.
    if not fused and kind == "prob":
        bad = xp.any(~xp.isfinite(pr) | (pr < 0)) | xp.any(~xp.isfinite(qr) | (qr < 0))
        if bool(bad):
            raise ValueError(bad_msg)
    elif not fused:
        bad = xp.any(xp.isnan(pr) | (pr == math.inf)) | xp.any(xp.isnan(qr) | (qr == math.inf))
        if bool(bad):
            raise ValueError(bad_msg)
    if fused:
        out = xp.empty((rows,), dtype=dtype)
        logtot = xp.empty((rows, 2), dtype=dtype)
        args = (
            pr,
            qr,
            _i64(rows),
            _i64(k),
            np.int32(_KIND_CODE[kind]),
            np.int32(1 if normalize else 0),
            np.int32(_MEASURE_CODE[measure]),
            out,
            logtot,
        )
        _fn("discrete_rows", dtype)((rows,), (_BLOCK,), args)
        if bool(xp.any(xp.isnan(logtot))):
            raise ValueError(bad_msg)
    else:
        out = discrete_rows(xp, pr, qr, measure, kind, normalize)
        logtot = None
    if kind != "logits" and not normalize:
        tol = D.SUM_TOL[np.dtype(dtype)]
        if logtot is None:
            lp_tot, lq_tot = _row_logtot(xp, pr, kind), _row_logtot(xp, qr, kind)
        else:
            lp_tot, lq_tot = logtot[:, 0], logtot[:, 1]
        err = xp.max(xp.abs(xp.expm1(xp.stack([lp_tot, lq_tot]).astype(xp.float64))))
        if not float(err) <= tol:
            raise ValueError(
                f"rows of p or q do not sum to 1 (largest deviation {float(err):.3g} > {tol:g}); "
                "pass normalize=True to rescale them"
            )
    if lb != 1.0:
        out = out / lb
    if sqrt:
        out = xp.sqrt(out)
    out = out.astype(dtype).reshape(batch)
    if keepdims:
        out = xp.expand_dims(out, ax)
    return io.out(out)


def _row_logtot(xp, r, kind):
    from ._xp._util import safe_log

    lr = safe_log(xp, r) if kind == "prob" else r
    mx = xp.max(lr, axis=-1, keepdims=True)
    mx = xp.where(mx == -math.inf, 0.0, mx)
    return (mx + safe_log(xp, xp.sum(xp.exp(lr - mx), axis=-1, keepdims=True)))[:, 0]


# ---------------------------------------------------------------------------- Sinkhorn


def _sinkhorn_core(A, Bw, c, shared, reg, max_iter, tol):
    """f, g, n_iter, err for the batch, on the one-block-per-problem kernel when the
    problem fits in shared memory, else the xp algorithm."""
    xp = _ns()
    nb, n = A.shape
    m = Bw.shape[1]
    dt = c.dtype
    it = np.dtype(dt).itemsize
    smem = 2 * (n + m) * it
    cache = smem + n * m * it <= 44 * 1024
    if cache:
        smem += n * m * it
    if _fused_on() and nb == 1 and n * m > 128 * 128:
        return _sinkhorn_dense(A[0], Bw[0], c if c.ndim == 2 else c[0], reg, max_iter, tol)
    if _fused_on() and smem <= 44 * 1024:
        f = xp.empty((nb, n), dtype=dt)
        g = xp.empty((nb, m), dtype=dt)
        iters = xp.empty((nb,), dtype=xp.int64)
        err = xp.empty((nb,), dtype=dt)
        args = (
            xp.ascontiguousarray(A.astype(dt)),
            xp.ascontiguousarray(Bw.astype(dt)),
            xp.ascontiguousarray(c),
            _i64(0 if shared else n * m),
            _i64(n),
            _i64(m),
            _scalar(dt, reg),
            _i64(max_iter),
            _scalar(dt, tol),
            np.int32(1 if cache else 0),
            f,
            g,
            iters,
            err,
        )
        threads = 64 if max(n, m) <= 64 else 128
        _fn("sinkhorn_batch", dt)((nb,), (threads,), args, shared_mem=smem)
        return f, g, iters, err
    cc = xp.broadcast_to(c, (nb, n, m)) if shared else c
    f, g, iters, err, _, _, _ = sinkhorn_batch_log(
        xp, A.astype(dt), Bw.astype(dt), cc, reg, max_iter, tol
    )
    return f, g, iters, err


def _sinkhorn_dense(a, b, c, reg, max_iter, tol):
    """One large problem: row half-steps with a warp per row, column half-steps with a
    thread per column, the row error from one more row pass; no n×m temporary. Shapes
    as :func:`_sinkhorn_core` returns them (a batch of one)."""
    xp = _ns()
    n, m = c.shape
    dt = c.dtype
    c = xp.ascontiguousarray(c)
    a, b = a.astype(dt), b.astype(dt)
    la = xp.where(a > 0, xp.log(xp.where(a > 0, a, 1.0)), -math.inf).astype(dt)
    lb = xp.where(b > 0, xp.log(xp.where(b > 0, b, 1.0)), -math.inf).astype(dt)
    rows, cols = _fn("lse_rows", dt), _fn("lse_cols", dt)
    f = xp.empty((n,), dtype=dt)
    g = xp.zeros((m,), dtype=dt)
    f2 = xp.empty((n,), dtype=dt)
    r_grid = ((n * 32 + _BLOCK - 1) // _BLOCK,)
    c_grid = ((m + _BLOCK - 1) // _BLOCK,)
    R = _scalar(dt, reg)
    it, err = 0, math.inf
    while it < max_iter:
        rows(r_grid, (_BLOCK,), (c, xp.ascontiguousarray(lb + g / R), _i64(n), _i64(m), R, f))
        cols(c_grid, (_BLOCK,), (c, xp.ascontiguousarray(la + f / R), _i64(n), _i64(m), R, g))
        rows(r_grid, (_BLOCK,), (c, xp.ascontiguousarray(lb + g / R), _i64(n), _i64(m), R, f2))
        it += 1
        err = float(xp.sum(xp.abs(a * xp.exp((f - f2) / R) - a)))
        if err <= tol:
            break
    return (
        f[None, :],
        g[None, :],
        xp.asarray([it], dtype=xp.int64),
        xp.asarray([err], dtype=dt),
    )


def _plan_and_costs(A, Bw, c, f, g, reg, want_plan):
    xp = _ns()
    nb = A.shape[0]
    cc = c if c.ndim == 3 else xp.broadcast_to(c, (nb,) + c.shape)
    dt = c.dtype
    la = xp.where(A > 0, xp.log(xp.where(A > 0, A, 1.0)), -math.inf).astype(dt)
    lb = xp.where(Bw > 0, xp.log(xp.where(Bw > 0, Bw, 1.0)), -math.inf).astype(dt)
    plan = xp.exp((la + f / reg)[:, :, None] + (lb + g / reg)[:, None, :] - cc / reg)
    lin = xp.sum(plan * cc, axis=(1, 2), dtype=xp.float64)
    fg = f[:, :, None] + g[:, None, :]
    mass = xp.sum(plan, axis=(1, 2), dtype=xp.float64)
    cost = xp.sum(plan * fg, axis=(1, 2), dtype=xp.float64) - reg * (
        mass - xp.sum(A, axis=1) * xp.sum(Bw, axis=1)
    )
    return (plan if want_plan else None), cost, lin


def sinkhorn_batch(a, b, cost, reg, reg_m, max_iter, tol, method, return_plan, omega, scaling):
    """Balanced batched Sinkhorn on the device, one thread block per problem (log-domain
    half-steps, each problem stopping on its own tolerance). ``method`` and ``omega`` are
    accepted and ignored (plain iterations); ``scaling`` and finite ``reg_m`` are host-only.
    Memory: f, g and the results; the costs and the plan (when asked for) are formed
    once at the end, one (B, n, m) temporary."""
    from . import ot as O
    from ._validate import check_positive

    io = _Io()
    a, b, cost = io(a), io(b), io(cost)
    xp = _ns()
    if not math.isinf(float(reg_m)):
        raise ValueError("finite reg_m (unbalanced) is not available for GPU arrays")
    if scaling is not None:
        raise ValueError("scaling (ε-scaling) is not available for GPU arrays; pass scaling=None")
    c = _as_float(cost, "cost")
    if c.ndim not in (2, 3):
        raise ValueError(f"cost must have shape (B, n, m) or (n, m); got {c.shape}")
    A = _as_float(a, "a").astype(xp.float64)
    Bw = _as_float(b, "b").astype(xp.float64)
    nb, n, m, shared = O._batch_shapes(A, Bw, c)
    if bool(xp.any(A < 0) | xp.any(Bw < 0)):
        raise ValueError("a and b must be non-negative")
    sa, sb = xp.sum(A, axis=1), xp.sum(Bw, axis=1)
    if not bool(xp.all(sa > 0) & xp.all(sb > 0)):
        raise ValueError("every problem needs positive weights: a row of a or b sums to zero")
    if bool(xp.any(xp.abs(sa - sb) > 1e-6 * xp.maximum(sa, sb))):
        raise ValueError("a[k] and b[k] must have the same total mass for every problem k")
    Bw = Bw * (sa / sb)[:, None]
    reg = check_positive(reg, "reg")
    max_iter = O._max_iter(max_iter)
    tol = O._tol(tol)
    O._method(method)
    O._omega(omega)
    f, g, iters, err = _sinkhorn_core(A, Bw, c, shared, reg, max_iter, tol)
    plan, cst, lin = _plan_and_costs(
        A.astype(c.dtype), Bw.astype(c.dtype), c, f, g, reg, bool(return_plan)
    )
    converged = err <= tol
    if not bool(xp.all(converged)):
        bad = int(xp.sum(~converged))
        warnings.warn(
            f"sinkhorn_batch: {bad} of {nb} problems did not converge within {max_iter} "
            "iterations; increase max_iter or use a larger reg",
            ConvergenceWarning,
            stacklevel=3,
        )
    return O.SinkhornResult(
        plan=io.out(plan),
        cost=io.out(cst),
        linear_cost=io.out(lin),
        f=io.out(f),
        g=io.out(g),
        n_iter=io.out(iters),
        converged=io.out(converged),
        marginal_error=io.out(err),
    )


def sinkhorn(a, b, cost, reg, max_iter, tol, method, init, return_plan, scaling, omega):
    """Dense balanced Sinkhorn on a device cost: the batched solver with one problem
    (one block when n + m is small, else row and column log-sum-exps over the cost)."""
    from . import ot as O

    io = _Io()
    a, b, cost = io(a), io(b), io(cost)
    xp = _ns()
    if init is not None:
        raise ValueError("init is not available for GPU arrays; pass init=None")
    c = _as_float(cost, "cost")
    if c.ndim != 2:
        raise ValueError(f"cost must be a 2-D array (n, m); got shape {c.shape}")
    n, m = c.shape
    A = _weights(a, n, "a", "row of the cost") if a is not None else None
    Bw = _weights(b, m, "b", "column of the cost") if b is not None else None
    A = xp.full((n,), 1.0 / n) if A is None else A
    Bw = xp.full((m,), 1.0 / m) if Bw is None else Bw
    r = sinkhorn_batch(
        A[None, :],
        Bw[None, :],
        c[None],
        reg,
        math.inf,
        max_iter,
        tol,
        method,
        return_plan,
        omega,
        scaling,
    )
    return O.SinkhornResult(
        plan=None if r.plan is None else io.out(r.plan[0]),
        cost=io.out(r.cost[0]),
        linear_cost=io.out(r.linear_cost[0]),
        f=io.out(r.f[0]),
        g=io.out(r.g[0]),
        n_iter=int(r.n_iter[0]),
        converged=bool(r.converged[0]),
        marginal_error=float(r.marginal_error[0]),
    )


def _lse_for_xp(
    xp, q, x, h, coef, *, p=2, grad=False, tile_q=None, tile_x=None, exclude_self=False
):
    return _lse(q, x, h, coef, p=p, grad=grad, exclude_self=exclude_self)


def sinkhorn_divergence(x, y, a, b, eps, p, scaling, debias, max_iter, tol, grad):
    """GeomLoss's annealed Sinkhorn loop on device clouds, each softmin one fused online
    log-sum-exp pass (no n×m matrix). Scalars (``value``) are 0-d device arrays."""
    from . import ot as O
    from ._validate import check_bool, check_choice, check_positive

    io = _Io()
    x, y, a, b = io(x), io(y), io(a), io(b)
    xp = _ns()
    x = _points(x, "x")
    y = _points(y, "y", d=x.shape[1])
    x, y = _same_dtype(x, y)
    n, m = x.shape[0], y.shape[0]
    wa = _weights(a, n, "a", "point of x")
    wb = _weights(b, m, "b", "point of y")
    eps = check_positive(eps, "eps")
    p = check_choice(p, "p", (1, 2), "cost |x - y|^p")
    s = check_positive(scaling, "scaling")
    if not s < 1:
        raise ValueError(f"scaling must be in (0, 1); got {scaling!r}")
    max_iter = O._max_iter(max_iter, 0)
    tol = None if tol is None else O._tol(tol)
    debias = check_bool(debias, "debias")
    grad = check_bool(grad, "grad")
    dt = x.dtype
    lo = xp.minimum(xp.min(x, axis=0), xp.min(y, axis=0)).astype(xp.float64)
    hi = xp.maximum(xp.max(x, axis=0), xp.max(y, axis=0)).astype(xp.float64)
    shift = lo / 2 + hi / 2
    w = _host(hi / 2 - lo / 2)
    wmax = float(w.max())
    if wmax == 0.0:
        z = xp.zeros
        return O.SinkhornDivergence(
            value=_scalar_out(io, 0.0),
            f=io.out(z((n,), dtype=dt)),
            g=io.out(z((m,), dtype=dt)),
            grad=io.out(z(x.shape, dtype=dt)) if grad else None,
            n_iter=0,
            converged=None if tol is None else True,
            marginal_error=0.0,
        )
    diam = 2.0 * wmax * float(np.sqrt(((w / wmax) ** 2).sum()))
    if not eps <= 1e9 * diam**p:
        raise ValueError(
            f"eps = {eps!r} is too large for these clouds (diameter {diam:.3g}) on the GPU "
            "path; pass NumPy arrays for the ε → ∞ limit"
        )
    eps = max(eps, 1e-300 * diam**p)
    xc = xp.ascontiguousarray((x.astype(xp.float64) - shift).astype(dt))
    yc = xp.ascontiguousarray((y.astype(xp.float64) - shift).astype(dt))
    la = xp.where(wa > 0, xp.log(xp.where(wa > 0, wa, 1.0)), -math.inf).astype(dt)
    lb = xp.where(wb > 0, xp.log(xp.where(wb > 0, wb, 1.0)), -math.inf).astype(dt)
    value, f, g, fa, gb, gr, n_upd, err, conv = sinkhorn_divergence_xp(
        xp,
        xc,
        yc,
        wa.astype(dt),
        wb.astype(dt),
        p=p,
        eps=eps,
        scaling=s,
        diameter=diam,
        debias=debias,
        grad=grad,
        tol=tol,
        max_iter=max_iter,
        lse=_lse_for_xp,
        log_weights=(la, lb),
    )
    if tol is not None and not conv:
        O._warn("sinkhorn_divergence", n_upd, err, tol)
    if debias:
        f, g = f - fa, g - gb
    return O.SinkhornDivergence(
        value=_scalar_out(io, xp.maximum(value, 0.0)),
        f=io.out(f.astype(dt)),
        g=io.out(g.astype(dt)),
        grad=None if gr is None else io.out(gr.astype(dt)),
        n_iter=int(n_upd),
        converged=None if tol is None else bool(conv),
        marginal_error=float(err),
    )
