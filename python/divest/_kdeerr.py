"""The binning error of the grid estimates, computed from the data (issue 11).

Binning moves a point at fractional position t (per axis, on the grid's lattice of
spacing δ) onto nearby nodes. Expanding the kernel about the point, the error of the
binned sum at a grid point g is Σ_p w_p·c(t_p)·∂K(g − x_p) summed over a few derivative
orders, with c a polynomial in t (``src/core/kdegrid/errfield.rs`` lists them for plain
linear binning, the 1-D path, and for the moment-corrected binning of 2-D/3-D).

Differences of the output see only the mean of c: they are right when t is spread evenly
and independently of the position, as for continuous data. On rounded or lattice data t
is a function of the position (the data's lattice aliases with the grid's), c varies on
the scale of the kernel, and the error is a coherent field that differences miss (7x on
integer data in 2-D). Here the fields w·c(t) are binned on a coarse lattice (about half a
kernel standard deviation per node: the derivative kernels are smooth on that scale) and
convolved with the sampled kernel derivatives, which gives the leading error term itself
for every kind of data. Its own error (the coarse binning and the interpolation back to
the grid) is a few per cent of the term; the next order of the expansion is smaller by
about (δ/h)², and is covered by :data:`_NEXT_ORDER`.
"""

from __future__ import annotations

import math

import numpy as np

from . import _core
from ._kdeplugin import _fft_size
from ._validate import check_memory

#: Reach of the derivative kernels in marginal standard deviations: beyond 7 the largest
#: derivative kernel used (z⁴·e^{−z²/2}) is below 6e-8 of its peak.
_REACH = 7.0

#: Coarse lattice spacing in conditional kernel standard deviations (the derivative
#: kernels' spectra are below 1e-5 of their peak beyond 1/σ, so the coarse sampling and
#: its linear binning change the term by a few per cent; tested).
_COARSE = 0.5


def _derivative_kernels(offs, prec, delta, corrected: bool):
    """The kernels that multiply each error field: the Gaussian exp(−½zᵀPz) (P = ``prec``,
    the inverse kernel covariance) differentiated as the expansion asks, times its
    coefficient. ``offs`` is (k, d) offsets; returns (n_fields, k)."""
    d = prec.shape[0]
    # v = offs @ prec, written out: a BLAS product would wake OpenBLAS's threads, which
    # then spin on the cores divest's own threads need.
    v = (offs[:, :, None] * prec[None, :, :]).sum(axis=1)
    k = np.exp(-0.5 * np.einsum("ij,ij->i", offs, v))
    out = []
    if corrected:
        # −(δ_a⁴/24)(2u + u²)·∂⁴_a K and −(δ_a²δ_b²/4)·u_a u_b·∂²_a∂²_b K.
        for a in range(d):
            pa, va = prec[a, a], v[:, a]
            out.append(-(delta[a] ** 4 / 24) * (va**4 - 6 * pa * va**2 + 3 * pa * pa) * k)
        for a in range(d):
            for b in range(a + 1, d):
                pa, pb, pab = prec[a, a], prec[b, b], prec[a, b]
                va, vb = v[:, a], v[:, b]
                poly = (
                    va**2 * vb**2
                    - pa * vb**2
                    - pb * va**2
                    - 4 * pab * va * vb
                    + pa * pb
                    + 2 * pab * pab
                )
                out.append(-(delta[a] ** 2 * delta[b] ** 2 / 4) * poly * k)
    else:
        # (δ²/2)·u·∂²_a K and −(δ³/6)·u(1 − 2t)·∂³_a K.
        for a in range(d):
            pa, va = prec[a, a], v[:, a]
            out.append((delta[a] ** 2 / 2) * (va**2 - pa) * k)
            out.append(-(delta[a] ** 3 / 6) * (3 * pa * va - va**3) * k)
    return np.stack(out)


def _inverse_diagonal(p: np.ndarray) -> np.ndarray:
    """The diagonal of the inverse of a symmetric positive definite d × d matrix, d ≤ 3,
    by cofactors: LAPACK on such a matrix would wake OpenBLAS's threads, which then spin
    on the cores divest's own threads need."""
    d = p.shape[0]
    if d == 1:
        return 1.0 / p[0]
    if d == 2:
        return np.array([p[1, 1], p[0, 0]]) / (p[0, 0] * p[1, 1] - p[0, 1] * p[1, 0])
    cof = np.array(
        [
            p[1, 1] * p[2, 2] - p[1, 2] * p[2, 1],
            p[0, 0] * p[2, 2] - p[0, 2] * p[2, 0],
            p[0, 0] * p[1, 1] - p[0, 1] * p[1, 0],
        ]
    )
    det = (
        p[0, 0] * cof[0]
        - p[0, 1] * (p[1, 0] * p[2, 2] - p[1, 2] * p[2, 0])
        + p[0, 2] * (p[1, 0] * p[2, 1] - p[1, 1] * p[2, 0])
    )
    return cof / det


