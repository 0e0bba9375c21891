"""divest's divergences and statistics as differentiable PyTorch losses.

Import it explicitly (``import divest.torch``); ``import divest`` never imports torch. Each
function takes and returns torch tensors, works inside autograd and under
``torch.compile`` (every kernel is a ``torch.library.custom_op`` with an autograd formula
and a fake implementation, so the compiled graph has no breaks), and has the name,
arguments and meaning of its NumPy counterpart in :mod:`divest`.

Inputs and devices
------------------
* CPU tensors of float32 or float64 go to divest's Rust kernels without a copy when they
  are contiguous (``.numpy()`` on the detached tensor shares its memory); other layouts
  are copied once. Results keep the input dtype (float32 and float64 mixed give float64).
* float16 and bfloat16 inputs raise a ``TypeError`` (cast with ``.float()``): the kernels
  work in float32 or float64 and a silent cast would hide the precision the caller chose.
* CUDA (or any non-CPU) tensors raise a ``ValueError`` naming ``.cpu()``: divest has no
  GPU path yet, and a silent device-to-host copy would hide the cost.
* Gradients of gradients (double backward) raise a ``RuntimeError``.
* ``torch.func``: ``grad``, ``grad_and_value``, ``vjp`` and ``jacrev`` work (same values
  and gradients as eager autograd; ``jacrev`` of a vector output runs the backward once
  per output). ``torch.vmap`` over a divest function raises a ``RuntimeError`` (no
  batching rule: loop, or use the function's own batch of rows / ``sinkhorn_batch``), and
  forward mode (``jvp``, ``jacfwd``, ``hessian``) raises torch's error asking for a jvp
  formula, which divest does not define.
* Kernels run on divest's thread pool with the GIL released, like the NumPy API.
"""

import math
import numbers
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from . import _core
from . import divergence as _div

__all__ = [
    "kl",
    "js",
    "js_distance",
    "hellinger",
    "tv",
    "chi2",
    "renyi",
    "f_divergence",
]

_FLOATS = (torch.float32, torch.float64)
_REDUCTIONS = ("none", "sum", "mean", "batchmean")


# ----------------------------------------------------------------------------- helpers


def _tensor(t, name: str) -> Tensor:
    """Checks that ``t`` is a CPU float32/float64 tensor (TypeError/ValueError naming it)."""
    if not isinstance(t, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor; got {type(t).__name__} "
            f"(use the NumPy functions of divest for arrays, or torch.as_tensor({name}))"
        )
    if t.device.type != "cpu":
        raise ValueError(
            f"{name} is on device {t.device}; divest.torch runs on the CPU and has no GPU "
            f"path yet: pass {name}.cpu() (divest never copies between devices silently)"
        )
    if t.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(
            f"{name} has dtype {t.dtype}; divest.torch computes in float32 or float64: "
            f"pass {name}.float()"
        )
    if t.dtype not in _FLOATS:
        raise TypeError(
            f"{name} must be a float32 or float64 tensor; got {t.dtype} (pass {name}.double())"
        )
    return t


def _np(t: Tensor) -> np.ndarray:
    """The tensor's values as a C-contiguous NumPy array (no copy when contiguous)."""
    return t.detach().contiguous().numpy()


def _host_constant(t: Tensor) -> np.ndarray:
    """The values of ``t`` as a NumPy array, for wrapper-level constants (a bandwidth rule
    evaluated on the data). Inside torch.func transforms the wrapper sees functorch's
    wrapped tensors, which have no storage for ``.numpy()``; their values are then read
    with ``tolist`` (one copy; vmap, which would need per-entry values, raises)."""
    t = t.detach()
    try:
        return t.contiguous().numpy()
    except RuntimeError:
        return np.array(t.tolist(), dtype=np.float64)


def _dtype(*ts: Tensor) -> torch.dtype:
    return torch.float32 if all(t.dtype == torch.float32 for t in ts) else torch.float64


def _no_double_backward(name: str):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"divest.torch.{name}: gradients of gradients (double backward, "
            "create_graph=True) are not implemented; differentiate once, or write the "
            "loss in plain torch operations"
        )

    return backward


# Pure-Python checks for the wrappers: torch.compile traces the wrappers, and NumPy calls
# on Python numbers (np.isfinite in divest's NumPy-side checks) would become graph breaks.


def _real(v, name: str, what: str) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.floating)):
        raise TypeError(f"{name} must be {what}; got {type(v).__name__}")
    return float(v)


def _log_base(base) -> float:
    if base is None:
        return 1.0
    b = _real(base, "base", "a number greater than 1")
    if not (math.isfinite(b) and b > 1):
        raise ValueError(
            f"base must be a finite number greater than 1 (2 for bits, 10 for bans); got {base!r}"
        )
    return math.log(b)


def _alpha(alpha, name: str = "alpha") -> float:
    a = _real(alpha, name, "a real number")
    if math.isnan(a):
        raise ValueError(f"{name} must not be NaN")
    return a


def _nonneg(v, name: str) -> float:
    x = _real(v, name, "a non-negative number")
    if not (math.isfinite(x) and x >= 0):
        raise ValueError(f"{name} must be a finite number >= 0; got {v!r}")
    return x


_SUM_TOL = {torch.float32: 1e-4, torch.float64: 1e-6}


# torch.func (issue 12). torch (2.15) implements a custom op's ``register_autograd`` with
# an autograd.Function whose forward takes ``ctx``, and torch.func's transforms refuse
# that form even though our formulas use ``setup_context``. So each eager call goes
# through an autograd.Function of the transformable form (forward without ctx,
# ``setup_context``, ``backward``) that calls the custom op and reuses the op's own setup
# and backward: the same values and gradients as before, and torch.func.grad, vjp and
# jacrev work. The backward ops get the same wrapper (their backward raises the double
# backward error) and a vmap rule that loops over the batch, which jacrev needs (it vmaps
# the backward over the cotangents). torch.vmap over a forward raises a clear error, and
# forward mode (jvp, jacfwd, hessian) raises torch's own (no jvp formula). Under
# torch.compile the custom op is called directly, as before (Dynamo does not trace a
# custom op inside a Function's forward, and the compiled graph does not need one).


def _vmap_refused(label: str):
    def vmap(info, in_dims, *args):
        raise RuntimeError(
            f"divest.torch ({label}) does not support torch.vmap over its inputs (the Rust "
            "kernel has no batching rule): loop over the batch in Python, or use the "
            "function's own batching (the discrete divergences take a batch of rows, "
            "sinkhorn_batch a batch of problems); torch.func.grad, vjp and jacrev work"
        )

    return vmap


def _no_setup(ctx, inputs, output):
    pass


def _vmap_loop(op):
    # The backward ops' vmap rule (reached by jacrev, which vmaps the backward pass over
    # the cotangents): one call per batch entry, stacked.
    def vmap(info, in_dims, *args):
        outs = []
        for i in range(info.batch_size):
            one = [a if d is None else a.select(d, i) for a, d in zip(args, in_dims)]
            outs.append(op(*one))
        res = tuple(torch.stack(col) for col in zip(*outs))
        return res, (0,) * len(res)

    return vmap


def _transformable(op, setup, backward, label: str, batchable: bool = False):
    """A callable that runs custom op ``op`` through an autograd.Function that torch.func
    can transform (``batchable``: torch.vmap loops over the batch, else it raises an error
    naming ``label``, the public functions that use the op)."""

    def forward(*args):
        return op(*args)

    fn = type(
        "_" + op._name.replace("::", "_") + "_function",
        (torch.autograd.Function,),
        {
            "forward": staticmethod(forward),
            "setup_context": staticmethod(setup),
            "backward": staticmethod(backward),
            "vmap": staticmethod(_vmap_loop(op) if batchable else _vmap_refused(label)),
        },
    )

    def call(*args):
        # torch.compile traces the custom op itself (the Function adds nothing there, and
        # Dynamo cannot trace a custom op called from a Function's forward).
        if torch.compiler.is_compiling():
            return op(*args)
        return fn.apply(*args)

    return call


