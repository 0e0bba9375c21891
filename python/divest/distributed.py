"""divest on Dask: the same calls on data split into chunks, run by any Dask scheduler.

Install with ``pip install 'divest[dask]'`` (``dask[array,distributed]``). Dask is imported
here only; ``import divest`` never needs it.

Every function has the name, arguments and meaning of its in-memory counterpart and
takes Dask arrays (NumPy arrays are accepted too and wrapped with ``dask.array``; see
each function). Nothing is computed when a function is called: it returns a Dask array
(per-row results), a 0-d Dask array (scalars) or a :class:`dask.delayed.Delayed`
(:class:`divest.TestResult`, :class:`divest.SinkhornResult` fields are Dask arrays).
``.compute()`` runs on whatever scheduler is active: the threaded default, a
``LocalCluster``, or a ``Client`` connected to a real cluster.

What ``.compute()`` returns, against the in-memory call on the same data:

* work split by rows (:func:`kl` and the other batched divergences, :func:`sinkhorn_batch`,
  :func:`kde_logpdf` over chunks of queries, :func:`knn_entropy`, :func:`knn_kl`) and by
  resamples (:func:`dcov_test`, :func:`energy_test`, :func:`ccdcov_test`,
  :func:`jdcov_test`): **bitwise** the same;
* :func:`kde_logpdf` with the *data* chunked: partial log-sum-exps per data block combined
  by a tree of ``logaddexp``, and the bandwidth from blockwise moments: within **1e-13
  relative** (the order of the sums differs).

Threads: each task calls one divest kernel, which runs on the worker process's divest
pool. Size that pool to the worker's share of the cores, or the threads oversubscribe:
start workers with ``DIVEST_NUM_THREADS`` set in their environment, or call
:func:`configure_workers` once after connecting. Never use ``divest.threads()`` inside
tasks. See docs/distributed.md for layouts and projections.
"""

from __future__ import annotations

import copy
import importlib
import math
import os
import uuid

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.delayed import Delayed
except ImportError as exc:  # pragma: no cover - exercised only without dask
    raise ImportError(
        "divest.distributed needs Dask: pip install 'divest[dask]' "
        "(which installs dask[array,distributed] with matching versions)"
    ) from exc

from . import divergence as _div
from . import kde as _kde
from . import ot as _ot
from ._results import TestResult
from ._rng import as_generator
from ._rng import seed as _draw_seed
from ._threads import set_num_threads

# `divest.dcov` is also the name of a function, which shadows the submodule attribute.
_dcov = importlib.import_module(".dcov", __package__)

__all__ = [
    "kl",
    "js",
    "js_distance",
    "hellinger",
    "tv",
    "chi2",
    "renyi",
    "f_divergence",
    "sinkhorn_batch",
    "kde_logpdf",
    "knn_entropy",
    "knn_kl",
    "dcov_test",
    "energy_test",
    "energy_distance",
    "dcov_sqr",
    "dcov",
    "dcor_sqr",
    "dcor",
    "mmd",
    "cs_divergence",
    "ccdcov_test",
    "jdcov_test",
    "configure_workers",
    "DivestThreads",
]


# --------------------------------------------------------------------------- inputs


def _as_dask(x, name: str, whole_axes=()):
    """A Dask array for `x`. NumPy (or anything array-like) is wrapped by
    ``da.from_array`` with automatic chunks, whole along ``whole_axes``."""
    if isinstance(x, da.Array):
        a = x
    elif dask.is_dask_collection(x):
        raise TypeError(
            f"{name} must be a Dask array (or a NumPy array); got {type(x).__name__}. "
            "Convert a Dask DataFrame with .to_dask_array(lengths=True)."
        )
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:
            raise TypeError(f"{name} must be array-like of real numbers; {exc}") from None
        chunks = {i: -1 for i in whole_axes if -arr.ndim <= i < arr.ndim}
        a = da.from_array(arr, chunks={**{i: "auto" for i in range(arr.ndim)}, **chunks})
    if a.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be an array of real numbers; got dtype {a.dtype}. "
            "Convert it with .astype(float)."
        )
    return a


def _float_dtype(*arrs):
    return np.float32 if all(a.dtype == np.float32 for a in arrs) else np.float64


def _whole(a, axis: int, name: str, what: str):
    if len(a.chunks[axis]) > 1:
        raise ValueError(
            f"{name} is split into {len(a.chunks[axis])} chunks along axis {axis} ({what}); "
            f"that axis must be one chunk: use {name}.rechunk({{{axis}: -1}})"
        )


def _same_chunks(a, b, axes, na: str, nb: str):
    for i in axes:
        if a.chunks[i] != b.chunks[i]:
            raise ValueError(
                f"{na} and {nb} must be chunked alike along axis {i}; got chunks "
                f"{a.chunks[i]} and {b.chunks[i]}: rechunk one, e.g. "
                f"{nb} = {nb}.rechunk({{{i}: {na}.chunks[{i}]}})"
            )


def _points(x, name: str):
    """(n, d) Dask array of points, the coordinate axis in one chunk."""
    a = _as_dask(x, name, whole_axes=(1,))
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 1-D or 2-D array of points; got {a.ndim} dimensions")
    _whole(a, 1, name, "the coordinates")
    if any(math.isnan(c) for c in a.chunks[0]):
        raise ValueError(
            f"{name} has unknown chunk sizes; compute them first with {name}.compute_chunk_sizes()"
        )
    return a


def _broadcast_value(value, prefix: str):
    """One graph key holding `value` (a reference set, a model): every task that needs it
    depends on that key, so it is sent once per worker, never copied into each task."""
    return dask.delayed(value, name=f"{prefix}-{uuid.uuid4().hex}", pure=True)


def _gather(a):
    """A Delayed of the whole (n, ...) array `a` concatenated in memory (one task)."""
    if a.ndim > 1:  # blocks are then concatenated along the rows only
        a = a.rechunk({i: -1 for i in range(1, a.ndim)})
    blocks = a.to_delayed().ravel().tolist()
    return dask.delayed(_concat_rows, pure=True)(*blocks)


def _al(a):
    """`a` itself, or an aligned copy: arrays a worker unpickles from a network frame may
    sit at an odd address, which the Rust kernels reject."""
    if isinstance(a, np.ndarray) and not a.flags.aligned:
        return np.array(a)
    return a


def _realign(obj):
    """A shallow copy of a model whose misaligned array attributes are copied (or `obj`
    itself when all are aligned)."""
    items = vars(obj)
    bad = [k for k, v in items.items() if isinstance(v, np.ndarray) and not v.flags.aligned]
    cache = items.get("_white")
    if not bad and not (
        isinstance(cache, dict) and any(not v.flags.aligned for v in cache.values())
    ):
        return obj
    out = copy.copy(obj)
    for k in bad:
        setattr(out, k, np.array(items[k]))
    if isinstance(cache, dict):
        out._white = {k: _al(v) for k, v in cache.items()}
    return out


def _concat_rows(*blocks):
    return np.ascontiguousarray(np.concatenate(blocks, axis=0))


def _offsets(chunks):
    out = [0]
    for c in chunks:
        out.append(out[-1] + c)
    return out


# -------------------------------------------------------------- batched divergences


def _divergence_block(pb, qb, fn, out_dtype, kw):
    out = fn(_al(pb), _al(qb), axis=-1, **kw)
    return np.asarray(out, dtype=out_dtype).reshape(pb.shape[:-1] + (1,))


