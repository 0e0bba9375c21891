"""Types of the compiled module divest._core (internal; use the public API)."""

import numpy as np
from numpy.typing import NDArray

def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def _after_fork_child() -> None: ...
def simd_level() -> str: ...
def simd_detected() -> str: ...
def set_simd_level(level: str | None = None) -> None: ...
def kde_eval(
    data: NDArray[np.floating],
    logw: NDArray[np.float64],
    points: NDArray[np.floating],
    kernel: str,
    exclude_self: bool = False,
    ess: bool = False,
    score: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None, NDArray[np.float64] | None]: ...
def kde_loo_grid(
    data: NDArray[np.floating],
    logw: NDArray[np.float64],
    kernel: str,
    factors: NDArray[np.float64],
) -> NDArray[np.float64]: ...
def dcov_stats(
    x: NDArray[np.floating],
    y: NDArray[np.floating],
    exponent: float = 1.0,
    unbiased: bool = False,
    method: str = "auto",
) -> tuple[float, float, float]: ...
def dcov_u_products3(
    x: NDArray[np.floating], y: NDArray[np.floating], z: NDArray[np.floating], exponent: float = 1.0
) -> tuple[float, float, float, float, float, float]: ...
def energy_distance(
    x: NDArray[np.floating], y: NDArray[np.floating], exponent: float = 1.0, unbiased: bool = False
) -> float: ...
def dcov_perm_test(
    x: NDArray[np.floating], y: NDArray[np.floating], exponent: float, n_resamples: int, seed: int
) -> tuple[float, NDArray[np.float64]]: ...
def energy_perm_test(
    z: NDArray[np.floating], sizes: list[int], exponent: float, n_resamples: int, seed: int
) -> tuple[float, NDArray[np.float64]]: ...
def jdcov(
    xs: list[NDArray[np.floating]],
    c: float = 1.0,
    exponent: float = 1.0,
    unbiased: bool = True,
    scale: bool = False,
) -> float: ...
def dcov_sqr_grad(
    x: NDArray[np.floating], y: NDArray[np.floating], exponent: float = 1.0, unbiased: bool = False
) -> NDArray[np.float64]: ...