# ---------------------------------------------------------------- discrete divergences


@torch.library.custom_op("divest::divergence_rows", mutates_args=())
def _div_rows(
    p: Tensor,
    q: Tensor,
    measure: str,
    param: float,
    kind: str,
    normalize: bool,
    tol: float,
    scale: float,
    sqrt: bool,
) -> Tensor:
    out = _core.divergence_rows(
        _np(p), _np(q), None, None, p.shape[0], measure, param, kind, normalize, tol
    )
    if scale != 1.0:
        out *= scale
    if sqrt:
        np.sqrt(out, out=out)
    return torch.from_numpy(out).to(p.dtype)


@_div_rows.register_fake
def _(p, q, measure, param, kind, normalize, tol, scale, sqrt):
    return p.new_empty(p.shape[0])


@torch.library.custom_op("divest::divergence_rows_grad", mutates_args=())
def _div_rows_grad(
    p: Tensor,
    q: Tensor,
    coef: Tensor,
    measure: str,
    param: float,
    kind: str,
    normalize: bool,
    tol: float,
    want_p: bool,
    want_q: bool,
) -> tuple[Tensor, Tensor]:
    gp, gq = _core.divergence_rows_grad(
        _np(p),
        _np(q),
        _np(coef),
        measure,
        param,
        kind,
        normalize,
        tol,
        want_p,
        want_q,
    )
    gp = torch.from_numpy(gp) if want_p else p.new_zeros(0)
    gq = torch.from_numpy(gq) if want_q else q.new_zeros(0)
    return gp, gq


@_div_rows_grad.register_fake
def _(p, q, coef, measure, param, kind, normalize, tol, want_p, want_q):
    return (
        torch.empty_like(p) if want_p else p.new_empty(0),
        torch.empty_like(q) if want_q else q.new_empty(0),
    )


def _div_setup(ctx, inputs, output):
    p, q, measure, param, kind, normalize, tol, scale, sqrt = inputs
    ctx.save_for_backward(p, q, output)
    ctx.args = (measure, param, kind, normalize, tol, scale, sqrt)


def _div_backward(ctx, grad):
    p, q, out = ctx.saved_tensors
    measure, param, kind, normalize, tol, scale, sqrt = ctx.args
    want_p, want_q = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (want_p or want_q):
        return (None,) * 9
    g = grad.to(torch.float64) * scale
    if sqrt:
        # d√D = dD / (2√D); at D = 0 (the minimum) the gradient of D itself is 0.
        o = out.to(torch.float64)
        g = torch.where(o > 0, g / (2.0 * o), torch.zeros_like(g))
    g = torch.where(grad == 0, torch.zeros_like(g), g)
    gp, gq = _div_rows_grad_fn(
        p, q, g.contiguous(), measure, param, kind, normalize, tol, want_p, want_q
    )
    return (gp if want_p else None, gq if want_q else None) + (None,) * 7


_div_rows.register_autograd(_div_backward, setup_context=_div_setup)
_div_rows_fn = _transformable(
    _div_rows,
    _div_setup,
    _div_backward,
    "kl, js, js_distance, hellinger, tv, chi2, renyi, f_divergence",
)
_div_rows_grad.register_autograd(
    _no_double_backward("divergence backward"),
    setup_context=lambda ctx, inputs, output: None,
)
_div_rows_grad_fn = _transformable(
    _div_rows_grad,
    _no_setup,
    _no_double_backward("divergence backward"),
    "divergence backward",
    True,
)


def _reduce(v: Tensor, reduction, k: int, name: str = "reduction") -> Tensor:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name} must be one of {_REDUCTIONS}; got {reduction!r}")
    if reduction == "none":
        return v
    if reduction == "sum":
        return v.sum()
    if reduction == "batchmean":
        return v.sum() / max(v.numel(), 1)
    return v.sum() / max(v.numel() * k, 1)


def _discrete(
    p,
    q,
    measure: str,
    param: float,
    axis,
    keepdims,
    base,
    from_logits,
    log_input,
    normalize,
    temperature,
    reduction,
    sqrt=False,
):
    p = _tensor(p, "p")
    q = _tensor(q, "q")
    kind = _div._input_kind(from_logits, log_input)
    if base is not None and measure not in _div._LOGARITHMIC:
        raise ValueError(f"base applies to logarithmic divergences only; {measure!r} has no base")
    lb = _log_base(base)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be a bool; got {type(normalize).__name__}")
    dt = _dtype(p, q)
    p, q = p.to(dt), q.to(dt)
    if p.ndim == 0 or q.ndim == 0:
        raise ValueError("p and q must be at least 1-D: distributions along `axis`")
    if temperature is not None:
        if not from_logits:
            raise ValueError("temperature applies to logits only: pass from_logits=True")
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
            raise TypeError(
                f"temperature must be a positive number; got {type(temperature).__name__}"
            )
        t = float(temperature)
        if not (t > 0 and math.isfinite(t)):
            raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")
        if t != 1.0:
            p, q = p / t, q / t
    nd = max(p.ndim, q.ndim)
    ax = _div._check_axis(axis, nd)
    p = p.reshape((1,) * (nd - p.ndim) + tuple(p.shape))
    q = q.reshape((1,) * (nd - q.ndim) + tuple(q.shape))
    k = p.shape[ax]
    if q.shape[ax] != k:
        raise ValueError(
            f"p and q must have the same number of categories along axis {axis}; "
            f"got {k} and {q.shape[ax]}"
        )
    if k == 0:
        raise ValueError("p and q have no categories along axis; distributions need at least one")
    pm, qm = p.movedim(ax, -1), q.movedim(ax, -1)
    try:
        batch = tuple(torch.broadcast_shapes(pm.shape[:-1], qm.shape[:-1]))
    except RuntimeError:
        raise ValueError(
            f"p and q do not broadcast: batch shapes {tuple(pm.shape[:-1])} and "
            f"{tuple(qm.shape[:-1])} (categories along axis {axis})"
        ) from None
    pm = pm.expand(batch + (k,)).reshape(-1, k).contiguous()
    qm = qm.expand(batch + (k,)).reshape(-1, k).contiguous()
    tol = _SUM_TOL[dt]
    v = _div_rows_fn(pm, qm, measure, float(param), kind, bool(normalize), tol, 1.0 / lb, sqrt)
    v = v.reshape(batch)
    if keepdims:
        v = v.unsqueeze(ax)
    return _reduce(v, reduction, k)


_TORCH_DOC = """
    Torch arguments (in addition to those of the NumPy function)
    ----------------------------------------------------------
    temperature : float or None
        With ``from_logits=True``: divide both logits by it first (distillation's T; the
        customary T² factor is left to the caller).
    reduction : {"none", "sum", "mean", "batchmean"}
        torch's convention: "none" returns one value per pair of rows (the batch shape),
        "sum" their sum, "batchmean" their mean (the true divergence per row, as torch's
        ``kl_div(..., reduction="batchmean")`` for 2-D inputs), "mean" the sum divided by
        the number of *elements* (rows × categories, as torch's ``kl_div``).

    Gradients flow to ``p`` and ``q`` (both), computed in Rust from the rows as the
    forward pass read them: the gradient of D(p̂, q̂) where p̂ is the softmax of logits or
    log-probabilities, or p / Σp for probabilities (so it is orthogonal to a change of
    scale of the row, or of a constant added to logits). Identical inputs give exactly 0
    and exactly zero gradients (square roots included); a zero probability contributes no
    NaN: from logits every gradient is finite wherever the value is, and with
    probabilities only the derivative with respect to an entry that is exactly 0 can be
    infinite (-inf for KL's p ln p and Hellinger's √p, whose slope at 0 is unbounded).
    Memory: the value per row; the backward pass allocates the two gradients and
    recomputes the row normalisation (no input-sized temporaries besides).
"""


