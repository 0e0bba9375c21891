"""Types of the compiled module divest._core (internal; use the public API)."""

import numpy as np
from numpy.typing import NDArray

def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def _after_fork_child() -> None: ...
def _default_num_threads() -> int: ...
def _set_thread_override(n: int) -> int: ...

MAX_THREADS: int

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
def affine(
    x: NDArray[np.floating], shift: NDArray[np.float64], matrix: NDArray[np.float64]
) -> NDArray[np.floating]: ...
def weighted_cov(
    x: NDArray[np.floating], w: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...
def kde_loo_grid(
    data: NDArray[np.floating],
    logw: NDArray[np.float64],
    kernel: str,
    factors: NDArray[np.float64],
) -> NDArray[np.float64]: ...
def kde_loo_grid_at(
    data: NDArray[np.floating],
    logw: NDArray[np.float64],
    points: NDArray[np.floating],
    kernel: str,
    factors: NDArray[np.float64],
) -> NDArray[np.float64]: ...
def sinkhorn_dense(
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    cost: NDArray[np.floating],
    reg: float,
    reg_m: float,
    max_iter: int,
    tol: float,
    method: str,
    scaling: float | None,
    omega: float,
    init: tuple[NDArray[np.float64], NDArray[np.float64]] | None,
    return_plan: bool,
) -> tuple[
    NDArray[np.floating] | None,  # plan
    NDArray[np.float64],  # f
    NDArray[np.float64],  # g
    float,  # cost
    float,  # linear_cost
    int,  # n_iter
    bool,  # loop_converged
    float,  # marginal_error
]: ...
def sinkhorn_batch_dense(
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    cost: NDArray[np.floating],
    shared: bool,
    reg: float,
    reg_m: float,
    max_iter: int,
    tol: float,
    method: str,
    omega: float,
    return_plan: bool,
    scaling: float | None = None,
) -> tuple[
    NDArray[np.floating] | None,  # plan (B*n, m)
    NDArray[np.float64],  # f (B, n)
    NDArray[np.float64],  # g (B, m)
    NDArray[np.float64],  # cost (B,)
    NDArray[np.float64],  # linear_cost (B,)
    NDArray[np.int64],  # n_iter (B,)
    NDArray[np.float64],  # marginal_error (B,)
]: ...
def sinkhorn_ragged_dense(
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    ns: NDArray[np.int64],
    ms: NDArray[np.int64],
    costs: list[NDArray[np.floating]],
    rows: NDArray[np.int64] | None,
    cols: NDArray[np.int64] | None,
    reg: float,
    reg_m: float,
    max_iter: int,
    tol: float,
    method: str,
    omega: float,
    return_plan: bool,
    scaling: float | None = None,
) -> tuple[
    NDArray[np.float64] | None,  # plans concatenated (sum n_k*m_k,)
    NDArray[np.float64],  # f concatenated (sum n_k,)
    NDArray[np.float64],  # g concatenated (sum m_k,)
    NDArray[np.float64],  # cost (B,)
    NDArray[np.float64],  # linear_cost (B,)
    NDArray[np.int64],  # n_iter (B,)
    NDArray[np.float64],  # marginal_error (B,)
]: ...
def sinkhorn_divergence_clouds(
    x: NDArray[np.floating],
    y: NDArray[np.floating],
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    p: int,
    eps: float,
    eps0: float,
    scaling: float,
    debias: bool,
    max_iter: int,
    tol: float | None,
    grad: bool,
) -> tuple[
    float,  # value
    NDArray[np.float64],  # f
    NDArray[np.float64],  # g
    NDArray[np.float64] | None,  # p (None without debias)
    NDArray[np.float64] | None,  # q (None without debias)
    NDArray[np.float64] | None,  # grad
    int,  # n_iter
    bool,  # converged
    float,  # marginal_error
]: ...
def dpp_sample_projection(
    u: NDArray[np.float64],
    n_samples: int,
    seed: int,
    method: str = "auto",
    check_tol: float | None = None,
    first: int = 0,
) -> tuple[NDArray[np.int64], float | None]: ...
def dpp_sample_spectral(
    v: NDArray[np.float64],
    probs: NDArray[np.float64],
    n_samples: int,
    seed: int,
    method: str = "auto",
    first: int = 0,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]: ...
def dpp_sample_k(
    v: NDArray[np.float64],
    log_lambda: NDArray[np.float64],
    table: NDArray[np.float64],
    k: int,
    n_samples: int,
    seed: int,
    method: str = "auto",
    first: int = 0,
) -> NDArray[np.int64]: ...
def dpp_log_esp(log_lambda: NDArray[np.float64], k: int) -> NDArray[np.float64]: ...
def dpp_orthonormality_error(u: NDArray[np.float64]) -> float: ...
def dpp_volume_sample(
    u: NDArray[np.float64],
    k: int,
    n_samples: int,
    seed: int,
    p: NDArray[np.float64] | None = None,
    method: str = "auto",
    first: int = 0,
) -> NDArray[np.int64]: ...
def dpp_orthonormal_basis(x: NDArray[np.float64]) -> NDArray[np.float64]: ...
def dpp_greedy_map(
    l: NDArray[np.float64], k: int, threshold: float, floor: float
) -> NDArray[np.int64]: ...
def divergence_rows(
    p: NDArray[np.floating],
    q: NDArray[np.floating],
    pidx: NDArray[np.int64] | None,
    qidx: NDArray[np.int64] | None,
    n_out: int,
    measure: str,
    param: float,
    input: str,
    normalize: bool,
    tol: float,
) -> NDArray[np.float64]: ...
def kernel_log_sums(
    x: NDArray[np.floating], y: NDArray[np.floating], kernel: str, scale: float, exclude_self: bool
) -> tuple[float, float, float]: ...
def kernel_pair_log_sum(
    x: NDArray[np.floating], y: NDArray[np.floating], kernel: str, scale: float, exclude_self: bool
) -> float: ...
def self_sq_dists(x: NDArray[np.floating]) -> NDArray[np.float64]: ...
def knn_sq_dists(
    x: NDArray[np.floating],
    cols: NDArray[np.floating],
    k: int,
    same: bool,
    ux: NDArray[np.float64] | None = None,
    ucols: NDArray[np.float64] | None = None,
    algorithm: str = "auto",
) -> tuple[NDArray[np.float64], NDArray[np.int64]]: ...
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
def energy_pair_sum(x: NDArray[np.float64], y: NDArray[np.float64], exponent: float) -> float: ...
def dcov_cross_row_sums(
    rows: NDArray[np.float64], cols: NDArray[np.float64], exponent: float, same: bool
) -> NDArray[np.float64]: ...
def dcov_block_products(
    xi: NDArray[np.float64],
    xj: NDArray[np.float64],
    yi: NDArray[np.float64],
    yj: NDArray[np.float64],
    rxi: NDArray[np.float64],
    rxj: NDArray[np.float64],
    ryi: NDArray[np.float64],
    ryj: NDArray[np.float64],
    totals: tuple[float, float],
    n: int,
    exponent: float,
    unbiased: bool,
    same: bool,
) -> tuple[float, float, float]: ...
def dcov_perm_test(
    x: NDArray[np.floating],
    y: NDArray[np.floating],
    exponent: float,
    n_resamples: int,
    seed: int,
    first: int = 0,
) -> tuple[float, NDArray[np.float64]]: ...
def energy_perm_test(
    z: NDArray[np.floating],
    sizes: list[int],
    exponent: float,
    n_resamples: int,
    seed: int,
    first: int = 0,
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
def jdcov_grad(
    xs: list[NDArray[np.floating]],
    c: float = 1.0,
    exponent: float = 1.0,
    unbiased: bool = True,
    scale: bool = False,
) -> tuple[float, NDArray[np.float64]]: ...
def count_within(
    x: NDArray[np.floating], r2: NDArray[np.float64], strict: bool, algorithm: str = "auto"
) -> NDArray[np.int64]: ...
def kde_grid_binned_1d(
    x: NDArray[np.float64],
    w: NDArray[np.float64] | None,
    kernel: str,
    h: float,
    lo: float,
    delta: float,
    m: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...
def kde_grid_exact_1d(
    x: NDArray[np.float64],
    w: NDArray[np.float64],
    kernel: str,
    h: float,
    lo: float,
    delta: float,
    m: int,
    mask: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...
def isj_bandwidth_1d(
    x: NDArray[np.float64], w: NDArray[np.float64] | None, neff: float
) -> float: ...
def isj_bandwidth_1d_info(
    x: NDArray[np.float64], w: NDArray[np.float64] | None, neff: float
) -> tuple[float, float, float, list[float], list[float]]: ...
def kde_points_exact_1d(
    x: NDArray[np.float64],
    w: NDArray[np.float64],
    kernel: str,
    h: float,
    q: NDArray[np.float64],
    max_centres: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None: ...
def kde_points_exact_1d_folded(
    x: NDArray[np.float64],
    w: NDArray[np.float64],
    kernel: str,
    h: float,
    q: NDArray[np.float64],
    scales: list[float],
    shifts: list[float],
    max_centres: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None: ...
def kde_linear_bin_nd(
    x: NDArray[np.float64],
    w: NDArray[np.float64],
    lo: list[float],
    delta: list[float],
    nb: list[int],
) -> NDArray[np.float64]: ...
def kern_median_distance(x: NDArray[np.float64]) -> float: ...
def kern_mmd_test(
    z: NDArray[np.float64],
    n: int,
    kernel_name: str,
    param: float,
    unbiased: bool,
    n_resamples: int,
    first: int,
    seed: int,
) -> tuple[float, NDArray[np.float64]]: ...
def kern_hsic_test(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    kernel_name: str,
    sx: float,
    sy: float,
    unbiased: bool,
    n_resamples: int,
    first: int,
    seed: int,
) -> tuple[float, NDArray[np.float64]]: ...
def kern_dhsic_test(
    xs: list[NDArray[np.float64]],
    kernel_name: str,
    params: list[float],
    n_resamples: int,
    first: int,
    seed: int,
) -> tuple[float, NDArray[np.float64]]: ...
def kern_pdcor_test(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    z: NDArray[np.float64],
    exponent: float,
    n_resamples: int,
    first: int,
    seed: int,
) -> tuple[float, NDArray[np.float64]]: ...
def ot_wasserstein_1d(
    u: NDArray[np.float64],
    v: NDArray[np.float64],
    wu: NDArray[np.float64] | None,
    wv: NDArray[np.float64] | None,
    p: float,
) -> float: ...
def ot_sliced(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    a: NDArray[np.float64] | None,
    b: NDArray[np.float64] | None,
    thetas: NDArray[np.float64],
    p: float,
    with_grad: bool,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...
def kern_hsic_gamma(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    kernel_name: str,
    sx: float,
    sy: float,
) -> tuple[float, float, float, float]: ...
def kde_grid_binned_nd(
    x: NDArray[np.float64],
    w: NDArray[np.float64] | None,
    lo: list[float],
    delta: list[float],
    m: list[int],
    hsd: list[float],
) -> NDArray[np.float64]: ...
def kde_bin_corrected_nd(
    x: NDArray[np.float64],
    w: NDArray[np.float64] | None,
    wu: float,
    lo: list[float],
    delta: list[float],
    nb: list[int],
) -> tuple[NDArray[np.float64], list[float]]: ...
def kde_grid_binned_nd_fields(
    x: NDArray[np.float64],
    w: NDArray[np.float64] | None,
    lo: list[float],
    delta: list[float],
    m: list[int],
    hsd: list[float],
    fields_lo: list[float],
    fields_delta: list[float],
    fields_nc: list[int],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...
def kde_bin_corrected_nd_fields(
    x: NDArray[np.float64],
    w: NDArray[np.float64] | None,
    wu: float,
    lo: list[float],
    delta: list[float],
    nb: list[int],
    fields_lo: list[float],
    fields_delta: list[float],
    fields_nc: list[int],
) -> tuple[NDArray[np.float64], list[float], NDArray[np.float64]]: ...
def kde_grid_error_nd(
    sums: NDArray[np.float64],
    m: list[int],
    delta: list[float],
    hinv: list[float],
    stats: list[float],
    floor: float,
) -> NDArray[np.float64]: ...
def kde_stats_1d(
    x: NDArray[np.float64],
    w: NDArray[np.float64] | None = None,
    wu: float = 1.0,
    spread: bool = True,
) -> tuple[float, float, float, float, float, float, float, float, int, bool]: ...

# divest.torch backward passes (src/py/grads.rs)
def divergence_rows_grad(
    p: NDArray[np.floating],
    q: NDArray[np.floating],
    coef: NDArray[np.float64],
    measure: str,
    param: float,
    input: str,
    normalize: bool,
    tol: float,
    want_p: bool,
    want_q: bool,
) -> tuple[NDArray[np.floating] | None, NDArray[np.floating] | None]: ...
def sinkhorn_divergence_clouds_grads(
    x: NDArray[np.floating],
    y: NDArray[np.floating],
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    p: int,
    eps: float,
    eps0: float,
    scaling: float,
    debias: bool,
    max_iter: int,
    tol: float | None,
) -> tuple[
    float,  # value
    NDArray[np.float64],  # f
    NDArray[np.float64],  # g
    NDArray[np.float64] | None,  # p (None without debias)
    NDArray[np.float64] | None,  # q (None without debias)
    NDArray[np.float64],  # grad with respect to x
    int,  # n_iter
    bool,  # converged
    float,  # marginal_error
    NDArray[np.float64],  # grad with respect to y
]: ...
def kernel_row_grads(
    x: NDArray[np.floating], y: NDArray[np.floating], kernel: str, scale: float, log_norm: float
) -> NDArray[np.float64]: ...
def energy_row_grads(
    x: NDArray[np.floating], y: NDArray[np.floating], alpha: float
) -> NDArray[np.float64]: ...
def gauss_moments(
    x: NDArray[np.floating], y: NDArray[np.floating], lw: NDArray[np.float64], second: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64] | None]: ...
def dcor_matrix(
    xt: NDArray[np.float64],
    yt: NDArray[np.float64] | None = None,
    exponent: float = 1.0,
    unbiased: bool = False,
) -> NDArray[np.float64]: ...
def mi_matrix(
    xt: NDArray[np.float64],
    yt: NDArray[np.float64] | None,
    k: int,
    discrete_x: list[bool],
    discrete_y: list[bool],
    variant: int = 1,
) -> NDArray[np.float64]: ...
def cmi_stats(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    z: NDArray[np.float64],
    k: int,
    perms: NDArray[np.int64] | None = None,
    mixed: bool = False,
    algorithm: str = "auto",
) -> NDArray[np.float64]: ...
def cmi_z_neighbours(z: NDArray[np.float64], k: int) -> NDArray[np.int64]: ...
def sinkhorn_partial_transform(
    x: NDArray[np.floating],
    y: NDArray[np.floating],
    w: NDArray[np.float64],
    v: NDArray[np.float64],
    p: int,
    eps: float,
    mean: bool,
) -> tuple[
    NDArray[np.float64],  # log_sum
    NDArray[np.float64],  # shift
    NDArray[np.float64],  # sum
    NDArray[np.float64] | None,  # wsum (mean only)
    NDArray[np.float64] | None,  # wacc (n, d) (mean only)
]: ...
def sinkhorn_schedule(eps0: float, eps: float, scaling: float, p: int) -> list[float]: ...
def jdcov_block_sum(
    xi: list[NDArray[np.float64]],
    xj: list[NDArray[np.float64]],
    ri: list[NDArray[np.float64]],
    rj: list[NDArray[np.float64]],
    totals: list[float],
    w: list[float],
    c: float,
    n: int,
    exponent: float,
    unbiased: bool,
    same: bool,
) -> float: ...
def count_within_rows(
    x: NDArray[np.floating], lo: int, r2: NDArray[np.float64], strict: bool, algorithm: str = "auto"
) -> NDArray[np.int64]: ...
def kde_error_fields(
    x: NDArray[np.float64],
    w: NDArray[np.float64] | None,
    wu: float,
    corrected: bool,
    lo_f: list[float],
    delta_f: list[float],
    lo_c: list[float],
    delta_c: list[float],
    nc: list[int],
) -> NDArray[np.float64]: ...
def kde_fold_images(
    x: NDArray[np.float64],
    logw: NDArray[np.float64],
    kernel: str,
    q: NDArray[np.float64],
    lse0: NDArray[np.float64] | None,
    maps: NDArray[np.float64],
    pair_q: NDArray[np.int64],
    pair_g: NDArray[np.int64],
    margin: float,
) -> NDArray[np.float64]: ...
def kde_grid_conv_full(
    bins: NDArray[np.float64],
    nb: list[int],
    m: list[int],
    pad: list[int],
    cov: list[float],
) -> NDArray[np.float64] | None: ...
def kde_grid_error_full(
    sums: NDArray[np.float64],
    fields: NDArray[np.float64],
    m: list[int],
    delta: list[float],
    prec: list[float],
    r: list[int],
    reach: list[int],
    nc: list[int],
    scale: float,
    floor_rel: float,
    floor_abs: float,
    budget: float,
) -> tuple[NDArray[np.float64], float] | None: ...
def kde_grid_error_diag(
    sums: NDArray[np.float64],
    fields: NDArray[np.float64],
    corrected: bool,
    m: list[int],
    delta: list[float],
    prec: list[float],
    r: list[int],
    reach: list[int],
    nc: list[int],
    scale: float,
    floor_rel: float,
    floor_abs: float,
) -> tuple[NDArray[np.float64], float]: ...
def kde_box_gauss(
    x: NDArray[np.float64],
    w: NDArray[np.float64],
    lo: NDArray[np.float64],
    hi: NDArray[np.float64],
    chol: NDArray[np.float64],
    full: bool,
) -> NDArray[np.float64]: ...
def tvn_cdf(chol: NDArray[np.float64], h: NDArray[np.float64]) -> NDArray[np.float64]: ...
def bvn_cdf(h: NDArray[np.float64], r: float, a: float) -> NDArray[np.float64]: ...
def normal_sf(t: NDArray[np.float64]) -> NDArray[np.float64]: ...
