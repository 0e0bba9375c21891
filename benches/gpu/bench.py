"""GPU benchmarks for issue 13's targets; writes JSON. Run through benches/gpu/run.sh.

Each case: one warm-up call (compiles the kernels on first use), then the median of 5
calls timed with CUDA events (a case whose warm-up exceeds ``--slow`` seconds is timed
once). Peers on the same GPU: a straightforward CuPy implementation (matmul blocks plus
log-sum-exp) and GeomLoss when installed. Extra memory is the growth of CuPy's memory
pool (freed before each case) over the inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

import divest
from divest import _gpu

try:
    import cupy as cp
except ImportError:  # pragma: no cover
    sys.exit("benches/gpu/bench.py needs CuPy and a GPU")


def _time(fn, reps=5, slow=20.0):
    pool = cp.get_default_memory_pool()
    cp.cuda.Device().synchronize()
    pool.free_all_blocks()
    base = pool.used_bytes()
    t0 = time.perf_counter()
    fn()
    cp.cuda.Device().synchronize()
    first = time.perf_counter() - t0
    peak = pool.total_bytes() - base
    times = []
    for _ in range(1 if first > slow else reps):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return {
        "median_s": float(np.median(times)),
        "times_s": times,
        "first_call_s": first,
        "extra_bytes": int(peak),
    }


def naive_kde_logpdf(x, q, h, block=4096):
    """The straightforward CuPy KDE: matmul blocks of squared distances, then logsumexp."""
    from cupyx.scipy.special import logsumexp

    n, d = x.shape
    xx = cp.sum(x * x, axis=1)
    out = []
    for i in range(0, q.shape[0], block):
        qb = q[i : i + block]
        d2 = cp.sum(qb * qb, axis=1)[:, None] + xx[None, :] - 2.0 * (qb @ x.T)
        out.append(logsumexp(-0.5 * cp.maximum(d2, 0) / h**2, axis=1))
    norm = math.log(n) + d * math.log(h) + 0.5 * d * math.log(2 * math.pi)
    return cp.concatenate(out) - norm


def run(args):
    rng = cp.random.default_rng(0)
    res = {
        "device": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(),
        "cupy": cp.__version__,
        "divest": divest.__version__,
        "python": platform.python_version(),
        "cases": {},
    }
    t0 = time.perf_counter()
    _gpu._kernels()
    res["compile_all_kernels_s"] = time.perf_counter() - t0
    cases = res["cases"]
    f32 = cp.float32
    big = args.n

    def add(name, fn, **extra):
        if time.perf_counter() - START > args.budget:
            cases[name] = {"skipped": "time budget spent"}
            return
        try:
            r = _time(fn, slow=args.slow)
        except Exception as exc:  # record, go on
            r = {"error": f"{type(exc).__name__}: {exc}"}
        r.update(extra)
        cases[name] = r
        print(name, json.dumps(r), flush=True)
        with open(args.out, "w") as f:  # after every case: a timeout keeps what was measured
            json.dump(res, f, indent=1)

    # KDE logpdf, d = 64 and d = 3.
    for d in (64, 3):
        x = rng.standard_normal((big, d), dtype=f32)
        q = rng.standard_normal((big, d), dtype=f32)
        kde = divest.KDE(x, bandwidth=0.5)
        add(f"kde_logpdf_n{big}_d{d}", lambda kde=kde, q=q: kde.logpdf(q), pairs=big * big)
        if d >= 16:  # the route without cuBLAS tiles, for comparison

            def register_route(kde=kde, q=q):
                os.environ["DIVEST_GPU_GEMM"] = "0"
                try:
                    return kde.logpdf(q)
                finally:
                    os.environ.pop("DIVEST_GPU_GEMM", None)

            add(f"kde_logpdf_register_kernel_n{big}_d{d}", register_route, pairs=big * big)
        add(f"naive_cupy_kde_logpdf_n{big}_d{d}", lambda x=x, q=q: naive_kde_logpdf(x, q, 0.5))
        if "error" not in cases.get(f"kde_logpdf_n{big}_d{d}", {"error": 1}):
            c = cases[f"kde_logpdf_n{big}_d{d}"]
            c["pairs_per_s"] = big * big / c["median_s"]
            sub = slice(0, 2000)
            want = divest.KDE(cp.asnumpy(x).astype(np.float64), bandwidth=0.5).logpdf(
                cp.asnumpy(q[sub]).astype(np.float64)
            )
            got = cp.asnumpy(kde.logpdf(q[sub])).astype(np.float64)
            c["max_abs_err_vs_rust_f64_nats"] = float(np.abs(got - want).max())

    # Energy distance and Gaussian MMD, d = 64.
    x = rng.standard_normal((big, 64), dtype=f32)
    y = rng.standard_normal((big, 64), dtype=f32) + 0.1
    add(f"energy_distance_n{big}_d64", lambda: divest.energy_distance(x, y))
    add(f"mmd_gaussian_n{big}_d64", lambda: divest.mmd(x, y, sigma=8.0))

    # Sinkhorn divergence with gradient, d = 3, blur 0.05 (divest eps = 2·blur²).
    x = rng.random((big, 3), dtype=f32)
    y = rng.random((big, 3), dtype=f32)
    add(
        f"sinkhorn_divergence_grad_n{big}_d3",
        lambda: divest.sinkhorn_divergence(x, y, eps=2 * 0.05**2, scaling=0.9),
    )
    try:
        import torch
        from geomloss import SamplesLoss

        for backend in ("online", "tensorized"):
            loss = SamplesLoss("sinkhorn", p=2, blur=0.05, scaling=0.9, backend=backend)
            tx = torch.from_dlpack(x).requires_grad_(True)
            ty = torch.from_dlpack(y)

            def geom(loss=loss, tx=tx, ty=ty):
                v = loss(tx, ty)
                (g,) = torch.autograd.grad(v, [tx])
                return g

            add(f"geomloss_{backend}_n{big}_d3", geom)
    except Exception as exc:
        cases["geomloss"] = {"skipped": f"{type(exc).__name__}: {exc}"}

    # Batched small Sinkhorn: 10⁴ problems of 64 × 64, tolerance 1e-6 each.
    nb = args.batch
    a = cp.full((nb, 64), 1 / 64, dtype=f32)
    c = rng.random((nb, 64, 64), dtype=f32)
    add(
        f"sinkhorn_batch_{nb}x64x64",
        lambda: divest.sinkhorn_batch(a, a, c, 0.1, tol=1e-6, max_iter=10000),
    )

    # KL and JS on 4096 × 32000 float32 logits.
    lp = rng.standard_normal((4096, 32000), dtype=f32)
    lq = rng.standard_normal((4096, 32000), dtype=f32)
    add("kl_logits_4096x32000_f32", lambda: divest.kl(lp, lq, from_logits=True))
    add("js_logits_4096x32000_f32", lambda: divest.js(lp, lq, from_logits=True))

    def naive_kl():
        from cupyx.scipy.special import log_softmax

        a, b = log_softmax(lp, axis=-1), log_softmax(lq, axis=-1)
        return cp.sum(cp.exp(a) * (a - b), axis=-1)

    add("naive_cupy_kl_logits_4096x32000_f32", naive_kl)
    return res


START = time.perf_counter()

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benches/gpu/results.json")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for all cases")
    ap.add_argument("--slow", type=float, default=20.0)
    args = ap.parse_args()
    out = run(args)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", args.out)
