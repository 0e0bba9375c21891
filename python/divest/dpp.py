"""Determinantal point processes, volume sampling and the weighted least-squares designs
built on them (Nouy and Michel, "Weighted least-squares approximation with determinantal
point processes and generalized volume sampling").

All samplers are exact. The Rust core draws each sample from its own random stream,
derived from one 64-bit seed taken from ``rng`` and the sample's index, so results depend
on ``rng`` and never on the number of threads. Many samples run in parallel.

* :func:`sample_projection` — projection DPP with kernel U Uᵀ (chain rule or rejection).
* :class:`DPP` — L-ensembles and correlation kernels: ``sample``, ``sample_k`` (k-DPP,
  elementary symmetric polynomials in log space), ``inclusion_probabilities``,
  ``expected_size``.
* :func:`volume_sample`, :func:`volume_rescaled_sample` — P(S) ∝ det(X_Sᵀ X_S).
* :func:`optimal_weights`, :func:`least_squares_design`, :func:`weighted_least_squares`.

Every sampler stops on Ctrl-C (KeyboardInterrupt) within a fraction of a second: the
stop flag is polled before each sample and between the proposals of one sample. Counts
and sizes (``n_samples``, ``k``, ``n``) are integers up to 2**63 - 1; a request whose
output would not fit in this machine's physical memory raises MemoryError naming the
argument before anything is allocated.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import _core
from ._rng import as_generator, seed
from ._validate import as_float_array, check_choice, check_count, check_memory

__all__ = [
    "sample_projection",
    "DPP",
    "volume_sample",
    "volume_rescaled_sample",
    "optimal_weights",
    "weighted_least_squares",
    "least_squares_design",
    "Design",
    "greedy_map",
]

_METHODS = ("auto", "chain", "rejection")

#: Largest |UᵀU - I| accepted as orthonormal.
ORTHONORMAL_TOL = 1e-6


def _check_method(method) -> str:
    return check_choice(method, "method", _METHODS)


def _n_samples(n_samples) -> int:
    return 1 if n_samples is None else check_count(n_samples, "n_samples")


def _matrix(x, name: str) -> np.ndarray:
    a = as_float_array(x, name, check_finite=False)
    if a.size and not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf; remove those entries")
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array; got {a.ndim} dimension(s) {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty; got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float64)


def _orthonormal_basis(x: np.ndarray, name: str) -> np.ndarray:
    """Orthonormal basis (n×d) of x's columns, after checking full column rank.
    Computed in Rust (Gram–Schmidt twice), not by NumPy's BLAS, whose idle threads
    would slow the sampler's pool."""
    n, d = x.shape
    if d > n:
        raise ValueError(f"{name} has more columns ({d}) than rows ({n}); it needs n >= d")
    try:
        return _core.dpp_orthonormal_basis(x)
    except ValueError as exc:
        msg = (
            str(exc)
            .replace("X must", f"{name} must", 1)
            .replace("X contains", f"{name} contains", 1)
        )
        raise ValueError(msg) from None


def _check_orthonormal(u: np.ndarray, name: str, err=None) -> None:
    """Raises unless `u` has orthonormal columns; `err` is the error when already measured."""
    n, m = u.shape
    if m > n:
        raise ValueError(
            f"{name} has {m} columns but only {n} rows; orthonormal columns need n >= m"
        )
    if err is None:
        err = _core.dpp_orthonormality_error(u)
    if not err <= ORTHONORMAL_TOL:
        raise ValueError(
            f"{name} must have orthonormal columns (|{name}ᵀ{name} - I| <= {ORTHONORMAL_TOL:g}); "
            f"the largest deviation is {err:.3g}. Orthonormalise it first, e.g. "
            f"{name} = numpy.linalg.qr({name})[0]"
        )


