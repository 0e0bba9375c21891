"""The former NumPy box probabilities of divest._kdecalc (issue 11), kept as a test oracle
for the Rust kernel (divest._core.kde_box_gauss): the table-driven normal tail, the
bivariate normal CDF (Drezner–Wesolowsky/Genz), the trivariate CDF by Plackett's identity
(_Tvn) and the box sums of a KDE in chunks of queries. Independent of the Rust code: it
shares only the scheme (see docs/design-as-built.md)."""

from __future__ import annotations

import decimal
import functools
import math

import numpy as np

_SQRT1_2 = math.sqrt(0.5)
_CHUNK_TERMS = 1 << 20

# The upper normal tail Q(t) = φ(t)·M(t) (M the Mills ratio) from a table: at the nodes
# t_j = j/64 (0 ≤ t_j < 40) the Taylor coefficients φ(t_j)·M^(k)(t_j)/k!, k ≤ 6, and
# Q(t_j + δ) = e^{−(t_j·δ + δ²/2)} Σ_k c_jk δ^k for |δ| ≤ 1/128 (M is entire and slowly
# varying, so the series' remainder is below 1e-17 relative; e^{−t_j²/2} sits in the
# table, so the exponent stays small and exact enough). M^(k) by the recurrence
# M' = tM − 1, M^(k+1) = tM^(k) + kM^(k−1); Q(t_j) from math.erfc with the rounding of
# t_j/√2 corrected (the argument's own rounding would cost t²·ε/2 relative). About 3 ulp
# relative against mpmath over (−40, 40) (tests), twice as fast as math.erfc elementwise.
_PHI_STEP = 64
_PHI_DEG = 6
_PHI_TOP = 40.0


@functools.cache
def _mills_taylor_table() -> np.ndarray:
    inv_sqrt2 = decimal.Context(prec=40).sqrt(decimal.Decimal(2)) / 2
    rows = int(_PHI_TOP * _PHI_STEP) + 1
    tab = np.zeros((_PHI_DEG + 1, rows))
    for j in range(rows):
        t = j / _PHI_STEP
        x = t * _SQRT1_2
        dx = float(decimal.Decimal(t) * inv_sqrt2 - decimal.Decimal(x))
        q = 0.5 * math.erfc(x) * math.exp(-dx * (2.0 * x + dx))
        g = math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
        if g == 0.0 or q == 0.0:
            break  # beyond the smallest double: the rest of the table stays 0
        m = [q / g, t * (q / g) - 1.0]
        for k in range(1, _PHI_DEG):
            m.append(t * m[k] + k * m[k - 1])
        f = 1.0
        for k in range(_PHI_DEG + 1):
            tab[k, j] = g * m[k] / f
            f *= k + 1
    return tab


def _phi_c(t: np.ndarray) -> np.ndarray:
    """Upper tail of the standard normal, 1 − Φ(t), with full relative accuracy (about
    3 ulp; the table above). Beyond |t| = 40 the tail (Φ(−40) ≈ 4e-350) is below the
    smallest double and the value is exactly 0 or 1."""
    t = np.asarray(t, dtype=np.float64)
    tab = _mills_taylor_table()
    a = np.abs(t).ravel()
    j = np.fmin(a * _PHI_STEP + 0.5, tab.shape[1] - 1).astype(np.intp)  # NaN: last row
    tj = j * (1.0 / _PHI_STEP)
    with np.errstate(under="ignore", over="ignore", invalid="ignore"):
        # |t| ≥ 40, inf and NaN land on the table's last row, which is 0 (the tail
        # underflows from t ≈ 38.6 on); fmin keeps their δ finite (NaN → 1/128), so the
        # result there is exactly 0.
        d = np.fmin(a - tj, 0.5 / _PHI_STEP)
        acc = np.take(tab[_PHI_DEG], j)
        for k in range(_PHI_DEG - 1, -1, -1):
            acc *= d
            acc += np.take(tab[k], j)
        tj += 0.5 * d
        tj *= d
        np.negative(tj, out=tj)
        acc *= np.exp(tj, out=tj)
    acc = acc.reshape(t.shape)
    np.subtract(1.0, acc, out=acc, where=t < 0)
    return acc


def _cdf_lower(kernel: str, t: np.ndarray) -> np.ndarray:
    """Lower tail of the unit Gaussian (the only kernel this oracle covers)."""
    if kernel != "gaussian":
        raise ValueError(kernel)
    return _phi_c(-t)