def _lattice(lo, delta, m, prec):
    """The coarse lattice of the error fields for the grid lo_a + i·δ_a, i < m_a and the
    inverse kernel covariance ``prec``: (r, dc, reach, pad, span, nc, lo_c) with r the
    coarse-to-grid spacing ratio, dc the coarse spacing, reach the derivative kernels'
    half-width in coarse nodes, pad the margin, span the coarse nodes the grid covers, nc
    the coarse nodes per axis and lo_c the coarse start."""
    cond_sd = 1.0 / np.sqrt(np.diag(prec))
    marg_sd = np.sqrt(_inverse_diagonal(prec))
    # The coarse lattice: an integer multiple r of the grid spacing, so that r = 1 (the
    # grid's own lattice) needs no interpolation.
    r = np.maximum(1, np.floor(_COARSE * cond_sd / delta)).astype(np.int64)
    dc = r * delta
    reach = np.ceil(_REACH * marg_sd / dc).astype(np.int64)
    pad = reach + 1
    span = (m - 1 + r - 1) // r + 1  # coarse nodes from the grid's first point past its last
    nc = span + 2 * pad
    lo_c = lo - pad * dc
    return r, dc, reach, pad, span, nc, lo_c


def _as_arrays(lo, delta, m, prec, d):
    """The grid's start, spacing and size and the inverse kernel covariance as arrays."""
    m = np.asarray(m, dtype=np.int64)
    lo = np.asarray(lo, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64).reshape(d, d)
    return lo, delta, m, prec


def field_lattice(lo, delta, m, prec) -> tuple[list, list, list]:
    """The coarse lattice of :func:`binning_error`'s fields as the binning calls take it
    (``fields_lo``, ``fields_delta``, ``fields_nc``), so that the binning pass can bin
    the fields itself and hand them to :func:`binning_error`."""
    lo, delta, m, prec = _as_arrays(lo, delta, m, prec, len(m))
    _, dc, _, _, _, nc, lo_c = _lattice(lo, delta, m, prec)
    return [float(v) for v in lo_c], [float(v) for v in dc], [int(v) for v in nc]