def _wrap_doc(fn, np_fn):
    fn.__doc__ = (np_fn.__doc__ or "").split("\n    Parameters")[0].rstrip() + (
        "\n\n    Same arguments and meaning as :func:`divest."
        + np_fn.__name__
        + "`; see there."
        + _TORCH_DOC
    )
    return fn


def kl(
    p,
    q,
    axis=-1,
    keepdims=False,
    base=None,
    *,
    from_logits=False,
    log_input=False,
    normalize=False,
    temperature=None,
    reduction="none",
):
    return _discrete(
        p, q, "kl", 0.0, axis, keepdims, base, from_logits, log_input, normalize,
        temperature, reduction,
    )  # fmt: skip


def js(
    p,
    q,
    axis=-1,
    keepdims=False,
    base=None,
    *,
    from_logits=False,
    log_input=False,
    normalize=False,
    temperature=None,
    reduction="none",
):
    return _discrete(
        p, q, "js", 0.0, axis, keepdims, base, from_logits, log_input, normalize,
        temperature, reduction,
    )  # fmt: skip


def js_distance(
    p,
    q,
    axis=-1,
    keepdims=False,
    base=None,
    *,
    from_logits=False,
    log_input=False,
    normalize=False,
    temperature=None,
    reduction="none",
):
    return _discrete(
        p, q, "js", 0.0, axis, keepdims, base, from_logits, log_input, normalize,
        temperature, reduction, sqrt=True,
    )  # fmt: skip


def hellinger(
    p,
    q,
    axis=-1,
    keepdims=False,
    base=None,
    *,
    from_logits=False,
    log_input=False,
    normalize=False,
    temperature=None,
    reduction="none",
):
    return _discrete(
        p, q, "hellinger", 0.0, axis, keepdims, base, from_logits, log_input, normalize,
        temperature, reduction, sqrt=True,
    )  # fmt: skip


def tv(
    p,
    q,
    axis=-1,
    keepdims=False,
    base=None,
    *,
    from_logits=False,
    log_input=False,
    normalize=False,
    temperature=None,
    reduction="none",
):
    return _discrete(
        p, q, "tv", 0.0, axis, keepdims, base, from_logits, log_input, normalize,
        temperature, reduction,
    )  # fmt: skip


def chi2(
    p,
    q,
    axis=-1,
    keepdims=False,
    base=None,
    *,
    from_logits=False,
    log_input=False,
    normalize=False,
    temperature=None,
    reduction="none",
):
    return _discrete(
        p, q, "chi2", 0.0, axis, keepdims, base, from_logits, log_input, normalize,
        temperature, reduction,
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
    temperature=None,
    reduction="none",
):
    a = _alpha(alpha)
    if a < 0:
        raise ValueError(f"alpha must be >= 0 for the Rényi divergence; got {alpha!r}")
    return _discrete(
        p, q, "renyi", a, axis, keepdims, base, from_logits, log_input, normalize,
        temperature, reduction,
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
    temperature=None,
    reduction="none",
):
    _div.check_choice(f, "f", _div.F_DIVERGENCES)
    param = 0.0
    if f == "alpha":
        if alpha is None:
            raise ValueError("f='alpha' needs the order: pass alpha=...")
        param = _alpha(alpha)
        if not math.isfinite(param):
            raise ValueError(f"alpha must be finite; got {alpha!r}")
    elif alpha is not None:
        raise ValueError(f"alpha applies to f='alpha' only; got f={f!r}")
    return _discrete(
        p, q, f, param, axis, keepdims, base, from_logits, log_input, normalize,
        temperature, reduction,
    )  # fmt: skip


for _fn, _np_fn in (
    (kl, _div.kl),
    (js, _div.js),
    (js_distance, _div.js_distance),
    (hellinger, _div.hellinger),
    (tv, _div.tv),
    (chi2, _div.chi2),
    (renyi, _div.renyi),
    (f_divergence, _div.f_divergence),
):
    _wrap_doc(_fn, _np_fn)
del _fn, _np_fn


# ------------------------------------------------------------------ optimal transport


@torch.library.custom_op("divest::sinkhorn_divergence", mutates_args=())
def _sdiv(
    x: Tensor,
    y: Tensor,
    a: Tensor,
    b: Tensor,
    eps: float,
    p: int,
    scaling: float,
    debias: bool,
    max_iter: int,
    tol: Optional[float],
    grad_y: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    from .ot import _sinkhorn_divergence

    r, gy = _sinkhorn_divergence(
        _np(x), _np(y), _np(a), _np(b), eps, p, scaling, debias, max_iter, tol, True, grad_y
    )
    dt = x.dtype
    return (
        torch.tensor(r.value, dtype=dt),
        torch.from_numpy(np.asarray(r.f)).to(dt),
        torch.from_numpy(np.asarray(r.g)).to(dt),
        torch.from_numpy(np.asarray(r.grad)).to(dt),
        torch.from_numpy(gy).to(dt) if grad_y else y.new_zeros(0),
        torch.tensor(r.n_iter, dtype=torch.int64),
        torch.tensor(r.marginal_error, dtype=torch.float64),
    )


@_sdiv.register_fake
def _(x, y, a, b, eps, p, scaling, debias, max_iter, tol, grad_y):
    return (
        x.new_empty(()),
        x.new_empty(x.shape[0]),
        x.new_empty(y.shape[0]),
        torch.empty_like(x),
        torch.empty_like(y) if grad_y else y.new_empty(0),
        x.new_empty((), dtype=torch.int64),
        x.new_empty((), dtype=torch.float64),
    )


def _sdiv_setup(ctx, inputs, output):
    x, y, a, b = inputs[:4]
    _, f, g, gx, gy, _, _ = output
    ctx.save_for_backward(a, b, f, g, gx, gy)


def _weight_grad(w: Tensor, pot: Tensor, go: Tensor) -> Tensor:
    # The value depends on w / Σw: project the potential (the gradient for normalised
    # weights) and divide by the mass.
    wn = w / w.sum()
    return go * (pot - (wn * pot).sum()) / w.sum()


def _sdiv_backward(ctx, go, *_):
    a, b, f, g, gx, gy = ctx.saved_tensors
    need = ctx.needs_input_grad
    return (
        go * gx if need[0] else None,
        go * gy if need[1] else None,
        _weight_grad(a, f, go) if need[2] else None,
        _weight_grad(b, g, go) if need[3] else None,
    ) + (None,) * 7


_sdiv.register_autograd(_sdiv_backward, setup_context=_sdiv_setup)
_sdiv_fn = _transformable(_sdiv, _sdiv_setup, _sdiv_backward, "sinkhorn_divergence")


def _points(t, name: str, d: Optional[int] = None) -> Tensor:
    t = _tensor(t, name)
    if t.ndim == 1:
        t = t.unsqueeze(1)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) tensor; got shape {tuple(t.shape)}")
    if d is not None and t.shape[1] != d:
        raise ValueError(
            f"{name} must have the same dimension as the first sample ({d}); got {t.shape[1]}"
        )
    return t


def _weights_t(w, n: int, name: str, dtype) -> Tensor:
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64)
    w = _tensor(w, name)
    if w.shape != (n,):
        raise ValueError(
            f"{name} must have shape ({n},), one weight per point; got {tuple(w.shape)}"
        )
    return w.to(torch.float64)


