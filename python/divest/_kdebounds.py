"""Bounded and periodic KDEs (issue 11): an evaluation-side fold of the unbounded estimate.

With ``bounds`` the estimate lives on the box D = Π_j [low_j, high_j] (a side may be
infinite for ``boundary="reflect"``). The bounded density is the unbounded one folded
onto D by the maps that generate the boundary's symmetry group, per bounded dimension j:

* reflect, half-line [a, ∞) (or (−∞, b]): the identity and the reflection q ↦ 2a − q;
* reflect, interval [a, b] of width L: q ↦ q + 2kL and q ↦ 2a − q + 2kL, k ∈ Z (the
  reflections at a and b and all their compositions);
* periodic, [a, b] of width L: q ↦ q + kL, k ∈ Z (the wrapped kernel).

For a bandwidth whose bounded rows and columns are diagonal, every such map is an
isometry of the kernel's metric, so Σ_i w_i Σ_g K_H(q − g x_i) = Σ_g f₀(g q) with f₀ the
unbounded estimate: no image copies of the data are made, the unbounded estimate is
evaluated at the images of the *queries*. The folded density integrates to 1 over D and
is the density of F(Y), Y ~ f₀, F the folding map onto D (which is how ``resample``
draws).

Which images are evaluated: per query and bounded dimension, a lower bound c_j on the
log-ratio between an image's term and the largest term of the same data point (the
identity for "reflect", the nearest period for "periodic") follows from the data's range
[xmin_j, xmax_j]: with u the image's distance to that range and v the farthest a data
point can be from the reference (in bandwidths), c_j = (u² − v²)/2 for the Gaussian,
u − v for the exponential kernel in 1-D, and for the compact kernels c_j = ∞ exactly
when u ≥ 1 (the term is 0). An image is evaluated when Σ_j max(c_j, 0) ≤ 45 +
log(#candidates), so what is dropped is below 1e-19 of the density (Gaussian, any d;
exponential in 1-D; compact kernels: nothing nonzero is dropped). The exponential
kernel in d ≥ 2 does not factor over the coordinates (far out in an unbounded
dimension an image 50 bandwidths farther in a bounded one can weigh e^{−0.2}, not
e^{−50}, of the identity): there ``Fold.radial_maps`` and ``Fold.radial_keep`` prune
with a proven bound that uses the identity image's value at each query, and lengthen
the image lists as the queries go deeper into the tails; what they drop is below
e^{−45} of the density (the proof is in ``radial_maps``).

``"loo"`` with bounds maximises the folded estimate's leave-one-out likelihood
(``loo_grid``: one pairwise pass per image of the data over all factors). ``grid`` with
``rtol`` refines the folded grid (``grid_refined``). In 1-D, ``logpdf`` sends every
image of every query through one sorted pass (``_core.kde_points_exact_1d_folded``); in
2-D/3-D (float64, without the ESS) every kept image goes through one Rust pass over blocks
of the data (``_core.kde_fold_images``, see ``_logpdf_nd_folded``), which skips the blocks
beyond the kernel's reach of each image with a proven bound.

Memory: no copy of the data; per evaluated image one (m, d) array of image queries and
the base estimate's own work arrays, plus O(m) accumulators.
"""

from __future__ import annotations

import copy
import math
from itertools import combinations, product

import numpy as np

BOUNDARIES = ("reflect", "periodic")
_COMPACT = ("tophat", "epanechnikov", "linear", "cosine")
#: Dropped image terms are below e^-_MARGIN of the density (relative).
_MARGIN = 45.0
#: The block pass of d ≥ 2 (``_core.kde_fold_images``) drops below e^-_BLOCK_MARGIN of the
#: density: 2.3e-16 relative, under the unbounded estimate's own rounding (the pairwise
#: engine's distances and exponentials: 2e-15 median, 7e-15 max relative on the
#: ``kdebounds_nd`` data against a long-double sum), and a quarter fewer kernel terms in
#: 3-D than at 45.
_BLOCK_MARGIN = 36.0
#: Most image combinations evaluated per query (tiny intervals relative to the bandwidth).
_MAX_IMAGES = 4096


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_)
    )


def check_boundary(boundary, d: int):
    """A boundary mode per dimension from a string or a sequence of d strings."""
    from ._validate import check_choice

    if isinstance(boundary, (list, tuple)):
        if len(boundary) != d:
            raise ValueError(
                f"boundary must be 'reflect', 'periodic' or one of them per dimension ({d}); "
                f"got {len(boundary)} entries"
            )
        return tuple(check_choice(b, "boundary", BOUNDARIES) for b in boundary)
    return (check_choice(boundary, "boundary", BOUNDARIES),) * d


def parse_bounds(bounds, d: int, boundary) -> np.ndarray:
    """(d, 2) float array of (low, high), ±inf for an open side. ValueError/TypeError
    naming ``bounds``."""
    hint = (
        f"bounds must give one (low, high) pair per dimension ({d}), each side a number or "
        "None (unbounded); e.g. bounds=[(0, None), (0, 1)]"
    )
    if isinstance(bounds, (str, bytes, dict)):
        raise TypeError(f"{hint}; got {bounds!r}")
    if isinstance(bounds, np.ndarray):
        if bounds.dtype.kind not in "biuf" and bounds.dtype != object:
            raise TypeError(f"{hint}; got an array of dtype {bounds.dtype}")
        if bounds.dtype.kind == "b":
            raise TypeError(f"{hint}; got a boolean array")
        rows = bounds.tolist() if bounds.ndim else bounds.item()
    else:
        rows = bounds
    try:
        rows = list(rows)
    except TypeError:
        raise ValueError(f"{hint}; got {bounds!r}") from None
    # A single pair for 1-D data.
    if d == 1 and len(rows) == 2 and all(r is None or _is_real(r) for r in rows):
        rows = [rows]
    if len(rows) != d:
        raise ValueError(f"{hint}; got {len(rows)} entries")
    out = np.empty((d, 2))
    for j, r in enumerate(rows):
        if r is None:
            out[j] = (-math.inf, math.inf)
            continue
        if isinstance(r, (str, bytes)):
            raise TypeError(f"{hint}; got {r!r} for dimension {j}")
        try:
            pair = list(r)
        except TypeError:
            raise ValueError(f"{hint}; got {r!r} for dimension {j}") from None
        if len(pair) != 2:
            raise ValueError(f"{hint}; got {r!r} for dimension {j}")
        for s, v in enumerate(pair):
            if v is None:
                out[j, s] = -math.inf if s == 0 else math.inf
            elif isinstance(v, (complex, np.complexfloating)) or not _is_real(v):
                raise TypeError(
                    f"bounds must hold real numbers or None; got {v!r} in dimension {j}"
                )
            else:
                fv = float(v)
                if math.isnan(fv):
                    raise ValueError(f"bounds must not be NaN (use None for an open side); dim {j}")
                out[j, s] = fv
        if not out[j, 0] < out[j, 1]:
            raise ValueError(
                f"bounds must have low < high; got ({float(out[j, 0])!r}, {float(out[j, 1])!r}) for dimension {j}"
            )
        with np.errstate(over="ignore"):
            width = out[j, 1] - out[j, 0]
        if np.isfinite(out[j]).all() and not math.isfinite(width):
            raise ValueError(
                f"bounds {tuple(float(v) for v in out[j])} for dimension {j} are too wide for double "
                "precision (high − low overflows); rescale the data"
            )
    modes = check_boundary(boundary, d)
    for j in range(d):
        if modes[j] == "periodic":
            lo, hi = float(out[j, 0]), float(out[j, 1])
            if np.isfinite(out[j]).any() and not np.isfinite(out[j]).all():
                raise ValueError(
                    f"periodic bounds must be finite (a period); dimension {j} has "
                    f"({lo!r}, {hi!r}). Give both ends, or None for a dimension that is "
                    "not periodic"
                )
    return out


