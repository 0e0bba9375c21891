"""Memory ceilings of the O(n)-memory claims (issue 18), measured in a fresh child process.

Each call runs on inputs large enough that an n×m matrix would need gigabytes; the child
reports the growth of its peak resident set (``ru_maxrss``, which sees Rust and NumPy
allocations alike) across the call, after a small warm-up call that loads everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = """
import json, resource, numpy as np, divest
r = np.random.default_rng(0)
{setup}
def call():
    {call}
{warm}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
call()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"mib": (after - before) / 1024}}))
"""

N = 30_000  # an n×n float64 matrix would be 6.7 GiB

CASES = {
    "dcor 1-D, n = 10^6": (
        "x = r.standard_normal(10**6); y = x**2 + r.standard_normal(10**6)",
        "divest.dcor(x, y)",
        "divest.dcor(x[:1000], y[:1000])",
        240,
    ),
    f"dcor multivariate, n = {N}": (
        f"x = r.standard_normal(({N}, 3)); y = x[:, :2] ** 2 + r.standard_normal(({N}, 2))",
        "divest.dcor(x, y)",
        "divest.dcor(x[:500], y[:500])",
        64,
    ),
    f"energy_distance, {N} vs {N}": (
        f"x = r.standard_normal(({N}, 3)); y = r.standard_normal(({N}, 3)) + 0.1",
        "divest.energy_distance(x, y)",
        "divest.energy_distance(x[:500], y[:500])",
        64,
    ),
    f"mmd, {N} vs {N}": (
        f"x = r.standard_normal(({N}, 3)); y = r.standard_normal(({N}, 3)) + 0.1",
        "divest.mmd(x, y, sigma=1.0)",
        "divest.mmd(x[:500], y[:500], sigma=1.0)",
        64,
    ),
    f"KDE logpdf, n = m = {N}": (
        f"x = r.standard_normal(({N}, 2))",
        "divest.KDE(x).logpdf(x)",
        "divest.KDE(x[:500]).logpdf(x[:500])",
        64,
    ),
    "sinkhorn_divergence, n = m = 10000": (  # a large eps keeps the schedule short
        "x = r.random((10000, 3)); y = r.random((10000, 3)) + 0.2",
        "divest.sinkhorn_divergence(x, y, eps=2.0)",
        "divest.sinkhorn_divergence(x[:500], y[:500], eps=2.0)",
        64,
    ),
    "knn_entropy, n = 10^5": (
        "x = r.standard_normal((10**5, 3))",
        "divest.knn_entropy(x)",
        "divest.knn_entropy(x[:500])",
        96,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_memory_ceiling(name):
    setup, call, warm, limit_mib = CASES[name]
    code = CHILD.format(setup=setup, call=call, warm=warm)
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    grew = json.loads(res.stdout.strip().splitlines()[-1])["mib"]
    assert grew < limit_mib, f"{name}: peak memory grew by {grew:.0f} MiB (limit {limit_mib})"