def sinkhorn_divergence(
    x, y, a=None, b=None, *, eps, p=2, scaling=0.9, debias=True, max_iter=1000, tol=None
):
    """Debiased Sinkhorn divergence between weighted point clouds, differentiable with
    respect to ``x``, ``y``, ``a`` and ``b``.

    Same arguments and meaning as :func:`divest.sinkhorn_divergence` (which see: the ε
    schedule, GeomLoss's conventions ``eps = 2·blur²`` for p = 2 and the value halved),
    and a :class:`divest.SinkhornDivergence` of tensors: ``value`` (0-d, differentiable),
    ``f``, ``g`` (the debiased potentials), ``grad`` (∇ₓ value, detached), ``n_iter``,
    ``converged`` and ``marginal_error``.

    Gradients: with respect to the points, the Rust solver's (from the potentials at the
    last iterate: the conditional means of ∇C under the plans, the y side from the
    statistics of the y-row check passes, so both come with the forward pass); with
    respect to the weights, the potentials (``f`` for ``a``, ``g`` for ``b``), projected
    for the normalisation of the weights (``a`` and ``b`` are divided by their sums).
    These are exact at convergence of the three problems (envelope theorem); with
    ``tol=None`` the schedule's last iterate is used, as GeomLoss does. Memory:
    O((n + m)·d), no n×m matrix, forward or backward.
    """
    x = _points(x, "x")
    y = _points(y, "y", x.shape[1])
    dt = _dtype(x, y)
    a_t = _weights_t(a, x.shape[0], "a", dt)
    b_t = _weights_t(b, y.shape[0], "b", dt)
    xs, ys = x.to(dt), y.to(dt)
    tol_v = None if tol is None else float(tol)
    v, f, g, gx, gy, n_iter, err = _sdiv_fn(
        xs, ys, a_t, b_t, float(eps), int(p), float(scaling), bool(debias), int(max_iter), tol_v,
        bool(ys.requires_grad),
    )  # fmt: skip
    from .ot import SinkhornDivergence

    return SinkhornDivergence(
        value=v,
        f=f,
        g=g,
        grad=gx.detach(),
        n_iter=n_iter,
        converged=None if tol is None else bool(err.item() <= tol_v),
        marginal_error=err,
    )