def _batched(fn, p, q, axis, keepdims, **kw):
    # A NumPy input next to a Dask input of the same shape takes its chunks.
    if isinstance(p, da.Array) and not dask.is_dask_collection(q) and np.shape(q) == p.shape:
        q = da.from_array(np.asarray(q), chunks=p.chunks)
    if isinstance(q, da.Array) and not dask.is_dask_collection(p) and np.shape(p) == q.shape:
        p = da.from_array(np.asarray(p), chunks=q.chunks)
    pa = _as_dask(p, "p", whole_axes=(axis,) if isinstance(axis, int) else ())
    qa = _as_dask(q, "q", whole_axes=(axis,) if isinstance(axis, int) else ())
    if pa.ndim == 0 or qa.ndim == 0:
        raise ValueError("p and q must be at least 1-D: distributions along `axis`")
    nd = max(pa.ndim, qa.ndim)
    ax = _div._check_axis(axis, nd)
    pa = pa[(None,) * (nd - pa.ndim)]
    qa = qa[(None,) * (nd - qa.ndim)]
    k = pa.shape[ax]
    if qa.shape[ax] != k:
        raise ValueError(
            f"p and q must have the same number of categories along axis {axis}; "
            f"got {k} and {qa.shape[ax]}"
        )
    if k == 0:
        raise ValueError("p and q have no categories along axis; distributions need at least one")
    _whole(pa, ax, "p", "the categories")
    _whole(qa, ax, "q", "the categories")
    pm = da.moveaxis(pa, ax, -1)
    qm = da.moveaxis(qa, ax, -1)
    if pm.shape[:-1] == qm.shape[:-1]:
        _same_chunks(pm, qm, range(nd - 1), "p", "q")
    else:
        try:
            batch = tuple(np.broadcast_shapes(pm.shape[:-1], qm.shape[:-1]))
        except ValueError:
            raise ValueError(
                f"p and q do not broadcast: batch shapes {pm.shape[:-1]} and {qm.shape[:-1]}"
            ) from None
        # Chunks of the broadcast batch axes: those of the input that has the full length.
        chunks = tuple(
            pm.chunks[i] if pm.shape[i] == batch[i] else qm.chunks[i] for i in range(nd - 1)
        )
        if any(
            a.shape[i] == batch[i] and a.chunks[i] != chunks[i]
            for a in (pm, qm)
            for i in range(nd - 1)
        ):
            _same_chunks(pm, qm, [i for i in range(nd - 1) if pm.shape[i] == qm.shape[i]], "p", "q")
        pm = da.broadcast_to(pm, batch + (k,), chunks=chunks + ((k,),))
        qm = da.broadcast_to(qm, batch + (k,), chunks=chunks + ((k,),))
    dtype = _float_dtype(pm, qm)
    out = da.map_blocks(
        _divergence_block,
        pm,
        qm,
        fn=fn,
        out_dtype=dtype,
        kw=kw,
        dtype=dtype,
        # The category axis is kept with length 1 and dropped by indexing: map_blocks'
        # drop_axis would concatenate (copy) every input block first.
        chunks=pm.chunks[:-1] + ((1,),),
        meta=np.empty((0,) * nd, dtype=dtype),
    )[..., 0]
    if keepdims:
        out = da.expand_dims(out, ax)
    return out


_DIV_DOC = """Distributed :func:`divest.{name}`: the same arguments; ``p`` and ``q`` are Dask arrays
    (NumPy is accepted and wrapped with automatic chunks, whole along ``axis``).

    The category axis ``axis`` must be one chunk in each input (else ValueError saying
    how to rechunk); the batch axes may be chunked freely, alike in ``p`` and ``q`` (an
    input broadcast along an axis takes the other's chunks). One task per block of rows
    calls the in-memory function, so ``.compute()`` is bitwise the in-memory result.
    Returns a Dask array of the batch shape (0-d for 1-D inputs). Memory per task: its
    blocks and the output rows."""


def kl(
    p, q, axis=-1, keepdims=False, base=None, *, from_logits=False, log_input=False, normalize=False
):  # noqa: E501
    return _batched(
        _div.kl, p, q, axis, keepdims, base=base, from_logits=from_logits,
        log_input=log_input, normalize=normalize,
    )  # fmt: skip


def js(
    p, q, axis=-1, keepdims=False, base=None, *, from_logits=False, log_input=False, normalize=False
):  # noqa: E501
    return _batched(
        _div.js, p, q, axis, keepdims, base=base, from_logits=from_logits,
        log_input=log_input, normalize=normalize,
    )  # fmt: skip


def js_distance(
    p, q, axis=-1, keepdims=False, base=None, *, from_logits=False, log_input=False, normalize=False
):  # noqa: E501
    return _batched(
        _div.js_distance, p, q, axis, keepdims, base=base, from_logits=from_logits,
        log_input=log_input, normalize=normalize,
    )  # fmt: skip


def hellinger(
    p, q, axis=-1, keepdims=False, base=None, *, from_logits=False, log_input=False, normalize=False
):  # noqa: E501
    return _batched(
        _div.hellinger, p, q, axis, keepdims, base=base, from_logits=from_logits,
        log_input=log_input, normalize=normalize,
    )  # fmt: skip


def tv(
    p, q, axis=-1, keepdims=False, base=None, *, from_logits=False, log_input=False, normalize=False
):  # noqa: E501
    return _batched(
        _div.tv, p, q, axis, keepdims, base=base, from_logits=from_logits,
        log_input=log_input, normalize=normalize,
    )  # fmt: skip


def chi2(
    p, q, axis=-1, keepdims=False, base=None, *, from_logits=False, log_input=False, normalize=False
):  # noqa: E501
    return _batched(
        _div.chi2, p, q, axis, keepdims, base=base, from_logits=from_logits,
        log_input=log_input, normalize=normalize,
    )  # fmt: skip


def renyi(
    p,
    q,
    alpha,
    axis=-1,
    keepdims=False,
    base=None,
    *,
    from_logits=False,
    log_input=False,
    normalize=False,
):  # noqa: E501
    a = _div._check_alpha(alpha, "alpha")
    if a < 0:
        raise ValueError(f"alpha must be >= 0 for the Rényi divergence; got {alpha!r}")
    return _batched(
        _div.renyi, p, q, axis, keepdims, alpha=a, base=base, from_logits=from_logits,
        log_input=log_input, normalize=normalize,
    )  # fmt: skip


def f_divergence(
    p,
    q,
    f,
    axis=-1,
    keepdims=False,
    base=None,
    *,
    alpha=None,
    from_logits=False,
    log_input=False,
    normalize=False,
):  # noqa: E501
    return _batched(
        _div.f_divergence, p, q, axis, keepdims, f=f, base=base, alpha=alpha,
        from_logits=from_logits, log_input=log_input, normalize=normalize,
    )  # fmt: skip


for _fn in (kl, js, js_distance, hellinger, tv, chi2, renyi, f_divergence):
    _fn.__doc__ = _DIV_DOC.format(name=_fn.__name__)
del _fn


# ------------------------------------------------------------------- sinkhorn_batch

_SINK_FIELDS = ("cost", "linear_cost", "f", "g", "n_iter", "converged", "marginal_error", "plan")


def _sinkhorn_block(a, b, cost, reg, kw):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _ot.ConvergenceWarning)
        r = _ot.sinkhorn_batch(_al(a), _al(b), _al(cost), reg, **kw)
    return {f: getattr(r, f) for f in _SINK_FIELDS}


def sinkhorn_batch(a, b, cost, reg, **kwargs) -> _ot.SinkhornResult:
    """Distributed :func:`divest.sinkhorn_batch`: one task per chunk of problems.

    ``a`` (B, n) and ``b`` (B, m) are Dask arrays chunked along the batch axis only, alike
    (NumPy is accepted and chunked automatically). ``cost`` is (B, n, m), chunked like
    ``a`` along the batch axis, or a shared (n, m) array (NumPy or Dask), sent once to
    each worker. Other keywords as in the in-memory call. Each problem is solved exactly
    as by the in-memory call, so ``.compute()`` of each field is bitwise its result.

    Returns a :class:`divest.SinkhornResult` whose fields are Dask arrays (``plan`` only
    with ``return_plan=True``). Non-convergence is not warned about (the warning would be
    raised on a worker): check ``converged``.
    """
    for name in ("a_mask", "b_mask"):
        if kwargs.get(name) is not None:
            raise ValueError(
                f"{name}: padded batches with masks are not distributed; call "
                "divest.sinkhorn_batch(..., a_mask=, b_mask=) in memory, or split the "
                "problems into equal-size Dask batches"
            )
    A = _as_dask(a, "a", whole_axes=(1,))
    Bw = _as_dask(b, "b", whole_axes=(1,))
    if A.ndim != 2 or Bw.ndim != 2:
        raise ValueError(
            f"a and b must have shapes (B, n) and (B, m); got {A.shape} and {Bw.shape}"
        )
    nb, n = A.shape
    m = Bw.shape[1]
    if Bw.shape[0] != nb:
        raise ValueError(f"a and b must have the same batch size; got {nb} and {Bw.shape[0]}")
    if nb == 0 or n == 0 or m == 0:
        raise ValueError("a and b must be non-empty")
    _whole(A, 1, "a", "the points of each problem")
    _whole(Bw, 1, "b", "the points of each problem")
    _same_chunks(A, Bw, [0], "a", "b")
    if isinstance(cost, da.Array) and cost.ndim == 3:
        C = cost
        if C.shape != (nb, n, m):
            raise ValueError(f"cost must have shape {(nb, n, m)} or {(n, m)}; got {C.shape}")
        _whole(C, 1, "cost", "rows of each cost")
        _whole(C, 2, "cost", "columns of each cost")
        _same_chunks(A, C, [0], "a", "cost")
        cblocks = C.to_delayed().ravel().tolist()
    else:
        if isinstance(cost, da.Array):
            shared = _gather(cost)
            cshape = cost.shape
        else:
            c_np = np.asarray(cost)
            cshape = c_np.shape
            if c_np.ndim == 3:
                C = da.from_array(c_np, chunks=(A.chunks[0], -1, -1))
                cblocks = C.to_delayed().ravel().tolist()
            shared = _broadcast_value(c_np, "divest-cost")
        if len(cshape) == 2:
            if cshape != (n, m):
                raise ValueError(f"cost must have shape {(nb, n, m)} or {(n, m)}; got {cshape}")
            cblocks = [shared] * len(A.chunks[0])
        elif len(cshape) != 3:
            raise ValueError(f"cost must have shape (B, n, m) or (n, m); got {cshape}")
        elif cshape != (nb, n, m):
            raise ValueError(f"cost must have shape {(nb, n, m)} or {(n, m)}; got {cshape}")
    reg = _ot.check_positive(reg, "reg")
    ret_plan = bool(kwargs.get("return_plan", False))
    ablocks = A.to_delayed().ravel().tolist()
    bblocks = Bw.to_delayed().ravel().tolist()
    parts = [
        dask.delayed(_sinkhorn_block, pure=True)(ab, bb, cb, reg, kwargs)
        for ab, bb, cb in zip(ablocks, bblocks, cblocks)
    ]
    cdt = np.float32 if (getattr(cost, "dtype", None) == np.float32) else np.float64
    spec = {
        "cost": ((), np.float64),
        "linear_cost": ((), np.float64),
        "f": ((n,), cdt),
        "g": ((m,), cdt),
        "n_iter": ((), np.int64),
        "converged": ((), np.bool_),
        "marginal_error": ((), np.float64),
        "plan": ((n, m), cdt),
    }
    fields = {}
    for name, (tail, dt) in spec.items():
        if name == "plan" and not ret_plan:
            fields[name] = None
            continue
        blocks = [
            da.from_delayed(
                dask.delayed(_field, pure=True)(part, name, dt), shape=(rows,) + tail, dtype=dt
            )
            for part, rows in zip(parts, A.chunks[0])
        ]
        fields[name] = da.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0]
    return _ot.SinkhornResult(**fields)