def binning_error(x, w, wu, corrected: bool, lo, delta, m, prec, fields=None) -> np.ndarray:
    """Leading binning error term of the unnormalised Gaussian sums Σ w K(g − x) on the
    grid lo_a + i·δ_a, i < m_a, as a signed array of shape ``m``.

    ``x`` is (n, d) C-contiguous float64 (d = 1 to 3), ``w`` the weights or None (each
    ``wu``), ``corrected`` whether the sums came from moment-corrected binning (else plain
    linear binning), ``prec`` the inverse kernel covariance (d × d). ``fields``: the
    fields already binned on the lattice of :func:`field_lattice` (flat, as the binning
    pass returns them), else they are binned here. Allocates the coarse lattice's fields
    (d + d(d − 1)/2 values per node in 2-D/3-D, 2 in 1-D) once per thread, their FFTs and
    an array of the grid's size."""
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[1]
    lo, delta, m, prec = _as_arrays(lo, delta, m, prec, d)
    r, dc, reach, pad, span, nc, lo_c = _lattice(lo, delta, m, prec)
    nf = d + d * (d - 1) // 2 if corrected else 2 * d
    ksize = 2 * reach + 1
    nfft = [_fft_size(int(nc[a] + ksize[a] - 1)) for a in range(d)]
    cells = float(np.prod(nc, dtype=np.float64))
    spec = float(np.prod(nfft[:-1], dtype=np.float64)) * (nfft[-1] // 2 + 1)
    need = 8.0 * (3 * nf * cells + 4 * spec + 2 * float(np.prod(m)))
    check_memory(int(need), "n_points", tuple(int(v) for v in m), "the binning-error fields")
    if fields is None:
        fields = _core.kde_error_fields(
            x,
            w,
            wu,
            corrected,
            [float(v) for v in lo_c],  # on the grid's lattice, below every binned point
            [float(v) for v in delta],
            [float(v) for v in lo_c],
            [float(v) for v in dc],
            [int(v) for v in nc],
        )
    fields = fields.reshape(*[int(v) for v in nc], nf)
    grids = np.meshgrid(
        *[np.arange(-reach[a], reach[a] + 1) * dc[a] for a in range(d)], indexing="ij"
    )
    offs = np.stack([g.ravel() for g in grids], axis=1)
    kers = _derivative_kernels(offs, prec, delta, corrected).reshape(nf, *[int(v) for v in ksize])
    axes = tuple(range(d))
    acc = None
    for f in range(nf):
        term = np.fft.rfftn(fields[..., f], nfft, axes=axes) * np.fft.rfftn(
            kers[f], nfft, axes=axes
        )
        acc = term if acc is None else acc + term
    full = np.fft.irfftn(acc, nfft, axes=axes)
    # Coarse node J (J = pad + j for the grid's j-th coarse node) is full[J + reach].
    sl = tuple(slice(int(pad[a] + reach[a]), int(pad[a] + reach[a] + span[a])) for a in range(d))
    err = np.abs(full[sl])
    # Back to the grid: grid point i is coarse node i/r (linear interpolation of |E|,
    # axis by axis).
    for a in range(d):
        if r[a] == 1:
            continue
        pos = np.arange(int(m[a])) / r[a]
        j = np.minimum(pos.astype(np.int64), int(span[a]) - 2)
        f = (pos - j).reshape([-1 if b == a else 1 for b in range(d)])
        err = np.take(err, j, axis=a) * (1 - f) + np.take(err, j + 1, axis=a) * f
    return np.ascontiguousarray(err)


def grid_error_diag(sums, fields, corrected: bool, lo, delta, m, prec, scale, floor_rel, floor_abs):
    """:func:`binning_error` for a diagonal inverse kernel covariance ``prec`` (d × d), in
    Rust (``errfield::grid_error``), finished as the grid paths use it.

    ``fields`` are the error fields binned on the lattice of :func:`field_lattice` (flat,
    as the binning pass returns them). Each field's derivative kernel is then a product of
    1-D Gaussian derivatives, so the correlation runs one axis at a time over ±reach
    coarse nodes, directly (no FFT), and |E| is interpolated back onto the grid in the
    same order as :func:`binning_error`; the two agree to rounding (tested).

    ``sums`` (the flat binned sums, C-contiguous float64, owned by the caller) is
    overwritten in place with the grid values max(sums, 0)·scale. Returns (errors of
    shape ``m``, their max) with errors = (|E| + floor_rel·max|sums| + floor_abs)·scale.
    Allocates the partial sums of the axis passes (at most the fields' size), |E| at the
    coarse nodes covering the grid, and the Π m errors; nothing of the data's size."""
    d = len(m)
    lo, delta, m, prec = _as_arrays(lo, delta, m, prec, d)
    r, _, reach, _, _, nc, _ = _lattice(lo, delta, m, prec)
    shape = tuple(int(v) for v in m)
    errors, peak = _core.kde_grid_error_diag(
        sums,
        fields,
        corrected,
        list(shape),
        [float(v) for v in delta],
        [float(prec[a, a]) for a in range(d)],
        [int(v) for v in r],
        [int(v) for v in reach],
        [int(v) for v in nc],
        float(scale),
        float(floor_rel),
        float(floor_abs),
    )
    return errors.reshape(shape), peak


def grid_error_full(sums, fields, lo, delta, m, prec, scale, floor_rel, floor_abs, budget=None):
    """:func:`grid_error_diag` for a 2-D grid with a full inverse kernel covariance
    ``prec`` (2 × 2), in Rust (``fullerr::grid_error_full``), or None when Rust declines.

    The three derivative kernels are no longer products of 1-D kernels; sampled on the
    coarse lattice each is split into a sum of outer products u ⊗ v (cross approximation
    with complete pivoting, every entry within 4e-16 of the kernel's largest), so the
    correlation runs as one pass along axis 1 per product and one summed pass along
    axis 0, directly. It agrees with :func:`binning_error` (FFT) to rounding (tested).
    The number of products grows with the correlation; when the passes would cost more
    than the FFT (priced from its size and the thread count, at most 2.5e8 multiply-adds)
    the call returns None, leaves ``sums`` untouched, and the caller keeps
    :func:`binning_error`. ``budget`` (multiply-adds) overrides that price.

    ``sums`` (the flat binned sums, C-contiguous float64, owned by the caller) is
    overwritten in place with max(sums, 0)·scale otherwise. Returns (errors of shape
    ``m``, their max). Allocates the three kernels and their factors, R·nc₀·span₁ values
    for the axis-1 passes (R the number of products), |E| at the coarse nodes covering
    the grid and the Π m errors; nothing of the data's size."""
    lo, delta, m, prec = _as_arrays(lo, delta, m, prec, 2)
    r, _, reach, _, _, nc, _ = _lattice(lo, delta, m, prec)
    shape = tuple(int(v) for v in m)
    # The FFT path's price in multiply-adds of the passes: its 7 transforms of
    # nfft₀·nfft₁ points cost about 4 multiply-adds per point and log₂ level on one core
    # (measured on the benchmark's lattice: 8.3e7 multiply-adds in 12 ms of CPU against
    # 7 ms for the FFTs), and the passes run on every thread.
    nfft = [_fft_size(int(nc[a] + 2 * reach[a])) for a in range(2)]
    pts = float(nfft[0] * nfft[1])
    if budget is None:
        budget = 7 * 4.0 * pts * math.log2(pts) * _core.get_num_threads()
    got = _core.kde_grid_error_full(
        sums,
        fields,
        list(shape),
        [float(v) for v in delta],
        [float(v) for v in prec.ravel()],
        [int(v) for v in r],
        [int(v) for v in reach],
        [int(v) for v in nc],
        float(scale),
        float(floor_rel),
        float(floor_abs),
        float(budget),
    )
    if got is None:
        return None
    errors, peak = got
    return errors.reshape(shape), peak
