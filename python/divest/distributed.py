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
  :func:`kde_logpdf` over chunks of queries, :func:`knn_entropy`, :func:`knn_kl`,
  :func:`knn_mi`), by resamples (:func:`dcov_test`, :func:`energy_test`,
  :func:`ccdcov_test`, :func:`jdcov_test`) and by samples (:func:`sample_projection`,
  :func:`dpp_sample`, :func:`dpp_sample_k`, :func:`volume_sample`,
  :func:`volume_rescaled_sample`): **bitwise** the same;
* :func:`kde_logpdf` with the *data* chunked: partial log-sum-exps per data block combined
  by a tree of ``logaddexp``, and the bandwidth from blockwise moments: within **1e-13
  relative** (the order of the sums differs);
* sums over pairs of row blocks (:func:`energy_distance`, :func:`mmd`,
  :func:`cs_divergence`, :func:`dcov_sqr` and friends, :func:`partial_dcor`,
  :func:`jdcov`) and the point-cloud :func:`sinkhorn_divergence` (partial log-sum-exps
  per block pair at every half-step): within the tolerance each docstring states (1e-13
  to 1e-12), bitwise for :func:`sinkhorn_divergence` with each cloud in one chunk or
  when the solve is small enough to run as one task (``one_task_pairs``).

Threads: each task calls one divest kernel, which runs on the worker process's divest
pool. Size that pool to the worker's share of the cores, or the threads oversubscribe:
start workers with ``DIVEST_NUM_THREADS`` set in their environment, or call
:func:`configure_workers` once after connecting. Never use ``divest.threads()`` inside
tasks. See docs/distributed.md for layouts and projections.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import os
import uuid
import warnings

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
from . import dpp as _dpp
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
    "knn_mi",
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
    "DaskSinkhornResult",
    "sinkhorn_divergence",
    "partial_dcor",
    "jdcov",
    "sample_projection",
    "dpp_sample",
    "dpp_sample_k",
    "volume_sample",
    "volume_rescaled_sample",
    "ONE_TASK_PAIRS",
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
    # blockwise(concatenate=False) passes the blocks along the category axis as a list:
    # one block each (the axis is one chunk), passed on without a copy.
    (pb,), (qb,) = pb, qb
    out = fn(_al(pb), _al(qb), axis=-1, **kw)
    return np.asarray(out, dtype=out_dtype).reshape(pb.shape[:-1])


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
    # One task per block of rows, the category axis contracted: blockwise with
    # concatenate=False hands each task its blocks as they are (map_blocks' drop_axis
    # would copy every block first, and an indexing layer after it adds a task per block).
    batch = "abcdefghijklmnopqrstuvwxy"[: nd - 1]
    out = da.blockwise(
        _divergence_block,
        batch,
        pm,
        batch + "z",
        qm,
        batch + "z",
        fn,
        None,
        dtype,
        None,
        kw,
        None,
        concatenate=False,
        dtype=dtype,
        meta=np.empty((0,) * (nd - 1), dtype=dtype),
    )
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _ot.ConvergenceWarning)
        r = _ot.sinkhorn_batch(_al(a), _al(b), _al(cost), reg, **kw)
    return {f: getattr(r, f) for f in _SINK_FIELDS}


