"""Degenerate data for the covariance rules (issue 11): which directions are degenerate,
and the two opt-in ways forward of ``KDE(degenerate=...)``.

* ``describe`` names the degenerate directions for the error message: constant columns,
  linear combinations of the other columns that are (numerically) constant, and d ≥ n.
* "regularize": the rule's covariance Σ is replaced by Σ + λ·diag(v) with λ = 1e-3 and
  v_j the variance of column j (for a constant column, the geometric mean of the other
  columns' variances, or 1 when every column is constant). Each direction then keeps at
  least sqrt(λ) ≈ 3% of its column's spread times the rule's factor.
* "hull": the data are standardised (each non-constant column by its weighted standard
  deviation), their principal axes with variance above 1e-12 of the largest span the
  affine hull, and the rule is applied to the coordinates y on those axes (which are
  uncorrelated, so the rule is always defined there). The estimate is the density of
  the data on the hull with respect to its k-dimensional volume (Hausdorff measure):
  f_y(y) / sqrt(det(AᵀA)), with x = μ + A y the hull's parameterisation in data units.
"""

from __future__ import annotations

import numpy as np

#: Ridge of degenerate="regularize", relative to each column's variance.
REGULARIZATION = 1e-3
#: Principal variances below this fraction of the largest are degenerate.
_RANK_RTOL = 1e-12


def _standardise(x, w):
    x = np.asarray(x, dtype=np.float64)
    pos = x[w > 0]
    const = np.ptp(pos, axis=0) == 0
    mu = w @ x
    mu[const] = pos[0, const]
    c = x - mu
    var = w @ (c * c)
    sd = np.sqrt(var)
    const = const | ~(sd > 0)
    nc = ~const
    z = c[:, nc] / sd[nc]
    return mu, sd, const, z


def _principal(z, w):
    """Principal variances (descending) and axes of standardised data."""
    if z.shape[1] == 0:
        return np.zeros(0), np.zeros((0, 0))
    _, sv, vt = np.linalg.svd(np.sqrt(w)[:, None] * z, full_matrices=False)
    lam = np.zeros(z.shape[1])
    lam[: sv.size] = sv * sv
    v = np.zeros((z.shape[1], z.shape[1]))
    v[:, : vt.shape[0]] = vt.T
    if vt.shape[0] < z.shape[1]:  # d > n: complete the basis of the null space
        q, _ = np.linalg.qr(np.concatenate([vt.T, np.eye(z.shape[1])], axis=1))
        v[:, vt.shape[0] :] = q[:, vt.shape[0] : z.shape[1]]
    return lam, v


def _fmt_combo(coef, cols):
    terms = []
    for cf, j in zip(coef, cols):
        if abs(cf) < 1e-6:
            continue
        mag = f"{abs(cf):.3g}·" if abs(abs(cf) - 1.0) > 1e-9 else ""
        sign = "−" if cf < 0 else "+"
        terms.append((sign, f"{mag}x[:, {j}]"))
    if not terms:
        return "0"
    first = ("−" if terms[0][0] == "−" else "") + terms[0][1]
    return " ".join([first] + [f"{s} {t}" for s, t in terms[1:]])


def describe(xs, w, cov=None) -> str:
    """A sentence naming the degenerate directions of the data ``xs`` (n, d)."""
    n, d = xs.shape
    parts = []
    npos = int(np.count_nonzero(w))
    if npos <= d:
        parts.append(
            f"The {npos} data points with positive weight span at most {npos - 1} of the "
            f"{d} dimensions (d ≥ n)."
        )
    mu, sd, const, z = _standardise(xs, w)
    if const.any():
        cols = [int(j) for j in np.flatnonzero(const)]
        parts.append(f"Constant column(s): {cols}.")
    nc = np.flatnonzero(~const)
    lam, v = _principal(z, w)
    if lam.size:
        small = np.flatnonzero(lam <= _RANK_RTOL * max(lam[0], 1e-300))
        if small.size == 0 and not parts:
            # Singular by the rule's Cholesky test but not by this threshold: the
            # direction of least variance is the culprit.
            small = np.array([lam.size - 1])
        combos = []
        for i in small[:3]:
            coef = v[:, i] / sd[nc]
            coef = coef / np.max(np.abs(coef))
            combos.append(_fmt_combo(coef, nc))
        more = f" (and {small.size - 3} more)" if small.size > 3 else ""
        if small.size:
            parts.append(
                "Nearly constant combination(s) of the columns: "
                + "; ".join(c + " ≈ const" for c in combos)
                + more
                + "."
            )
    return " ".join(parts)