@torch.library.custom_op("divest::sinkhorn_dense", mutates_args=())
def _sk_dense(
    a: Tensor,
    b: Tensor,
    cost: Tensor,
    reg: float,
    max_iter: int,
    tol: float,
    method: str,
    scaling: Optional[float],
    omega: Optional[float],
    batch: bool,
    want_plan: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    from . import ot

    if batch:
        r = ot.sinkhorn_batch(
            _np(a), _np(b), _np(cost), reg, max_iter=max_iter, tol=tol, method=method,
            return_plan=want_plan, omega=omega, scaling=scaling,
        )  # fmt: skip
    else:
        r = ot.sinkhorn(
            _np(a), _np(b), _np(cost), reg, max_iter=max_iter, tol=tol, method=method,
            return_plan=want_plan, omega=omega, scaling=scaling,
        )  # fmt: skip
    dt = cost.dtype
    plan = torch.from_numpy(np.asarray(r.plan)).to(dt) if want_plan else cost.new_zeros(0)
    return (
        plan,
        torch.as_tensor(np.asarray(r.cost, dtype=np.float64)).to(dt),
        torch.as_tensor(np.asarray(r.linear_cost, dtype=np.float64)).to(dt),
        torch.from_numpy(np.array(r.f, dtype=np.float64)),
        torch.from_numpy(np.array(r.g, dtype=np.float64)),
        torch.as_tensor(np.asarray(r.n_iter, dtype=np.int64)),
        torch.as_tensor(np.asarray(r.converged, dtype=bool)),
        torch.as_tensor(np.asarray(r.marginal_error, dtype=np.float64)),
    )


@_sk_dense.register_fake
def _(a, b, cost, reg, max_iter, tol, method, scaling, omega, batch, want_plan):
    lead = (a.shape[0],) if batch else ()
    n, m = a.shape[-1], b.shape[-1]
    return (
        cost.new_empty(lead + (n, m)) if want_plan else cost.new_empty(0),
        cost.new_empty(lead),
        cost.new_empty(lead),
        a.new_empty(lead + (n,), dtype=torch.float64),
        a.new_empty(lead + (m,), dtype=torch.float64),
        a.new_empty(lead, dtype=torch.int64),
        a.new_empty(lead, dtype=torch.bool),
        a.new_empty(lead, dtype=torch.float64),
    )


def _sk_setup(ctx, inputs, output):
    a, b, cost, reg = inputs[:4]
    batch = inputs[9]
    plan, _, _, f, g = output[:5]
    ctx.save_for_backward(a, b, plan, f, g)
    ctx.reg = reg
    ctx.batch = batch
    ctx.cost_shape = tuple(cost.shape)
    ctx.cost_dtype = cost.dtype


def _sk_backward(ctx, _gplan, g_cost, g_lin, *_):
    a, b, plan, f, g = ctx.saved_tensors
    need = ctx.needs_input_grad
    go = (g_cost + g_lin).to(torch.float64)  # () or (B,)
    # Envelope theorem: ∂cost/∂a = f + ε(m − 1), ∂cost/∂b = g + ε(m − 1) (m = Σa), ∂cost/∂C = P.
    mass = a.sum(-1, keepdim=True).to(torch.float64)
    shift = ctx.reg * (mass - 1.0)
    ga = gb = gc = None
    gol = go.unsqueeze(-1)
    if need[0]:
        ga = (gol * (f + shift)).to(a.dtype)
    if need[1]:
        gb = (gol * (g + shift)).to(b.dtype)
    if need[2]:
        if plan.numel() == 0:
            raise RuntimeError("divest.torch: the plan was not formed; this is a bug")
        gc = go.to(plan.dtype).unsqueeze(-1).unsqueeze(-1) * plan
        if ctx.batch and len(ctx.cost_shape) == 2:
            gc = gc.sum(0)
        gc = gc.to(ctx.cost_dtype)
    return (ga, gb, gc) + (None,) * 8


_sk_dense.register_autograd(_sk_backward, setup_context=_sk_setup)
_sk_dense_fn = _transformable(_sk_dense, _sk_setup, _sk_backward, "sinkhorn, sinkhorn_batch")


def _sk_common(a, b, cost, reg, max_iter, tol, method, scaling, omega, return_plan, batch):
    from .ot import SinkhornResult

    cost = _tensor(cost, "cost")
    want_nd = (2, 3) if batch else (2,)
    if cost.ndim not in want_nd:
        raise ValueError(
            f"cost must have shape {'(B, n, m) or (n, m)' if batch else '(n, m)'}; "
            f"got {tuple(cost.shape)}"
        )
    n, m = cost.shape[-2], cost.shape[-1]
    if batch:
        a = _tensor(a, "a")
        b = _tensor(b, "b")
    else:
        a = torch.full((n,), 1.0 / n, dtype=cost.dtype) if a is None else _tensor(a, "a")
        b = torch.full((m,), 1.0 / m, dtype=cost.dtype) if b is None else _tensor(b, "b")
    want_plan = bool(return_plan) or cost.requires_grad
    plan, c, lin, f, g, n_iter, conv, err = _sk_dense_fn(
        a, b, cost, float(reg), int(max_iter), float(tol), str(method),
        None if scaling is None else float(scaling), None if omega is None else float(omega),
        batch, want_plan,
    )  # fmt: skip
    return SinkhornResult(
        plan=plan.detach() if return_plan else None,
        cost=c,
        linear_cost=lin,
        f=f.to(cost.dtype),
        g=g.to(cost.dtype),
        n_iter=n_iter,
        converged=conv,
        marginal_error=err,
    )


_SK_GRAD_DOC = """
    Differentiation: ``cost`` and ``linear_cost`` carry the envelope-theorem gradient of
    the entropic cost ``⟨C, P⟩ + ε·KL(P | a⊗b)`` at the returned solution: the plan P with
    respect to the cost matrix, and the potentials with respect to the marginals
    (``f + ε(m − 1)`` for ``a``, ``g + ε(m − 1)`` for ``b``, m the total mass: ``f`` and
    ``g`` for probability weights; meaningful along directions that keep Σa = Σb). For
    ``cost`` this is the exact gradient at convergence; for ``linear_cost`` it is the
    same gradient, as POT's ``sinkhorn2`` gives it (it omits the derivative of the
    entropic term, a difference of order ε). If the solver did not converge (``converged``
    False, with a :class:`divest.ConvergenceWarning`), the gradient is that of the last
    iterate's plan and potentials, which is not the derivative of anything exact: raise
    ``max_iter`` or use ε-scaling. No differentiation through the iterations, so memory
    is that of the solve plus the plan (formed when the cost requires grad). Double
    backward raises a RuntimeError. Inputs must be CPU float32/float64 tensors.
"""


def sinkhorn(
    a, b, cost, reg, *, max_iter=1000, tol=1e-9, method="auto", return_plan=True, scaling=None,
    omega=None,
):  # fmt: skip
    """Entropic optimal transport between histograms, as :func:`divest.sinkhorn`, on
    tensors (``init`` is not offered). Returns a :class:`divest.SinkhornResult` of
    tensors; ``cost`` and ``linear_cost`` are differentiable 0-d tensors.
    """
    return _sk_common(a, b, cost, reg, max_iter, tol, method, scaling, omega, return_plan, False)


def sinkhorn_batch(
    a, b, cost, reg, *, max_iter=1000, tol=1e-9, method="auto", return_plan=False, omega=None,
    scaling=None,
):  # fmt: skip
    """Many balanced Sinkhorn problems at once, as :func:`divest.sinkhorn_batch`
    (``reg_m`` is not offered: balanced only), on tensors. ``cost`` and ``linear_cost``
    are differentiable (B,) tensors: with a SinKD-style loss, sum or average them.
    """
    return _sk_common(a, b, cost, reg, max_iter, tol, method, scaling, omega, return_plan, True)


sinkhorn.__doc__ += _SK_GRAD_DOC
sinkhorn_batch.__doc__ += _SK_GRAD_DOC
__all__ += ["sinkhorn_divergence", "sinkhorn", "sinkhorn_batch"]


# ------------------------------------------------------------ sample discrepancies


@torch.library.custom_op("divest::kernel_discrepancy", mutates_args=())
def _kdisc(
    x: Tensor, y: Tensor, which: str, sigma: Optional[float], kernel: str, unbiased: bool
) -> tuple[Tensor, Tensor]:
    xc, yc, c = _div._two_samples(_np(x), _np(y), True)
    n, m = len(xc), len(yc)
    if which == "mmd" and unbiased and (n < 2 or m < 2):
        raise ValueError(
            "unbiased=True needs at least 2 points in each sample; "
            "pass unbiased=False or more points"
        )
    scale = _div._kernel_scale(_div._sigma(sigma, xc, yc, c), sigma, kernel, xc, yc)
    zero = scale < 1e-290 or (_div._same(xc, yc) and not (which == "mmd" and unbiased))
    lxx = lyy = lxy = 0.0
    if zero:
        value = 0.0
    else:
        lxx, lyy, lxy = _div._kernel_sums(
            xc, yc, kernel, scale, include_diagonal=not (which == "mmd" and unbiased)
        )
        if which == "mmd":
            if unbiased:
                cxx = math.log(n) + math.log(n - 1)
                cyy = math.log(m) + math.log(m - 1)
            else:
                cxx, cyy = 2 * math.log(n), 2 * math.log(m)
            cxy = math.log(n) + math.log(m)
            value = math.exp(lxx - cxx) + math.exp(lyy - cyy) - 2 * math.exp(lxy - cxy)
            lxx, lyy, lxy = cxx, cyy, cxy  # the backward's normalisers
        else:
            value = max(lxx + lyy - 2 * lxy, 0.0)
    aux = torch.tensor(
        [scale, lxx, lyy, lxy, c[0] * c[1], 1.0 if zero else 0.0], dtype=torch.float64
    )
    return torch.tensor(value, dtype=x.dtype), aux


@_kdisc.register_fake
def _(x, y, which, sigma, kernel, unbiased):
    return x.new_empty(()), x.new_empty(6, dtype=torch.float64)


@torch.library.custom_op("divest::kernel_discrepancy_grad", mutates_args=())
def _kdisc_grad(
    x: Tensor, y: Tensor, aux: Tensor, kernel: str, want_x: bool, want_y: bool
) -> tuple[Tensor, Tensor]:
    scale, lxx, lyy, lxy, cc, zero = aux.tolist()
    gx, gy = x.new_zeros(0), y.new_zeros(0)
    if zero:
        return torch.zeros_like(x) if want_x else gx, torch.zeros_like(y) if want_y else gy
    xc, yc, _ = _div._two_samples(_np(x), _np(y), True)
    if want_x:
        g = _core.kernel_row_grads(xc, xc, kernel, scale, lxx)
        g -= _core.kernel_row_grads(xc, yc, kernel, scale, lxy)
        gx = torch.from_numpy(g * (2.0 / cc)).to(x.dtype)
    if want_y:
        g = _core.kernel_row_grads(yc, yc, kernel, scale, lyy)
        g -= _core.kernel_row_grads(yc, xc, kernel, scale, lxy)
        gy = torch.from_numpy(g * (2.0 / cc)).to(y.dtype)
    return gx, gy


@_kdisc_grad.register_fake
def _(x, y, aux, kernel, want_x, want_y):
    return (
        torch.empty_like(x) if want_x else x.new_empty(0),
        torch.empty_like(y) if want_y else y.new_empty(0),
    )


def _kdisc_setup(ctx, inputs, output):
    x, y, which, sigma, kernel, unbiased = inputs
    ctx.save_for_backward(x, y, output[1])
    ctx.kernel = kernel


def _kdisc_backward(ctx, go, _gaux):
    x, y, aux = ctx.saved_tensors
    wx, wy = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (wx or wy):
        return (None,) * 6
    gx, gy = _kdisc_grad_fn(x, y, aux, ctx.kernel, wx, wy)
    return (go * gx if wx else None, go * gy if wy else None) + (None,) * 4


_kdisc.register_autograd(_kdisc_backward, setup_context=_kdisc_setup)
_kdisc_fn = _transformable(_kdisc, _kdisc_setup, _kdisc_backward, "mmd, cs_divergence")
_kdisc_grad.register_autograd(
    _no_double_backward("kernel discrepancy backward"),
    setup_context=lambda ctx, inputs, output: None,
)
_kdisc_grad_fn = _transformable(
    _kdisc_grad,
    _no_setup,
    _no_double_backward("kernel discrepancy backward"),
    "kernel discrepancy backward",
    True,
)


def _two(x, y):
    x = _points(x, "x")
    y = _points(y, "y", x.shape[1])
    dt = _dtype(x, y)
    return x.to(dt), y.to(dt)


def _sigma_arg(sigma) -> Optional[float]:
    if sigma is None:
        return None
    if isinstance(sigma, Tensor):
        raise TypeError(
            "sigma must be a Python number (or None); the bandwidth is not differentiable here"
        )
    return float(sigma)


def mmd(x, y, sigma=None, kernel="gaussian", unbiased=True):
    """Squared MMD between samples, as :func:`divest.mmd`, differentiable with respect to
    ``x`` and ``y``.

    The gradient is computed in Rust by one weighted-mean pass of the pairwise engine per
    pair of samples (Σ_j ∇k(x_i, y_j) = −σ⁻²(x_i Σ_j k_ij − Σ_j k_ij y_j) for the Gaussian),
    in O((n + m)·d) memory: no n×m matrix forward or backward. ``sigma=None`` takes the
    median heuristic of the detached samples (a constant for the gradient). Identical
    samples (V statistic) give 0 and exactly zero gradients.
    """
    check = _div.check_choice(kernel, "kernel", ("gaussian", "laplacian"))
    x, y = _two(x, y)
    return _kdisc_fn(x, y, "mmd", _sigma_arg(sigma), check, bool(unbiased))[0]


def cs_divergence(x, y, sigma=None):
    """Cauchy-Schwarz divergence between samples, as :func:`divest.cs_divergence`,
    differentiable with respect to ``x`` and ``y`` (gradients in O((n + m)·d) memory from
    the engine's weighted-mean reducer; ``sigma=None``: the median heuristic, held
    constant). Identical samples give 0 and exactly zero gradients.
    """
    x, y = _two(x, y)
    return _kdisc_fn(x, y, "cs", _sigma_arg(sigma), "gaussian", False)[0]


@torch.library.custom_op("divest::energy_distance", mutates_args=())
def _energy(x: Tensor, y: Tensor, exponent: float, unbiased: bool) -> Tensor:
    from .dcov import energy_distance as _ed

    return torch.tensor(_ed(_np(x), _np(y), exponent, unbiased), dtype=x.dtype)


@_energy.register_fake
def _(x, y, exponent, unbiased):
    return x.new_empty(())


@torch.library.custom_op("divest::energy_distance_grad", mutates_args=())
def _energy_grad(
    x: Tensor, y: Tensor, exponent: float, unbiased: bool, want_x: bool, want_y: bool
) -> tuple[Tensor, Tensor]:
    xa, ya = _np(x).astype(np.float64), _np(y).astype(np.float64)
    mean = (xa.sum(0) + ya.sum(0)) / (len(xa) + len(ya))
    xa = np.ascontiguousarray(xa - mean)
    ya = np.ascontiguousarray(ya - mean)
    n, m = len(xa), len(ya)
    dx, dy = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    gx, gy = x.new_zeros(0), y.new_zeros(0)
    if want_x:
        g = _core.energy_row_grads(xa, ya, exponent) * (2.0 / (n * m))
        g -= _core.energy_row_grads(xa, xa, exponent) * (2.0 / dx)
        gx = torch.from_numpy(g).to(x.dtype)
    if want_y:
        g = _core.energy_row_grads(ya, xa, exponent) * (2.0 / (n * m))
        g -= _core.energy_row_grads(ya, ya, exponent) * (2.0 / dy)
        gy = torch.from_numpy(g).to(y.dtype)
    return gx, gy


@_energy_grad.register_fake
def _(x, y, exponent, unbiased, want_x, want_y):
    return (
        torch.empty_like(x) if want_x else x.new_empty(0),
        torch.empty_like(y) if want_y else y.new_empty(0),
    )


def _energy_setup(ctx, inputs, output):
    x, y, exponent, unbiased = inputs
    ctx.save_for_backward(x, y)
    ctx.args = (exponent, unbiased)


def _energy_backward(ctx, go):
    x, y = ctx.saved_tensors
    wx, wy = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (wx or wy):
        return (None,) * 4
    gx, gy = _energy_grad_fn(x, y, *ctx.args, wx, wy)
    return (go * gx if wx else None, go * gy if wy else None, None, None)


_energy.register_autograd(_energy_backward, setup_context=_energy_setup)
_energy_fn = _transformable(_energy, _energy_setup, _energy_backward, "energy_distance")
_energy_grad.register_autograd(
    _no_double_backward("energy_distance backward"),
    setup_context=lambda ctx, inputs, output: None,
)
_energy_grad_fn = _transformable(
    _energy_grad,
    _no_setup,
    _no_double_backward("energy_distance backward"),
    "energy_distance backward",
    True,
)


def energy_distance(x, y, exponent=1.0, unbiased=False):
    """Energy distance between samples, as :func:`divest.energy_distance`, differentiable
    with respect to ``x`` and ``y``: ∂/∂x_i = 2/(nm) Σ_j α|x_i − y_j|^(α−2)(x_i − y_j) −
    (2/N_x) Σ_j α|x_i − x_j|^(α−2)(x_i − x_j), from weighted-mean passes of the pairwise
    engine on the pooled-centred samples: O((n + m)·d) memory. Pairs at distance exactly 0
    contribute 0 (the symmetric subgradient); above 8 dimensions distances come from the
    engine's GEMM form, whose rounding makes near-duplicate points' terms noisy.
    """
    from .dcov import _check_exponent

    x, y = _two(x, y)
    return _energy_fn(x, y, _check_exponent(exponent), bool(unbiased))


__all__ += ["mmd", "cs_divergence", "energy_distance"]


# ------------------------------------------------------------------ distance covariance


@torch.library.custom_op("divest::dcov_sqr", mutates_args=())
def _dcov(
    x: Tensor, y: Tensor, exponent: float, unbiased: bool, want_x: bool, want_y: bool
) -> tuple[Tensor, Tensor, Tensor]:
    from .dcov import dcov_sqr as _np_dcov

    xa, ya = _np(x), _np(y)
    gx, gy = x.new_zeros(0), y.new_zeros(0)
    if want_x:
        v, g = _np_dcov(xa, ya, exponent, unbiased, return_grad=True)
        gx = torch.from_numpy(np.ascontiguousarray(g)).to(x.dtype).reshape(x.shape)
    if want_y:
        v, g = _np_dcov(ya, xa, exponent, unbiased, return_grad=True)
        gy = torch.from_numpy(np.ascontiguousarray(g)).to(y.dtype).reshape(y.shape)
    if not (want_x or want_y):
        v = _np_dcov(xa, ya, exponent, unbiased)
    return torch.tensor(v, dtype=x.dtype), gx, gy


@_dcov.register_fake
def _(x, y, exponent, unbiased, want_x, want_y):
    return (
        x.new_empty(()),
        torch.empty_like(x) if want_x else x.new_empty(0),
        torch.empty_like(y) if want_y else y.new_empty(0),
    )


def _dcov_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1], output[2])