def sample_projection(U, n_samples=None, method="auto", rng=None):
    """Exact samples of the projection DPP with kernel K = U Uᵀ.

    Parameters
    ----------
    U : array (N, m) with orthonormal columns (checked: |UᵀU - I| ≤ 1e-6, exactly when
        N m² ≤ 2·10⁷, otherwise with four random probes).
    n_samples : None for one sample, or the number of samples.
    method : "chain" (chain rule over all N residuals, O(N m²) per sample: the residuals
        of all N items are brought up to date by blocks of up to 32 new directions, a
        compute-bound SIMD product, and each step in between draws exactly from the
        current residuals by thinning the last update's; every draw is normalised by the
        actual residual mass, each new direction is Gram–Schmidt-orthogonalised and
        re-orthogonalised when the first pass cancels, and a running residual that drifts
        from its exact value triggers a full recomputation; one sample splits its updates
        over the threads), "rejection" (proposals from the leverage scores ‖U_i‖²,
        accepted with probability residual / leverage: O(m³ log m) per sample after
        O(N m)), or "auto" (rejection when N > m log(m + 1), where it is the faster).
    rng : None, an int seed or a numpy Generator (one 64-bit seed is drawn from it).

    Returns
    -------
    An int64 array of the m sampled items, sorted: shape (m,) or (n_samples, m).
    Samples with the same rng are identical whatever the thread count.

    Memory: the output, U's leverage scores, and per running sample O(N + m²) floats
    (for "chain": residuals and their cumulative sums). Equals DPPy's
    ``FiniteDPP('correlation', projection=True, K_eig_dec=(ones, U)).sample_exact(mode='GS')``
    in distribution.

    References
    ----------
    A. Kulesza and B. Taskar, Found. Trends Mach. Learn. 5(2-3), 2012.
    """
    u = _matrix(U, "U")
    method = _check_method(method)
    ns = _n_samples(n_samples)
    check_memory(8 * ns * u.shape[1], "n_samples", ns, f"the ({ns}, {u.shape[1]}) int64 output")
    if u.shape[1] > u.shape[0]:
        _check_orthonormal(u, "U")
    # The orthonormality check shares the sampler's pass over U (leverage scores).
    out, err = _core.dpp_sample_projection(u, ns, seed(rng), method, ORTHONORMAL_TOL)
    _check_orthonormal(u, "U", err)
    return out[0] if n_samples is None else out