def regularized(xs, w):
    """Σ + λ·diag(v) (see the module docstring), in the units of ``xs``."""
    mu, sd, const, _ = _standardise(xs, w)
    c = np.asarray(xs, dtype=np.float64) - mu
    cov = (c * w[:, None]).T @ c
    # The unbiased weighting of np.cov(aweights), as the rules use.
    cov /= max(1.0 - float(np.sum(w * w)), 1e-300)
    var = np.diag(cov).copy()
    pos = var > 0
    fill = float(np.exp(np.mean(np.log(var[pos])))) if pos.any() else 1.0
    v = np.where(pos & ~const, var, fill)
    return cov + REGULARIZATION * np.diag(v)


class Hull:
    """The data's affine hull: x = μ + A y (data units), y = Vᵀ D⁻¹(x − μ)."""

    def __init__(self, x, w):
        x = np.asarray(x, dtype=np.float64)
        self.d = x.shape[1]
        mu, sd, const, z = _standardise(x, w)
        lam, v = _principal(z, w)
        k = int(np.count_nonzero(lam > _RANK_RTOL * max(lam[0], 1e-300))) if lam.size else 0
        if k == 0:
            raise ValueError(
                "degenerate='hull' needs data that span at least one dimension; all data "
                "points (with positive weight) coincide, so there is no density to estimate: "
                "pass an explicit bandwidth instead"
            )
        self.mu, self.sd, self.const = mu, sd, const
        self.nc = ~const
        self.v = np.ascontiguousarray(v[:, :k])
        self.k = k
        a = np.zeros((self.d, k))
        a[self.nc] = self.v * sd[self.nc][:, None]
        self.a = a
        self.log_vol = 0.5 * float(np.linalg.slogdet(a.T @ a)[1])
        res = self._residual(x)
        self.tol = 1e-6 + 10.0 * float(res.max(initial=0.0))

    def coords(self, q):
        z = (np.asarray(q, dtype=np.float64)[:, self.nc] - self.mu[self.nc]) / self.sd[self.nc]
        return z @ self.v

    def _residual(self, q):
        q = np.asarray(q, dtype=np.float64)
        z = (q[:, self.nc] - self.mu[self.nc]) / self.sd[self.nc]
        r = z - (z @ self.v) @ self.v.T
        rel = np.sqrt(np.sum(r * r, axis=1)) / (1.0 + np.sqrt(np.sum(z * z, axis=1)))
        return rel

    def on_hull(self, q):
        q = np.asarray(q, dtype=np.float64)
        ok = self._residual(q) <= self.tol
        if self.const.any():
            c = self.mu[self.const]
            ok &= np.all(np.abs(q[:, self.const] - c) <= 4e-16 * np.abs(c), axis=1)
        return ok

    def points(self, y):
        out = np.empty((y.shape[0], self.d))
        out[:, self.const] = self.mu[self.const]
        out[:, self.nc] = self.mu[self.nc] + (y @ self.v.T) * self.sd[self.nc]
        return out

    def gradient(self, s_y):
        out = np.zeros((s_y.shape[0], self.d))
        out[:, self.nc] = (s_y @ self.v.T) / self.sd[self.nc]
        return out


def unsupported(what: str) -> ValueError:
    return ValueError(
        f"{what} is not available for a KDE on the data's affine hull (degenerate='hull'): "
        "the estimate has no density on the full space. Use degenerate='regularize' or an "
        "explicit bandwidth for it"
    )
