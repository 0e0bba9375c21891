"""Result and warning types shared by the families."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TestResult", "ConvergenceWarning"]


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at ``max_iter`` before meeting its tolerance."""


@dataclass(frozen=True)
class TestResult:
    """Outcome of a hypothesis test.

    Attributes
    ----------
    statistic : float
        The observed test statistic (each test's docstring says which).
    pvalue : float
        The p-value. Permutation tests report (1 + #{T* >= T}) / (1 + R) for R resamples,
        which is never 0 and is exact-valid under exchangeability.
    null_distribution : numpy.ndarray or None
        The resampled statistics T*, in resample order (None for asymptotic tests).
    """

    __test__ = False  # not a pytest test class

    statistic: float
    pvalue: float
    null_distribution: np.ndarray | None = None