def _interval_prob(kernel: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(a < U < b) for the unit kernel, a ≤ b elementwise (±inf allowed), computed from
    the lower tails where b ≤ 0 and from the upper tails where a ≥ 0, so that tail
    probabilities keep their relative accuracy."""
    a, b = np.broadcast_arrays(a, b)
    out = np.empty(a.shape)
    up = a >= 0  # both ends in the upper half: difference of upper tails
    lo = ~up
    out[lo] = _cdf_lower(kernel, b[lo]) - _cdf_lower(kernel, a[lo])
    out[up] = _cdf_lower(kernel, -a[up]) - _cdf_lower(kernel, -b[up])
    return np.maximum(out, 0.0)


_GL_X, _GL_W = np.polynomial.legendre.leggauss(20)


def _phi(t):
    """Φ(t) with full relative accuracy in the lower tail."""
    return _phi_c(-np.asarray(t, dtype=np.float64))


def _bvn_upper(h: np.ndarray, k: np.ndarray, r: float, a: float) -> np.ndarray:
    """P(X > h, Y > k) for a standard bivariate normal of correlation r (a = √(1 − r²),
    passed separately so it keeps its accuracy as r → ±1); h, k finite arrays.

    |r| < 0.925: Φ(−h)Φ(−k) plus Sheppard's integral (1/2π)∫_0^{asin r} exp(−(h² + k² −
    2hk sinθ)/(2cos²θ)) dθ by 20-point Gauss–Legendre (the integrand is analytic on the
    interval). |r| ≥ 0.925: Φ(−max(h, k)) minus ∫_r^1 φ₂ dt, written with s = √(1 − t²) as
    (1/2π)∫_0^a e^{−(h−k)²/(2s²)} e^{−hk/(1+t)}/t ds; the second factor's expansion
    e^{−hk/2}(1 + c s² + c d s⁴) is integrated in closed form and the smooth remainder by
    Gauss–Legendre (the scheme of Drezner–Wesolowsky and Genz, 2004). About 1e-15
    absolute against SciPy's Genz code and quadrature (tests)."""
    hk = h * k
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        if abs(r) < 0.925:
            half = 0.5 * math.asin(r)
            hs = 0.5 * (h * h + k * k)
            acc = np.zeros(np.broadcast(h, k).shape)
            for x, w in zip(_GL_X, _GL_W):
                sn = math.sin(half * (1.0 + x))
                acc += w * np.exp((sn * hk - hs) / (1.0 - sn * sn))
            return _phi_c(h) * _phi_c(k) + acc * (half / (2.0 * math.pi))
        kk = k if r > 0 else -k
        hk = h * kk
        as_ = a * a
        bs = (h - kk) ** 2
        b = np.sqrt(bs)
        c = (4.0 - hk) / 8.0
        d = (12.0 - hk) / 16.0
        e0 = np.exp(-0.5 * (bs / as_ + hk))
        integral = (
            a * e0 * (1.0 - c * (bs - as_) * (1.0 - d * bs / 5.0) / 3.0 + c * d * as_ * as_ / 5.0)
        )
        tail = np.exp(-0.5 * hk) * math.sqrt(2.0 * math.pi) * _phi_c(b / a) * b
        integral = integral - np.where(
            b > 0, tail * (1.0 - c * bs * (1.0 - d * bs / 5.0) / 3.0), 0.0
        )
        half = 0.5 * a
        for x, w in zip(_GL_X, _GL_W):
            sv = half * (1.0 + x)
            xs = sv * sv
            rs = math.sqrt(1.0 - xs)
            ex = np.exp(-0.5 * (bs / xs + hk))
            rem = np.exp(-hk * (1.0 - rs) / (2.0 * (1.0 + rs))) / rs - (
                1.0 + c * xs * (1.0 + d * xs)
            )
            integral = integral + half * w * np.where(ex > 0, ex * rem, 0.0)
        integral = np.nan_to_num(integral / (2.0 * math.pi), nan=0.0, posinf=0.0, neginf=0.0)
        if r > 0:
            return np.clip(_phi_c(np.maximum(h, kk)) - integral, 0.0, 1.0)
        # P(X > h, Y > k) = P(X > h) − P(X > h, −Y > −k), and −Y has correlation −r > 0.
        extra = np.where(kk > h, np.maximum(_phi_c(h) - _phi_c(kk), 0.0), 0.0)
        return np.clip(extra + integral, 0.0, 1.0)