class DPP:
    """A finite DPP given by an L-ensemble kernel ``L`` or a correlation kernel ``K``.

    P(S) = det(L_S) / det(I + L) for an L-ensemble; P(S ⊆ Y) = det(K_S) for a correlation
    kernel. Both must be symmetric positive semi-definite (K with eigenvalues in [0, 1]);
    eigenvalues within N·eps·max|λ| of 0 (or of 1 for K) are rounded to it.

    The eigendecomposition (numpy.linalg.eigh, O(N³), N² floats) is computed once here
    and cached; every sampler reuses it. It runs on the kernel divided by a power of two
    (exact), so entries up to 1e308 or down to subnormals neither overflow nor underflow;
    a kernel whose eigenvalue exceeds the float64 range is a ValueError. The rounding
    tolerance uses the input's precision (float32 kernels: float32's epsilon). Not
    interruptible (LAPACK). Equals DPPy's ``FiniteDPP('likelihood', L=L)``
    or ``FiniteDPP('correlation', K=K)`` with ``sample_exact(mode='GS')`` and
    ``sample_exact_k_dpp`` in distribution.

    References
    ----------
    A. Kulesza and B. Taskar, "Determinantal point processes for machine learning", Found. Trends Mach. Learn. 5(2-3), 2012.
    J. B. Hough, M. Krishnapur, Y. Peres and B. Virág, "Determinantal processes and independence", Probab. Surveys 3, 2006.
    """

    def __init__(self, L=None, K=None):
        if (L is None) == (K is None):
            raise ValueError("give exactly one of L (an L-ensemble) or K (a correlation kernel)")
        name = "L" if L is not None else "K"
        src = L if L is not None else K
        # Eigenvalues are only as exact as the input: float32 (or float16) kernels get
        # their own rounding tolerance.
        src_dtype = getattr(src, "dtype", None)
        eps = float(np.finfo(np.float64).eps)
        if src_dtype is not None and np.dtype(src_dtype).kind == "f":
            eps = max(eps, float(np.finfo(src_dtype).eps))
        a = _matrix(src, name)
        n = a.shape[0]
        if a.shape[1] != n:
            raise ValueError(f"{name} must be square; got shape {a.shape}")
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        # Work on a / 2^e with max |entry| in [0.5, 1) (exact), so that neither the
        # symmetry test nor the eigensolver overflows or underflows at 1e308 or 1e-310.
        e2 = math.frexp(scale)[1] if scale > 0 else 0
        a = np.ldexp(a, -e2)
        asym = float(np.max(np.abs(a - a.T)))
        if asym > 1e-10 * max(float(np.max(np.abs(a))), 1e-300):
            raise ValueError(
                f"{name} must be symmetric; max |{name} - {name}ᵀ| = {math.ldexp(asym, e2):.3g}. "
                f"Symmetrise it, e.g. ({name} + {name}.T) / 2"
            )
        lam, vec = np.linalg.eigh(0.5 * (a + a.T))
        with np.errstate(over="ignore"):
            lam = np.ldexp(lam, e2)
        if not np.isfinite(lam).all():
            raise ValueError(
                f"{name} has an eigenvalue beyond the float64 range (about 1.8e308); "
                f"its largest entry is {scale:.3g}. Scale {name} down"
            )
        tol = n * eps * max(float(np.max(np.abs(lam))), 1e-300)
        if lam.min() < -max(tol, 1e-12 * max(scale, 1e-300)):
            raise ValueError(
                f"{name} must be positive semi-definite; its smallest eigenvalue is {lam.min():.3g}"
            )
        lam = np.where(lam < tol, 0.0, lam)
        if name == "K":
            if lam.max() > 1 + max(tol, 1e-12):
                raise ValueError(
                    "K must have eigenvalues in [0, 1] (a correlation kernel); its largest "
                    f"eigenvalue is {lam.max():.6g}. For an L-ensemble pass L= instead"
                )
            lam = np.where(lam > 1 - tol, 1.0, lam)
        self.kind = "likelihood" if name == "L" else "correlation"
        self.N = n
        #: Eigenvalues of the given kernel (ascending), after rounding.
        self.eigenvalues = lam
        #: Orthonormal eigenvectors (columns), C-contiguous float64.
        self.eigenvectors = np.ascontiguousarray(vec)
        # Probability that eigenvector j enters a sample: the eigenvalues of K.
        self._probs = lam / (1.0 + lam) if name == "L" else lam.copy()

    def __repr__(self) -> str:
        return f"DPP(kind={self.kind!r}, N={self.N}, expected_size={self.expected_size():.4g})"

    @property
    def rank(self) -> int:
        """Number of non-zero eigenvalues: the largest possible sample size."""
        return int(np.count_nonzero(self.eigenvalues))

    def expected_size(self) -> float:
        """E|Y| = tr K = Σ_j λ_j / (1 + λ_j) for an L-ensemble, Σ_j λ_j for K."""
        return float(self._probs.sum())

    def inclusion_probabilities(self) -> np.ndarray:
        """P(i ∈ Y) = K_ii for each item: an (N,) float64 array (O(N²) work, no N×N copy)."""
        return (self.eigenvectors**2) @ self._probs

    def correlation_kernel(self) -> np.ndarray:
        """K = V diag(p) Vᵀ (N×N, allocated on each call)."""
        v = self.eigenvectors
        return (v * self._probs) @ v.T

    def sample(self, n_samples=None, *, method="auto", rng=None):
        """Exact DPP samples: eigenvector j is kept with probability K's eigenvalue p_j,
        then the projection DPP of the kept eigenvectors is sampled (``method`` as in
        :func:`sample_projection`).

        Returns a sorted int64 array of items for one sample (``n_samples=None``), else a
        list of ``n_samples`` such arrays (their sizes vary). Memory: per sample, an
        N×|Y| copy of the kept eigenvectors.
        """
        method = _check_method(method)
        ns = _n_samples(n_samples)
        # Per sample: its items (about the expected size), an offset, a list slot and
        # the array object returned for it.
        per = 8 * (math.ceil(self.expected_size()) + 1) + 8 + 112
        check_memory(
            per * ns,
            "n_samples",
            ns,
            f"{ns} samples of about {self.expected_size():.3g} items each",
        )
        flat, offsets = _core.dpp_sample_spectral(
            self.eigenvectors, self._probs, ns, seed(rng), method
        )
        out = [flat[offsets[i] : offsets[i + 1]] for i in range(ns)]
        return out[0] if n_samples is None else out

    def _log_lambda_l(self) -> np.ndarray:
        lam = self.eigenvalues
        with np.errstate(divide="ignore"):
            if self.kind == "likelihood":
                return np.log(lam)
            if lam.max() >= 1.0:
                raise ValueError(
                    "sample_k and log_normaliser_k need an L-ensemble; this K has eigenvalues "
                    "equal to 1, so its "
                    "L = K (I - K)⁻¹ does not exist. Build the DPP from L instead"
                )
            return np.log(lam) - np.log1p(-lam)

    def sample_k(self, k, n_samples=None, *, method="auto", rng=None):
        """Exact samples of the k-DPP: P(S) = det(L_S) / e_k(λ) for |S| = k.

        Eigenvectors are chosen with the elementary symmetric polynomials e_l(λ_1..λ_t),
        computed in log space so that ill-conditioned kernels neither overflow nor lose
        the small eigenvalues. For a correlation kernel, L = K (I - K)⁻¹ is used.
        Returns sorted int64 items, shape (k,) or (n_samples, k). Memory: a
        (k+1)×(N+1) table and, per sample, an N×k copy of eigenvectors.
        Equals DPPy's ``FiniteDPP.sample_exact_k_dpp(size=k)`` in distribution.
        """
        k = check_count(k, "k")
        method = _check_method(method)
        if k > self.rank:
            raise ValueError(
                f"k = {k} exceeds the rank {self.rank} of the kernel; "
                f"a k-DPP needs k <= {self.rank}"
            )
        ns = _n_samples(n_samples)
        check_memory(8 * ns * k, "n_samples", ns, f"the ({ns}, {k}) int64 output")
        ll, table = self._esp(k)
        out = _core.dpp_sample_k(self.eigenvectors, ll, table, k, ns, seed(rng), method)
        return out[0] if n_samples is None else out

    def _esp(self, k: int):
        """log λ of L and the table of log e_l(λ_1..λ_t), l ≤ k, cached per k."""
        cache = self.__dict__.setdefault("_esp_cache", {})
        if k not in cache:
            ll = np.ascontiguousarray(self._log_lambda_l())
            cache.clear()  # keep one table: (k+1)(N+1) floats
            cache[k] = (ll, _core.dpp_log_esp(ll, k))
        return cache[k]

    def log_normaliser_k(self, k) -> float:
        """log e_k(λ), the k-DPP normalising constant (log space, never overflows);
        -inf when k exceeds the rank (no set of k items has positive probability)."""
        k = check_count(k, "k")
        if k > self.rank:
            return -math.inf
        return float(self._esp(k)[1][k, -1])


