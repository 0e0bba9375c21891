"""Bandwidth matrix selection (issue 11): ``bandwidth="plugin"`` and ``"scv"`` in 2-D on a
bimodal normal mixture, timed at n = 10⁴ and 10⁵, with each selection's relative error
(Frobenius) against the closed-form optimum of that mixture: the AMISE-optimal H for the
plug-in, the MISE-optimal H for SCV. The full run adds n = 4·10³, 4·10⁴, 4·10⁵ (the
accuracy figures of the README). No peer: R's ks is not callable from here."""

from __future__ import annotations

import numpy as np

import divest
from divest._kdeplugin import mixture_optimal

from . import Case

#: The 2-D bimodal mixture of the tests (weights, means, covariances).
MIXTURE = (
    [0.5, 0.5],
    [[-1.2, 0.0], [1.2, 0.4]],
    [np.eye(2) * 0.6, np.array([[1.0, -0.3], [-0.3, 0.6]])],
)


def sample(n: int, seed: int = 0) -> np.ndarray:
    ws, mus, covs = MIXTURE
    rng = np.random.default_rng(seed)
    c = rng.choice(len(ws), size=n, p=ws)
    x = np.empty((n, 2))
    for k in range(len(ws)):
        idx = c == k
        x[idx] = rng.multivariate_normal(mus[k], covs[k], int(idx.sum()))
    return x


def cases(quick: bool):
    sizes = (10_000,) if quick else (4_000, 10_000, 40_000, 100_000, 400_000)
    out = []
    for n in sizes:
        x = sample(n, seed=n)
        for method, target in (("plugin", "amise"), ("scv", "mise")):

            def note(x=x, method=method, target=target, n=n):
                h = divest.KDE(x, bandwidth=method).bandwidth
                opt = mixture_optimal(*MIXTURE, n, target=target)
                err = np.linalg.norm(h - opt) / np.linalg.norm(opt)
                return f"relative error against the {target.upper()}-optimal H: {err:.3f}"

            out.append(
                Case(
                    f"KDE(bandwidth={method!r}), 2-D bimodal mixture, n={n}",
                    lambda x=x, method=method: divest.KDE(x, bandwidth=method).bandwidth,
                    repeat=3,
                    note=note,
                )
            )
    return out