def _field(part, name, dtype):
    return np.asarray(part[name]).astype(dtype, copy=False)


# ---------------------------------------------------------------- KDE, queries chunked


def _kde_queries_block(pts, model, sorted_range, return_ess, check_finite):
    pts, model = _al(pts), _realign(model)
    if pts.shape[0] == 0:
        dt = np.result_type(model.dtype, pts.dtype if pts.dtype == np.float32 else np.float64)
        return np.empty((0, 2) if return_ess else (0, 1), dtype=dt)
    if model.d == 1 and not return_ess:
        # The in-memory call on all m queries chose between the sorted sweep and the
        # pairwise engine from n·m; each block follows that one choice. The sweep's
        # lattice of centres spans the queries' range, so each block sweeps its queries
        # with the smallest and largest query of all appended (and dropped after).
        model = copy.copy(model)
        if sorted_range is None:
            model._SORTED_MIN_WORK = 2**63
        else:
            model._SORTED_MIN_WORK = 0
            q = np.concatenate([np.asarray(pts, dtype=np.float64).reshape(-1), sorted_range])
            out = model.logpdf(q, check_finite=check_finite)
            return out[:-2, None]
    out = model.logpdf(pts, return_ess=return_ess, check_finite=check_finite)
    if return_ess:
        return np.stack(out, axis=1)
    return out[:, None]


def _block_range(b):
    if b.size == 0:
        return math.inf, -math.inf, True
    return float(np.min(b)), float(np.max(b)), bool(np.isfinite(b).all())


def _query_range(stats):
    if not all(s[2] for s in stats):
        return None
    return np.array([min(s[0] for s in stats), max(s[1] for s in stats)], dtype=np.float64)


def kde_logpdf(
    data,
    points,
    bandwidth="scott",
    kernel="gaussian",
    weights=None,
    *,
    return_ess=False,
    check_finite=True,
):
    """Distributed :func:`divest.kde_logpdf` (also takes a fitted :class:`divest.KDE` as
    ``data``, with the other model arguments left at their defaults).

    ``points`` (m, d): a Dask array chunked along the rows (the coordinates one chunk);
    NumPy is accepted and chunked automatically. The result is a Dask array (m,) (and
    the effective sample sizes, a second (m,) array, with ``return_ess=True``).

    ``data`` in memory (NumPy or a :class:`divest.KDE`): the model is fitted once on the
    client and sent once to each worker (one graph key, never embedded per task); each
    block of queries is one task, and ``.compute()`` is **bitwise** the in-memory call.
    Memory per task: the model (about two copies of the data) and O(rows·d).

    ``data`` a Dask array (n, d) chunked along the rows (``weights`` None, or chunked like
    it): the data never meet in one place. The global parameters come from all of the
    data first (two blockwise passes: weight sums, magnitude and weighted mean, then the
    weighted covariance for the "scott" and "silverman" rules); per-block rules would be
    silently wrong. Then every (query block, data block) pair is one task giving the
    partial log-sum-exp of that block's kernels at those queries, and the partials are
    combined by a tree of ``logaddexp``. ``.compute()`` is within **1e-13 relative** of
    the in-memory call through the pairwise engine (the sums run in another order, the
    covariance is accumulated by blocks); for 1-D data with n·m >= 2^20 the in-memory call
    takes its sorted sweep, itself within about 1e-12 of the engine. Not available with
    data chunked: ``bandwidth="loo"`` or ``"isj"`` (select a bandwidth on a subsample
    in memory and pass the number or matrix) and ``return_ess``. Tasks: (data blocks) ×
    (query blocks) plus a tree of the same number; pick blocks so each pair takes
    seconds. Memory per task: one data block and one query block, whitened.
    """
    if isinstance(data, da.Array):
        if return_ess:
            raise ValueError(
                "return_ess is not available with the data chunked; pass data in memory "
                "(NumPy) to get effective sample sizes"
            )
        return _kde_data_chunked(data, points, bandwidth, kernel, weights, check_finite)
    if isinstance(data, _kde.KDE):
        model = data
        if (
            not (isinstance(bandwidth, str) and bandwidth == "scott")
            or kernel != "gaussian"
            or (weights is not None)
        ):
            raise ValueError(
                "pass either a fitted KDE as data, or data with bandwidth, kernel and weights, "
                "not both"
            )
    else:
        model = _kde.KDE(
            data, bandwidth=bandwidth, kernel=kernel, weights=weights, check_finite=check_finite
        )
    pts = _points(points, "points")
    if pts.shape[1] != model.d:
        raise ValueError(
            f"points must have {model.d} coordinates like the data; got {pts.shape[1]}"
        )
    dtype = np.result_type(model.dtype, _float_dtype(pts))
    m = pts.shape[0]
    use_sorted = model.d == 1 and dtype == np.float64 and model.n * m >= model._SORTED_MIN_WORK
    if use_sorted:
        # One pass over the queries for their range (and, as in memory, a non-finite query
        # anywhere sends every query to the engine).
        stats = [
            dask.delayed(_block_range, pure=True)(b) for b in pts.to_delayed().ravel().tolist()
        ]
        use_sorted = dask.delayed(_query_range, pure=True)(stats)
    else:
        use_sorted = None
    ref = _broadcast_value(model, "divest-kde")
    out = da.map_blocks(
        _kde_queries_block,
        pts,
        ref,
        use_sorted,
        return_ess,
        check_finite,
        dtype=dtype,
        chunks=(pts.chunks[0], (2,) if return_ess else (1,)),
        meta=np.empty((0, 2 if return_ess else 1), dtype=dtype),
    )
    if return_ess:
        return out[:, 0], out[:, 1]
    return out[:, 0]


# ------------------------------------------------------------------ KDE, data chunked


def _kde_stats1(xb, wb, check_finite):
    xb, wb = _al(xb), _al(wb)
    if np.shape(xb)[0] == 0:
        return 0.0, 0.0, 0.0, np.zeros(np.shape(xb)[1])
    x = _div.as_points(xb, "data", check_finite=check_finite)
    w = np.ones(x.shape[0]) if wb is None else np.asarray(wb, dtype=np.float64)
    if w.shape != (x.shape[0],):
        raise ValueError(f"weights must have one value per data point; got {w.shape}")
    if w.size and (not np.isfinite(w).all() or (w < 0).any()):
        raise ValueError("weights must be non-negative and finite")
    top = float(np.max(np.abs(x))) if x.size else 0.0
    return float(w.sum()), float(w @ w), top, w @ x.astype(np.float64)


def _kde_pass1(stats, n, d):
    if n == 0:
        raise ValueError("data must contain at least one point")
    W = math.fsum(s[0] for s in stats)
    W2 = math.fsum(s[1] for s in stats)
    if not W > 0:
        raise ValueError("weights must not sum to zero (the weights must not all be zero)")
    top = max(s[2] for s in stats)
    scale = 1.0
    if top > 2.0**400 or 0.0 < top < 2.0**-400:
        scale = math.ldexp(1.0, math.frexp(top)[1] - 1)
    sx = np.sum([s[3] for s in stats], axis=0) if stats else np.zeros(d)
    mean = (sx / W) / scale
    return {"W": W, "neff": W * W / W2, "scale": scale, "mean": mean, "npos": None}