def sinkhorn_batch(a, b, cost, reg, **kwargs) -> DaskSinkhornResult:
    """Distributed :func:`divest.sinkhorn_batch`: one task per chunk of problems.

    ``a`` (B, n) and ``b`` (B, m) are Dask arrays chunked along the batch axis only, alike
    (NumPy is accepted and chunked automatically). ``cost`` is (B, n, m), chunked like
    ``a`` along the batch axis, or a shared (n, m) array (NumPy or Dask), sent once to
    each worker. Other keywords as in the in-memory call. Each problem is solved exactly
    as by the in-memory call, so ``.compute()`` of each field is bitwise its result.

    Returns a :class:`DaskSinkhornResult`: a :class:`divest.SinkhornResult` whose fields
    are Dask arrays (``plan`` only with ``return_plan=True``). Non-convergence warnings:
    a task on a worker cannot warn the client, so the tasks record it in ``converged``
    (per problem) and ``marginal_error``, and :meth:`DaskSinkhornResult.compute` (every
    field in one pass) raises the in-memory call's :class:`divest.ConvergenceWarning` on
    the client after the compute when any problem did not converge. Computing one field
    alone (``res.f.compute()``) does not warn: check ``converged``.
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
    nb, n, m = _ot._batch_weight_shapes(A, Bw)
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
    out = DaskSinkhornResult(**fields)
    object.__setattr__(out, "_tol", float(kwargs.get("tol", 1e-9)))
    return out


class DaskSinkhornResult(_ot.SinkhornResult):
    """:func:`sinkhorn_batch`'s result: a :class:`divest.SinkhornResult` of Dask arrays,
    with :meth:`compute`, which warns on the client."""

    def compute(self, **kwargs) -> _ot.SinkhornResult:
        """Computes every field in one pass (``kwargs`` go to ``dask.compute``) and returns
        a :class:`divest.SinkhornResult` of NumPy arrays. Raises a
        :class:`divest.ConvergenceWarning` here, on the client, when any problem did not
        converge (as the in-memory call does)."""
        names = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]
        values = dask.compute(*[getattr(self, f) for f in names], **kwargs)
        res = _ot.SinkhornResult(**{f.name: None for f in dataclasses.fields(self)})
        res = dataclasses.replace(res, **dict(zip(names, values)))
        _warn_batch(res, getattr(self, "_tol", 1e-9))
        return res


def _warn_batch(res, tol):
    ok = np.asarray(res.converged)
    if ok.all():
        return
    err, n_iter = np.asarray(res.marginal_error), np.asarray(res.n_iter)
    k = int(np.argmax(~ok))
    warnings.warn(
        f"sinkhorn_batch (computed by Dask): {int((~ok).sum())} of {ok.size} problems did not "
        f"converge (problem {k}: marginal error {err[k]:.3g} > tol {tol:.3g} after "
        f"{int(n_iter[k])} iterations). Increase max_iter, use scaling=0.5 (ε-scaling) or "
        "a larger reg.",
        _ot.ConvergenceWarning,
        stacklevel=3,
    )


def _field(part, name, dtype):
    return np.asarray(part[name]).astype(dtype, copy=False)


# ---------------------------------------------------------------- KDE, queries chunked


def _kde_rows(pts, model, sorted_range, check_finite):
    """The log-densities (1-D) of one block of queries (blockwise with concatenate=False:
    `pts` is the list of the block's one chunk along the coordinates)."""
    (pts,) = pts
    return _kde_queries_block(pts, model, sorted_range, False, check_finite)[:, 0]


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
    if not return_ess:
        # One task per block of queries, no indexing layer after it.
        return da.blockwise(
            _kde_rows,
            "i",
            pts,
            "ij",
            ref,
            None,
            use_sorted,
            None,
            check_finite,
            None,
            concatenate=False,
            dtype=dtype,
            meta=np.empty((0,), dtype=dtype),
        )
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


def _knn_mi_reference(xblocks, yblocks):
    x, y = _concat_rows(*xblocks), _concat_rows(*yblocks)
    (xc, yc), _ = _div._knn_scaled(x, y, pooled=False)
    return np.ascontiguousarray(xc, dtype=np.float64), np.ascontiguousarray(yc, dtype=np.float64)


def _knn_mi_block(ref, lo, hi, k, algorithm):
    """ψ(n_x + 1) + ψ(n_y + 1) for the rows lo..hi (KSG-1), as the in-memory call."""
    xc, yc = _al(ref[0]), _al(ref[1])
    if hi == lo:
        return np.empty(0)
    core = _div._core
    d2, _ = core.knn_sq_dists(
        np.ascontiguousarray(xc[lo:hi]), xc, k, False,
        np.ascontiguousarray(yc[lo:hi]), yc, algorithm=algorithm,
    )  # fmt: skip
    eps2 = np.ascontiguousarray(d2[:, k - 1] * (1 - _div._RADIUS_MARGIN))
    nx = core.count_within_rows(xc, lo, eps2, True, algorithm)
    ny = core.count_within_rows(yc, lo, eps2, True, algorithm)
    return _div._digamma_int(nx + 1) + _div._digamma_int(ny + 1)


def _knn_mi_finish(terms, n, k, lb):
    val = _div._digamma_int(k) + _div._digamma_int(n) - _div._fmean(np.concatenate(terms))
    return np.float64(float(val / lb))


def _knn_mi_whole(xblocks, yblocks, kw):
    return np.float64(_div.knn_mi(_concat_rows(*xblocks), _concat_rows(*yblocks), **kw))


def knn_mi(
    x,
    y,
    k=3,
    variant=1,
    *,
    base=None,
    algorithm="auto",
    check_finite=True,
    discrete_features=False,
):
    """Distributed :func:`divest.knn_mi`.

    ``x`` (n, dx) and ``y`` (n, dy): Dask arrays chunked alike along the rows (paired
    samples; NumPy is accepted). Both are assembled once and sent once to each worker
    (each must fit in one worker's memory).

    KSG-1 (``variant=1``, ``discrete_features=False``): one task per block of rows does
    the joint kNN search of its rows and their marginal radius counts against the whole
    sets (a new core entry point, ``count_within_rows``, gives a block of rows the counts
    the in-memory pass gives them); the per-row digamma terms are averaged in one final
    task with the in-memory call's exactly rounded mean, so ``.compute()`` is
    **bitwise** the in-memory value. The warning about columns that look discrete is not
    raised (it would be raised on a worker): pass ``discrete_features`` explicitly, or
    run :func:`divest.knn_mi` on a subsample to see it.

    KSG-2 and the mixed estimator (``discrete_features`` True or "auto") resolve ties and
    duplicates over the whole sample: they run as **one task**, the in-memory call on one
    worker (bitwise; not split). Returns a 0-d Dask array."""
    lb = _div._log_base(base)
    algorithm = _div._check_algorithm(algorithm)
    _div.check_choice(variant, "variant", (1, 2), "KSG-1 or KSG-2")
    (xa, ya), n = _paired_points([("x", x), ("y", y)], 1)
    xb = [_after_check(b, "x", check_finite) for b in xa.to_delayed().ravel().tolist()]
    yb = [_after_check(b, "y", check_finite) for b in ya.to_delayed().ravel().tolist()]
    if variant != 1 or discrete_features is not False:
        kw = dict(
            k=k, variant=variant, base=base, algorithm=algorithm, check_finite=check_finite,
            discrete_features=discrete_features,
        )  # fmt: skip
        out = dask.delayed(_knn_mi_whole, pure=True)(xb, yb, kw)
        return da.from_delayed(out, shape=(), dtype=np.float64)
    k = _div._check_k(k, n, "x")
    ref = dask.delayed(_knn_mi_reference, pure=True)(xb, yb)
    offs = _offsets(xa.chunks[0])
    terms = [
        dask.delayed(_knn_mi_block, pure=True)(ref, lo, hi, k, algorithm)
        for lo, hi in zip(offs[:-1], offs[1:])
    ]
    out = dask.delayed(_knn_mi_finish, pure=True)(terms, n, k, lb)
    return da.from_delayed(out, shape=(), dtype=np.float64)


def _after_check(block, name, check_finite):
    return dask.delayed(_after, pure=True)(
        block, dask.delayed(_check_points_finite, pure=True)(block, name, check_finite)
    )


# ------------------------------------------------------------------ resampling tests


def _materialise(x, name):
    """A Delayed (or the NumPy array itself) holding all of `x` in memory, for the one task
    that consumes it. A NumPy array is passed as it is (embedded once in that task: a key
    of its own would only add a level of scheduling latency); another array-like gets one
    graph key."""
    if isinstance(x, da.Array):
        return _gather(x)
    if dask.is_dask_collection(x):
        raise TypeError(f"{name} must be a Dask array or array-like; got {type(x).__name__}")
    if isinstance(x, np.ndarray):
        return x
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
    worker (the test needs all pairs: they must fit in one worker's memory); when the
    resamples fit one task (the default below about two seconds of one core) the whole
    test is that one task: each graph level costs a scheduler round trip. The seed is
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
    return _dcov_graph(_dcov_prep, (xd, yd), exponent, r, seed, per or _auto_per_task(n, r))


def _resample_whole(prep_fn, range_fn, finish_fn, inputs, exponent, r, seed):
    """A resampling test in one task: the preparation, every resample and the finish
    (the same calls, in the same order, as the split graph with one range)."""
    prep = prep_fn(*inputs)
    return finish_fn(prep, [range_fn(prep, exponent, 0, r, seed)], exponent)


def _resample_graph(prep_fn, range_fn, finish_fn, inputs, exponent, r, seed, per):
    """The graph of a resampling test split by ranges of resample indices: one
    preparation task, one task per range, one finish. With a single range the three are
    one task: each level of a Dask graph costs a scheduler round trip (milliseconds),
    which a test of tens of milliseconds would feel."""
    ranges = _ranges(r, per)
    if len(ranges) == 1:
        return dask.delayed(_resample_whole, pure=True)(
            prep_fn, range_fn, finish_fn, inputs, exponent, r, seed
        )
    prep = dask.delayed(prep_fn, pure=True)(*inputs)
    parts = [dask.delayed(range_fn, pure=True)(prep, exponent, a, c, seed) for a, c in ranges]
    return dask.delayed(finish_fn, pure=True)(prep, parts, exponent)


def _dcov_graph(prep_fn, inputs, exponent, r, seed, per):
    return _resample_graph(prep_fn, _dcov_range, _dcov_finish, inputs, exponent, r, seed, per)


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
    return _dcov_graph(_ccdcov_prep, tuple(parts), exponent, r, seed, per or _auto_per_task(n, r))


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
    per = per or _auto_per_task(total, r, len(samples))
    return _resample_graph(
        _energy_prep, _energy_range, _energy_finish, tuple(parts), exponent, r, seed, per
    )


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
    # A jdcov resample costs about four times a dcov one per pair (a Python loop over
    # the permutations around the statistic): tasks of about two seconds, capped at r.
    per = per or _auto_per_task(n, r, 4 * len(xs))
    if per >= r:  # one task: each graph level costs a scheduler round trip
        return dask.delayed(_jdcov_whole, pure=True)(parts, state, r, kw, unbiased)
    arrs = dask.delayed(_jdcov_prep, pure=True)(*parts, unbiased=unbiased)
    stat = dask.delayed(_jdcov_stat, pure=True)(arrs, kw)
    ranges = [
        dask.delayed(_jdcov_range, pure=True)(arrs, state, a, cnt, kw) for a, cnt in _ranges(r, per)
    ]
    return dask.delayed(_jdcov_finish, pure=True)(stat, ranges)


def _jdcov_whole(parts, state, r, kw, unbiased):
    """The whole test in one task: the split graph's calls with a single range."""
    arrs = _jdcov_prep(*parts, unbiased=unbiased)
    return _jdcov_finish(_jdcov_stat(arrs, kw), [_jdcov_range(arrs, state, 0, r, kw)])


def _jdcov_stat(arrs, kw):
    return _dcov.jdcov(*arrs, **kw)


# ------------------------------------------------------------------ sums over pairs


def _block_pairs(xblocks, yblocks, same):
    """(i, j, weight) for the block pairs of a sum over all pairs of rows: every (i, j)
    for two sets; i <= j with weight 2 off the diagonal for one set with itself."""
    if not same:
        return [(i, j, 1) for i in range(len(xblocks)) for j in range(len(yblocks))]
    return [(i, j, 1 if i == j else 2) for i in range(len(xblocks)) for j in range(i, len(xblocks))]


def _tree_upto(fn, items, keep):
    """:func:`_tree`'s pairing, stopped at `keep` items or fewer (a list)."""
    items = list(items)
    while len(items) > keep:
        nxt = [
            dask.delayed(fn, pure=True)(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)
        ]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items


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


def _dcov_pair_sums(xa, ya, exponent, unbiased, n, names=("x", "y")):
    """Delayed (Σ A·B, Σ A·A, Σ B·B) over all pairs of rows of the samples `xa` and `ya`
    (Dask arrays chunked alike along the rows), and the two samples' units."""
    dl = dask.delayed
    xb = [dl(_checked_block, pure=True)(b, names[0]) for b in xa.to_delayed().ravel().tolist()]
    yb = [dl(_checked_block, pure=True)(b, names[1]) for b in ya.to_delayed().ravel().tolist()]
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
    return _tree(_add, parts), ux, uy


def _paired_points(named, min_n):
    """Dask arrays of paired samples (the same observations), chunked alike along the
    rows (NumPy inputs take the chunks of the first Dask input)."""
    arrs = [_points(v, name) for name, v in named]
    n = arrs[0].shape[0]
    for (name, _), a in zip(named[1:], arrs[1:]):
        if a.shape[0] != n:
            raise ValueError(
                f"{named[0][0]} and {name} must have the same number of observations (rows); "
                f"got {n} and {a.shape[0]}"
            )
    lead = next((a for (_, v), a in zip(named, arrs) if isinstance(v, da.Array)), arrs[0])
    arrs = [
        a if isinstance(v, da.Array) else a.rechunk({0: lead.chunks[0]})
        for (_, v), a in zip(named, arrs)
    ]
    for (name, _), a in zip(named[1:], arrs[1:]):
        _same_chunks(arrs[0], a, [0], named[0][0], name)
    if n < min_n:
        if min_n == 4:
            raise ValueError(f"unbiased (U) statistics need at least 4 observations; got {n}")
        raise ValueError("at least one observation is needed; got 0")
    return arrs, n


def _dcov_blocks(x, y, exponent, unbiased, what):
    exponent = _dcov._check_exponent(exponent)
    unbiased = _dcov.check_bool(unbiased, "unbiased")
    (xa, ya), n = _paired_points([("x", x), ("y", y)], 4 if unbiased else 1)
    tot, ux, uy = _dcov_pair_sums(xa, ya, exponent, unbiased, n)
    out = dask.delayed(_dcov_block_finish, pure=True)(tot, ux, uy, n, exponent, unbiased, what)
    return da.from_delayed(out, shape=(), dtype=np.float64)


def _partial_finish(sxy, sxz, syz):
    ab, aa, bb = (float(v) for v in sxy)
    ac, cc = float(sxz[0]), float(sxz[2])
    bc = float(syz[0])

    def r(u, v, w):
        d2 = v * w
        return min(max(u / math.sqrt(d2), -1.0), 1.0) if d2 > 0 else 0.0

    r_xy, r_xz, r_yz = r(ab, aa, bb), r(ac, aa, cc), r(bc, bb, cc)
    den = math.sqrt(1.0 - r_xz**2) * math.sqrt(1.0 - r_yz**2)
    if not den > 0:
        return np.float64(0.0)
    return np.float64(min(max((r_xy - r_xz * r_yz) / den, -1.0), 1.0))


def partial_dcor(x, y, z, exponent=1.0):
    """Distributed :func:`divest.partial_dcor` from U-centred inner products summed over
    pairs of row blocks.

    ``x``, ``y`` and ``z``: Dask arrays chunked alike along the rows (the same
    observations; NumPy is accepted and takes the chunks of the first Dask input). The
    six inner products (Σ A·B, Σ A·C, Σ B·C and the three squares) come from the
    block-pair machinery of :func:`dcov_sqr` (``unbiased=True``) on the pairs (x, y),
    (x, z) and (y, z); the formula is the in-memory call's. Each pairwise correlation is
    within about 1e-13 (absolute) of the in-memory one, so the result is within **1e-12
    absolute** where 1 − R(x,z)² and 1 − R(y,z)² are not small (the in-memory value
    divides by their square roots). Tasks: three times those of :func:`dcov_sqr`.
    Returns a 0-d Dask array."""
    exponent = _dcov._check_exponent(exponent)
    (xa, ya, za), n = _paired_points([("x", x), ("y", y), ("z", z)], 4)
    sxy = _dcov_pair_sums(xa, ya, exponent, True, n)[0]
    sxz = _dcov_pair_sums(xa, za, exponent, True, n, ("x", "z"))[0]
    syz = _dcov_pair_sums(ya, za, exponent, True, n, ("y", "z"))[0]
    out = dask.delayed(_partial_finish, pure=True)(sxy, sxz, syz)
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


# ------------------------------------------------- point-cloud Sinkhorn divergence


def _sd_box(b, name, d):
    """Validates one block of a cloud; its per-coordinate (min, max), or None if empty."""
    b = _al(np.asarray(b))
    if b.shape[0] == 0:
        return None
    pts = _ot.as_points(b, name, d=d)
    return pts.min(0).astype(np.float64), pts.max(0).astype(np.float64)


def _sd_weights(blocks, n, name, of, sizes):
    """The in-memory call's normalised weights, split like the cloud's rows (one task: the
    normalisation sums every weight, in the in-memory order)."""
    w = None if blocks is None else np.concatenate([np.asarray(b) for b in blocks])
    w = _ot._weights(w, n, name, of)
    w = w / w.max()
    w = w / w.sum()
    return [np.ascontiguousarray(w[lo:hi]) for lo, hi in zip(sizes[:-1], sizes[1:])]


def _sd_centre(b, shift, sc, dt):
    return _ot._cloud_centre(_al(np.asarray(b)), shift, sc, dt)


def _sd_part(rows, cols, w, v, p, eps, mean):
    """One (row block, column block) task: the rows' soft-min state over the columns."""
    ls, shift, total, wsum, wacc = _ot._core.sinkhorn_partial_transform(
        _al(rows), _al(cols), _al(w), _al(v), p, eps, mean
    )
    return (ls, (shift, total, wsum, wacc) if mean else None)


def _sd_merge(s1, s2):
    """Two column blocks' states combined (log-sum-exp; the gradient's sums rescaled to
    the larger shift)."""
    ls = np.logaddexp(s1[0], s2[0])
    if s1[1] is None:
        return ls, None
    (h1, t1, w1, a1), (h2, t2, w2, a2) = s1[1], s2[1]
    h = np.maximum(h1, h2)
    with np.errstate(invalid="ignore"):
        f1 = np.where(np.isneginf(h1), 0.0, np.exp(h1 - h))
        f2 = np.where(np.isneginf(h2), 0.0, np.exp(h2 - h))
    return ls, (h, t1 * f1 + t2 * f2, w1 * f1 + w2 * f2, a1 * f1[:, None] + a2 * f2[:, None])


def _sd_merge_all(*states):
    out = states[0]
    for st in states[1:]:
        out = _sd_merge(out, st)
    return out


def _sd_transform(eps, *states):
    """The transform −ε·LSE from the last (at most two) states of a row block's tree."""
    return -eps * _sd_merge_all(*states)[0]


def _sd_avg(v, eps, *states):
    """The averaged update ½(v + transform), fused with the tree's last merge."""
    return 0.5 * (v + (-eps * _sd_merge_all(*states)[0]))


def _sd_violation(w, v, t, eps):
    """Σ_i w_i |e^{(v_i − t_i)/ε} − 1| over one block (weights 0 add nothing)."""
    with np.errstate(over="ignore", invalid="ignore"):
        terms = w * np.abs(np.expm1((v - t) / eps))
    return math.fsum(terms[w > 0].tolist())


def _sd_dot(w, v):
    return math.fsum((w * v).tolist())


def _sd_grad_rows(x, w, st_xy, st_xx, p):
    """∇_x of the value for one block of rows, from the check passes' statistics."""
    x = np.asarray(x, dtype=np.float64)
    c = 2.0 if p == 2 else 1.0
    out = np.zeros(x.shape)
    for st, sign in ((st_xy, 1.0), (st_xx, -1.0)):
        if st is None:
            continue
        _, total, wsum, wacc = st[1]
        ok = (total > 0.0) & (w > 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            e = (x * wsum[:, None] - wacc) / total[:, None]
        out += np.where(ok[:, None], (sign * w[:, None]) * c * e, 0.0)
    return out


def _sd_sum(*vals):
    return math.fsum(vals)


def _sd_finish_value(pos, neg):
    return pos - neg


def _sd_avg_pots(v, t):
    return 0.5 * (v + t)


def _mul(a, b):
    return a * b


def _persist_lists(*lists):
    """``dask.persist`` of several lists of Delayed (None passes through)."""
    flat = [v for lst in lists if lst is not None for v in lst]
    done = iter(dask.persist(*flat))
    return tuple(None if lst is None else [next(done) for _ in lst] for lst in lists)


def _sd_overflow(dsc, e2, p, dt):
    return ValueError(
        f"x and y span a bounding-box diagonal D = {dsc:.3g}·2^{e2}: the costs "
        f"|x - y|^{p} and the results reach D^{p}, beyond the range of {np.dtype(dt)}; rescale "
        "the clouds (S_ε(s·x, s·y) = s^p·S_{ε/s^p}(x, y))"
    )


def _sd_value(pos, neg, e2, p, dsc, dt):
    value = max(float(pos - neg), 0.0)
    if e2:
        with np.errstate(over="ignore"):
            value = float(np.ldexp(value, e2 * p))
    if not math.isfinite(value):
        raise _sd_overflow(dsc, e2, p, dt)
    return np.float64(value)


def _sd_pot_block(v, vs, e2, p, dsc, dt):
    """The returned potential of one block: debiased, rescaled, in the clouds' dtype."""
    if vs is not None:
        v = v - vs
    with np.errstate(over="ignore"):
        if e2:
            v = np.ldexp(v, e2 * p)
        v = v.astype(dt, copy=False)
    if not np.isfinite(v).all():
        raise _sd_overflow(dsc, e2, p, dt)
    return v


def _sd_grad_block(x, w, st_xy, st_xx, p, e2, dsc, dt):
    gr = _sd_grad_rows(x, w, st_xy, st_xx, p)
    with np.errstate(over="ignore"):
        if e2:
            gr = np.ldexp(gr, e2 * (p - 1))
        gr = gr.astype(dt, copy=False)
    if not np.isfinite(gr).all():
        raise _sd_overflow(dsc, e2, p, dt)
    return gr


def _sd_rows(blocks, chunks, keep, tail, dt):
    """A Dask array with rows `chunks` from the Delayed blocks of the non-empty chunks."""
    it = iter(blocks)
    kept = set(keep)
    parts = [
        da.from_delayed(next(it), shape=(c,) + tail, dtype=dt)
        if i in kept
        else da.from_array(
            np.empty((0,) + tail, dtype=dt), chunks=((0,),) + tuple((k,) for k in tail)
        )
        for i, c in enumerate(chunks)
    ]
    return da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]


def _sd_gathered(x, y, a, b, kw):
    # A worker cannot warn the client: the caller fetches `converged` and warns there.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _ot.ConvergenceWarning)
        return _ot.sinkhorn_divergence(_al(x), _al(y), a, b, **kw)


def _sd_in_memory(xa, ya, a, b, eps, p, s, debias, max_iter, tol, grad):
    """The in-memory call on the gathered clouds, in one task (coinciding clouds, and the
    closed-form ε → ∞ limit): O(n + m) work. ``n_iter`` and ``converged`` are fetched."""
    kw = dict(eps=eps, p=p, scaling=s, debias=debias, max_iter=max_iter, tol=tol, grad=grad)
    aw = None if a is None else _materialise(a, "a")
    bw = None if b is None else _materialise(b, "b")
    res = dask.delayed(_sd_gathered, pure=True)(_gather(xa), _gather(ya), aw, bw, kw)
    (res,) = dask.persist(res)
    n_iter, converged, err = dask.compute(res.n_iter, res.converged, res.marginal_error)
    if tol is not None and not converged:
        _ot._warn("sinkhorn_divergence", n_iter, float(err), tol, stacklevel=4)
    n, m, d = xa.shape[0], ya.shape[0], xa.shape[1]
    dt = np.result_type(xa.dtype, ya.dtype) if xa.dtype.kind == ya.dtype.kind == "f" else np.float64

    def field(name, shape):
        return da.from_delayed(getattr(res, name), shape=shape, dtype=dt if shape else np.float64)

    return _ot.SinkhornDivergence(
        value=field("value", ()),
        f=field("f", (n,)),
        g=field("g", (m,)),
        grad=field("grad", (n, d)) if grad else None,
        n_iter=int(n_iter),
        converged=converged,
        marginal_error=field("marginal_error", ()),
    )


#: :func:`sinkhorn_divergence` runs a solve of at most this many pair evaluations (all
#: its half-steps) as one task: about ten seconds of one core.
ONE_TASK_PAIRS = 10**10

# A row block with at most this many pairs against the whole other cloud (about a tenth
# of a second of one core) is one task per half-step: its column blocks, their tree and
# the update that uses them, instead of a task per block pair and per merge.
_SD_FUSE_PAIRS = 2 * 10**8


class _SDFused:
    """The arguments of a row block's fused soft-min (no task yet: the use makes it)."""

    __slots__ = ("args",)

    def __init__(self, args):
        self.args = args


def _sd_fused(use, nlead, p, e, mean, *flat):
    """One task: a row block's partial log-sum-exps over every column block, the graph
    path's pairing tree down to two states, then ``use(*lead, *states)``: the same
    operations in the same order as the unfused graph, so the same bits. ``flat`` is
    the ``nlead`` leading arguments of `use`, the row block, then the column blocks,
    their weights and potentials (flat: Dask unpacks nested lists of Delayed slowly)."""
    lead, rb, rest = flat[:nlead], flat[nlead], flat[nlead + 1 :]
    k = len(rest) // 3
    cbs, cws, pvs = rest[:k], rest[k : 2 * k], rest[2 * k :]
    parts = [_sd_part(rb, cb, cw, pv, p, e, mean) for cb, cw, pv in zip(cbs, cws, pvs)]
    while len(parts) > 2:
        nxt = [_sd_merge(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return use(*lead, *parts)


class _SDCloud:
    """The graph pieces of one cloud: its non-empty centred blocks and their weights."""

    def __init__(self, blocks, weights, chunks):
        self.blocks = blocks
        self.w = weights
        self.chunks = chunks  # the rows of each original chunk (empty ones included)


def sinkhorn_divergence(
    x,
    y,
    a=None,
    b=None,
    *,
    eps,
    p=2,
    scaling=0.9,
    debias=True,
    max_iter=1000,
    tol=None,
    grad=True,
    one_task_pairs=ONE_TASK_PAIRS,
) -> _ot.SinkhornDivergence:
    """Distributed :func:`divest.sinkhorn_divergence` between point clouds chunked along
    their rows.

    ``x`` (n, d) and ``y`` (m, d): Dask arrays chunked along the rows, the coordinates
    one chunk (NumPy is accepted and chunked automatically); ``a``, ``b``: weights (None,
    NumPy or Dask). The same arguments and meaning as the in-memory call, and the same
    passes: GeomLoss's ε schedule from the bounding-box diagonal, the four potentials
    averaged with their transforms at each ε, the final extrapolation, the check passes
    (``marginal_error``, and the gradient's statistics) and, with ``tol``, the same loop
    at the target ε.

    Only the potentials move between passes (n + m float64 each). Each half-step is, for
    every block of rows, one task per block of the other cloud, calling a new core entry
    point (``sinkhorn_partial_transform``: the in-memory pass restricted to the column
    block, with its SIMD exp-sum kernels) that returns the rows' partial log-sum-exp, and
    a tree of ``logaddexp`` over the column blocks. Tasks per half-step: (row blocks) ×
    (column blocks), plus the tree; a row block with at most 2·10⁸ pairs against the
    whole other cloud is instead one task (its block pairs, the same tree and the update
    that uses them, so the same bits). A task costs about rows × columns × (d + 8) flops, so
    blocks of 3·10⁴ to 10⁵ points make tasks of seconds (10⁹ pairs take about 1 to 3 s of
    one core). With debiasing there are four half-steps (x·y, y·x, x·x, y·y) per ε of the
    schedule plus 12 more, so the graph has about 4·(S + 3)·(B_x + B_y)² tasks for S
    steps. Memory per task: one block of each cloud, the engine's tile, and the block's
    potentials.

    **Equality with the in-memory call.** With each cloud in one chunk, every pass is the
    in-memory pass and ``f``, ``g`` and ``grad`` are **bitwise** the in-memory ones; the
    value and ``marginal_error`` are summed exactly rounded (``math.fsum``) where the
    in-memory call sums in order, so they agree to a few ulps of ⟨a,|f|⟩ + ⟨b,|g|⟩.
    With several chunks the partial log-sum-exps are combined in another order than the
    engine's tile-by-tile accumulation, each half-step differs by a few ulps, and the
    differences are carried through the schedule (the averaged updates damp them): ``f``,
    ``g`` and the value are within **1e-13** of the in-memory ones relative to the size
    of the potentials (max |f|, |g|; measured at most 7e-16 at n = 600 in 4 blocks, p = 1
    and 2, 36 to 68 updates), and ``grad`` within **1e-12** of its largest entry (measured
    at most 4e-14: p = 1's gradient divides by distances). The tests assert these bounds.

    **Small solves run as one task.** When the whole schedule is at most
    ``one_task_pairs`` pair evaluations (default :data:`ONE_TASK_PAIRS` = 10¹⁰, about ten
    seconds of one core: a task of seconds on a worker's pool), the clouds are gathered
    in one task and the in-memory call runs there: every field is then **bitwise** the
    in-memory result. The estimate is (S + 4)·(2nm + n² + m²) pairs for S steps of the
    schedule (2nm without debiasing), before any ``tol`` loop. Split into block pairs such
    a solve would be hundreds of tasks of milliseconds, and Dask costs one to a few
    milliseconds of scheduler and worker time per task and a round trip per graph level
    (measured: n = m = 4000 in two blocks each, 968 tasks, 2.6 times the in-memory time
    on an in-process cluster). ``one_task_pairs=0`` always builds the block-pair graph.

    Eager parts: the call computes the bounding box of both clouds (one pass over the
    blocks: the ε schedule depends on it) and, with ``tol``, runs the schedule and the
    loop at the target ε on the active scheduler (the potentials persisted after each
    step, three scalars fetched per iteration), so that ``n_iter`` and ``converged`` are
    known when it returns, and a non-convergence warning is raised on the client. Without
    ``tol`` the rest is lazy. Coinciding clouds and, for p = 2, ε beyond 1e9·D² (where
    the in-memory call returns the closed-form ε → ∞ limit) are computed by the in-memory
    call on the clouds gathered in one task.

    Returns a :class:`divest.SinkhornDivergence` whose ``value`` and ``marginal_error``
    are 0-d Dask arrays, ``f`` (n,), ``g`` (m,) and ``grad`` (n, d) Dask arrays chunked
    like the inputs' rows, and ``n_iter`` and ``converged`` plain values.
    """
    xa, ya = _two_dask_samples(x, y)
    n, m = xa.shape[0], ya.shape[0]
    if n == 0:
        raise ValueError("x is empty; it needs at least one point")
    if m == 0:
        raise ValueError("y is empty; it needs at least one point")
    d = xa.shape[1]
    if xa.dtype.kind not in "f" or ya.dtype.kind not in "f":
        dt = np.dtype(np.float64)
    else:
        dt = np.result_type(xa.dtype, ya.dtype)
    eps = _ot.check_positive(eps, "eps")
    p = _ot.check_choice(p, "p", (1, 2), "cost |x - y|^p")
    s = _ot.check_positive(scaling, "scaling")
    if not s < 1:
        raise ValueError(f"scaling must be in (0, 1); got {scaling!r}")
    max_iter = _ot._max_iter(max_iter, 0)
    tol = None if tol is None else _ot._tol(tol)
    debias, grad = bool(debias), bool(grad)
    one_task_pairs = _ot.check_nonnegative(one_task_pairs, "one_task_pairs")
    dl = dask.delayed
    xb_all = xa.to_delayed().ravel().tolist()
    yb_all = ya.to_delayed().ravel().tolist()

    def weight_blocks(w, cloud, size, name, of):
        if w is None:
            return None
        wa = _as_dask(w, name)
        if wa.ndim != 1 or wa.shape[0] != size:
            raise ValueError(f"{name} must have shape ({size},), one per {of}; got {wa.shape}")
        return wa.to_delayed().ravel().tolist()

    wa_blocks = weight_blocks(a, xa, n, "a", "point of x")
    wb_blocks = weight_blocks(b, ya, m, "b", "point of y")
    # The bounding box (and the validation of every block) now: the schedule depends on it.
    boxes = dask.compute(
        [dl(_sd_box, pure=True)(bb, "x", d) for bb in xb_all]
        + [dl(_sd_box, pure=True)(bb, "y", d) for bb in yb_all]
    )[0]
    boxes = [bx for bx in boxes if bx is not None]
    lo = np.minimum.reduce([bx[0] for bx in boxes])
    hi = np.maximum.reduce([bx[1] for bx in boxes])
    frame = _ot._cloud_frame(lo, hi, eps, p)
    if frame is None or frame[5]:
        # Coinciding clouds, or the ε → ∞ limit: O(n) work, in memory on one worker.
        return _sd_in_memory(xa, ya, a, b, eps, p, s, debias, max_iter, tol, grad)
    shift, sc, e2, dsc, eps_s, _ = frame
    eps0 = dsc**p * (2.0 if p == 2 else 1.0)
    epss = _ot._core.sinkhorn_schedule(eps0, eps_s, s, p)
    pairs = (len(epss) + 4) * (2 * n * m + ((n * n + m * m) if debias else 0))
    if pairs <= one_task_pairs:
        # A task of seconds at most: one task, the in-memory call (bitwise).
        return _sd_in_memory(xa, ya, a, b, eps, p, s, debias, max_iter, tol, grad)

    def cloud(blocks, chunks, wblocks, size, name, of):
        offs = _offsets(chunks)
        wl = dl(_sd_weights, pure=True, nout=len(chunks))(wblocks, size, name, of, offs)
        keep = [i for i, c in enumerate(chunks) if c > 0]
        cb = [dl(_sd_centre, pure=True)(blocks[i], shift, sc, dt) for i in keep]
        return _SDCloud(cb, [wl[i] for i in keep], chunks), keep

    X, kx = cloud(xb_all, xa.chunks[0], wa_blocks, n, "a", "point of x")
    Y, ky = cloud(yb_all, ya.chunks[0], wb_blocks, m, "b", "point of y")

    def transform(rows, cols, pots_, e, mean=False):
        """Per block of rows: the soft-min state over every block of `cols` (a tree), or
        for a small row block (at most _SD_FUSE_PAIRS pairs against all of `cols`) the
        same computation fused into the one task that uses it."""
        out = []
        total = sum(cols.chunks)
        rows_n = [c for c in rows.chunks if c > 0]
        for rb, rn in zip(rows.blocks, rows_n):
            if rn * total <= _SD_FUSE_PAIRS:
                out.append(_SDFused((p, e, mean, rb, *cols.blocks, *cols.w, *pots_)))
                continue
            parts = [
                dl(_sd_part, pure=True)(rb, cb, cw, pv, p, e, mean)
                for cb, cw, pv in zip(cols.blocks, cols.w, pots_)
            ]
            # The tree down to two states; the last merge is fused into the task
            # that uses them (one task fewer per row block and half-step).
            out.append(_tree_upto(_sd_merge, parts, 2))
        return out

    def use(fn, lead, si):
        if isinstance(si, _SDFused):
            pp, ee, mean, *blocks = si.args
            return dl(_sd_fused, pure=True)(fn, len(lead), pp, ee, mean, *lead, *blocks)
        return dl(fn, pure=True)(*lead, *si)

    def merged(states):
        return [use(_sd_merge_all, (), si) for si in states]

    def avg(v, states, e):
        return [use(_sd_avg, (vi, e), si) for vi, si in zip(v, states)]

    def avgp(v, t):
        return [dl(_sd_avg_pots, pure=True)(vi, ti) for vi, ti in zip(v, t)]

    def pots(states, e):
        return [use(_sd_transform, (e,), si) for si in states]

    def zeros(c):
        return [np.zeros(int(k)) for k in c.chunks if k > 0]

    zx, zy = zeros(X), zeros(Y)
    e0 = epss[0]
    f = pots(transform(X, Y, zy, e0), e0)
    g = pots(transform(Y, X, zx, e0), e0)
    pp = qq = None
    if debias:
        pp = pots(transform(X, X, zx, e0), e0)
        qq = pots(transform(Y, Y, zy, e0), e0)
    for e in epss:
        tf, tg = transform(X, Y, g, e), transform(Y, X, f, e)
        f, g = avg(f, tf, e), avg(g, tg, e)
        if debias:
            tp, tq = transform(X, X, pp, e), transform(Y, Y, qq, e)
            pp, qq = avg(pp, tp, e), avg(qq, tq, e)
    e = eps_s
    f, g = pots(transform(X, Y, g, e), e), pots(transform(Y, X, f, e), e)
    if debias:
        pp, qq = pots(transform(X, X, pp, e), e), pots(transform(Y, Y, qq, e), e)
    n_iter = len(epss) + 2

    def violation(wl, v, t, factor=1.0):
        parts = [dl(_sd_violation, pure=True)(wi, vi, ti, eps_s) for wi, vi, ti in zip(wl, v, t)]
        total = dl(_sd_sum, pure=True)(*parts)
        return total if factor == 1.0 else dl(_mul, pure=True)(total, factor)

    # Check passes: the transforms of the returned potentials (with the gradient's
    # statistics on the x rows, as in memory).
    st_xy = merged(transform(X, Y, g, e, mean=grad))
    tf = pots([[st] for st in st_xy], e)
    tg = pots(transform(Y, X, f, e), e)
    e_xy = dl(_add, pure=True)(violation(X.w, f, tf), violation(Y.w, g, tg))
    e_x = e_y = 0.0
    st_xx = tp = tq = None
    if debias:
        st_xx = merged(transform(X, X, pp, e, mean=grad))
        tp = pots([[st] for st in st_xx], e)
        tq = pots(transform(Y, Y, qq, e), e)
        e_x, e_y = violation(X.w, pp, tp, 2.0), violation(Y.w, qq, tq, 2.0)
    if not grad:
        st_xy = st_xx = None
    converged = None
    if tol is not None:
        (f, g, tf, pp, qq, tp, tq, st_xy, st_xx) = _persist_lists(
            f, g, tf, pp, qq, tp, tq, st_xy, st_xx
        )
        errs = [float(v) for v in dask.compute(e_xy, e_x, e_y)]
        it = 0
        while it < max_iter and not all(v <= tol for v in errs):
            if errs[0] > tol:
                f = tf
                g = pots(transform(Y, X, f, e), e)
                tf = pots(transform(X, Y, g, e), e)
                st_xy = None
                e_xy = violation(X.w, f, tf)
            if errs[1] > tol:
                pp = avgp(pp, tp)
                tp = pots(transform(X, X, pp, e), e)
                st_xx = None
                e_x = violation(X.w, pp, tp, 2.0)
            if errs[2] > tol:
                qq = avgp(qq, tq)
                tq = pots(transform(Y, Y, qq, e), e)
                e_y = violation(Y.w, qq, tq, 2.0)
            (f, g, tf, pp, qq, tp, tq) = _persist_lists(f, g, tf, pp, qq, tp, tq)
            errs = [float(v) for v in dask.compute(e_xy, e_x, e_y)]
            it += 1
        n_iter += it
        converged = all(v <= tol for v in errs)
        if not converged:
            _ot._warn("sinkhorn_divergence", n_iter, max(errs), tol, stacklevel=3)
        if grad and st_xy is None:
            st_xy = merged(transform(X, Y, g, e, mean=True))
        if grad and debias and st_xx is None:
            st_xx = merged(transform(X, X, pp, e, mean=True))
    err = dl(max, pure=True)(e_xy, e_x, e_y)
    pos = dl(_sd_sum, pure=True)(
        *[dl(_sd_dot, pure=True)(wi, vi) for wi, vi in zip(X.w, f)],
        *[dl(_sd_dot, pure=True)(wi, vi) for wi, vi in zip(Y.w, g)],
    )
    if debias:
        neg = dl(_sd_sum, pure=True)(
            *[dl(_sd_dot, pure=True)(wi, vi) for wi, vi in zip(X.w, pp)],
            *[dl(_sd_dot, pure=True)(wi, vi) for wi, vi in zip(Y.w, qq)],
        )
    else:
        neg = 0.0
    value = dl(_sd_value, pure=True)(pos, neg, e2, p, dsc, dt)
    gr = None
    if grad:
        gr = [
            dl(_sd_grad_block, pure=True)(
                xb, wi, sxy, None if st_xx is None else st_xx[i], p, e2, dsc, dt
            )
            for i, (xb, wi, sxy) in enumerate(zip(X.blocks, X.w, st_xy))
        ]
    fo = [
        dl(_sd_pot_block, pure=True)(fi, None if pp is None else pp[i], e2, p, dsc, dt)
        for i, fi in enumerate(f)
    ]
    go = [
        dl(_sd_pot_block, pure=True)(gi, None if qq is None else qq[i], e2, p, dsc, dt)
        for i, gi in enumerate(g)
    ]
    return _ot.SinkhornDivergence(
        value=da.from_delayed(value, shape=(), dtype=np.float64),
        f=_sd_rows(fo, X.chunks, kx, (), dt),
        g=_sd_rows(go, Y.chunks, ky, (), dt),
        grad=None if gr is None else _sd_rows(gr, X.chunks, kx, (d,), dt),
        n_iter=int(n_iter),
        converged=converged,
        marginal_error=da.from_delayed(err, shape=(), dtype=np.float64),
    )


# ----------------------------------------------------------- jdcov (block pairs)


def _jd_units(moms, n, c, exponent, scale):
    """Per-sample binary exponents and means (of the rescaled samples), c' and e: the
    in-memory :func:`divest.jdcov`'s rescaling, from blockwise magnitudes and sums."""
    tops = [max(m[0] for m in mk) for mk in moms]
    ks, c2, e = _dcov._jdcov_exps(tops, c, exponent, scale)
    means = [np.ldexp(np.sum([m[1] for m in mk], axis=0) / n, -k) for mk, k in zip(moms, ks)]
    return ks, means, c2, e


def _jd_block(b, units, k):
    ks, means = units[0], units[1]
    return _energy_shift(b, ks[k], means[k])


def _jd_row_pair(bi, bj, exponent, same):
    core = _dcov._core
    if bi[0].shape[0] == 0 or bj[0].shape[0] == 0:
        return [np.zeros(bi[0].shape[0]) for _ in bi]
    return [core.dcov_cross_row_sums(a, b, exponent, same) for a, b in zip(bi, bj)]


def _jd_add_rows(a, b):
    return [u + v for u, v in zip(a, b)]


def _jd_totals(rows):
    return [math.fsum(float(np.sum(r[k])) for r in rows) for k in range(len(rows[0]))]


def _jd_var_pair(bi, bj, ri, rj, totals, n, exponent, unbiased, same, weight):
    """Σ A_k·A_k over one block pair, per sample (for the scaled statistic)."""
    if bi[0].shape[0] == 0 or bj[0].shape[0] == 0:
        return np.zeros(len(bi))
    core = _dcov._core
    out = [
        core.dcov_block_products(
            a, b, a, b, ri[k], rj[k], ri[k], rj[k], (totals[k], totals[k]), n, exponent,
            unbiased, same,
        )[1]
        for k, (a, b) in enumerate(zip(bi, bj))
    ]  # fmt: skip
    return weight * np.array(out)


def _jd_factors(var_sums, k, n, unbiased):
    if var_sums is None:
        return [1.0] * k
    f = 1.0 / (n * (n - 3.0)) if unbiased else 1.0 / (n * float(n))
    out = []
    for v in np.asarray(var_sums, dtype=np.float64) * f:
        d = math.sqrt(max(float(v), 0.0))
        out.append(1.0 / d if d > 0 else 0.0)
    return out


def _jd_pair(bi, bj, ri, rj, totals, w, units, n, exponent, unbiased, same, weight):
    if bi[0].shape[0] == 0 or bj[0].shape[0] == 0:
        return 0.0
    v = _dcov._core.jdcov_block_sum(
        bi, bj, ri, rj, totals, w, units[2], n, exponent, unbiased, same
    )
    return weight * v


def _jd_finish(total, units, n, unbiased):
    f = 1.0 / (n * (n - 3.0)) if unbiased else 1.0 / (n * float(n))
    return np.float64(_dcov._times_pow2(total * f, units[3]))


def jdcov(*xs, c=1.0, unbiased=True, scale=False, exponent=1.0):
    """Distributed :func:`divest.jdcov` (the statistic) as sums over pairs of row blocks.

    ``xs``: two or more samples, Dask arrays chunked alike along the rows (the same
    observations; NumPy is accepted and takes the first Dask input's chunks). A first
    blockwise pass gives the in-memory call's power-of-two rescaling (the same rule,
    from blockwise magnitudes) and each sample's mean; then, as for :func:`dcov_sqr`,
    each pair of row blocks gives every sample's row sums (the centring offsets), with
    ``scale=True`` each sample's Σ A_k² (its dCov(X_k, X_k) factor), and finally Σ_{m≥2}
    c^(d−m) e_m(Û_1, …, Û_d) over the pair (a new core entry point,
    ``jdcov_block_sum``, the in-memory pass's terms), added by a tree. Within **1e-12
    relative** of the in-memory value where it is not a small difference of large
    terms (independent samples at large n), where the error is about 1e-13 of the
    summed |terms|/n². Tasks: 2 to 3 rounds of B(B + 1)/2 to B² block pairs for B
    blocks; choose blocks so that a pair takes seconds. Memory per task O(block).
    Returns a 0-d Dask array."""
    if len(xs) < 2:
        raise ValueError(f"jdcov needs at least two samples; got {len(xs)}")
    exponent = _dcov._check_exponent(exponent)
    unbiased = _dcov.check_bool(unbiased, "unbiased")
    scale = _dcov.check_bool(scale, "scale")
    c = float(_dcov.check_nonnegative(c, "c"))
    names = [f"xs[{i}]" for i in range(len(xs))]
    arrs, n = _paired_points(list(zip(names, xs)), 4 if unbiased else 1)
    dl = dask.delayed
    raw = [
        [dl(_checked_block, pure=True)(b, nm) for b in a.to_delayed().ravel().tolist()]
        for nm, a in zip(names, arrs)
    ]
    moms = [[dl(_moments, pure=True)(b) for b in bs] for bs in raw]
    units = dl(_jd_units, pure=True)(moms, n, c, exponent, scale)
    blocks = [[dl(_jd_block, pure=True)(b, units, k) for b in bs] for k, bs in enumerate(raw)]
    nb = len(blocks[0])
    per_block = [[blocks[k][i] for k in range(len(xs))] for i in range(nb)]
    rows = [
        _tree(
            _jd_add_rows,
            [
                dl(_jd_row_pair, pure=True)(per_block[i], per_block[j], exponent, i == j)
                for j in range(nb)
            ],
        )
        for i in range(nb)
    ]
    totals = dl(_jd_totals, pure=True)(rows)
    pairs = _block_pairs(per_block, per_block, True)
    var = None
    if scale:
        var = _tree(
            _add,
            [
                dl(_jd_var_pair, pure=True)(
                    per_block[i],
                    per_block[j],
                    rows[i],
                    rows[j],
                    totals,
                    n,
                    exponent,
                    unbiased,
                    i == j,
                    wt,
                )  # fmt: skip
                for i, j, wt in pairs
            ],
        )
    w = dl(_jd_factors, pure=True)(var, len(xs), n, unbiased)
    parts = [
        dl(_jd_pair, pure=True)(
            per_block[i],
            per_block[j],
            rows[i],
            rows[j],
            totals,
            w,
            units,
            n,
            exponent,
            unbiased,
            i == j,
            wt,
        )  # fmt: skip
        for i, j, wt in pairs
    ]
    out = dl(_jd_finish, pure=True)(_tree(_add, parts), units, n, unbiased)
    return da.from_delayed(out, shape=(), dtype=np.float64)


# ------------------------------------------------------- DPP and volume sampling


def _samples_per_task(per_sample_work: float, total: int) -> int:
    """Samples per task for about 2 seconds of one core (10^9 operations a second)."""
    per = int(2e9 // max(1.0, per_sample_work))
    return max(1, min(total, per))


def _check_samples_per_task(v):
    if v is None:
        return None
    return _dcov.check_int(v, "samples_per_task", 1)


def _dpp_stack(parts):
    return np.concatenate(parts, axis=0)


def _index_blocks(parts, ranges, width, one):
    """Dask array (n_samples, width) int64 from the Delayed blocks of each range."""
    blocks = [
        da.from_delayed(pt, shape=(c, width), dtype=np.int64) for pt, (_, c) in zip(parts, ranges)
    ]
    out = da.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0]
    return out[0] if one else out


def _proj_prep(u):
    u = _dpp._matrix(_al(u), "U")
    if u.shape[1] > u.shape[0]:
        _dpp._check_orthonormal(u, "U")
    return u


def _proj_range(u, first, count, sd, method):
    out, err = _dpp._core.dpp_sample_projection(
        u, count, sd, method, _dpp.ORTHONORMAL_TOL, first=first
    )
    _dpp._check_orthonormal(u, "U", err)
    return out


def _shape2(x, name):
    shape = tuple(getattr(x, "shape", None) or np.shape(x))
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D array; got shape {shape}")
    return shape


def sample_projection(U, n_samples=None, method="auto", rng=None, *, samples_per_task=None):
    """Distributed :func:`divest.dpp.sample_projection`, split by ranges of sample indices.

    ``U`` (N, m), NumPy or Dask, is assembled once and sent once to each worker. The seed
    is drawn from ``rng`` now, as the in-memory call draws it; sample s always draws from
    the stream (seed, s) (the core samplers take the index of their first sample), so each
    task of ``samples_per_task`` samples (default: about two seconds of one core, from
    N·m² operations per sample) draws exactly the in-memory samples: ``.compute()`` is
    **bitwise** the in-memory result. Returns a Dask int64 array (n_samples, m), or (m,)
    for ``n_samples=None``. A U that is not orthonormal raises when computed.
    """
    n, m = _shape2(U, "U")
    method = _dpp._check_method(method)
    ns = _dpp._n_samples(n_samples)
    per = _check_samples_per_task(samples_per_task) or _samples_per_task(float(n) * m * m, ns)
    sd = _draw_seed(rng)
    u = dask.delayed(_proj_prep, pure=True)(_materialise(U, "U"))
    ranges = _ranges(ns, per)
    parts = [dask.delayed(_proj_range, pure=True)(u, a, c, sd, method) for a, c in ranges]
    return _index_blocks(parts, ranges, m, n_samples is None)


def _spectral_range(model, first, count, sd, method):
    flat, offsets = _dpp._core.dpp_sample_spectral(
        _al(model.eigenvectors), _al(model._probs), count, sd, method, first=first
    )
    return [flat[offsets[i] : offsets[i + 1]] for i in range(count)]


def _chain_lists(*parts):
    return [s for p in parts for s in p]


def _first(x):
    return x[0]


def dpp_sample(dpp, n_samples=None, *, method="auto", rng=None, samples_per_task=None):
    """Distributed :meth:`divest.dpp.DPP.sample` of a fitted :class:`divest.dpp.DPP`
    (its eigendecomposition is sent once to each worker), split by ranges of sample
    indices like :func:`sample_projection`: **bitwise** the in-memory samples. Returns a
    Delayed list of ``n_samples`` int64 arrays (their sizes vary), or of one array for
    ``n_samples=None``."""
    if not isinstance(dpp, _dpp.DPP):
        raise TypeError(f"dpp must be a divest.dpp.DPP; got {type(dpp).__name__}")
    method = _dpp._check_method(method)
    ns = _dpp._n_samples(n_samples)
    size = dpp.expected_size() + 1.0
    per = _check_samples_per_task(samples_per_task) or _samples_per_task(
        dpp.N * size * size + dpp.N, ns
    )
    sd = _draw_seed(rng)
    ref = _broadcast_value(dpp, "divest-dpp")
    parts = [
        dask.delayed(_spectral_range, pure=True)(ref, a, c, sd, method) for a, c in _ranges(ns, per)
    ]
    out = dask.delayed(_chain_lists, pure=True)(*parts)
    return dask.delayed(_first, pure=True)(out) if n_samples is None else out


def _k_range(model, k, first, count, sd, method):
    ll, table = model._esp(k)
    return _dpp._core.dpp_sample_k(
        _al(model.eigenvectors), _al(ll), _al(table), k, count, sd, method, first=first
    )


def dpp_sample_k(dpp, k, n_samples=None, *, method="auto", rng=None, samples_per_task=None):
    """Distributed :meth:`divest.dpp.DPP.sample_k` (k-DPP samples), split by ranges of
    sample indices like :func:`sample_projection`: **bitwise** the in-memory samples.
    Each task computes the (k+1)×(N+1) table once. Returns a Dask int64 array
    (n_samples, k), or (k,) for ``n_samples=None``."""
    if not isinstance(dpp, _dpp.DPP):
        raise TypeError(f"dpp must be a divest.dpp.DPP; got {type(dpp).__name__}")
    k = _dpp.check_count(k, "k")
    method = _dpp._check_method(method)
    if k > dpp.rank:
        raise ValueError(
            f"k = {k} exceeds the rank {dpp.rank} of the kernel; a k-DPP needs k <= {dpp.rank}"
        )
    ns = _dpp._n_samples(n_samples)
    dpp._log_lambda_l()  # a K with eigenvalue 1 raises now, as in memory
    per = _check_samples_per_task(samples_per_task) or _samples_per_task(
        dpp.N * (k + 1.0) ** 2 + dpp.N, ns
    )
    sd = _draw_seed(rng)
    ref = _broadcast_value(dpp, "divest-dpp")
    ranges = _ranges(ns, per)
    parts = [dask.delayed(_k_range, pure=True)(ref, k, a, c, sd, method) for a, c in ranges]
    return _index_blocks(parts, ranges, k, n_samples is None)


def _volume_prep(x, k, p, rescaled):
    x, k = _dpp._volume_args(_al(x), k, rescaled)
    if rescaled:
        return _dpp._rescaled_basis(x, p)
    return _dpp._orthonormal_basis(x, "X"), None


def _volume_range(prep, k, first, count, sd):
    q, pw = prep
    return _dpp._core.dpp_volume_sample(_al(q), k, count, sd, pw, first=first)


def _volume(X, k, rng, p, n_samples, samples_per_task, rescaled):
    n, d = _shape2(X, "X")
    k = _dpp.check_count(k, "k", minimum=1)
    if k < d:
        raise ValueError(f"k must be at least d = {d}, the number of columns of X; got k = {k}")
    if not rescaled and k > n:
        raise ValueError(f"k must be at most N = {n}, the number of rows of X; got k = {k}")
    ns = _dpp._n_samples(n_samples)
    per = _check_samples_per_task(samples_per_task) or _samples_per_task(
        float(n) * d * (d + 1) + k, ns
    )
    sd = _draw_seed(rng)
    pd = None if p is None else _materialise(p, "p")
    prep = dask.delayed(_volume_prep, pure=True)(_materialise(X, "X"), k, pd, rescaled)
    ranges = _ranges(ns, per)
    parts = [dask.delayed(_volume_range, pure=True)(prep, k, a, c, sd) for a, c in ranges]
    return _index_blocks(parts, ranges, k, n_samples is None)


def volume_sample(X, k, rng=None, *, n_samples=None, samples_per_task=None):
    """Distributed :func:`divest.dpp.volume_sample`: the orthonormal basis of ``X`` (NumPy
    or Dask, assembled once) is computed in one task and sent once to each worker, and the
    samples are split by ranges of sample indices like :func:`sample_projection`:
    **bitwise** the in-memory samples. Returns a Dask int64 array (n_samples, k), or (k,)
    for ``n_samples=None``."""
    return _volume(X, k, rng, None, n_samples, samples_per_task, False)


def volume_rescaled_sample(X, k, rng=None, *, p=None, n_samples=None, samples_per_task=None):
    """Distributed :func:`divest.dpp.volume_rescaled_sample`, as :func:`volume_sample`
    (the base measure ``p`` normalised in the basis task): **bitwise** the in-memory
    samples. Returns a Dask int64 array (n_samples, k), or (k,) for ``n_samples=None``."""
    return _volume(X, k, rng, p, n_samples, samples_per_task, True)


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