def _volume_args(X, k, rescaled: bool):
    x = _matrix(X, "X")
    n, d = x.shape
    k = check_count(k, "k", minimum=1)
    if k < d:
        raise ValueError(f"k must be at least d = {d}, the number of columns of X; got k = {k}")
    if not rescaled and k > n:
        raise ValueError(f"k must be at most N = {n}, the number of rows of X; got k = {k}")
    return x, k


def volume_sample(X, k, rng=None, *, n_samples=None):
    """Volume sampling: a set S of k ≥ d rows of X (N×d, full column rank) with
    P(S) = det(X_Sᵀ X_S) / (C(N-d, k-d) det(XᵀX)).

    Drawn exactly as a size-d projection DPP on an orthonormal basis of X's columns plus
    k - d rows chosen uniformly from the rest (Dereziński and Warmuth). For k = d the
    least-squares solution on S is unbiased: E[X_S⁻¹ y_S] = X⁺ y.
    Returns sorted int64 rows, shape (k,) or (n_samples, k). Memory: the thin QR of X
    (N×d), the output and, per running sample, N/8 bytes for the uniform part. The
    basis is computed on X with each column scaled by a power of two, so entries from
    subnormal to 1e308 and columns in very different units are handled exactly. No peer
    library offers it.

    References
    ----------
    A. Deshpande, L. Rademacher, S. Vempala and G. Wang, "Matrix approximation and projective clustering via volume sampling", Theory Comput. 2, 2006.
    """
    x, k = _volume_args(X, k, rescaled=False)
    ns = _n_samples(n_samples)
    check_memory(8 * ns * k, "n_samples", ns, f"the ({ns}, {k}) int64 output")
    q = _orthonormal_basis(x, "X")
    out = _core.dpp_volume_sample(q, k, ns, seed(rng))
    return out[0] if n_samples is None else out