def check_inside(x: np.ndarray, b: np.ndarray) -> None:
    """ValueError naming ``bounds`` when some data point lies outside the closed box."""
    out = (x < b[:, 0]) | (x > b[:, 1])
    if out.any():
        rows, cols = np.nonzero(out)
        i, j = int(rows[0]), int(cols[0])
        raise ValueError(
            f"bounds exclude {int(out.any(axis=1).sum())} data point(s) (first: row {i}, "
            f"dimension {j}, value {float(x[i, j])!r} outside [{float(b[j, 0])!r}, {float(b[j, 1])!r}]); "
            "widen the bounds or remove those points (for angles, wrap them into the period "
            "first, e.g. low + np.mod(x - low, high - low))"
        )


def check_bandwidth(h: np.ndarray, bounded: np.ndarray) -> None:
    """ValueError when a bounded dimension is correlated with another in the kernel:
    the reflections are isometries of the kernel (and the fold exact) only when the
    bounded rows and columns of H are diagonal."""
    off = h - np.diag(np.diag(h))
    bad = [j for j in np.flatnonzero(bounded) if np.any(off[j] != 0)]
    if bad:
        raise ValueError(
            f"bounds on dimension(s) {bad} need a bandwidth that does not correlate them with "
            "other dimensions (the reflected or wrapped kernel is exact only for a diagonal "
            "bandwidth there); pass a scalar or a 1-D per-dimension bandwidth, or a matrix "
            "whose bounded rows and columns are zero off the diagonal (the rules 'scott' "
            "and 'silverman' do this automatically)"
        )


def diagonalise(h: np.ndarray, bounded: np.ndarray) -> np.ndarray:
    """The rule's covariance with the off-diagonal entries of bounded rows/columns set
    to 0: block-diagonal, positive definite when H is."""
    out = h.copy()
    for j in np.flatnonzero(bounded):
        keep = out[j, j]
        out[j, :] = 0.0
        out[:, j] = 0.0
        out[j, j] = keep
    return out