def _bvn_cdf(u: np.ndarray, v: np.ndarray, r: float, a: float) -> np.ndarray:
    """P(X ≤ u, Y ≤ v), infinite u or v allowed."""
    out = np.zeros(np.broadcast(u, v).shape)
    fin = np.isfinite(u) & np.isfinite(v)
    # Beyond 40 standard deviations every tail is below the smallest double (Φ(−38.5)
    # ≈ 5e-324), so clipping there changes nothing and keeps h·k and h² finite.
    uc, vc = np.clip(u[fin], -40.0, 40.0), np.clip(v[fin], -40.0, 40.0)
    out[fin] = _bvn_upper(-uc, -vc, r, a)
    top_u = u == np.inf
    top_v = v == np.inf
    only = top_u & ~top_v & (v > -np.inf)
    out[only] = _phi(v[only])
    only = top_v & ~top_u & (u > -np.inf)
    out[only] = _phi(u[only])
    out[top_u & top_v] = 1.0
    return out


def _std(c, xk, sd):
    """(corner − data) / sd as (rows, n); ±inf corners stay ±inf."""
    with np.errstate(invalid="ignore"):
        t = (c[:, None] - xk[None, :]) / sd
    return np.where(np.isnan(t), c[:, None], t)


def _full_2d_box(kde, lo, hi, x, w):
    """Box probabilities for a Gaussian with a full 2-D bandwidth, by inclusion–exclusion
    of four bivariate normal CDFs per data point (absolute accuracy about 1e-15)."""
    ch = kde._chol
    s1 = float(ch[0, 0])
    s2 = math.hypot(float(ch[1, 0]), float(ch[1, 1]))
    r = float(ch[1, 0]) / s2
    a = float(ch[1, 1]) / s2
    n = x.shape[0]
    m = lo.shape[0]
    out = np.zeros(m)
    rows = max(1, _CHUNK_TERMS // max(n, 1))
    with np.errstate(over="ignore", invalid="ignore"):
        for s in range(0, m, rows):
            e = min(m, s + rows)

            a1, b1 = _std(lo[s:e, 0], x[:, 0], s1), _std(hi[s:e, 0], x[:, 0], s1)
            a2, b2 = _std(lo[s:e, 1], x[:, 1], s2), _std(hi[s:e, 1], x[:, 1], s2)
            p = (
                _bvn_cdf(b1, b2, r, a)
                - _bvn_cdf(a1, b2, r, a)
                - _bvn_cdf(b1, a2, r, a)
                + _bvn_cdf(a1, a2, r, a)
            )
            out[s:e] = np.maximum(p, 0.0) @ w
    return out


# ---- full bandwidth in 3-D: trivariate normal CDF ---------------------------------------
#
# Plackett's identity: moving the correlations of X1 with X2 and X3 from 0 to their values
# along R(t) (r12 → t·r12, r13 → t·r13, r23 fixed; positive definite for t in [0, 1] as a
# convex combination of two correlation matrices that are) gives
#   Φ3(h; R) = Φ(h1) Φ2(h2, h3; r23) + I_2 + I_3,
#   I_j = ∫_0^1 r1j φ2(h1, hj; t·r1j) Φ(A_j(t)) dt,
# A_j the standardised limit of the remaining variable k given X1 = h1, Xj = hj:
#   A_j = (c²hk − (rk·t − r23·u)h1 − (r23 − u·rk·t)hj) / (c √D(t)),  u = t·r1j, c² = 1 − u²,
#   D(t) = det R(t) = (1 − t²)(1 − r23²) + t² det R  (every term ≥ 0: no cancellation).
# With u = sin θ the φ2 factor's 1/√(1 − u²) cancels (Sheppard's substitution):
#   I_j = (1/2π) ∫_0^{asin r1j} exp(−((h1 − hj sin θ)²/cos²θ + hj²)/2) Φ(A_j) dθ.
# The variable X1 is chosen so that the fixed pair (2, 3) has the smallest |r|: then
# cos θ and D(t) are small only at the end t = 1 (where |r1j| → 1 or R is near singular),
# and the nearest singularities of the integrand (θ = ±π/2, the zero of D just beyond
# t = 1) lie at a distance read off R. The integral uses Gauss–Legendre panels graded
# geometrically (halving) toward that end down to that distance and one level more,
# 10 nodes per panel, so each panel's singularity lies at least about two panel lengths
# from it (Gauss–Legendre error of order 1e-20; on 31 random matrices, a third with a
# pair near ±1 and a third nearly singular, within 4e-15 of a 20-node, 6-extra-level
# run). The nodes depend only on R, which the whole KDE shares.
_TVN_NODES = 10
_TVN_MAX_LEVELS = 60
_TVN_MIN_LEVELS = 1
_TVN_EXTRA = 1
# Standardised limits at or above _TVN_BIG count as +inf (P(X > 8.5) ≈ 9.5e-18, absolute);
# below −_TVN_ZERO the probability underflows to 0.
_TVN_BIG = 8.5
_TVN_ZERO = 38.5


class _Tvn:
    """Constants of the trivariate normal CDF for one bandwidth factor ``chol`` (3×3
    lower triangular): per-dimension standard deviations, the correlations and their
    sines √(1 − r²) (from cross products of the rows of L: no cancellation near ±1),
    det R, and per Plackett term the scalars at every quadrature node."""

    def __init__(self, chol: np.ndarray):
        lr = np.asarray(chol, dtype=np.float64)
        self.sd = np.sqrt(np.einsum("ij,ij->i", lr, lr))
        e = lr / self.sd[:, None]
        r = e @ e.T
        sine = np.zeros((3, 3))
        for i in range(3):
            for j in range(3):
                if i != j:
                    sine[i, j] = math.sqrt(float(np.sum(np.cross(e[i], e[j]) ** 2)))
        self.r, self.sine = r, sine
        det = float(np.prod(np.diag(lr)) / np.prod(self.sd)) ** 2
        # X1 := the variable whose complement pair has the smallest |r|.
        j1 = max(range(3), key=lambda i: sine[(i + 1) % 3, (i + 2) % 3])
        j2, j3 = (j1 + 1) % 3, (j1 + 2) % 3
        self.perm = (j1, j2, j3)
        r23, a23 = float(r[j2, j3]), float(sine[j2, j3])
        self.r23, self.a23 = r23, a23
        self.terms = []
        x, w = np.polynomial.legendre.leggauss(_TVN_NODES)
        for jj, kk in ((j2, j3), (j3, j2)):
            rj, rk, aj = float(r[j1, jj]), float(r[j1, kk]), float(sine[j1, jj])
            if rj == 0.0:
                self.terms.append(None)
                continue
            th = math.asin(rj)
            # Distance (in units of θ's range) to the nearest singularity beyond the end.
            near = min(1.0, aj / abs(th), det / (2.0 * a23 * a23) * abs(rj) / (abs(th) * aj))
            levels = min(
                _TVN_MAX_LEVELS, max(_TVN_MIN_LEVELS, math.ceil(math.log2(1.0 / near)) + _TVN_EXTRA)
            )
            edges = [0.0] + [1.0 - 0.5**q for q in range(1, levels)] + [1.0]
            tau = np.concatenate([a + (b - a) * 0.5 * (x + 1.0) for a, b in zip(edges, edges[1:])])
            wt = np.concatenate([w * (0.5 * (b - a)) for a, b in zip(edges, edges[1:])])
            theta = th * tau
            sn, cs = np.sin(theta), np.cos(theta)
            t = sn / rj
            dt = (1.0 - t * t) * (a23 * a23) + t * t * det
            v = t * rk
            inv = 1.0 / (cs * np.sqrt(dt))
            self.terms.append(
                (
                    sn,
                    -0.5 / (cs * cs),
                    cs * cs * inv,  # coefficient of hk in A
                    -(v - r23 * sn) * inv,  # of h1
                    -(r23 - sn * v) * inv,  # of hj
                    wt * (th / (2.0 * math.pi)),
                )
            )

    def _plackett(self, term, h1, hj, hk):
        """One Plackett term at every node (about 17 array passes and one normal tail per
        node)."""
        if term is None:
            return 0.0
        sn, nic2, ck, c1, cj, wt = term
        base = -0.5 * hj * hj
        acc = np.zeros(h1.shape)
        ex = np.empty(h1.shape)
        arg = np.empty(h1.shape)
        for q in range(sn.size):
            np.multiply(hj, sn[q], out=ex)
            np.subtract(h1, ex, out=ex)
            ex *= ex
            ex *= nic2[q]
            ex += base
            np.exp(ex, out=ex)
            np.multiply(hk, ck[q], out=arg)
            arg += c1[q] * h1
            arg += cj[q] * hj
            ex *= _phi(arg)
            ex *= wt[q]
            acc += ex
        return acc

    def cdf_finite(self, h):
        """P(X ≤ h) for standardised finite limits h = (h_0, h_1, h_2) (1-D arrays)."""
        h1, h2, h3 = (h[i] for i in self.perm)
        out = _phi(h1) * _bvn_cdf(h2, h3, self.r23, self.a23)
        out += self._plackett(self.terms[0], h1, h2, h3)
        out += self._plackett(self.terms[1], h1, h3, h2)
        return np.clip(out, 0.0, 1.0)

    def cdf(self, h0, h1, h2):
        """P(X ≤ h) for standardised limits of any shape, ±inf allowed: a limit at or above
        _TVN_BIG drops its variable (the bivariate or univariate CDF of the others)."""
        h = [np.asarray(v, dtype=np.float64) for v in (h0, h1, h2)]
        shape = np.broadcast(*h).shape
        h = [np.broadcast_to(v, shape).ravel() for v in h]
        out = np.zeros(h[0].size)
        zero = np.zeros(out.shape, dtype=bool)
        up = []
        for v in h:
            zero |= v < -_TVN_ZERO
            up.append(v >= _TVN_BIG)
        nup = up[0].astype(np.int8) + up[1] + up[2]
        live = ~zero
        out[live & (nup == 3)] = 1.0
        for i in range(3):
            j, k = (i + 1) % 3, (i + 2) % 3
            sel = live & (nup == 2) & ~up[i]
            out[sel] = _phi(h[i][sel])
            sel = live & (nup == 1) & up[i]
            out[sel] = _bvn_cdf(h[j][sel], h[k][sel], float(self.r[j, k]), float(self.sine[j, k]))
        sel = np.flatnonzero(live & (nup == 0))
        # Blocks of 2^13 keep the ~15 node-loop temporaries in the L2 cache.
        for b in range(0, sel.size, 1 << 13):
            idx = sel[b : b + (1 << 13)]
            out[idx] = self.cdf_finite([v[idx] for v in h])
        return out.reshape(shape)


def _full_3d_box(kde, lo, hi, x, w):
    """Box probabilities for a Gaussian with a full 3-D bandwidth: inclusion–exclusion of
    the trivariate normal CDFs at the box's corners per data point (corners with a −inf
    coordinate vanish; see _Tvn)."""
    tv = _Tvn(kde._chol)
    n = x.shape[0]
    m = lo.shape[0]
    out = np.zeros(m)
    rows = max(1, _CHUNK_TERMS // max(n, 1))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for s in range(0, m, rows):
            e = min(m, s + rows)
            ends = [
                (_std(lo[s:e, k], x[:, k], tv.sd[k]), _std(hi[s:e, k], x[:, k], tv.sd[k]))
                for k in range(3)
            ]
            p = np.zeros((e - s, n))
            for corner in range(8):
                bits = [(corner >> k) & 1 for k in range(3)]  # 1: the low end
                c = [ends[k][1 - bits[k]] for k in range(3)]
                if any(bits[k] and np.all(c[k] == -np.inf) for k in range(3)):
                    continue  # a −inf coordinate: this corner's CDF is 0
                f = tv.cdf(*c)
                p += -f if sum(bits) % 2 else f
            out[s:e] = np.maximum(p, 0.0) @ w
    return out


def diag_box(kde, lo, hi, x, w):
    """Gaussian box probabilities with a diagonal bandwidth (products of 1-D tails)."""
    sd = np.diag(kde._chol).copy()
    out = np.zeros(lo.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(lo.shape[0]):
            prod = np.ones(x.shape[0])
            for k in range(x.shape[1]):
                a = (lo[j, k] - x[:, k]) / sd[k]
                b = (hi[j, k] - x[:, k]) / sd[k]
                a = np.where(np.isnan(a), -np.inf, a)
                b = np.where(np.isnan(b), np.inf, b)
                prod *= _interval_prob("gaussian", a, np.maximum(a, b))
            out[j] = prod @ w
    return out