def volume_rescaled_sample(X, k, rng=None, *, p=None, n_samples=None):
    """Volume-rescaled sampling of size k ≥ d from the measure p on X's rows (uniform by
    default): a sequence (i_1..i_k) with probability ∝ det(Σ_t x_{i_t} x_{i_t}ᵀ) Π_t p_{i_t}.

    By Cauchy–Binet this is, exactly, a size-d projection DPP on an orthonormal basis of
    diag(√p) X plus k - d rows i.i.d. from p (Dereziński, Warmuth and Hsu), which is how it
    is drawn. Rows may repeat and k may exceed N. Returns the multiset as sorted int64
    rows, shape (k,) or (n_samples, k). Memory: the thin QR of X, the output and, per
    running sample with k ≥ 32768, up to N counts for sorting. No peer library offers it.

    References
    ----------
    M. Dereziński, M. K. Warmuth and D. Hsu, "Unbiased estimators for random design regression", JMLR 23, 2022.
    """
    x, k = _volume_args(X, k, rescaled=True)
    ns = _n_samples(n_samples)
    check_memory(8 * k, "k", k, f"one sample of {k} int64 items")
    check_memory(8 * ns * k, "n_samples", ns, f"the ({ns}, {k}) int64 output")
    q, pw = _rescaled_basis(x, p)
    out = _core.dpp_volume_sample(q, k, ns, seed(rng), pw)
    return out[0] if n_samples is None else out


def _rescaled_basis(x, p):
    """The base measure p (normalised; uniform for None) and an orthonormal basis of
    diag(√p) X, as :func:`volume_rescaled_sample` samples from them."""
    n = x.shape[0]
    if p is None:
        pw = np.full(n, 1.0 / n)
    else:
        pw = as_float_array(p, "p").astype(np.float64, copy=False)
        if pw.shape != (n,):
            raise ValueError(f"p must have shape ({n},), one weight per row of X; got {pw.shape}")
        if (pw < 0).any() or not pw.max() > 0:
            raise ValueError("p must be non-negative and not all zero")
        pw = pw / pw.max()  # first to [0, 1]: a sum of weights near 1e308 cannot overflow
        pw = pw / pw.sum()
    q = _orthonormal_basis(x * np.sqrt(pw)[:, None], "X")
    return q, np.ascontiguousarray(pw)