class Fold:
    """The image maps of a bounded KDE; see the module docstring."""

    def __init__(self, kde, b: np.ndarray, boundary):
        self.b = b
        self.boundary = boundary
        self.modes = check_boundary(boundary, kde.d)
        self.bounded = np.isfinite(b).any(axis=1)
        self.kernel = kde.kernel
        d = kde.d
        self.h = np.sqrt(np.diag(kde.bandwidth)).astype(np.float64)
        # The exponential kernel does not factor over the coordinates: in d ≥ 2 its
        # images are pruned by ``radial_keep`` over ``radial_maps`` (a proven bound),
        # not by the term-wise costs.
        self.radial = self.kernel == "exponential" and d >= 2
        self.kmax = [0] * d
        # The positively weighted data's range (a masked copy only if a weight is 0).
        x = kde._x if float(kde.weights.min()) > 0 else kde._x[kde.weights > 0]
        self.xmin = x.min(axis=0).astype(np.float64)
        self.xmax = x.max(axis=0).astype(np.float64)
        # Candidate maps (s, t): q ↦ s·q + t, per dimension.
        self.maps = []
        for j in range(d):
            lo, hi = b[j]
            if not self.bounded[j]:
                self.maps.append([(1.0, 0.0)])
                continue
            mode = self.modes[j]
            if mode == "reflect" and not (math.isfinite(lo) and math.isfinite(hi)):
                a = lo if math.isfinite(lo) else hi
                self.maps.append([(1.0, 0.0), (-1.0, 2.0 * a)])
                continue
            width = hi - lo
            hr = self.h[j] / width
            if self.kernel == "gaussian":
                reach = math.sqrt(1.0 + 2.0 * _MARGIN * hr * hr)
            elif self.kernel == "exponential":
                reach = 1.0 + _MARGIN * hr
            else:
                reach = hr
            if reach > _MAX_IMAGES:
                raise ValueError(
                    f"the bandwidth ({self.h[j]:.3g} in dimension {j}) is so wide relative to "
                    f"the bounds' width ({width:.3g}) that more than {_MAX_IMAGES} images "
                    "would be needed; the estimate is then uniform to within rounding "
                    "there: use a smaller bandwidth"
                )
            kmax = int(math.ceil(reach / 2.0 if mode == "reflect" else reach)) + 1
            self.kmax[j] = kmax
            self.maps.append(self.maps_k(j, kmax))
        n_combo = math.prod(len(m) for m in self.maps)
        self.threshold = _MARGIN + math.log(n_combo)

    def maps_k(self, j: int, kmax: int):
        """The maps of an infinite image family (interval reflect, periodic) of dim j
        within kmax periods (2L for reflect, L for periodic) of the identity."""
        lo, hi = self.b[j]
        width = hi - lo
        if self.modes[j] == "reflect":
            maps = [(1.0, 2.0 * k * width) for k in range(-kmax, kmax + 1)]
            maps += [(-1.0, 2.0 * lo + 2.0 * k * width) for k in range(-kmax, kmax + 1)]
            return maps
        return [(1.0, k * width) for k in range(-kmax, kmax + 1)]

    def _v(self, j: int, q: np.ndarray) -> np.ndarray:
        """Upper bound (bandwidths) on a data point's distance to its reference image of
        q in dim j: the farthest end of the data's range (reflect; the reference is the
        identity), half a period (periodic; the reference is the nearest period)."""
        h = self.h[j]
        lo, hi = self.b[j]
        if self.modes[j] == "periodic":
            return np.full(q.shape, 0.5 * (hi - lo) / h)
        return np.maximum(np.abs(q - self.xmin[j]), np.abs(q - self.xmax[j])) / h

    def sqgap(self, j: int, s: float, t: float, q: np.ndarray) -> np.ndarray:
        """Lower bound Δ_j ≥ 0 on b² − a² for every data point (dim j, bandwidth units),
        a the point's distance to its reference image of q and b to the image s·q + t:
        (u² − v²)₊ with u the image's distance to the data's range and v from ``_v``,
        and 4(x − a')(q − a')/h² ≥ 4|x_near − a'|·|q − a'|/h² for a reflection at a'.
        b ≥ a always holds (the reference is the nearest image), so Δ_j ≥ 0."""
        if not self.bounded[j] or (s == 1.0 and t == 0.0 and self.modes[j] == "reflect"):
            return np.zeros(q.shape)
        h = self.h[j]
        with np.errstate(over="ignore", invalid="ignore"):
            u = self.dist(j, s, t, q)
            v = self._v(j, q)
            gap = (u - v) * (u + v)
            if self.modes[j] == "reflect" and s < 0:
                a = t / 2.0
                x0, x1 = self.xmin[j], self.xmax[j]
                gap = np.maximum(
                    gap, 4.0 * abs(x0 - a if a <= x0 else x1 - a) * np.abs(q - a) / (h * h)
                )
        return np.where(np.isnan(gap), np.inf, np.maximum(gap, 0.0))

    def radial_maps(self, q: np.ndarray, rho: np.ndarray):
        """Per-dimension map lists for the exponential kernel in d ≥ 2 that make the
        dropped images rigorously negligible for queries q (m, d) whose identity image's
        kernel sum is S_id = e^{−ρ} (Σw = 1); ``radial_keep`` is the per-combination
        test. Returns (lists, T).

        Proof. For a data point with reference distance A (whitened) and image distance
        B = √(A² + Δ), Δ ≥ D = Σ_j Δ_j (``sqgap``), and any ρ > 0:
        e^{−B} ≤ e^{−E}·e^{−A} + e^{−√(ρ²+D)}, E = √(ρ² + D) − ρ (if A ≤ ρ, B − A
        decreases in A; else B ≥ √(ρ² + D)). Summed over the data with weights, using
        e^{−ρ} = S_id ≤ S (S the full folded sum) and Σ_i w_i e^{−A_i} ≤ S, one image
        combination adds at most 2e^{−E(D)}·S. A candidate is dropped only when
        E ≥ T or when e^{−U} ≤ e^{−T}·S_id (U its distance to the data's box), so the N
        candidates drop at most 2N·e^{−T}·S. For the images outside the lists: an image
        of q in dim j at distance s bandwidths from q has Δ_j ≥ (s − v)² − v² ≥ y²,
        y = s − 2v (v from ``_v``), and E ≥ Y²/(2ρ + Y) with Y = √D, also ≥ Y − 2ρ.
        For the combinations whose maps lie outside the lists exactly in the set B of
        dimensions: Y ≥ max_{j∈B} y_j gives E ≥ (1/|B|)·Σ_{j∈B} y_j²/(2ρ + y_j), and
        Y ≥ Σ_{j∈B} y_j/√|B| gives E ≥ Σ y_j/√|B| − 2ρ; either factorises over B, and
        at most 4 images of q lie in any s-window of one period P (2 per side), so
        Σ_{s ≥ S} e^{−φ(s)} ≤ 4e^{−φ(S)}/(1 − e^{−φ'P}) for φ convex with slope ≥ φ'
        beyond S. The lists grow until Σ_B Π_{i∉B} N_i · min(both bounds) ≤ N·e^{−T};
        with T = 45 + log 4N everything dropped is at most 4N·e^{−T}·S = e^{−45}·S.
        ValueError past 4096 combinations (queries so deep in the tails of the other
        dimensions that thousands of images matter)."""
        rho_max = float(np.max(rho, initial=0.0))
        if not math.isfinite(rho_max):
            raise ValueError(
                "the exponential kernel's density underflows at some query even in log "
                "space; its images cannot be bounded there"
            )
        d = len(self.maps)
        infinite = [j for j in range(d) if self.bounded[j] and np.isfinite(self.b[j]).all()]
        kmax = {j: self.kmax[j] for j in infinite}
        r = rho_max
        info = {}
        for j in infinite:
            h = self.h[j]
            info[j] = (
                (self.b[j, 1] - self.b[j, 0]) / h,  # period in bandwidths
                float(np.max(self._v(j, q[:, j]), initial=0.0)),
            )

        def tail(j, mode, c):
            """Σ over the images of dim j outside its list of e^{−φ(s)}, where φ is
            y²/(2ρ+y)/c ("q") or y/√c ("l")."""
            period, v = info[j]
            big_s = (2.0 * kmax[j] if self.modes[j] == "reflect" else kmax[j] + 1.0) * period
            y = big_s - 2.0 * v
            if y <= 0:
                return math.inf
            if mode == "q":
                phi = y * y / (2.0 * r + y) / c
                slope = (y * y + 4.0 * r * y) / (2.0 * r + y) ** 2 / c
            else:
                phi = y / math.sqrt(c)
                slope = 1.0 / math.sqrt(c)
            return 4.0 * math.exp(-phi) / -math.expm1(-slope * period)

        for _ in range(64):
            maps = [self.maps_k(j, kmax[j]) if j in kmax else self.maps[j] for j in range(d)]
            n_combo = math.prod(len(m) for m in maps)
            if n_combo > _MAX_IMAGES:
                break
            t_cut = _MARGIN + math.log(4.0 * n_combo)
            total = 0.0
            worst, worst_val = None, -1.0
            for size in range(1, len(infinite) + 1):
                for sub in combinations(infinite, size):
                    inner = math.prod(len(maps[i]) for i in range(d) if i not in sub)
                    bq = math.prod(tail(j, "q", size) for j in sub)
                    bl = math.inf
                    if 2.0 * r < 700.0:  # the linear form is useful only for small ρ
                        bl = math.exp(2.0 * r) * math.prod(tail(j, "l", size) for j in sub)
                    val = inner * min(bq, bl)
                    total += val
                    if val > worst_val:
                        worst, worst_val = sub, val
            if total <= n_combo * math.exp(-t_cut):
                return maps, t_cut
            for j in worst:  # grow the families of the largest term
                kmax[j] = int(math.ceil(kmax[j] * 1.25)) + 1
        raise ValueError(
            f"with the exponential kernel some queries lie so far into the tails (log kernel "
            f"sum down to {-rho_max:.4g}) that more than {_MAX_IMAGES} image combinations "
            "would be needed to bound the dropped images; use the Gaussian kernel (whose "
            "images factor over the dimensions) or queries nearer the data"
        )

    def radial_keep(self, combo, q, rho, t_cut, floor, log_norm):
        """The exponential kernel's per-combination test in d ≥ 2 (see
        ``radial_maps``): keep unless E(D) = √(ρ² + D) − ρ ≥ T (then the combination adds
        at most 2e^{−T}·S) or the absolute bound e^{−U} ≤ e^{−T}·S_id holds (U the
        image's distance to the data's bounding box)."""
        gap = np.zeros(q.shape[0])
        u2 = np.zeros(q.shape[0])
        for j, (s, t) in enumerate(combo):
            gap = gap + self.sqgap(j, s, t, q[:, j])
            dj = self.dist(j, s, t, q[:, j])
            u2 = u2 + dj * dj
        with np.errstate(over="ignore", invalid="ignore"):
            e = gap / (np.sqrt(rho * rho + gap) + rho)
            drop = (e >= t_cut) | (-np.sqrt(u2) - log_norm < floor - t_cut)
        return ~drop

    def cost(self, j: int, s: float, t: float, q: np.ndarray) -> np.ndarray:
        """Lower bound on the log-ratio of an image term to its reference term, dim j
        (queries q in the domain, shape (m,))."""
        if not self.bounded[j]:
            return np.zeros(q.shape)
        h = self.h[j]
        lo, hi = self.b[j]
        x0, x1 = self.xmin[j], self.xmax[j]
        with np.errstate(over="ignore", invalid="ignore"):
            img = s * q + t
            u = np.maximum(np.maximum(x0 - img, img - x1), 0.0) / h
            if self.kernel in _COMPACT:
                return np.where(u < 1.0, 0.0, np.inf)
            if self.modes[j] == "periodic":
                v = np.full(q.shape, 0.5 * (hi - lo) / h)
            else:
                v = np.maximum(np.abs(q - x0), np.abs(q - x1)) / h
            if self.kernel == "gaussian":
                c = 0.5 * (u - v) * (u + v)
                if self.modes[j] == "reflect" and s < 0:
                    # First reflections: |2a − q − x|² − |q − x|² = 4(x − a)(q − a).
                    a = t / 2.0
                    c = np.maximum(
                        c, 2.0 * np.abs(x0 - a if a <= x0 else x1 - a) * np.abs(q - a) / (h * h)
                    )
            else:
                c = u - v
        return np.where(np.isnan(c), np.inf, np.maximum(c, 0.0))

    def images(self, q: np.ndarray, floor=None, log_norm=0.0, skip_identity=False):
        """Yields (signs (d,), image queries (k, d), row indices (k,), shifts (d,)) for
        every image combination that matters for some query; q (m, d) inside the domain.

        Two tests drop an image for a query; either suffices. The term-wise bound
        Σ_j max(c_j, 0) > threshold (see ``cost``), and, when ``floor`` (a lower bound on
        the log-density at each query, e.g. the identity image's log-density) is given,
        the absolute bound: the image's log-density is at most log K(u) − ``log_norm``
        with u its whitened distance to the data's bounding box."""
        d = q.shape[1]
        if self.radial:
            yield from self._radial_images(q, floor, log_norm, skip_identity)
            return
        per_dim = []
        for j in range(d):
            rows = []
            for s, t in self.maps[j]:
                c = self.cost(j, s, t, q[:, j])
                if np.all(c > self.threshold):
                    continue
                u = self.dist(j, s, t, q[:, j]) if floor is not None else None
                rows.append((s, t, c, u))
            per_dim.append(rows)
        n = math.prod(len(r) for r in per_dim)
        if n > _MAX_IMAGES:
            raise ValueError(
                f"the bandwidth is so wide relative to the bounded interval(s) that {n} "
                f"images of each query would be needed (limit {_MAX_IMAGES}); the estimate "
                "is then nearly uniform there: use a smaller bandwidth"
            )
        for combo in product(*per_dim):
            if skip_identity and all(c[0] == 1.0 and c[1] == 0.0 for c in combo):
                continue
            total = np.zeros(q.shape[0])
            for c in combo:
                total = total + c[2]
            keep = total <= self.threshold
            if floor is not None and self.kernel in ("gaussian", "exponential"):
                u2 = np.zeros(q.shape[0])
                for c in combo:
                    u2 = u2 + c[3] * c[3]
                with np.errstate(over="ignore", invalid="ignore"):
                    lk = -0.5 * u2 if self.kernel == "gaussian" else -np.sqrt(u2)
                    keep &= ~(lk - log_norm < floor - self.threshold)
            idx = np.flatnonzero(keep)
            if idx.size == 0:
                continue
            signs = np.array([c[0] for c in combo])
            shifts = np.array([c[1] for c in combo])
            with np.errstate(over="ignore", invalid="ignore"):
                yield signs, q[idx] * signs + shifts, idx, shifts

    def _radial_images(self, q, floor, log_norm, skip_identity):
        """``images`` for the exponential kernel in d ≥ 2 (``radial_maps``,
        ``radial_keep``). Without ``floor`` nothing is pruned: every candidate image is
        evaluated (exact, only slower)."""
        if floor is None:
            maps = self.maps
            for combo in product(*maps):
                if skip_identity and all(c == (1.0, 0.0) for c in combo):
                    continue
                signs = np.array([c[0] for c in combo])
                shifts = np.array([c[1] for c in combo])
                idx = np.arange(q.shape[0])
                with np.errstate(over="ignore", invalid="ignore"):
                    yield signs, q * signs + shifts, idx, shifts
            return
        with np.errstate(invalid="ignore", over="ignore"):
            rho = np.maximum(-(np.asarray(floor, dtype=np.float64) + log_norm), 0.0)
        maps, t_cut = self.radial_maps(q, rho)
        for combo in product(*maps):
            if skip_identity and all(c == (1.0, 0.0) for c in combo):
                continue
            idx = np.flatnonzero(self.radial_keep(combo, q, rho, t_cut, floor, log_norm))
            if idx.size == 0:
                continue
            signs = np.array([c[0] for c in combo])
            shifts = np.array([c[1] for c in combo])
            with np.errstate(over="ignore", invalid="ignore"):
                yield signs, q[idx] * signs + shifts, idx, shifts

    def dist(self, j: int, s: float, t: float, q: np.ndarray) -> np.ndarray:
        """Distance (in bandwidths) of the image s·q + t to the data's range in dim j."""
        if not self.bounded[j]:
            return np.zeros(q.shape)
        with np.errstate(over="ignore", invalid="ignore"):
            img = s * q + t
            u = np.maximum(np.maximum(self.xmin[j] - img, img - self.xmax[j]), 0.0) / self.h[j]
        return np.where(np.isnan(u), np.inf, u)

    def inside(self, q: np.ndarray) -> np.ndarray:
        return np.all((q >= self.b[:, 0]) & (q <= self.b[:, 1]), axis=1)

    def fold_points(self, y: np.ndarray) -> np.ndarray:
        """The folding map F onto the domain (in place on a float64 copy)."""
        out = np.array(y, dtype=np.float64)
        for j in np.flatnonzero(self.bounded):
            lo, hi = self.b[j]
            col = out[:, j]
            if self.modes[j] == "periodic":
                col = lo + np.mod(col - lo, hi - lo)
            elif math.isfinite(lo) and math.isfinite(hi):
                width = hi - lo
                r = np.mod(col - lo, 2.0 * width)
                col = lo + np.where(r > width, 2.0 * width - r, r)
            elif math.isfinite(lo):
                col = lo + np.abs(col - lo)
            else:
                col = hi - np.abs(hi - col)
            out[:, j] = np.clip(col, lo, hi)  # rounding of mod at the ends
        return out