def _dcov_backward(ctx, go, *_):
    gx, gy = ctx.saved_tensors
    need = ctx.needs_input_grad
    return (
        go * gx if need[0] and gx.numel() else None,
        go * gy if need[1] and gy.numel() else None,
    ) + (None,) * 4


_dcov.register_autograd(_dcov_backward, setup_context=_dcov_setup)
_dcov_fn = _transformable(_dcov, _dcov_setup, _dcov_backward, "dcov_sqr, dcor_sqr, dcor, ccdcov")


def _obs(t, name: str) -> Tensor:
    t = _tensor(t, name)
    if t.ndim not in (1, 2) or t.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty (n,) or (n, p) tensor of observations; "
            f"got shape {tuple(t.shape)}"
        )
    return t


def _pair(x, y):
    x = _obs(x, "x")
    y = _obs(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            "x and y must have the same number of observations (rows); "
            f"got {x.shape[0]} and {y.shape[0]}"
        )
    dt = _dtype(x, y)
    return x.to(dt), y.to(dt)


def _exp(exponent) -> float:
    from .dcov import _check_exponent

    return _check_exponent(exponent)


def _flag(v, name: str) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {type(v).__name__}")
    return bool(v)


def _dcov_t(x: Tensor, y: Tensor, a: float, unbiased: bool) -> Tensor:
    need = torch.is_grad_enabled()
    return _dcov_fn(x, y, a, unbiased, need and x.requires_grad, need and y.requires_grad)[0]