def optimal_weights(Phi):
    """w(x) = m / Σ_j φ_j(x)² for each row of Phi (n×m, features orthonormal in L²(μ)):
    the inverse of the optimal sampling density k_m/m. Returns an (n,) float64 array.
    Each row is scaled by its largest entry first, so no sum overflows or underflows;
    a weight beyond the float64 range is a ValueError naming the row."""
    phi = _matrix(Phi, "Phi")
    # Σ φ_j² = r² Σ (φ_j / r)² with r the row's largest |φ_j|: no overflow at 1e300, no
    # underflow to zero at 1e-200.
    r = np.max(np.abs(phi), axis=1)
    if not (r > 0).all():
        i = int(np.argmin(r))
        raise ValueError(f"Phi row {i} is zero: the optimal weight m / Σ φ_j² is infinite there")
    t = np.einsum("ij,ij->i", phi / r[:, None], phi / r[:, None])
    with np.errstate(over="ignore"):
        w = phi.shape[1] / t / r / r
    if not np.isfinite(w).all():
        i = int(np.argmin(r))
        raise ValueError(
            f"Phi row {i} is so small (largest |φ_j| = {r[i]:.3g}) that its optimal weight "
            "m / Σ φ_j² exceeds the float64 range; rescale Phi"
        )
    return w


def weighted_least_squares(Phi, y, weights=None):
    """Coefficients c minimising Σ_i w_i (y_i - Φ_i c)², by a QR factorisation of
    diag(√w) Φ (never the normal equations, whose conditioning is squared).

    Phi is (n, m) with n ≥ m, y is (n,) or (n, r), weights (n,) non-negative (None: all
    one). Returns c of shape (m,) or (m, r). Raises ValueError when the weighted design
    is rank deficient, or when a coefficient exceeds the float64 range. Memory: the n×m
    QR factors. Equals numpy.linalg.lstsq on the √w-scaled system; w is divided by its
    maximum and each column of diag(√w) Phi by its largest entry first (the solution is
    rescaled back), so the rank test does not depend on the features' units.
    """
    phi = _matrix(Phi, "Phi")
    n, m = phi.shape
    yy = as_float_array(y, "y").astype(np.float64, copy=False)
    if yy.ndim not in (1, 2) or yy.shape[0] != n:
        raise ValueError(
            f"y must have shape ({n},) or ({n}, r), one value per row of Phi; got {yy.shape}"
        )
    if weights is None:
        w = np.ones(n)
    else:
        w = as_float_array(weights, "weights").astype(np.float64, copy=False)
        if w.shape != (n,):
            raise ValueError(f"weights must have shape ({n},); got {w.shape}")
        if (w < 0).any():
            raise ValueError(f"weights must be non-negative; got minimum {w.min()!r}")
    if n < m:
        raise ValueError(f"need at least m = {m} rows for {m} coefficients; got n = {n}")
    rank_msg = (
        "the weighted design diag(√w) Phi is rank deficient; sample more points or drop features"
    )
    # Scalings that leave the solution unchanged or change it by a known factor, so that
    # nothing overflows or underflows for entries from 1e-310 to 1e308 and the rank test
    # does not depend on the features' units: w / max w (the minimiser is the same),
    # each column of diag(√w) Phi by its largest entry (c = c' / scale), and b by its
    # largest entry.
    wmax = float(w.max())
    if not wmax > 0:
        raise ValueError(rank_msg)
    sw = np.sqrt(w / wmax)
    a = phi * sw[:, None]
    colmax = np.max(np.abs(a), axis=0)
    if not (colmax > 0).all():
        raise ValueError(rank_msg)
    a = a / colmax
    b = yy * (sw if yy.ndim == 1 else sw[:, None])
    bmax = float(np.max(np.abs(b))) if b.size else 0.0
    if bmax > 0:
        b = b / bmax
    q, r = np.linalg.qr(a)
    diag = np.abs(np.diag(r))
    if not diag.min() > max(n, m) * np.finfo(float).eps * max(diag.max(), 1e-300):
        raise ValueError(rank_msg)
    c = _back_substitute(r, q.T @ b)
    scale = colmax if c.ndim == 1 else colmax[:, None]
    with np.errstate(over="ignore", under="ignore"):
        c = (c / scale) * bmax if bmax > 0 else c / scale
    if not np.isfinite(c).all():
        raise ValueError(
            "the least-squares coefficients exceed the float64 range (about 1.8e308); "
            "rescale Phi or y"
        )
    return c


