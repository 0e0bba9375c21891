"""Distance covariance comparisons: dcor, hyppo (if installed) and a NumPy cdist
reference, on the workloads of issue 4."""

from __future__ import annotations

import numpy as np

import divest

from . import Case, rel_error
from . import workloads as wl

_PEAK_RSS = """
import divest
from divest._bench.workloads import dcov_pair
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
x, y = dcov_pair({n}, {p}, {q})
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current RSS
h0 = hwm()
{call}
print((hwm() - h0) / 2**20)
"""


def extra_peak_rss(call: str, n: int, p: int, q: int) -> str:
    """Peak resident memory a call adds, measured in a fresh subprocess (Linux only):
    /proc/self/status VmHWM after the call minus the RSS just before it (reset through
    /proc/self/clear_refs). Counts Rust and NumPy allocations alike."""
    import subprocess
    import sys

    code = _PEAK_RSS.format(n=n, p=p, q=q, call=call)
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
        ).stdout.split()[-1]
        return f"extra peak memory of `{call}`: {float(out):.1f} MiB (subprocess VmHWM delta)"
    except Exception as e:  # pragma: no cover - non-Linux or restricted /proc
        return f"extra peak memory of `{call}`: not measured ({type(e).__name__})"


def cases(quick: bool):
    out = []
    try:
        import dcor
    except ImportError:
        dcor = None
    try:
        from hyppo.independence import Dcorr
    except Exception:
        Dcorr = None

    n1 = wl.size(wl.DCOV_1D_N, quick)
    x1, y1 = wl.dcov_1d(n1)
    peers = {
        "dcor mergesort": (lambda: dcor.distance_correlation(x1, y1, method="mergesort"))
        if dcor
        else "dcor not installed"
    }
    out.append(
        Case(
            f"dcor, 1-D, n={n1}",
            lambda: divest.dcor(x1, y1),
            peers=peers,
            repeat=5,
            check=rel_error,
        )
    )
    if not quick:
        x6, y6 = wl.dcov_1d(10**6)
        out.append(
            Case("dcor, 1-D, n=10^6 (target < 0.5 s)", lambda: divest.dcor(x6, y6), repeat=3)
        )

    n, p, q = wl.size(wl.DCOV_N, quick), 10, 5
    x, y = wl.dcov_pair(n, p, q)
    peers = {"dcor": (lambda: dcor.distance_correlation(x, y)) if dcor else "dcor not installed"}
    if Dcorr is not None:
        # hyppo's statistic is the bias-corrected dcor² (divest.dcor_sqr(unbiased=True)).
        peers["hyppo Dcorr.statistic"] = lambda: ("u", Dcorr().statistic(x, y))
    else:
        peers["hyppo Dcorr.statistic"] = "hyppo not installed"

    def check(a, b):
        if isinstance(b, tuple):
            return rel_error(divest.dcor_sqr(x, y, unbiased=True), b[1])
        return rel_error(a, b) if np.ndim(b) == 0 else float("nan")

    out.append(
        Case(
            f"dcor, n={n}, p={p}, q={q}",
            lambda: divest.dcor(x, y),
            peers=peers,
            repeat=3,
            check=check,
        )
    )
    if not quick:
        x2, y2 = wl.dcov_pair(20000, 5, 3)
        out.append(
            Case(
                "dcor, n=20000, p=5, q=3 (O(n) memory; target < 100 MB extra)",
                lambda: divest.dcor(x2, y2),
                repeat=1,
                note=lambda: extra_peak_rss("divest.dcor(x, y)", 20000, 5, 3),
            )
        )

    xp, yp = wl.dcov_pair(*wl.DCOV_TEST_SHAPE, seed=wl.DCOV_TEST_SEED)
    R = 200 if quick else 500
    peers = {
        "dcor distance_covariance_test": (
            lambda: dcor.independence.distance_covariance_test(xp, yp, num_resamples=R)
        )
        if dcor
        else "dcor not installed"
    }
    out.append(
        Case(
            f"permutation test, n=1000, p=q=3, {R} permutations",
            lambda: divest.dcov_test(xp, yp, n_resamples=R, rng=0),
            peers=peers,
            repeat=3,
        )
    )

    ne = wl.size(wl.ENERGY_N, quick)
    a, b = wl.energy_pair(ne)

    def cdist_ref():
        from scipy.spatial.distance import cdist

        return 2 * cdist(a, b).mean() - cdist(a, a).mean() - cdist(b, b).mean()

    peers = {"NumPy/SciPy cdist reference": cdist_ref}
    if dcor is not None:
        peers["dcor.energy_distance"] = lambda: dcor.energy_distance(a, b)
    out.append(
        Case(
            f"energy distance, {ne} vs {ne}, d=10",
            lambda: divest.energy_distance(a, b),
            peers=peers,
            repeat=3,
            check=rel_error,
        )
    )
    return out