def dcov_sqr(x, y, exponent=1.0, unbiased=False):
    """Squared distance covariance, as :func:`divest.dcov_sqr`, differentiable with
    respect to ``x`` and ``y``.

    The gradients are divest's Rust ones (``return_grad=True``: one extra pass of the
    pairwise engine per sample that requires grad, O(n·(p + q)) memory, no n×n matrix),
    computed in the forward call when an input requires grad and kept for the backward.
    Pairs of coincident points contribute 0 (symmetric subgradient).
    """
    x, y = _pair(x, y)
    return _dcov_t(x, y, _exp(exponent), _flag(unbiased, "unbiased"))


def dcor_sqr(x, y, exponent=1.0, unbiased=False):
    """Squared distance correlation, as :func:`divest.dcor_sqr` (V, or the bias-corrected
    U version with ``unbiased=True``), differentiable with respect to ``x`` and ``y``:
    dCov²(x, y) / √(dCov²(x, x)·dCov²(y, y)) composed from :func:`dcov_sqr` (three
    statistics and their gradients, O(n·(p + q)) memory). 0, with zero gradients, when a
    sample is constant.
    """
    x, y = _pair(x, y)
    a, u = _exp(exponent), _flag(unbiased, "unbiased")
    c = _dcov_t(x, y, a, u)
    vx = _dcov_t(x, x, a, u)
    vy = _dcov_t(y, y, a, u)
    den2 = (vx * vy).abs()
    ok = den2 > 0
    safe = torch.where(ok, den2, torch.ones_like(den2))
    return torch.where(ok, c / safe.sqrt(), torch.zeros_like(c))


def dcor(x, y, exponent=1.0):
    """Distance correlation √(V dcor²), as :func:`divest.dcor`, differentiable with
    respect to ``x`` and ``y``; at 0 (independence, or a constant sample) the gradient is 0.
    """
    r = dcor_sqr(x, y, exponent, False)
    ok = r > 0
    return torch.where(ok, torch.where(ok, r, torch.ones_like(r)).sqrt(), torch.zeros_like(r))


@torch.library.custom_op("divest::jdcov", mutates_args=())
def _jdcov(
    xs: list[Tensor], c: float, unbiased: bool, scale: bool, exponent: float, want: list[bool]
) -> tuple[Tensor, list[Tensor]]:
    from .dcov import jdcov as _np_jdcov

    arrs = [_np(t) for t in xs]
    grads = []
    v = None
    for k, w in enumerate(want):
        if w:
            # JdCov² is symmetric in its arguments: put sample k first.
            order = [arrs[k]] + arrs[:k] + arrs[k + 1 :]
            v, g = _np_jdcov(
                *order, c=c, unbiased=unbiased, scale=scale, exponent=exponent, return_grad=True
            )
            grads.append(
                torch.from_numpy(np.ascontiguousarray(g)).to(xs[k].dtype).reshape(xs[k].shape)
            )
        else:
            grads.append(xs[k].new_zeros(0))
    if v is None:
        v = _np_jdcov(*arrs, c=c, unbiased=unbiased, scale=scale, exponent=exponent)
    return torch.tensor(v, dtype=xs[0].dtype), grads


@_jdcov.register_fake
def _(xs, c, unbiased, scale, exponent, want):
    return xs[0].new_empty(()), [
        torch.empty_like(t) if w else t.new_empty(0) for t, w in zip(xs, want)
    ]


def _jdcov_setup(ctx, inputs, output):
    ctx.save_for_backward(*output[1])


def _jdcov_backward(ctx, go, _gg):
    grads = ctx.saved_tensors
    return (
        [go * g if g.numel() else None for g in grads],
        None,
        None,
        None,
        None,
        None,
    )


_jdcov.register_autograd(_jdcov_backward, setup_context=_jdcov_setup)


class _JdcovFunction(torch.autograd.Function):
    # The transformable form of _jdcov (see _transformable): the samples travel as
    # separate arguments, since autograd.Function does not look inside lists.
    @staticmethod
    def forward(c, unbiased, scale, exponent, want, *xs):
        v, grads = _jdcov(list(xs), c, unbiased, scale, exponent, want)
        return (v, *grads)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*output[1:])

    @staticmethod
    def backward(ctx, go, *_):
        grads = ctx.saved_tensors
        return (None,) * 5 + tuple(go * g if g.numel() else None for g in grads)

    vmap = staticmethod(_vmap_refused("jdcov"))


def jdcov(*xs, c=1.0, unbiased=True, scale=False, exponent=1.0):
    """Joint distance covariance JdCov², as :func:`divest.jdcov`, differentiable with
    respect to every sample (divest's Rust gradient, one call per sample that requires
    grad, each O(n Σ p_k) memory). For fairness penalties with several protected
    attributes, pass the model's output and the attributes.
    """
    if len(xs) < 2:
        raise ValueError(f"jdcov needs at least two samples; got {len(xs)}")
    ts = [_obs(t, f"xs[{i}]") for i, t in enumerate(xs)]
    n0 = ts[0].shape[0]
    for i, t in enumerate(ts):
        if t.shape[0] != n0:
            raise ValueError(
                f"xs[0] and xs[{i}] must have the same number of observations (rows); "
                f"got {n0} and {t.shape[0]}"
            )
    dt = _dtype(*ts)
    ts = [t.to(dt) for t in ts]
    cv = _nonneg(c, "c")
    need = torch.is_grad_enabled()
    want = [bool(need and t.requires_grad) for t in ts]
    u, sc, ex = _flag(unbiased, "unbiased"), _flag(scale, "scale"), _exp(exponent)
    if torch.compiler.is_compiling():  # see _transformable
        return _jdcov(ts, cv, u, sc, ex, want)[0]
    return _JdcovFunction.apply(cv, u, sc, ex, want, *ts)[0]


def ccdcov(y, *attrs, unbiased=True, exponent=1.0):
    """Concatenated distance covariance dCov²(y, [a_1, …, a_m]), as :func:`divest.ccdcov`,
    differentiable with respect to ``y`` and every attribute (the :func:`dcov_sqr`
    gradients of y and of the concatenation, split back by autograd).
    """
    if len(attrs) < 1:
        raise ValueError("ccdcov needs y and at least one attribute")
    y = _obs(y, "y")
    ts = [_obs(a, f"attrs[{i}]") for i, a in enumerate(attrs)]
    for i, t in enumerate(ts):
        if t.shape[0] != y.shape[0]:
            raise ValueError(
                f"y and attrs[{i}] must have the same number of observations (rows); "
                f"got {y.shape[0]} and {t.shape[0]}"
            )
    z = torch.cat([t.reshape(t.shape[0], -1) for t in ts], dim=1)
    return dcov_sqr(y, z, exponent, unbiased)


__all__ += ["dcov_sqr", "dcor_sqr", "dcor", "jdcov", "ccdcov"]


# --------------------------------------------------------------------------------- KDE

_LOG_2PI = math.log(2 * math.pi)


def _whiten(x: Tensor, q: Tensor, h: Tensor):
    """(data, points) as float64 arrays in bandwidth units, centred on the data mean."""
    xa = _np(x).astype(np.float64)
    c = xa.mean(0)
    hh = _np(h).astype(np.float64)
    v = np.ascontiguousarray((xa - c) / hh)
    u = np.ascontiguousarray((_np(q).astype(np.float64) - c) / hh)
    return v, u, hh


@torch.library.custom_op("divest::kde_gauss_logpdf", mutates_args=())
def _kde(data: Tensor, points: Tensor, h: Tensor, logw: Tensor) -> tuple[Tensor, Tensor]:
    v, u, hh = _whiten(data, points, h)
    lse, _, _ = _core.gauss_moments(u, v, _np(logw), False)
    out = lse - (np.log(hh).sum() + 0.5 * v.shape[1] * _LOG_2PI)
    return torch.from_numpy(out).to(points.dtype), torch.from_numpy(lse)


@_kde.register_fake
def _(data, points, h, logw):
    return points.new_empty(points.shape[0]), points.new_empty(points.shape[0], dtype=torch.float64)