def _back_substitute(r: np.ndarray, b: np.ndarray) -> np.ndarray:
    m = r.shape[0]
    x = np.array(b, dtype=np.float64, copy=True)
    for i in range(m - 1, -1, -1):
        if i + 1 < m:
            x[i] -= r[i, i + 1 :] @ x[i + 1 :]
        x[i] /= r[i, i]
    return x


class Design(NamedTuple):
    """Sample points (indices into the candidates) and their least-squares weights."""

    indices: np.ndarray
    weights: np.ndarray


_DESIGNS = ("dpp", "volume_rescaled", "iid_optimal", "iid")


def least_squares_design(Phi_candidates, n, method="dpp", rng=None):
    """Chooses n ≥ m points among N candidates drawn from μ for weighted least squares.

    The m features are first orthonormalised on the candidates (thin QR, so ψ = √N Q is
    orthonormal in L²(μ_N)); the optimal density is then k_m/m with k_m = Σ_j ψ_j², and
    the optimal weight is m / k_m (:func:`optimal_weights`). Methods:

    * "dpp": the projection DPP of the orthonormalised features (m points); for n > m,
      ⌊n/m⌋ independent DPPs, then the n mod m points left i.i.d. from k_m/m. Every part
      keeps the weighted Gram matrix unbiased, E[Σ_i w(x_i) ψ(x_i)ψ(x_i)ᵀ] = n I (a DPP
      contributes m I, an i.i.d. point I), so the remainder is the volume-rescaled
      construction's and the design is pure DPPs when m divides n. Indices come DPP by
      DPP (each sorted), then the remainder.
    * "volume_rescaled": m DPP points plus n - m points i.i.d. from k_m/m (this is
      volume-rescaled sampling of size n).
    * "iid_optimal": n points i.i.d. from k_m/m.
    * "iid": n points i.i.d. from μ (uniform on the candidates), weights 1.

    Returns ``Design(indices, weights)``, int64 and float64 arrays of length n. Memory:
    the N×m QR factors. Follows Nouy and Michel (2023); no peer library offers it.
    """
    phi = _matrix(Phi_candidates, "Phi_candidates")
    n_cand, m = phi.shape
    n = check_count(n, "n", minimum=1)
    # The indices and weights (int64 and float64), plus NumPy's draw buffers.
    check_memory(24 * n, "n", n, f"a design of {n} points")
    check_choice(method, "method", _DESIGNS)
    if n < m:
        raise ValueError(f"n must be at least m = {m} (the number of features); got n = {n}")
    q = _orthonormal_basis(phi, "Phi_candidates")
    lev = np.einsum("ij,ij->i", q, q)
    with np.errstate(divide="ignore"):
        w_opt = m / (n_cand * lev)
    gen = as_generator(rng)
    if method == "dpp":
        reps, rest = divmod(n, m)
        idx = _core.dpp_sample_projection(q, reps, seed(gen), "auto")[0].reshape(-1)
        if rest:
            # Each DPP adds m I and each point i.i.d. from k_m/m adds I to E[Σ w ψψᵀ], so
            # the weighted Gram matrix stays unbiased (E = n I), as in volume-rescaled
            # sampling (the case reps = 1).
            idx = np.concatenate([idx, gen.choice(n_cand, size=rest, p=lev / lev.sum())])
    elif method == "volume_rescaled":
        # Volume-rescaled sampling from ρ = k_m/m of the weighted features √w ψ: as
        # w ρ = μ, its DPP part is the DPP of Q, and the rest is i.i.d. from ρ.
        idx = _core.dpp_volume_sample(q, n, 1, seed(gen), np.ascontiguousarray(lev / m))[0]
    elif method == "iid_optimal":
        idx = gen.choice(n_cand, size=n, p=lev / lev.sum())
    else:
        idx = gen.integers(0, n_cand, size=n)
        return Design(idx.astype(np.int64), np.ones(n))
    idx = idx.astype(np.int64, copy=False)
    return Design(idx, w_opt[idx])


from ._dppmap import greedy_map  # noqa: E402  (issue 17; the module imports dpp lazily)