def make_base(kde):
    """A shallow copy of ``kde`` without the fold (shares the data and caches)."""
    base = copy.copy(kde)
    base._fold = None
    base._base = None
    return base


def _prepare(kde, points, check_finite):
    from ._validate import as_points

    p = as_points(points, "points", d=kde.d, check_finite=check_finite)
    return p, np.result_type(kde.dtype, p.dtype)


def _logaddexp_at(acc, idx, vals):
    """acc[idx] = logaddexp(acc[idx], vals) with repeated indices (max-shifted sums)."""
    top = acc.copy()
    np.maximum.at(top, idx, vals)
    safe = np.where(np.isfinite(top), top, 0.0)
    tot = np.where(np.isfinite(acc), np.exp(acc - safe), 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        np.add.at(tot, idx, np.where(np.isfinite(vals), np.exp(vals - safe[idx]), 0.0))
    with np.errstate(divide="ignore"):
        res = np.log(tot) + safe
    acc[:] = np.where(top == np.inf, np.inf, res)


def _logpdf_1d_folded(kde, qi, dtype):
    """1-D folded log-density at queries inside the bounds by one sorted pass over all
    their images (``_core.kde_points_exact_1d_folded``: the images within the kernel's
    reach sorted once, one sweep or one Gaussian centre lattice, far-tail queries redone
    in log space), or None where the unbounded estimate would not take its sorted path
    (float32, small n·m, a Gaussian lattice too large). The maps are those of the fold
    that pass the term-wise bound for some query (``Fold.cost``; what is dropped is below
    e^-45 of the density). Equal to the image-by-image evaluation to rounding."""
    from . import _core

    base = kde._base
    m = qi.shape[0]
    if dtype != np.float64 or kde.n * m < base._SORTED_MIN_WORK:
        return None
    h = float(math.sqrt(kde.bandwidth[0, 0]))
    if not (h > 0 and math.isfinite(h)):
        return None
    fold = kde._fold
    q = np.ascontiguousarray(qi[:, 0])
    maps = [
        (sg, t)
        for sg, t in fold.maps[0]
        if (sg == 1.0 and t == 0.0) or np.any(fold.cost(0, sg, t, q) <= fold.threshold)
    ]
    x = np.ascontiguousarray(kde._x[:, 0], dtype=np.float64)
    w = np.ascontiguousarray(kde.weights, dtype=np.float64)
    got = _core.kde_points_exact_1d_folded(
        x,
        w,
        kde.kernel,
        h,
        q,
        [float(a) for a, _ in maps],
        [float(b) for _, b in maps],
        4 * (kde.n + m * len(maps)) + 65536,
    )
    if got is None:
        return None
    out = got[1] - (base._log_norm + base._log_det)
    if np.isnan(out).any():  # squared distances beyond the float range: the general path
        return None
    return out


def _logpdf_nd_folded(kde, qi):
    """Folded log-density in d ≥ 2 at queries inside the bounds (float64) in one Rust pass
    over blocks of the data and every image (``_core.kde_fold_images``), or None when a
    whitened query or map is not finite (the general path then runs).

    The images are those ``Fold.images`` keeps (term-wise bounds; for the exponential
    kernel in d ≥ 2 the radial bound, which needs the identity term first: that one is
    then the unbounded estimate's pairwise pass and is passed as ``lse0``). Otherwise the
    identity is one more map of the pass, pruned like the others. The pass visits blocks
    of the data per block of queries, nearest first, and skips a block for an image by
    two rules that each spend half of e^-36 of the density (a union bound against a floor
    from the nearest blocks' exact sums, and a running budget against the sum so far;
    ``src/core/kdefold.rs``): what is dropped stays below e^-36 (2.3e-16) of the
    density, under the unbounded estimate's own rounding error, and the rest is the exact
    sum. Far from the boundaries most blocks drop out, so the bounded call can cost less
    than the unbounded one.
    Memory: the whitened queries, one bool per (query, map), one (query, map) index pair
    per kept image, and a sorted copy of the whitened data in Rust."""
    from . import _core

    base = kde._base
    d = kde.d
    log_norm = base._log_norm + base._log_det
    fold = kde._fold
    if fold.radial:
        # The identity by the pairwise engine: its value sets the radial image lists.
        floor = base.logpdf(qi, check_finite=False).astype(np.float64)
        parts = list(fold.images(qi, floor, log_norm, skip_identity=True))
        if not parts:
            return floor
        lse0 = floor + log_norm
    else:
        parts = list(fold.images(qi))
        lse0 = None
    qw = base._whiten(qi, np.float64)
    w0 = base._whiten(np.zeros((1, d)), np.float64)[0]
    maps = np.empty((len(parts), d, 2))
    for g, (signs, _, _, shifts) in enumerate(parts):
        # The map q ↦ s·q + t in whitened coordinates (affine per bounded dimension, the
        # identity in the free ones): z ↦ s·z + (w(t) − s·w(0)).
        maps[g, :, 0] = signs
        maps[g, :, 1] = base._whiten(shifts[None, :], np.float64)[0] - signs * w0
    if not (np.isfinite(qw).all() and np.isfinite(maps).all()):
        return None
    # The (query, map) pairs sorted by query, then map: the nonzero entries of the kept
    # mask in row-major order (a third of the time of concatenating and sorting them).
    kept = np.zeros((qi.shape[0], len(parts)), dtype=bool)
    for g, p in enumerate(parts):
        kept[p[2], g] = True
    pq, pg = (np.ascontiguousarray(v, dtype=np.int64) for v in np.nonzero(kept))
    lse = _core.kde_fold_images(
        base._white_data(np.float64),
        np.ascontiguousarray(base._logw, dtype=np.float64),
        kde.kernel,
        np.ascontiguousarray(qw),
        lse0,
        maps.ravel(),
        pq,
        pg,
        _BLOCK_MARGIN,
    )
    return lse - log_norm


def logpdf(kde, points, return_ess=False, check_finite=True):
    """Folded log-density; -inf outside the domain."""
    p, dtype = _prepare(kde, points, check_finite)
    q = p.astype(np.float64)
    m = q.shape[0]
    fold = kde._fold
    inside = fold.inside(q)
    out = np.full(m, -np.inf)
    log_sq = np.full(m, -np.inf)  # log Σ (kernel terms)² for the ESS
    qi = q[inside]
    rows = np.flatnonzero(inside)
    base = kde._base
    if qi.shape[0] and not return_ess and kde.d == 1:
        fast = _logpdf_1d_folded(kde, qi, dtype)
        if fast is not None:
            out[rows] = fast
            return out.astype(dtype)
    if qi.shape[0]:
        # The identity image first (a floor for pruning), then every other image in one
        # call of the unbounded estimate (one sort of the data in the 1-D fast path).
        def ev(pts):  # the 1-D fast path serves only calls without the ESS
            if return_ess:
                return base.logpdf(pts, return_ess=True, check_finite=False)
            return base.logpdf(pts, check_finite=False), None

        mi = qi.shape[0]
        if not return_ess and kde.d >= 2 and dtype == np.float64:
            fast = _logpdf_nd_folded(kde, qi)
            if fast is not None:
                out[rows] = fast
                return out
        # Two calls, not one: images far from the data would send the 1-D sorted path
        # into its slow exact tail recomputation, and only the identity's values let
        # the absolute test drop them (one call with every image was 25x slower).
        floor, e0 = ev(qi)
        floor = floor.astype(np.float64)
        log_norm = base._log_norm + base._log_det
        parts = list(fold.images(qi, floor, log_norm, skip_identity=True))
        idx_all = np.concatenate([np.arange(mi)] + [p[2] for p in parts])
        if parts:
            img = np.concatenate([p[1] for p in parts])
            lp, ess = ev(img)
            lp = np.concatenate([floor, lp.astype(np.float64)])
            ess = np.concatenate([e0, ess]) if return_ess else None
        else:
            lp, ess = floor, e0
        r = rows[idx_all]
        # Unbuffered accumulation: an index may repeat (several images of one query).
        _logaddexp_at(out, r, lp)
        if return_ess:
            with np.errstate(divide="ignore", invalid="ignore"):
                lq = np.where(ess > 0, 2.0 * lp - np.log(ess), -np.inf)
            _logaddexp_at(log_sq, r, lq)
    if return_ess:
        with np.errstate(invalid="ignore", over="ignore"):
            ess = np.where(np.isfinite(out), np.exp(2.0 * out - log_sq), 0.0)
        return out.astype(dtype), ess.astype(dtype)
    return out.astype(dtype)


def score(kde, points, check_finite=True):
    """Gradient of the folded log-density: Σ_g f₀(gq) J_gᵀ s₀(gq) / Σ_g f₀(gq), with J_g
    the diagonal of signs; 0 outside the domain and where the density is 0."""
    p, dtype = _prepare(kde, points, check_finite)
    q = p.astype(np.float64)
    m, d = q.shape
    fold = kde._fold
    inside = fold.inside(q)
    rows = np.flatnonzero(inside)
    base = kde._base
    terms = []
    qi = q[inside]
    # Where every image's density underflows, the score of the identity image (the
    # unbounded estimate's far-field limit) is used.
    ident = np.zeros((qi.shape[0], d))
    if qi.shape[0]:
        floor = base.logpdf(qi, check_finite=False).astype(np.float64)
        ident = base.score(qi, check_finite=False).astype(np.float64)
        terms.append((np.arange(qi.shape[0]), floor, ident))
        log_norm = base._log_norm + base._log_det
        for signs, img, idx, _ in fold.images(qi, floor, log_norm, skip_identity=True):
            lp = base.logpdf(img, check_finite=False).astype(np.float64)
            sc = base.score(img, check_finite=False).astype(np.float64) * signs
            terms.append((idx, lp, sc))
    top = np.full(qi.shape[0], -np.inf)
    for idx, lp, _ in terms:
        top[idx] = np.maximum(top[idx], lp)
    num = np.zeros((qi.shape[0], d))
    den = np.zeros(qi.shape[0])
    for idx, lp, sc in terms:
        with np.errstate(invalid="ignore", over="ignore"):
            wgt = np.where(np.isfinite(lp), np.exp(lp - top[idx]), 0.0)
        # A single image (far from every other) keeps an infinite score as it is.
        num[idx] += np.where(wgt[:, None] > 0, wgt[:, None] * sc, 0.0)
        den[idx] += wgt
    out = np.zeros((m, d))
    with np.errstate(invalid="ignore", divide="ignore"):
        val = np.where(den[:, None] > 0, num / np.where(den > 0, den, 1.0)[:, None], ident)
    out[rows] = np.nan_to_num(val, nan=0.0)
    return out.astype(dtype)


def resample(kde, size, rng):
    """Draws from the unbounded estimate, folded onto the domain."""
    y = kde._base.resample(size, rng=rng)
    return kde._fold.fold_points(y).astype(kde.dtype, copy=False)


def box_prob(kde, lo, hi, base_box_prob):
    """P(box ∩ D) = Σ_g P₀(g(box ∩ D)) in internal units; ``base_box_prob(kde, lo, hi)``
    the unbounded box probability. Every image of a box under the maps is a box."""
    fold = kde._fold
    s = kde._scale
    b = fold.b / s
    lo = np.maximum(lo, b[:, 0])
    hi = np.minimum(hi, b[:, 1])
    empty = (hi <= lo).any(axis=1)
    hi = np.maximum(lo, hi)
    m, d = lo.shape
    total = np.zeros(m)
    base = kde._base
    per_dim = []
    for j in range(d):
        keep = []
        reach = {"gaussian": 8.7, "exponential": 41.0}.get(kde.kernel, 1.0) * fold.h[j]
        for sg, t in fold.maps[j]:
            # Drop a map whose image of the whole interval lies beyond the kernel's reach
            # from every data point: its probability is below 1e-17 (0 for compact kernels).
            with np.errstate(invalid="ignore", over="ignore"):
                e0, e1 = sorted((sg * fold.b[j, 0] + t, sg * fold.b[j, 1] + t))
            gap = max(e0 - fold.xmax[j], fold.xmin[j] - e1, 0.0)
            if (sg, t) != (1.0, 0.0) and not gap < reach:
                continue
            keep.append((sg, t / s))
        per_dim.append(keep)
    if math.prod(len(p) for p in per_dim) > _MAX_IMAGES:
        raise ValueError(
            "the bandwidth is so wide relative to the bounded interval(s) that too many "
            "images are needed; use a smaller bandwidth"
        )
    for combo in product(*per_dim):
        sg = np.array([c[0] for c in combo])
        t = np.array([c[1] for c in combo])
        with np.errstate(over="ignore", invalid="ignore"):
            a = lo * sg + t
            c = hi * sg + t
        total += base_box_prob(base, np.minimum(a, c), np.maximum(a, c))
    total[empty] = 0.0
    return np.clip(total, 0.0, 1.0)


def support(kde, lo_s, hi_s):
    b = kde._fold.b[0]
    return max(lo_s, float(b[0])), min(hi_s, float(b[1]))


def default_extent(kde) -> np.ndarray:
    """The default grid extent of a bounded KDE, (d, 2): the data's range widened by the
    kernel's reach, clipped to the bounds."""
    from ._kdegrid import _REACH

    fold = kde._fold
    b = fold.b
    reach = _REACH.get(kde.kernel, 1.0) * fold.h * (1 + 1e-6)
    ext = np.stack(
        [np.maximum(fold.xmin - reach, b[:, 0]), np.minimum(fold.xmax + reach, b[:, 1])], 1
    )
    ext[:, 1] = np.maximum(ext[:, 1], np.nextafter(ext[:, 0], np.inf))
    return ext


def grid_refined(kde, n_points, extent, method, log, rtol):
    """``grid`` with ``rtol``: a binned folded grid is recomputed on grids r times finer
    per axis (same extent, so every r-th point is a point of the requested grid) until
    the folded grid's error estimate is below rtol·max f̂, as for unbounded grids
    (``divest._kdegrid._refine``). The estimate is that of the folded values (in 1-D their
    own second differences, which include every image's curvature; in 2-D/3-D the sum of
    the images' estimates, see ``grid``), so the refinement targets the bounded density's
    error, not the unbounded one's."""
    from ._kdegrid import _LOG_RTOL, _ORDER_1D, _ORDER_ND, _check_n_points, _check_rtol, _refine
    from ._validate import check_bool

    rtol = _check_rtol(rtol)
    d = kde.d
    if rtol is None or d > 3:
        return grid(kde, n_points, extent, method, log)
    log = check_bool(log, "log")
    pts = _check_n_points(n_points, d)
    if log and rtol < _LOG_RTOL:
        method = "exact"  # kept binned log values are only guaranteed to 1e-7 nats
    if extent is None:
        ext = default_extent(kde)
        extent = [tuple(e) for e in ext] if d > 1 else tuple(ext[0])

    def run(p):
        return grid(kde, list(p) if d > 1 else p[0], extent, method, log)

    # The error shrinks as δ² in 1-D (folded second differences) and as δ³ in 2-D/3-D
    # (the images' moment-corrected estimates), as for unbounded grids.
    return _refine(run, list(pts), rtol, _ORDER_1D if d == 1 else _ORDER_ND)


def grid(kde, n_points, extent, method, log):
    """Folded grid: the unbounded grid on each image of the (domain-clipped) grid, which
    is again a regular grid of the same spacing (reversed for a reflection), summed."""
    from ._kdegrid import GridResult, _check_extent, _check_n_points, grid_of
    from ._validate import check_bool

    d = kde.d
    if d > 3:
        return grid_of(kde._base, n_points=n_points, extent=extent, method=method, log=log)
    log = check_bool(log, "log")
    pts = _check_n_points(n_points, d)
    fold = kde._fold
    b = fold.b
    if extent is None:
        ext = default_extent(kde)
    else:
        ext = _check_extent(extent, d)
    m = np.array(pts)
    delta = (ext[:, 1] - ext[:, 0]) / (m - 1)
    axes = tuple(ext[a, 0] + np.arange(m[a], dtype=np.float64) * delta[a] for a in range(d))
    inside_axes = [(g >= b[a, 0]) & (g <= b[a, 1]) for a, g in enumerate(axes)]
    # Candidate maps per axis, pruned over the whole axis.
    per_dim = []
    for a in range(d):
        g = axes[a][inside_axes[a]]
        keep = []
        for s, t in fold.maps[a]:
            # (The exponential kernel in d ≥ 2 is pruned per point below, not by axis.)
            if g.size and (fold.radial or np.any(fold.cost(a, s, t, g) <= fold.threshold)):
                keep.append((s, t))
        per_dim.append(keep or [(1.0, 0.0)])
    if not fold.radial and math.prod(len(p) for p in per_dim) > _MAX_IMAGES:
        raise ValueError(
            "the bandwidth is so wide relative to the bounded interval(s) that too many "
            "images are needed; use a smaller bandwidth"
        )
    shape = tuple(int(v) for v in m)
    # The identity image on the whole grid, then each other image on the smallest
    # sub-grid holding every point where it matters (the same tests as for points:
    # term-wise cost, and the absolute bound against the identity's value), so far
    # image grids (which the unbounded grid would evaluate in its tails) are skipped.
    ident = grid_of(
        kde._base,
        n_points=pts if d > 1 else pts[0],
        extent=ext if d > 1 else ext[0],
        method=method,
        log=log,
    )
    acc = np.array(ident.values, dtype=np.float64).reshape(shape)
    err = np.array(np.broadcast_to(np.asarray(ident.errors), shape), dtype=np.float64)
    n_exact = ident.n_exact
    used = ident.method
    with np.errstate(divide="ignore"):
        floor = acc if log else np.log(acc)
    log_norm = kde._base._log_norm + kde._base._log_det
    n_images = 1
    if fold.radial:  # the exponential kernel in d ≥ 2: Fold.radial_maps / radial_keep
        with np.errstate(invalid="ignore", over="ignore"):
            rho = np.maximum(-(floor + log_norm), 0.0)
        ends = np.array([[g.min() if g.size else 0.0, g.max() if g.size else 0.0] for g in axes]).T
        per_dim, t_cut = fold.radial_maps(ends, rho[np.isfinite(rho)])
    for combo in product(*per_dim):
        if all(s == 1.0 and t == 0.0 for s, t in combo):
            continue
        total = np.zeros(shape)
        u2 = np.zeros(shape)
        gap = np.zeros(shape)
        for a, (s, t) in enumerate(combo):
            sh = [1] * d
            sh[a] = -1
            c = np.where(inside_axes[a], fold.cost(a, s, t, axes[a]), np.inf)
            u = fold.dist(a, s, t, axes[a])
            total = total + c.reshape(sh)
            u2 = u2 + (u * u).reshape(sh)
            if fold.radial:
                gap = gap + np.where(inside_axes[a], fold.sqgap(a, s, t, axes[a]), 0.0).reshape(sh)
        if fold.radial:
            with np.errstate(over="ignore", invalid="ignore"):
                e = gap / (np.sqrt(rho * rho + gap) + rho)
                keep = np.isfinite(total) & ~(
                    (e >= t_cut) | (-np.sqrt(u2) - log_norm < floor - t_cut)
                )
        else:
            keep = total <= fold.threshold
        if kde.kernel in ("gaussian", "exponential") and not fold.radial:
            with np.errstate(over="ignore", invalid="ignore"):
                lk = -0.5 * u2 if kde.kernel == "gaussian" else -np.sqrt(u2)
                keep &= ~(lk - log_norm < floor - fold.threshold)
        if not keep.any():
            continue
        sub_ext, sl, flips, sizes = [], [], [], []
        for a, (s, t) in enumerate(combo):
            other = tuple(i for i in range(d) if i != a)
            hit = np.flatnonzero(keep.any(axis=other) if other else keep)
            i0, i1 = int(hit[0]), int(hit[-1])
            if i1 == i0:
                i1, i0 = (i1 + 1, i0) if i1 + 1 < shape[a] else (i1, i0 - 1)
            e0, e1 = s * axes[a][i0] + t, s * axes[a][i1] + t
            sub_ext.append((min(e0, e1), max(e0, e1)))
            sl.append(slice(i0, i1 + 1))
            flips.append(s < 0)
            sizes.append(i1 - i0 + 1)
        r = grid_of(
            kde._base,
            n_points=sizes if d > 1 else sizes[0],
            extent=sub_ext if d > 1 else sub_ext[0],
            method=method,
            log=log,
        )
        sub = tuple(sizes)
        vals = np.asarray(r.values, dtype=np.float64).reshape(sub)
        errs = np.broadcast_to(np.asarray(r.errors, dtype=np.float64), sub)
        for a, f in enumerate(flips):
            if f:
                vals = np.flip(vals, axis=a)
                errs = np.flip(errs, axis=a)
        sl = tuple(sl)
        if log:
            acc[sl] = np.logaddexp(acc[sl], vals)
            err[sl] = np.maximum(err[sl], errs)
        else:
            acc[sl] = acc[sl] + vals
            err[sl] = err[sl] + errs
        n_exact += r.n_exact
        n_images += 1
    if used == "binned" and not log and n_images > 1 and d == 1:
        # The binning errors of the images add up to (δ²/12)·(folded f)″, and near a
        # reflecting bound the images' large second differences cancel in the sum:
        # estimate from the folded values' own second differences (as the unbounded
        # grid does), not by adding the images' estimates (10x to 100x too large).
        # In 2-D/3-D the binning is moment-corrected (its error is of order δ⁴, see
        # src/core/kdegrid/nd.rs), so the images' own estimates are added instead.
        est = np.zeros(shape)
        for a in range(d):
            if shape[a] < 3:
                continue
            d2 = np.diff(acc, 2, axis=a)
            pad_w = [(0, 0)] * d
            pad_w[a] = (1, 1)
            est += np.abs(np.pad(d2, pad_w, mode="edge")) / 12.0
        err = est + 1e-14 * n_images * float(np.max(np.abs(acc)))
    mask = np.ones(shape, dtype=bool)
    for a in range(d):
        sh = [1] * d
        sh[a] = -1
        mask = mask & inside_axes[a].reshape(sh)
    acc = np.where(mask, acc, -np.inf if log else 0.0)
    err = np.where(mask, err, 0.0)
    grid_out = axes if d > 1 else axes[0]
    return GridResult(grid_out, acc, float(err.max()), err, used, log, min(n_exact, acc.size))


def restrict(kde_new, fold, dims):
    """Attach the fold of ``dims`` (a list of the old dimensions) to ``kde_new``."""
    b = fold.b[dims]
    if not np.isfinite(b).any():
        kde_new._fold = None
        kde_new._base = None
        return kde_new
    kde_new._fold = None
    kde_new._base = None
    kde_new._base = make_base(kde_new)
    modes = tuple(fold.modes[j] for j in dims)
    boundary = modes[0] if len(set(modes)) == 1 else modes
    kde_new._fold = Fold(kde_new, b, boundary)
    kde_new.bounds = b.copy()
    kde_new.boundary = boundary
    return kde_new


def folded_log_kernel_1d(fold, j: int, v: float, x: np.ndarray, h: float) -> np.ndarray:
    """log Σ_g N(g v; x_i, h²) per data point (the folded 1-D Gaussian at v), (n,)."""
    acc = np.full(x.shape, -np.inf)
    q = np.array([v])
    for s, t in fold.maps[j]:
        if fold.bounded[j] and fold.cost(j, s, t, q)[0] > fold.threshold:
            continue
        z = (s * v + t - x) / h
        acc = np.logaddexp(acc, -0.5 * z * z)
    return acc - math.log(h) - 0.5 * math.log(2 * math.pi)


def conditional(kde, given, base_conditional, base_marginal):
    """Conditional of a bounded Gaussian KDE. The bounded dimensions are uncorrelated
    with the others in the kernel, so conditioning on a bounded dimension j multiplies
    each data point's weight by the folded 1-D kernel at the given value (and leaves the
    centres); the unbounded given dimensions are conditioned on as without bounds. The
    result keeps the bounds of the remaining dimensions."""
    base_conditional(kde._base, given)  # validates ``given`` (and the kernel)
    d = kde.d
    g = {int(k) % d: float(v) for k, v in given.items()}
    fold = kde._fold
    with np.errstate(divide="ignore"):
        logw = np.log(kde.weights)
    free_given = {}
    for j, v in g.items():
        if not fold.bounded[j]:
            free_given[j] = v
            continue
        lo, hi = fold.b[j]
        if not lo <= v <= hi:
            raise ValueError(
                f"given value {v!r} for dimension {j} lies outside its bounds "
                f"[{lo!r}, {hi!r}], where the density is 0"
            )
        x = kde._x[:, j].astype(np.float64)
        logw = logw + folded_log_kernel_1d(fold, j, v, x, float(fold.h[j]))
    top = float(np.max(logw))
    if not math.isfinite(top):
        raise ValueError(
            f"given={given!r} is so far from every data point (in bandwidths) that all "
            "conditional weights are zero"
        )
    w = np.exp(logw - top)
    w /= w.sum()
    tmp = copy.copy(kde._base)
    tmp.weights = w
    rest = [i for i in range(d) if i not in g]
    if free_given:
        # Conditioning on the free dims only; the bounded given dims are then dropped.
        sub = base_marginal(tmp, sorted(set(rest) | set(free_given)))
        order = sorted(set(rest) | set(free_given))
        new = base_conditional(sub, {order.index(j): v for j, v in free_given.items()})
    else:
        new = base_marginal(tmp, rest)
    return restrict(new, fold, rest)


def loo_logpdf(kde):
    """Leave-one-out log-density of a bounded KDE at its data points: for each x_i,
    log Σ_g Σ_{j≠i} ŵ_j K_H(g x_i − x_j), every image of x_i's own kernel left out too.
    One pairwise pass per image combination that matters for some point, with the
    engine's index-aligned self-exclusion (the image queries are the data's images, in
    order). Memory: O(n·d) per combination."""
    from . import _core

    if np.count_nonzero(kde.weights) < 2:
        raise ValueError("leave-one-out needs at least 2 data points with positive weight")
    base = kde._base
    fold = kde._fold
    x = kde._x.astype(np.float64)
    xw = base._white_data(np.float64)
    floor = base.loo_logpdf().astype(np.float64)  # the identity image
    acc = floor + np.log1p(-kde.weights) + (base._log_norm + base._log_det)
    log_norm = base._log_norm + base._log_det
    with np.errstate(divide="ignore"):
        floor_full = acc - log_norm
    for signs, _, idx, shifts in fold.images(x, floor_full, log_norm, skip_identity=True):
        with np.errstate(over="ignore", invalid="ignore"):
            qw = base._whiten(x * signs + shifts, np.float64)
        far = ~np.isfinite(qw).all(axis=1)
        qw[far] = 0.0
        lse, _, _ = _core.kde_eval(
            xw, base._logw, np.ascontiguousarray(qw), kde.kernel, exclude_self=True
        )
        lse = np.where(far, -np.inf, lse)
        acc[idx] = np.logaddexp(acc[idx], lse[idx])
    with np.errstate(divide="ignore"):
        out = acc - np.log1p(-kde.weights) - log_norm
    return out.astype(kde.dtype, copy=False)


def _radial_loo_combos(kde0, factors, acc, x):
    """The image combinations the exponential kernel in d ≥ 2 needs for the LOO
    selection: per factor, a fold at that bandwidth and the identity's leave-one-out
    kernel sums (``acc[:, g]``) as the floor of ``Fold.radial_keep`` (every data point
    as a query), and the union over the factors, so each factor's dropped images are
    within that factor's proven bound."""
    seen = {}
    for g, f in enumerate(factors):
        tmp = copy.copy(kde0)
        tmp.bandwidth = kde0.bandwidth * float(f * f)
        try:
            fold = Fold(tmp, kde0._fold.b, kde0._fold.boundary)
            # Kernel units: floor + log_norm = the identity's log kernel sum.
            for signs, _, _, shifts in fold.images(x, acc[:, g], 0.0, skip_identity=True):
                seen[(tuple(signs), tuple(shifts))] = (signs, shifts)
        except ValueError:
            raise ValueError(
                f"bandwidth='loo' with bounds and the exponential kernel: at factor {f:.4g} "
                "some data points are so isolated that the images cannot be bounded with "
                f"at most {_MAX_IMAGES} combinations; pass a grid of larger factors or use "
                "the Gaussian kernel"
            ) from None
    return list(seen.values())


def loo_grid(kde0, factors: np.ndarray) -> np.ndarray:
    """Leave-one-out log-densities of the bounded estimate for a grid of bandwidth
    factors: entry (i, g) is log Σ_images Σ_{j≠i} ŵ_j K_{s_g² H0}(g x_i − x_j), every image
    of x_i's own kernel left out, for ``kde0`` a bounded KDE with bandwidth H0 (what
    ``loo_logpdf`` gives at each factor). The images are those of a fold built at the
    largest factor, pruned only by the term-wise bound (see ``Fold.cost``), which is
    conservative for every smaller factor (the bound scales as 1/s² for the Gaussian, 1/s
    for the exponential in 1-D; a compact kernel's dropped image is outside its support
    at the largest bandwidth already); the exponential kernel in d ≥ 2 takes the union
    over the factors of ``Fold.radial_keep``'s kept combinations
    (``_radial_loo_combos``). One pairwise pass per image combination over all factors.
    Memory: O(n·(d + G)) per combination; (n, G) result."""
    from . import _core

    base = kde0._base
    d = kde0.d
    big = copy.copy(kde0)
    fmax = float(np.max(factors))
    big.bandwidth = kde0.bandwidth * (fmax * fmax)
    try:
        fold = Fold(big, kde0._fold.b, kde0._fold.boundary)
    except ValueError:
        raise ValueError(
            f"bandwidth='loo' with bounds: the largest factor in the grid ({fmax:.4g}) makes "
            "the bandwidth so wide relative to the bounded interval(s) that too many images "
            f"would be needed (limit {_MAX_IMAGES}); pass a grid of smaller factors"
        ) from None
    dtype = kde0.dtype
    xw = base._white_data(dtype)
    x = kde0._x.astype(np.float64)
    acc = _core.kde_loo_grid(xw, base._logw, kde0.kernel, np.ascontiguousarray(factors))
    if fold.radial:
        combos = _radial_loo_combos(kde0, factors, acc, x)
    else:
        combos = [(sg, sh) for sg, _, _, sh in fold.images(x, skip_identity=True)]
    for signs, shifts in combos:
        with np.errstate(over="ignore", invalid="ignore"):
            qw = base._whiten(x * signs + shifts, dtype)
        far = ~np.isfinite(qw).all(axis=1)
        qw[far] = 0.0
        lse = _core.kde_loo_grid_at(
            xw, base._logw, np.ascontiguousarray(qw), kde0.kernel, np.ascontiguousarray(factors)
        )
        lse[far] = -np.inf
        acc = np.logaddexp(acc, lse)
    const = base._log_norm + base._log_det + d * np.log(factors)
    with np.errstate(divide="ignore", invalid="ignore"):
        return acc - const[None, :] - np.log1p(-kde0.weights)[:, None]