@torch.library.custom_op("divest::kde_gauss_logpdf_grad", mutates_args=())
def _kde_grad(
    data: Tensor,
    points: Tensor,
    h: Tensor,
    logw: Tensor,
    go: Tensor,
    lse: Tensor,
    want_x: bool,
    want_q: bool,
    want_h: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    v, u, hh = _whiten(data, points, h)
    g = _np(go).astype(np.float64)
    ls = _np(lse)
    lw = _np(logw)
    gx = data.new_zeros(0)
    gq = points.new_zeros(0)
    gh = h.new_zeros(0)
    if want_q or want_h:
        _, m1, m2 = _core.gauss_moments(u, v, lw, want_h)
        if want_q:
            gq = torch.from_numpy(g[:, None] * (m1 - u) / hh).to(points.dtype)
        if want_h:
            spread = u * u - 2 * u * m1 + m2  # E_r[(u - v)²] per coordinate
            ok = np.isfinite(ls)
            gh = (g[ok, None] * (spread[ok] - 1.0)).sum(0) / hh
            gh = torch.from_numpy(np.ascontiguousarray(gh)).to(h.dtype)
    if want_x:
        acc = np.zeros_like(v)
        for sign in (1.0, -1.0):
            sel = (sign * g > 0) & np.isfinite(ls)
            if not sel.any():
                continue
            c = np.full(len(g), -np.inf)
            c[sel] = np.log(sign * g[sel]) - ls[sel]
            l2, e1, _ = _core.gauss_moments(v, u, c, False)
            with np.errstate(over="ignore", invalid="ignore"):
                f = np.where(np.isfinite(l2), np.exp(l2 + lw), 0.0)
            acc += sign * f[:, None] * (e1 - v)
        gx = torch.from_numpy(acc / hh).to(data.dtype)
    return gx, gq, gh


@_kde_grad.register_fake
def _(data, points, h, logw, go, lse, want_x, want_q, want_h):
    return (
        torch.empty_like(data) if want_x else data.new_empty(0),
        torch.empty_like(points) if want_q else points.new_empty(0),
        torch.empty_like(h) if want_h else h.new_empty(0),
    )


def _kde_setup(ctx, inputs, output):
    data, points, h, logw = inputs
    ctx.save_for_backward(data, points, h, logw, output[1])


def _kde_backward(ctx, go, _glse):
    data, points, h, logw, lse = ctx.saved_tensors
    wx, wq, wh = ctx.needs_input_grad[:3]
    if not (wx or wq or wh):
        return None, None, None, None
    gx, gq, gh = _kde_grad_fn(data, points, h, logw, go.contiguous(), lse, wx, wq, wh)
    return (gx if wx else None, gq if wq else None, gh if wh else None, None)


_kde.register_autograd(_kde_backward, setup_context=_kde_setup)
_kde_fn = _transformable(_kde, _kde_setup, _kde_backward, "kde_logpdf, KDE")
_kde_grad.register_autograd(
    _no_double_backward("kde_logpdf backward"), setup_context=lambda ctx, inputs, output: None
)
_kde_grad_fn = _transformable(
    _kde_grad, _no_setup, _no_double_backward("kde_logpdf backward"), "kde_logpdf backward", True
)


def _kde_bandwidth(data: Tensor, bandwidth, weights) -> Tensor:
    d = data.shape[1]
    if isinstance(bandwidth, Tensor):
        h = _tensor(bandwidth, "bandwidth")
        if h.ndim == 0:
            return h.reshape(1).expand(d)
        if h.shape != (d,) and h.shape != (d, d):
            raise ValueError(
                f"bandwidth must be a scalar, a ({d},) tensor of per-dimension standard "
                f"deviations or a ({d}, {d}) kernel covariance; got shape {tuple(h.shape)}"
            )
        return h
    if isinstance(bandwidth, str):
        from .kde import KDE as _NpKDE

        w = None if weights is None else _host_constant(weights)
        H = _NpKDE(_host_constant(data), bandwidth=bandwidth, weights=w).bandwidth
        if d > 1 and np.count_nonzero(H - np.diag(np.diag(H))):
            return torch.from_numpy(np.array(H, dtype=np.float64)).to(data.dtype)
        return torch.from_numpy(np.sqrt(np.diag(H)).copy()).to(data.dtype)
    h = _real(bandwidth, "bandwidth", "a positive number, a tensor or a rule name")
    if not (h > 0 and math.isfinite(h)):
        raise ValueError(f"bandwidth must be a finite number > 0; got {bandwidth!r}")
    return torch.full((d,), h, dtype=data.dtype)


def kde_logpdf(data, points, bandwidth="scott", weights=None):
    """Gaussian KDE log-density, as :func:`divest.kde_logpdf` with ``kernel="gaussian"``
    and a scalar or per-dimension bandwidth, differentiable with respect to ``points`` (the
    score), ``data`` and ``bandwidth`` (a 0-d or (d,) tensor of standard deviations).

    ``bandwidth`` may also be a (d, d) tensor, the kernel covariance H (differentiable;
    the data and points are whitened by its Cholesky factor with torch operations), a
    number (constant) or a rule name ("scott", "silverman", ... evaluated on the detached
    data, a constant for the gradient; a full covariance in d > 1, as the NumPy KDE's). ``weights`` (n,) are constant. Every pass runs on the
    pairwise engine's weighted-mean reducer in bandwidth units: the forward log-sum-exp,
    the responsibilities' first (points) and second (bandwidth) moments, and for the data
    one pass from the data's side per sign of the upstream gradient. Memory
    O((n + m)·d), no n×m matrix. Where the density underflows to 0 the point contributes
    no gradient.
    """
    x = _points(data, "data")
    q = _points(points, "points", x.shape[1])
    dt_ = _dtype(x, q)
    x, q = x.to(dt_), q.to(dt_)
    h = _kde_bandwidth(x, bandwidth, weights)
    if weights is None:
        logw = torch.full((x.shape[0],), -math.log(x.shape[0]), dtype=torch.float64)
    else:
        w = _tensor(weights, "weights").detach().to(torch.float64)
        if w.shape != (x.shape[0],):
            raise ValueError(f"weights must have shape ({x.shape[0]},); got {tuple(w.shape)}")
        logw = (w / w.sum()).log()
    if h.ndim == 2:
        # A full kernel covariance H = L Lᵀ: whiten both sets with L (torch operations, so
        # gradients reach the data, the points and H), evaluate with unit bandwidths and
        # divide by det L. Two (·, d) whitened copies; no n×m matrix.
        try:
            L = torch.linalg.cholesky(h.to(dt_))
        except RuntimeError:
            raise ValueError(
                "bandwidth must be a symmetric positive definite (d, d) covariance"
            ) from None
        xw = torch.linalg.solve_triangular(L, x.T, upper=False).T.contiguous()
        qw = torch.linalg.solve_triangular(L, q.T, upper=False).T.contiguous()
        unit = torch.ones(x.shape[1], dtype=dt_)
        return _kde_fn(xw, qw, unit, logw)[0] - torch.log(torch.diagonal(L)).sum()
    return _kde_fn(x, q, h.to(dt_), logw)[0]


class KDE:
    """Gaussian KDE on tensors whose :meth:`logpdf` is differentiable with respect to the
    points, the data and the bandwidth (see :func:`kde_logpdf`)."""

    def __init__(self, data, bandwidth="scott", weights=None):
        self.data = _points(data, "data")
        self.weights = weights
        self.bandwidth = _kde_bandwidth(self.data, bandwidth, weights)

    def logpdf(self, points):
        return kde_logpdf(self.data, points, self.bandwidth, self.weights)

    __call__ = logpdf


__all__ += ["kde_logpdf", "KDE"]
