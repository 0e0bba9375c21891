"""ISJ on data mixing a lattice with continuous values and on data with point masses,
and plug-in/SCV with two equal far clusters (issue 11, branch isjmix). Each note gives
the selected bandwidth over a closed-form reference: the AMISE-optimal bandwidth of
N(0, 1) (part rounded; censored at 3, an atom of 0.13 %) or of N(2, 1) with the
continuous part's n (20 % exact zeros), and the eigenvalues of H_opt⁻¹·H for the
clusters (H_opt the mixture's AMISE-optimal matrix). Before this branch these were
1e-4 to 1e-3 of the reference (ISJ) and 3·10³ (plug-in along the separation)."""

from __future__ import annotations

import math
import warnings

import numpy as np

import divest

from . import Case


def _amise_normal(sd: float, n: int) -> float:
    """(R(K)/(n R(f″)))^⅕ for N(·, sd²): R(f″) = 3/(8√π sd⁵)."""
    rf = 3 / (8 * math.sqrt(math.pi) * sd**5)
    return (1 / (2 * math.sqrt(math.pi)) / (n * rf)) ** 0.2


def _isj(x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the point-mass warning
        return divest.isj_bandwidth(x)


def cases(quick: bool):
    from divest._kdeplugin import mixture_optimal

    out = []
    n = 100_000 if quick else 1_000_000
    r = np.random.default_rng(1)
    z = r.standard_normal(n)
    half = z.copy()
    half[: n // 2] = np.round(z[: n // 2], 1)
    zi = r.random(n) < 0.2
    zero = np.where(zi, 0.0, 2 + z)
    cens = np.minimum(z, 3.0)
    try:
        from KDEpy.bw_selection import improved_sheather_jones as kisj

        def peer(x):
            return {"KDEpy ISJ": lambda: float(kisj(x[:, None]))}
    except ImportError:

        def peer(x):
            return {"KDEpy ISJ": "KDEpy not installed"}

    for name, x, ref in [
        ("half rounded to 0.1", half, _amise_normal(1.0, n)),
        ("20 % exact zeros + N(2, 1)", zero, _amise_normal(1.0, int((~zi).sum()))),
        ("min(z, 3)", cens, _amise_normal(1.0, n)),
    ]:
        out.append(
            Case(
                f"isj_bandwidth, n={n}, {name}",
                lambda x=x: _isj(x),
                peers=peer(x),
                repeat=5,
                note=lambda x=x, ref=ref: f"h / h_AMISE = {_isj(x) / ref:.4f}",
            )
        )
    n2 = 20_000
    a = np.array([[1.0, 0.3], [0.3, 0.8]])
    b = np.array([[0.5, -0.1], [-0.1, 1.5]])
    mu = np.array([1000.0, 333.0])
    k = r.random(n2) < 0.5
    x2 = np.where(
        k[:, None], r.multivariate_normal([0, 0], a, n2), r.multivariate_normal(mu, b, n2)
    )
    for method in ("plugin", "scv"):
        ho = mixture_optimal(
            [0.5, 0.5], [np.zeros(2), mu], [a, b], n2, "amise" if method == "plugin" else "mise"
        )

        def note(m=method, ho=ho):
            h = divest.KDE(x2, bandwidth=m).bandwidth
            ev = np.sort(np.linalg.eigvals(np.linalg.solve(ho, h)).real)
            return f"eig(H_opt⁻¹ H) = {ev[0]:.3f}, {ev[1]:.3f}"

        out.append(
            Case(
                f"KDE(bandwidth={method!r}), two equal clusters 1050 apart, n={n2}",
                lambda m=method: divest.KDE(x2, bandwidth=m).bandwidth,
                note=note,
            )
        )
    return out