def _kde_stats2(xb, wb, p1):
    xb, wb = _al(xb), _al(wb)
    x = np.asarray(xb, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    w = np.ones(x.shape[0]) if wb is None else np.asarray(wb, dtype=np.float64)
    z = x / p1["scale"] - p1["mean"]
    return (z * w[:, None]).T @ z, int(np.count_nonzero(w))


def _kde_params(p1, stats2, bandwidth, kernel, n, d):
    """The kernel bandwidth of the whole data set: H (data units) and the rule factor."""
    if isinstance(bandwidth, str):
        npos = sum(s[1] for s in stats2)
        if n < 2 or npos < 2:
            raise ValueError(
                f"bandwidth={bandwidth!r} needs at least 2 data points with positive weight "
                "to estimate a covariance; pass a scalar or per-dimension bandwidth instead"
            )
        s = np.sum([s[0] for s in stats2], axis=0)
        w2 = 1.0 / p1["neff"]  # Σ ŵ² for the normalised weights
        cov = s / p1["W"] / (1.0 - w2)
        factor = _kde._rule_factor(bandwidth, p1["neff"], d)
        sd = np.sqrt(np.diag(cov))
        if not np.all(np.isfinite(cov)) or not np.all(sd > 0):
            raise ValueError(_kde._singular_msg(bandwidth, d))
        corr = cov / sd[:, None] / sd[None, :]
        c = _kde._cholesky(corr, _kde._singular_msg(bandwidth, d))
        if not np.all(np.diag(c) > 1e-7):
            raise ValueError(_kde._singular_msg(bandwidth, d))
        sc = p1["scale"]
        with np.errstate(over="ignore", under="ignore"):
            h = (cov * sc) * (sc * factor**2)
        return h
    return bandwidth


def _kde_block_model(xb, wb, h, W, kernel, check_finite):
    """A KDE of one data block with the global bandwidth, and log(W_block / W)."""
    x = _al(np.asarray(xb))
    if x.shape[0] == 0:
        return None
    w = None if wb is None else _al(np.asarray(wb, dtype=np.float64))
    wsum = float(x.shape[0]) if w is None else float(w.sum())
    if not wsum > 0:
        return None
    model = _kde.KDE(x, bandwidth=h, kernel=kernel, weights=w, check_finite=check_finite)
    return model, math.log(wsum) - math.log(W)


def _kde_partial(pts, block, dtype):
    if block is None or pts.shape[0] == 0:
        return np.full((pts.shape[0], 1), -np.inf)
    model, logfrac = block
    model, pts = _realign(model), _al(pts)
    # return_ess=True takes the pairwise engine in every dimension (no sorted sweep).
    lp = model.logpdf(pts, return_ess=True, check_finite=False)[0]
    # Partials stay float64 until the tree is done (float32 only in the result).
    return (lp.astype(np.float64) + logfrac)[:, None]


def _kde_data_chunked(data, points, bandwidth, kernel, weights, check_finite):
    kernel = _kde._check_kernel(kernel)
    x = _points(data, "data")
    n, d = x.shape
    if isinstance(bandwidth, str) and bandwidth not in _kde._RULES:
        raise ValueError(
            f"bandwidth={bandwidth!r} is not available with the data chunked: use 'scott', "
            "'silverman', a number, per-dimension values or a (d, d) matrix (a 'loo' or "
            "'isj' bandwidth can be selected in memory on a subsample and passed as a number)"
        )
    if not isinstance(bandwidth, str):
        # Validates the value (shape, sign, symmetry) now; only d is read from the array.
        _kde._bandwidth_factor(bandwidth, np.empty((0, d)), np.empty(0), 1.0, 1.0)
    if weights is None:
        wblocks = [None] * len(x.chunks[0])
    else:
        w = _as_dask(weights, "weights")
        if w.ndim != 1 or w.shape[0] != n:
            raise ValueError(f"weights must have shape ({n},), one per data point; got {w.shape}")
        if not isinstance(weights, da.Array):
            w = w.rechunk((x.chunks[0],))
        _same_chunks(x, w, [0], "data", "weights")
        wblocks = w.to_delayed().ravel().tolist()
    pts = _points(points, "points")
    if pts.shape[1] != d:
        raise ValueError(f"points must have {d} coordinates like the data; got {pts.shape[1]}")
    dtype = np.result_type(_float_dtype(x), _float_dtype(pts))
    xblocks = x.to_delayed().ravel().tolist()
    dl = dask.delayed
    stats1 = [dl(_kde_stats1, pure=True)(xb, wb, check_finite) for xb, wb in zip(xblocks, wblocks)]
    p1 = dl(_kde_pass1, pure=True)(stats1, n, d)
    if isinstance(bandwidth, str):
        stats2 = [dl(_kde_stats2, pure=True)(xb, wb, p1) for xb, wb in zip(xblocks, wblocks)]
        h = dl(_kde_params, pure=True)(p1, stats2, bandwidth, kernel, n, d)
    else:
        h = bandwidth
    W = dl(_getitem, pure=True)(p1, "W")
    parts = []
    for xb, wb in zip(xblocks, wblocks):
        block = dl(_kde_block_model, pure=True)(xb, wb, h, W, kernel, check_finite)
        parts.append(
            da.map_blocks(
                _kde_partial,
                pts,
                block,
                dtype,
                dtype=np.float64,
                chunks=(pts.chunks[0], (1,)),
                meta=np.empty((0, 1)),
            )
        )
    while len(parts) > 1:  # a balanced tree of pairwise log-sum-exps
        nxt = [da.logaddexp(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return parts[0][:, 0].astype(dtype)


def _getitem(obj, key):
    return obj[key]


# ------------------------------------------------------------------- kNN estimators


def _knn_reference(*blocks):
    x = _concat_rows(*blocks)
    return _div._knn_scaled(x)


def _knn_pair_reference(xblocks, yblocks):
    x = _concat_rows(*xblocks)
    y = _concat_rows(*yblocks)
    (xc, yc), log_c = _div._knn_scaled(x, y)
    (xo,), log_cx = _div._knn_scaled(x)
    return xc, yc, xo, log_c - log_cx


def _knn_entropy_block(ref, lo, hi, k, algorithm):
    xc = _al(ref[0][0])
    if hi == lo:
        return np.empty(0)
    d2, _ = _div._core.knn_sq_dists(
        np.ascontiguousarray(xc[lo:hi]), xc, k, False, algorithm=algorithm
    )
    return np.log(d2[:, k - 1])


def _knn_entropy_finish(ref, logs, n, k, lb):
    (xc,), log_c = ref
    d = xc.shape[1]
    log_cd = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    h = (
        _div._digamma_int(n)
        - _div._digamma_int(k)
        + log_cd
        + 0.5 * d * _div._fmean(np.concatenate(logs))
        + d * log_c
    )
    return np.float64(h / lb)


def _check_points_finite(x, name, check_finite):
    if np.size(x):
        _div.as_points(x, name, check_finite=check_finite)
    return True


def knn_entropy(x, k=3, *, base=None, algorithm="auto", check_finite=True):
    """Distributed :func:`divest.knn_entropy`: one task per chunk of query rows of ``x``
    (a Dask array (n, d) chunked along the rows; NumPy is accepted), each searching the
    whole set, which is assembled once and sent once to each worker (it must fit in one
    worker's memory: n·d float64). The per-point log-distances (8 bytes per point) are
    summed in one final task with the in-memory call's exactly rounded mean, so
    ``.compute()`` is **bitwise** the in-memory value. Returns a 0-d Dask array."""
    lb = _div._log_base(base)
    algorithm = _div._check_algorithm(algorithm)
    xa = _points(x, "x")
    n = xa.shape[0]
    k = _div._check_k(k, n, "x")
    xblocks = xa.to_delayed().ravel().tolist()
    xblocks = [_after_check(b, "x", check_finite) for b in xblocks]
    ref = dask.delayed(_knn_reference, pure=True)(*xblocks)
    offs = _offsets(xa.chunks[0])
    logs = [
        dask.delayed(_knn_entropy_block, pure=True)(ref, lo, hi, k, algorithm)
        for lo, hi in zip(offs[:-1], offs[1:])
    ]
    out = dask.delayed(_knn_entropy_finish, pure=True)(ref, logs, n, k, lb)
    return da.from_delayed(out, shape=(), dtype=np.float64)


def _after(value, _dependency):
    return value


def _knn_kl_block(ref, lo, hi, k, algorithm):
    xc, yc, xo = _al(ref[0]), _al(ref[1]), _al(ref[2])
    if hi == lo:
        return np.empty(0)
    knn = _div._core.knn_sq_dists
    rho2, _ = knn(np.ascontiguousarray(xo[lo:hi]), xo, k, False, algorithm=algorithm)
    nu2, _ = knn(np.ascontiguousarray(xc[lo:hi]), yc, k, False, algorithm=algorithm)
    return np.log(nu2[:, k - 1]) - np.log(rho2[:, k - 1])


def _knn_kl_finish(ref, logs, n, m, lb):
    xc, _, _, dlog = ref
    d = xc.shape[1]
    val = 0.5 * d * _div._fmean(np.concatenate(logs)) + d * dlog + math.log(m / (n - 1))
    return np.float64(val / lb)


def knn_kl(x, y, k=3, *, base=None, algorithm="auto", check_finite=True):
    """Distributed :func:`divest.knn_kl`: one task per chunk of rows of ``x`` (the
    queries); ``x`` and ``y`` (Dask arrays chunked along the rows, or NumPy) are each
    assembled once and sent once to each worker, and must fit in one worker's memory.
    The per-point terms are averaged in one final task exactly as in memory, so
    ``.compute()`` is **bitwise** the in-memory value. Returns a 0-d Dask array."""
    lb = _div._log_base(base)
    algorithm = _div._check_algorithm(algorithm)
    xa = _points(x, "x")
    ya = _points(y, "y")
    if ya.shape[1] != xa.shape[1]:
        raise ValueError(f"y must have {xa.shape[1]} coordinates like x; got {ya.shape[1]}")
    n, m = xa.shape[0], ya.shape[0]
    k = _div._check_k(k, n, "x")
    if k > m:
        raise ValueError(f"k must be at most the number of points in y ({m}); got k = {k}")
    xb = xa.to_delayed().ravel().tolist()
    yb = ya.to_delayed().ravel().tolist()
    xb = [_after_check(b, "x", check_finite) for b in xb]
    yb = [_after_check(b, "y", check_finite) for b in yb]
    ref = dask.delayed(_knn_pair_reference, pure=True)(xb, yb)
    offs = _offsets(xa.chunks[0])
    logs = [
        dask.delayed(_knn_kl_block, pure=True)(ref, lo, hi, k, algorithm)
        for lo, hi in zip(offs[:-1], offs[1:])
    ]
    out = dask.delayed(_knn_kl_finish, pure=True)(ref, logs, n, m, lb)
    return da.from_delayed(out, shape=(), dtype=np.float64)


def _after_check(block, name, check_finite):
    return dask.delayed(_after, pure=True)(
        block, dask.delayed(_check_points_finite, pure=True)(block, name, check_finite)
    )


# ------------------------------------------------------------------ resampling tests


def _materialise(x, name):
    """A Delayed (or the NumPy array itself) holding all of `x` in memory."""
    if isinstance(x, da.Array):
        return _gather(x)
    if dask.is_dask_collection(x):
        raise TypeError(f"{name} must be a Dask array or array-like; got {type(x).__name__}")
    return _broadcast_value(x, f"divest-{name.replace('[', '').replace(']', '')}")


def _n_rows(x, name):
    shape = getattr(x, "shape", None)
    if shape is None:
        shape = np.shape(x)
    if len(shape) == 0:
        raise ValueError(f"{name} must be a 1-D or 2-D array of observations; got a scalar")
    return int(shape[0])


def _ranges(total: int, per_task):
    per = max(1, int(per_task))
    return [(a, min(per, total - a)) for a in range(0, total, per)]


def _auto_per_task(n: int, r: int, per_pair: int = 1) -> int:
    """Resamples per task for about 2 seconds of one core (10^9 pair terms a second)."""
    per = int(2e9 // max(1, n * n * per_pair))
    return max(8, min(r, per))


def _check_per_task(v):
    if v is None:
        return None
    return _dcov.check_int(v, "resamples_per_task", 1)


def _dcov_prep(x, y):
    x, y = _al(x), _al(y)
    xa, ya = _dcov._samples([("x", x), ("y", y)], min_n=2)
    (xa, kx), (ya, ky) = _dcov._unit(xa), _dcov._unit(ya)
    return xa, ya, kx, ky


def _dcov_range(prep, exponent, first, count, seed):
    xa, ya = _al(prep[0]), _al(prep[1])
    return _dcov._core.dcov_perm_test(xa, ya, exponent, count, seed, first=first)


def _dcov_finish(prep, parts, exponent):
    _, _, kx, ky = prep
    stat = parts[0][0]
    null = np.concatenate([p[1] for p in parts])
    p = _dcov._perm_pvalue(stat, null)
    e = exponent * (kx + ky)
    return TestResult(float(_dcov._times_pow2(stat, e)), p, _dcov._times_pow2(null, e))


def dcov_test(
    x,
    y,
    method="permutation",
    n_resamples=999,
    rng=None,
    exponent=1.0,
    *,
    resamples_per_task=None,
) -> Delayed:
    """Distributed :func:`divest.dcov_test`, split by ranges of resample indices.

    ``x`` and ``y`` (Dask or NumPy arrays) are assembled once and sent once to each
    worker (the test needs all pairs: they must fit in one worker's memory). The seed is
    drawn from ``rng`` now, as the in-memory call draws it; resample r always uses the
    stream (seed, r), so each task of ``resamples_per_task`` resamples (default: about two
    seconds of one core each, at least 8) draws exactly the in-memory permutations and
    the null distribution, statistic and p-value are **bitwise** the in-memory result.
    ``method="t"`` is one task. Returns a Delayed :class:`divest.TestResult`.
    Memory per task: as the in-memory call (n ≤ 2048: two n×n matrices).
    """
    if method not in ("permutation", "t"):
        raise ValueError(f"method must be 'permutation' or 't'; got {method!r}")
    exponent = _dcov._check_exponent(exponent)
    per = _check_per_task(resamples_per_task)
    xd, yd = _materialise(x, "x"), _materialise(y, "y")
    if method == "t":
        return dask.delayed(_dcov.dcov_test, pure=True)(xd, yd, method="t", exponent=exponent)
    _dcov.check_int(n_resamples, "n_resamples", 1)
    n = _n_rows(x, "x")
    r = _dcov._check_resamples(n_resamples, n)
    seed = _draw_seed(rng, bits=63)
    return _dcov_graph(dask.delayed(_dcov_prep, pure=True)(xd, yd), exponent, r, seed, per, n)


def _dcov_graph(prep, exponent, r, seed, per, n):
    per = per or _auto_per_task(n, r)
    parts = [
        dask.delayed(_dcov_range, pure=True)(prep, exponent, a, c, seed) for a, c in _ranges(r, per)
    ]
    return dask.delayed(_dcov_finish, pure=True)(prep, parts, exponent)


def _ccdcov_prep(y, *attrs):
    y, attrs = _al(y), [_al(a) for a in attrs]
    arrs = _dcov._samples([("y", y)] + [(f"attrs[{i}]", a) for i, a in enumerate(attrs)])
    z = np.ascontiguousarray(np.concatenate(arrs[1:], axis=1))
    return _dcov_prep(arrs[0], z)


def ccdcov_test(y, *attrs, n_resamples=999, rng=None, exponent=1.0, resamples_per_task=None):
    """Distributed :func:`divest.ccdcov_test`: :func:`dcov_test` of ``y`` against the
    column-wise concatenation of the attributes, split by resample ranges; **bitwise**
    the in-memory result. Returns a Delayed :class:`divest.TestResult`."""
    if len(attrs) < 1:
        raise ValueError("ccdcov_test needs y and at least one attribute")
    exponent = _dcov._check_exponent(exponent)
    per = _check_per_task(resamples_per_task)
    _dcov.check_int(n_resamples, "n_resamples", 1)
    n = _n_rows(y, "y")
    r = _dcov._check_resamples(n_resamples, n)
    seed = _draw_seed(rng, bits=63)
    parts = [_materialise(y, "y")] + [_materialise(a, f"attrs[{i}]") for i, a in enumerate(attrs)]
    prep = dask.delayed(_ccdcov_prep, pure=True)(*parts)
    return _dcov_graph(prep, exponent, r, seed, per, n)


def _energy_prep(*samples):
    samples = [_al(s) for s in samples]
    arrs = _dcov._samples(
        [(f"samples[{i}]", s) for i, s in enumerate(samples)], same_n=False, same_d=True
    )
    pooled = np.ascontiguousarray(np.concatenate(arrs, axis=0))
    k = _dcov._exp2(pooled)
    return _dcov._shift(pooled, k), [a.shape[0] for a in arrs], k


def _energy_range(prep, exponent, first, count, seed):
    pooled, sizes = _al(prep[0]), prep[1]
    return _dcov._core.energy_perm_test(pooled, sizes, exponent, count, seed, first=first)


def _energy_finish(prep, parts, exponent):
    k = prep[2]
    stat = parts[0][0]
    null = np.concatenate([p[1] for p in parts])
    p = _dcov._perm_pvalue(stat, null)
    return TestResult(
        float(_dcov._times_pow2(stat, exponent * k)), p, _dcov._times_pow2(null, exponent * k)
    )


def energy_test(*samples, n_resamples=999, rng=None, exponent=1.0, resamples_per_task=None):
    """Distributed :func:`divest.energy_test`, split by ranges of resample indices
    (``resamples_per_task`` as for :func:`dcov_test`); the pooled sample is assembled once
    and sent once to each worker. **Bitwise** the in-memory result. Returns a Delayed
    :class:`divest.TestResult`."""
    if len(samples) < 2:
        raise ValueError(f"energy_test needs at least two samples; got {len(samples)}")
    exponent = _dcov._check_exponent(exponent)
    per = _check_per_task(resamples_per_task)
    _dcov.check_int(n_resamples, "n_resamples", 1)
    total = sum(_n_rows(s, f"samples[{i}]") for i, s in enumerate(samples))
    r = _dcov._check_resamples(n_resamples, total, per_pair=len(samples))
    seed = _draw_seed(rng, bits=63)
    parts = [_materialise(s, f"samples[{i}]") for i, s in enumerate(samples)]
    prep = dask.delayed(_energy_prep, pure=True)(*parts)
    per = per or _auto_per_task(total, r, len(samples))
    ranges = [
        dask.delayed(_energy_range, pure=True)(prep, exponent, a, c, seed)
        for a, c in _ranges(r, per)
    ]
    return dask.delayed(_energy_finish, pure=True)(prep, ranges, exponent)


def _jdcov_range(arrs, state, first, count, kw):
    arrs = [_al(a) for a in arrs]
    gen = np.random.Generator(copy.deepcopy(state))
    n = arrs[0].shape[0]
    for _ in range(first):  # replay the draws of the earlier resamples (O(n) each)
        for _a in arrs[1:]:
            gen.permutation(n)
    out = np.empty(count)
    for r in range(count):
        perm = [arrs[0]] + [np.ascontiguousarray(a[gen.permutation(n)]) for a in arrs[1:]]
        out[r] = _dcov.jdcov(*perm, **kw)
    return out


def _jdcov_prep(*xs, unbiased):
    xs = [_al(a) for a in xs]
    return _dcov._samples([(f"xs[{i}]", a) for i, a in enumerate(xs)], min_n=4 if unbiased else 1)


def _jdcov_finish(stat, parts):
    null = np.concatenate(parts)
    return TestResult(stat, _dcov._jdcov_pvalue(stat, null), null)


def jdcov_test(
    *xs,
    n_resamples=199,
    rng=None,
    c=1.0,
    unbiased=True,
    scale=False,
    exponent=1.0,
    resamples_per_task=None,
) -> Delayed:
    """Distributed :func:`divest.jdcov_test`, split by ranges of resample indices.

    The in-memory test draws its permutations in order from one NumPy generator; each
    task starts from a copy of that generator's state and replays the draws of the
    resamples before its range (O(n) each, negligible against the O(n²) statistic), so
    the null distribution is **bitwise** the in-memory one. A Generator passed as ``rng``
    is copied, not advanced. Returns a Delayed :class:`divest.TestResult`."""
    if len(xs) < 2:
        raise ValueError(f"jdcov_test needs at least two samples; got {len(xs)}")
    _dcov.check_int(n_resamples, "n_resamples", 1)
    per = _check_per_task(resamples_per_task)
    n = _n_rows(xs[0], "xs[0]")
    r = _dcov._check_resamples(n_resamples, n, per_pair=len(xs))
    kw = dict(c=c, unbiased=unbiased, scale=scale, exponent=exponent)
    # Validate the keywords now (a bad c or exponent is the caller's error, not a task's).
    _dcov._check_exponent(exponent)
    _dcov.check_bool(unbiased, "unbiased")
    _dcov.check_bool(scale, "scale")
    _dcov.check_nonnegative(c, "c")
    state = copy.deepcopy(as_generator(copy.deepcopy(rng)).bit_generator)
    parts = [_materialise(a, f"xs[{i}]") for i, a in enumerate(xs)]
    arrs = dask.delayed(_jdcov_prep, pure=True)(*parts, unbiased=unbiased)
    stat = dask.delayed(_jdcov_stat, pure=True)(arrs, kw)
    per = per or max(1, _auto_per_task(n, r, len(xs)) // 4)
    ranges = [
        dask.delayed(_jdcov_range, pure=True)(arrs, state, a, cnt, kw) for a, cnt in _ranges(r, per)
    ]
    return dask.delayed(_jdcov_finish, pure=True)(stat, ranges)


def _jdcov_stat(arrs, kw):
    return _dcov.jdcov(*arrs, **kw)


# ------------------------------------------------------------------ sums over pairs


def _block_pairs(xblocks, yblocks, same):
    """(i, j, weight) for the block pairs of a sum over all pairs of rows: every (i, j)
    for two sets; i <= j with weight 2 off the diagonal for one set with itself."""
    if not same:
        return [(i, j, 1) for i in range(len(xblocks)) for j in range(len(yblocks))]
    return [(i, j, 1 if i == j else 2) for i in range(len(xblocks)) for j in range(i, len(xblocks))]


def _tree(fn, items):
    """A balanced tree of delayed `fn(a, b)` over `items` (at least one)."""
    items = list(items)
    while len(items) > 1:
        nxt = [
            dask.delayed(fn, pure=True)(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)
        ]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


def _add(a, b):
    return a + b


def _logadd(a, b):
    return float(np.logaddexp(a, b))


def _moments(b):
    b = _al(np.asarray(b))
    if b.shape[0] == 0:
        return 0.0, np.zeros(b.shape[1]), 0
    return float(np.max(np.abs(b))), b.astype(np.float64).sum(0), b.shape[0]


def _two_dask_samples(x, y, same_d=True):
    xa, ya = _points(x, "x"), _points(y, "y")
    if same_d and ya.shape[1] != xa.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension (columns); got {xa.shape[1]} and {ya.shape[1]}"
        )
    return xa, ya


def _energy_shift(b, k, mean):
    return np.ascontiguousarray(_dcov._shift(_al(np.asarray(b)), k).astype(np.float64) - mean)


def _energy_units(moms, n_total):
    top = max(m[0] for m in moms)
    k = _dcov._exp2(np.array([top]))
    mean = np.sum([m[1] for m in moms], axis=0) / n_total
    return k, np.ldexp(mean, -k)


def _energy_pair(a, b, weight, exponent):
    if a.shape[0] == 0 or b.shape[0] == 0:
        return 0.0
    return weight * _dcov._core.energy_pair_sum(a, b, exponent)


def _energy_dist_finish(units, sxy, sxx, syy, n, m, exponent, unbiased):
    k = units[0]
    nf, mf = float(n), float(m)
    dx, dy = (nf * (nf - 1.0), mf * (mf - 1.0)) if unbiased else (nf * nf, mf * mf)
    value = 2.0 * (sxy / (nf * mf)) - sxx / dx - syy / dy
    return np.float64(_dcov._times_pow2(value, exponent * k))


def _checked_block(b, name, min_ok=True):
    if np.size(b):
        _dcov.as_points(_al(np.asarray(b)), name)
    return b


def energy_distance(x, y, exponent=1.0, unbiased=False):
    """Distributed :func:`divest.energy_distance` as sums over pairs of row blocks.

    ``x`` (n, d) and ``y`` (m, d): Dask arrays chunked along the rows (NumPy is accepted).
    One pass over the blocks finds the common power-of-two scale and the pooled mean;
    every block is shifted by it, then each pair of blocks is one task (a new core entry
    point, ``energy_pair_sum``, sums |x_i − y_j|^α over the pair in O(block) memory), and
    the partial sums are added by a tree. Within-sample pairs use each unordered pair of
    blocks once (weight 2). ``.compute()`` is within **1e-13 relative** of the in-memory
    value wherever that value is not itself the small difference of large terms (each of
    the three sums is within about 1e-15 relative). Tasks: B(B + 1)/2 + C(C + 1)/2 + B·C
    for B and C blocks; choose blocks of 10^4 to 10^5 rows so each pair takes seconds.
    Returns a 0-d Dask array."""
    exponent = _dcov._check_exponent(exponent)
    unbiased = _dcov.check_bool(unbiased, "unbiased")
    xa, ya = _two_dask_samples(x, y)
    n, m = xa.shape[0], ya.shape[0]
    need = 2 if unbiased else 1
    if n < need or m < need:
        raise ValueError(
            f"energy distance needs at least {need} observation(s) in each sample; got {n} and {m}"
        )
    dl = dask.delayed
    xb = [dl(_checked_block, pure=True)(b, "x") for b in xa.to_delayed().ravel().tolist()]
    yb = [dl(_checked_block, pure=True)(b, "y") for b in ya.to_delayed().ravel().tolist()]
    moms = [dl(_moments, pure=True)(b) for b in xb + yb]
    units = dl(_energy_units, pure=True)(moms, n + m)
    k = dl(_getitem, pure=True)(units, 0)
    mean = dl(_getitem, pure=True)(units, 1)
    xs = [dl(_energy_shift, pure=True)(b, k, mean) for b in xb]
    ys = [dl(_energy_shift, pure=True)(b, k, mean) for b in yb]

    def total(a, b, same):
        parts = [
            dl(_energy_pair, pure=True)(a[i], b[j], w, exponent)
            for i, j, w in _block_pairs(a, b, same)
        ]
        return _tree(_add, parts)

    out = dl(_energy_dist_finish, pure=True)(
        units, total(xs, ys, False), total(xs, xs, True), total(ys, ys, True), n, m, exponent,
        unbiased,
    )  # fmt: skip
    return da.from_delayed(out, shape=(), dtype=np.float64)


def _mmd_units(moms, n_total, dtype):
    top = max(m[0] for m in moms)
    c0 = _div._pow2_scale(np.array([top]))
    mean = (np.sum([m[1] for m in moms], axis=0) / c0) / n_total
    return c0, mean


def _mmd_centred_stats(b, units):
    c0, mean = units
    b = _al(np.asarray(b))
    if b.shape[0] == 0:
        return 0.0
    z = b.astype(np.float64) / c0 - mean
    return float(np.max(np.abs(z)))


def _mmd_scale_c1(tops):
    return _div._pow2_scale(np.array([max(tops)]))


def _mmd_block(b, units, c1, dtype):
    c0, mean = units
    z = _al(np.asarray(b)).astype(np.float64) / c0 - mean
    return np.ascontiguousarray(z / c1, dtype=dtype)


def _mmd_scale(xs, ys, sub_x, sub_y, sigma, kernel, units, c1):
    """1/σ² in the rescaled units (as the in-memory :func:`divest.mmd` computes it)."""
    c = (units[0], c1)
    if sigma is None:
        s = _div._median_sigma(np.concatenate(sub_x), np.concatenate(sub_y))
    else:
        s = _div.check_positive(sigma, "sigma") / c[0] / c[1]
    # The in-memory check reads the largest row norm; blocks give it block by block.
    r2 = max(
        float(np.max(np.einsum("ij,ij->i", a, a, dtype=np.float64))) for a in xs + ys if len(a)
    )
    inv = 1.0 / s if s > 0 else math.inf
    diam2 = 4.0 * r2
    if diam2 == 0:
        top = 0.0
    else:
        top = 0.5 * diam2 * inv * inv if kernel == "gaussian" else math.sqrt(diam2) * inv
    if not top <= _div._MAX_LOG_KERNEL:
        raise ValueError(
            f"sigma = {sigma!r} is too small for the data x and y: relative to their spread it is "
            "so small that every kernel value between distinct points underflows to 0; pass "
            "a larger sigma (or sigma=None for the median heuristic)"
        )
    return min(inv * inv, 1e300)


def _kernel_pair(a, b, kernel, scale, exclude_self, weight):
    if a.shape[0] == 0 or b.shape[0] == 0 or scale < 1e-290:
        return -math.inf
    v = _div._core.kernel_pair_log_sum(a, b, kernel, scale, exclude_self)
    return v + math.log(weight) if weight != 1 else v


def _all_equal(*flags):
    return all(flags)


def _mmd_finish(lxx, lyy, lxy, scale, same, n, m, unbiased, kind):
    if scale < 1e-290 or (same and (kind == "cs" or not unbiased)):
        return np.float64(0.0)
    if kind == "cs" or not unbiased:
        lxx = float(np.logaddexp(lxx, math.log(n)))
        lyy = float(np.logaddexp(lyy, math.log(m)))
    if kind == "cs":
        return np.float64(max(lxx + lyy - 2 * lxy, 0.0))
    if unbiased:
        cxx, cyy = math.log(n) + math.log(n - 1), math.log(m) + math.log(m - 1)
    else:
        cxx, cyy = 2 * math.log(n), 2 * math.log(m)
    cxy = math.log(n) + math.log(m)
    return np.float64(math.exp(lxx - cxx) + math.exp(lyy - cyy) - 2 * math.exp(lxy - cxy))


def _subsample_rows(a, idx):
    """The rows `idx` (sorted) of Dask array `a`, as Delayed blocks (a few per chunk)."""
    offs = _offsets(a.chunks[0])
    blocks = a.to_delayed().ravel().tolist()
    out = []
    for bi, (lo, hi) in enumerate(zip(offs[:-1], offs[1:])):
        sel = idx[(idx >= lo) & (idx < hi)] - lo
        if sel.size:
            out.append(dask.delayed(_take, pure=True)(blocks[bi], sel))
    return out


def _take(b, sel):
    return np.asarray(b)[sel]


def _kernel_divergence(x, y, sigma, kernel, unbiased, check_finite, kind):
    xa, ya = _two_dask_samples(x, y)
    n, m = xa.shape[0], ya.shape[0]
    if n == 0 or m == 0:
        raise ValueError("x and y must each contain at least one point")
    if kind == "mmd" and unbiased and (n < 2 or m < 2):
        raise ValueError(
            "unbiased=True needs at least 2 points in each sample; pass unbiased=False or more points"
        )
    if sigma is not None:
        _div.check_positive(sigma, "sigma")
    dtype = _float_dtype(xa, ya)
    dl = dask.delayed
    xb = [
        dl(_checked_finite, pure=True)(b, "x", check_finite)
        for b in xa.to_delayed().ravel().tolist()
    ]
    yb = [
        dl(_checked_finite, pure=True)(b, "y", check_finite)
        for b in ya.to_delayed().ravel().tolist()
    ]
    units = dl(_mmd_units, pure=True)([dl(_moments, pure=True)(b) for b in xb + yb], n + m, dtype)
    tops = [dl(_mmd_centred_stats, pure=True)(b, units) for b in xb + yb]
    c1 = dl(_mmd_scale_c1, pure=True)(tops)
    xs = [dl(_mmd_block, pure=True)(b, units, c1, dtype) for b in xb]
    ys = [dl(_mmd_block, pure=True)(b, units, c1, dtype) for b in yb]
    sub_x, sub_y = xs, ys
    if sigma is None:
        total = n + m
        if total > _div.MEDIAN_SUBSAMPLE:
            idx = np.sort(
                np.random.default_rng(0).choice(total, _div.MEDIAN_SUBSAMPLE, replace=False)
            )
            sx = _subsample_rows(xa, idx[idx < n])
            sy = _subsample_rows(ya, idx[idx >= n] - n)
            sub_x = [dl(_mmd_block, pure=True)(b, units, c1, dtype) for b in sx] or [
                np.empty((0, xa.shape[1]))
            ]
            sub_y = [dl(_mmd_block, pure=True)(b, units, c1, dtype) for b in sy] or [
                np.empty((0, xa.shape[1]))
            ]
    scale = dl(_mmd_scale, pure=True)(xs, ys, sub_x, sub_y, sigma, kernel, units, c1)
    if xa.shape == ya.shape and xa.chunks == ya.chunks:
        same = dl(_all_equal, pure=True)(
            *[dl(np.array_equal, pure=True)(a, b) for a, b in zip(xs, ys)]
        )
    else:
        same = False

    def total_log(a, b, one_set):
        parts = [
            dl(_kernel_pair, pure=True)(a[i], b[j], kernel, scale, one_set and i == j, w)
            for i, j, w in _block_pairs(a, b, one_set)
        ]
        return _tree(_logadd, parts)

    out = dl(_mmd_finish, pure=True)(
        total_log(xs, xs, True), total_log(ys, ys, True), total_log(xs, ys, False), scale, same,
        n, m, unbiased, kind,
    )  # fmt: skip
    return da.from_delayed(out, shape=(), dtype=np.float64)


def _checked_finite(b, name, check_finite):
    b = _al(np.asarray(b))
    if check_finite and b.size and not np.isfinite(b).all():
        raise ValueError(
            f"{name} contains NaN or inf; remove those entries or pass check_finite=False"
        )
    return b


def mmd(x, y, sigma=None, kernel="gaussian", unbiased=True, *, check_finite=True):
    """Distributed :func:`divest.mmd` (squared MMD) as log-sums over pairs of row blocks.

    ``x`` and ``y``: Dask arrays chunked along the rows (NumPy accepted). Two passes over
    the blocks give the in-memory call's scaling and pooled centring; ``sigma=None`` takes
    the median heuristic on the same fixed-seed subsample of 1000 pooled points, gathered
    from the blocks that hold them. Each pair of blocks is one task (a new core entry
    point, ``kernel_pair_log_sum``, one pass of the pairwise engine), and the partial
    log-sums are combined by a tree of ``logaddexp``. Each of the three kernel sums is
    within 1e-13 relative of the in-memory one, so the result is within 1e-13 of the
    in-memory value relative to the kernel means it is the difference of. Returns a 0-d
    Dask array."""
    _div.check_choice(kernel, "kernel", ("gaussian", "laplacian"))
    return _kernel_divergence(x, y, sigma, kernel, unbiased, check_finite, "mmd")


def cs_divergence(x, y, sigma=None, *, check_finite=True):
    """Distributed :func:`divest.cs_divergence`, computed as :func:`mmd` is (block-pair
    log-sums, tree of ``logaddexp``); within 1e-13 of the in-memory value relative to the
    log kernel sums it is formed from. Returns a 0-d Dask array."""
    return _kernel_divergence(x, y, sigma, "gaussian", False, check_finite, "cs")


# ------------------------------------------------------- distance covariance (blocks)


def _dcov_row_pair(xi, xj, yi, yj, exponent, same):
    core = _dcov._core
    if xi.shape[0] == 0 or xj.shape[0] == 0:
        return np.zeros(xi.shape[0]), np.zeros(yi.shape[0])
    return (
        core.dcov_cross_row_sums(xi, xj, exponent, same),
        core.dcov_cross_row_sums(yi, yj, exponent, same),
    )


def _pair_add(a, b):
    return a[0] + b[0], a[1] + b[1]


def _row_totals(rows):
    return math.fsum(float(np.sum(r[0])) for r in rows), math.fsum(
        float(np.sum(r[1])) for r in rows
    )


def _dcov_pair_products(xi, xj, yi, yj, ri, rj, totals, n, exponent, unbiased, same, weight):
    if xi.shape[0] == 0 or xj.shape[0] == 0:
        return np.zeros(3)
    s = _dcov._core.dcov_block_products(
        xi, xj, yi, yj, ri[0], rj[0], ri[1], rj[1], totals, n, exponent, unbiased, same
    )
    return weight * np.array(s)


def _dcov_block_finish(tot, ux, uy, n, exponent, unbiased, what):
    f = 1.0 / (n * (n - 3.0)) if unbiased else 1.0 / (n * float(n))
    cov, vx, vy = (float(v) * f for v in tot)
    kx, ky = ux[0], uy[0]
    if what == "dcov_sqr":
        return np.float64(_dcov._times_pow2(cov, exponent * (kx + ky)))
    if what == "dcov":
        return np.float64(_dcov._times_pow2(math.sqrt(max(cov, 0.0)), exponent * (kx + ky) / 2))
    r = _dcov._cor_sqr((cov, vx, vy))
    if what == "dcor_sqr":
        return np.float64(r)
    return np.float64(math.sqrt(min(max(r, 0.0), 1.0)))


def _dcov_blocks(x, y, exponent, unbiased, what):
    exponent = _dcov._check_exponent(exponent)
    unbiased = _dcov.check_bool(unbiased, "unbiased")
    xa, ya = _points(x, "x"), _points(y, "y")
    n = xa.shape[0]
    if ya.shape[0] != n:
        raise ValueError(
            f"x and y must have the same number of observations (rows); got {n} and {ya.shape[0]}"
        )
    if isinstance(x, da.Array) != isinstance(y, da.Array):  # NumPy takes the Dask chunks
        if isinstance(x, da.Array):
            ya = ya.rechunk({0: xa.chunks[0]})
        else:
            xa = xa.rechunk({0: ya.chunks[0]})
    _same_chunks(xa, ya, [0], "x", "y")
    if unbiased and n < 4:
        raise ValueError(f"unbiased (U) statistics need at least 4 observations; got {n}")
    if n < 1:
        raise ValueError("at least one observation is needed; got 0")
    dl = dask.delayed
    xb = [dl(_checked_block, pure=True)(b, "x") for b in xa.to_delayed().ravel().tolist()]
    yb = [dl(_checked_block, pure=True)(b, "y") for b in ya.to_delayed().ravel().tolist()]
    ux = dl(_energy_units, pure=True)([dl(_moments, pure=True)(b) for b in xb], n)
    uy = dl(_energy_units, pure=True)([dl(_moments, pure=True)(b) for b in yb], n)
    kx, mx = dl(_getitem, pure=True)(ux, 0), dl(_getitem, pure=True)(ux, 1)
    ky, my = dl(_getitem, pure=True)(uy, 0), dl(_getitem, pure=True)(uy, 1)
    xs = [dl(_energy_shift, pure=True)(b, kx, mx) for b in xb]
    ys = [dl(_energy_shift, pure=True)(b, ky, my) for b in yb]
    nb = len(xs)
    rows = [
        _tree(
            _pair_add,
            [
                dl(_dcov_row_pair, pure=True)(xs[i], xs[j], ys[i], ys[j], exponent, i == j)
                for j in range(nb)
            ],
        )
        for i in range(nb)
    ]
    totals = dl(_row_totals, pure=True)(rows)
    parts = [
        dl(_dcov_pair_products, pure=True)(
            xs[i],
            xs[j],
            ys[i],
            ys[j],
            rows[i],
            rows[j],
            totals,
            n,
            exponent,
            unbiased,
            i == j,
            w,
        )  # fmt: skip
        for i, j, w in _block_pairs(xs, xs, True)
    ]
    out = dl(_dcov_block_finish, pure=True)(_tree(_add, parts), ux, uy, n, exponent, unbiased, what)
    return da.from_delayed(out, shape=(), dtype=np.float64)


_DCOV_DOC = """Distributed :func:`divest.{name}` of multivariate samples, as sums over pairs of row
    blocks, in O(n) memory per task.

    ``x`` (n, p) and ``y`` (n, q): Dask arrays chunked alike along the rows (the same
    observations; NumPy is accepted and takes the other's chunks). A first blockwise pass
    gives each sample's power-of-two scale and mean; then each pair of row blocks is one
    task in two rounds: the row sums Σ_j |x_i − x_j|^α the centring needs (new core entry
    point ``dcov_cross_row_sums``), then (Σ A·B, Σ A·A, Σ B·B) over the pair with the
    centred distances formed from those row sums (``dcov_block_products``), added by a
    tree. Within 1e-13 relative of the in-memory value where that value is not a small
    difference of large centred products (near-independent samples at large n), where the
    error is about 1e-13 of Σ|A·B|/n². 1-D samples with exponent 1 are better computed
    in memory: the exact O(n log n) path does n = 10⁸ in about a minute. Tasks: 2·B² for
    B blocks (half of them in the second round); choose blocks so a pair takes seconds.
    Returns a 0-d Dask array."""


def dcov_sqr(x, y, exponent=1.0, unbiased=False):
    return _dcov_blocks(x, y, exponent, unbiased, "dcov_sqr")


def dcov(x, y, exponent=1.0):
    return _dcov_blocks(x, y, exponent, False, "dcov")


def dcor_sqr(x, y, exponent=1.0, unbiased=False):
    return _dcov_blocks(x, y, exponent, unbiased, "dcor_sqr")


def dcor(x, y, exponent=1.0):
    return _dcov_blocks(x, y, exponent, False, "dcor")


for _fn in (dcov_sqr, dcov, dcor_sqr, dcor):
    _fn.__doc__ = _DCOV_DOC.format(name=_fn.__name__)
del _fn


# --------------------------------------------------------------------------- threads


try:
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - dask without distributed: the plugin is unused
    _WorkerPlugin = object


class DivestThreads(_WorkerPlugin):
    """A Dask worker plugin that sizes each worker's divest pool.

    ``n=None`` gives each worker ``cores // nthreads`` divest threads (at least 1), where
    ``cores`` is the worker machine's CPU count (or ``DIVEST_WORKER_CORES`` in its
    environment, for a share of a machine) and ``nthreads`` the worker's Dask threads: a
    machine running one 1-thread worker per core gets 1 divest thread per task, one
    worker with 1 Dask thread gets them all. Register with :func:`configure_workers`.
    It calls :func:`divest.set_num_threads`, the process default, so use it with worker
    *processes* (``processes=True``, the ``dask worker`` command): an in-process cluster
    would resize the client's own pool.
    """

    name = "divest-threads"

    def __init__(self, n=None):
        self.n = None if n is None else _dcov.check_int(n, "n", 1)

    def setup(self, worker):
        n = self.n
        if n is None:
            cores = int(os.environ.get("DIVEST_WORKER_CORES", 0)) or (os.cpu_count() or 1)
            n = max(1, cores // max(1, int(getattr(worker.state, "nthreads", 1))))
        set_num_threads(n)


def configure_workers(client, n=None):
    """Registers :class:`DivestThreads` on every current and future worker of
    ``client`` (a ``distributed.Client``): each worker's divest pool gets ``n`` threads,
    or its share of the cores when ``n`` is None. Returns the plugin."""
    plugin = DivestThreads(n)
    client.register_plugin(plugin, name=plugin.name)
    return plugin
