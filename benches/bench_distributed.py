"""divest.distributed: overhead against the in-memory call, and weak scaling.

    python benches/bench_distributed.py [--quick] [--mode all|overhead|weak|sinkhorn]

``--mode weak`` runs the weak-scaling part alone (on a quiet machine: it prints each
efficiency with the load average before and after each run).

Not an asv benchmark (it starts its own clusters); asv imports this module and finds
nothing to run. Prints one table:

* overhead: the Dask path on an in-process LocalCluster (one worker, one Dask thread, the
  divest pool at its default size, so both sides use every core) against the in-memory
  call on the same data: KDE at 10^6 queries, kl on 10^6 x 100, dcov_test with 10^4
  resamples (best of 3 each), and the point-cloud sinkhorn_divergence at n = m = 4000 in
  two blocks per cloud (best of 2; run it alone with ``--mode sinkhorn``);
* weak scaling: 1 then 2 worker processes with one Dask thread and one divest thread
  each (DIVEST_NUM_THREADS=1 in their environment), the work doubled with the workers
  (kde_logpdf: 2·10^6 queries per worker, dcov_test: 2·10^4 resamples per worker, four
  tasks of seconds per worker);
  efficiency = t(1 worker) / t(2 workers). The load average is printed with it: on a
  loaded machine the figure says little about a quiet one.
"""

from __future__ import annotations

import argparse
import os
import time


def best(f, repeat=3):
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
    return min(out)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    ap.add_argument(
        "--mode",
        choices=("all", "overhead", "weak", "sinkhorn"),
        default="all",
        help="overhead against the in-memory calls, weak scaling, or both",
    )
    a = ap.parse_args(argv)
    import numpy as np

    import divest
    from divest._core import simd_level

    s = 10 if a.quick else 1
    rng = np.random.default_rng(0)
    print(
        f"divest {divest.__version__}, SIMD {simd_level()}, {os.cpu_count()} cores, "
        f"divest threads {divest.get_num_threads()}, load average {os.getloadavg()}"
    )
    if a.mode in ("all", "overhead"):
        overhead(a, s, rng)
    if a.mode in ("all", "weak"):
        weak_scaling(s, rng)
    if a.mode == "sinkhorn":
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
            ) as cluster,
            Client(cluster),
        ):
            name, tm, td = sinkhorn_case(s, rng)
        print(f"{name}: in-memory {tm:.3f} s, dask {td:.3f} s, ratio {td / tm:.2f}")


def overhead(a, s, rng):
    import dask.array as da
    from distributed import Client, LocalCluster

    import divest
    import divest.distributed as dd

    rows = []
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        # The Dask arrays are generated on the worker and persisted there (no data in the
        # graph); the in-memory side gets a NumPy copy of the same values.
        drng = da.random.default_rng(0)
        # KDE: 10^6 queries against 256 points in 2-D, 8 query blocks.
        x = rng.normal(size=(256, 2))
        m = 10**6 // s
        qd = drng.normal(size=(m, 2), chunks=(m // 8 + 1, 2)).persist()
        q = qd.compute()
        model = divest.KDE(x)
        t_mem = best(lambda q=q: model.logpdf(q))
        t_dask = best(lambda qd=qd: dd.kde_logpdf(model, qd).compute())
        rows.append(("kde_logpdf, 10^6 queries x 256 points, 2-D", t_mem, t_dask))
        del q, qd
        # kl: 10^6 x 100 float64 rows, 8 blocks of rows.
        m = 10**6 // s
        pd = drng.random((m, 100), chunks=(m // 8 + 1, 100)) + 1e-3
        pd = (pd / pd.sum(1, keepdims=True)).persist()
        rd = drng.random((m, 100), chunks=(m // 8 + 1, 100)) + 1e-3
        rd = (rd / rd.sum(1, keepdims=True)).persist()
        p, r = pd.compute(), rd.compute()
        t_mem = best(lambda p=p, r=r: divest.kl(p, r))
        t_dask = best(lambda pd=pd, rd=rd: dd.kl(pd, rd).compute())
        rows.append(("kl, 10^6 x 100 float64", t_mem, t_dask))
        del p, r, pd, rd
        # dcov_test: n = 200, 10^4 resamples, the default split (tasks of about 2 s of one
        # core: here a single task; 8 tasks of 1250 cost about 1.25x on this machine).
        xx = rng.normal(size=(200, 3))
        yy = xx[:, :1] + rng.normal(size=(200, 1))
        R = 10**4 // s
        t_mem = best(lambda: divest.dcov_test(xx, yy, n_resamples=R, rng=1))
        t_dask = best(lambda: dd.dcov_test(xx, yy, n_resamples=R, rng=1).compute())
        rows.append(("dcov_test, n = 200, 10^4 resamples", t_mem, t_dask))
        # The same at n = 1000 (about a second in memory): the scheduler's fixed cost of a
        # few tens of milliseconds no longer dominates.
        xx = rng.normal(size=(1000, 3))
        yy = xx[:, :1] + rng.normal(size=(1000, 1))
        t_mem = best(lambda: divest.dcov_test(xx, yy, n_resamples=R, rng=1))
        t_dask = best(lambda: dd.dcov_test(xx, yy, n_resamples=R, rng=1).compute())
        rows.append(("dcov_test, n = 1000, 10^4 resamples", t_mem, t_dask))
        # Point-cloud Sinkhorn divergence: n = m = 4000 in 3-D, two blocks per cloud
        # (tasks of 4·10^6 pairs, far below the seconds recommended: the overhead bound).
        rows.append(sinkhorn_case(s, rng))
    print("\noverhead (in-process LocalCluster, 1 worker x 1 Dask thread):")
    print(f"{'case':48s} {'in-memory s':>12s} {'dask s':>9s} {'ratio':>6s}")
    for name, tm, td in rows:
        print(f"{name:48s} {tm:12.3f} {td:9.3f} {td / tm:6.2f}")


def sinkhorn_case(s, rng, n=4000):
    import dask.array as da

    import divest
    import divest.distributed as dd

    n = n // s
    x, y = rng.random((n, 3)), rng.random((n, 3)) * 0.8 + 0.2
    kw = dict(eps=2 * 0.05**2)
    t_mem = best(lambda: divest.sinkhorn_divergence(x, y, **kw), 2)
    xd, yd = da.from_array(x, chunks=(n // 2 + 1, 3)), da.from_array(y, chunks=(n // 2 + 1, 3))

    def run():
        r = dd.sinkhorn_divergence(xd, yd, **kw)
        da.compute(r.value, r.f, r.g, r.grad)

    t_dask = best(run, 2)
    return (f"sinkhorn_divergence, n = m = {n}, 3-D, 2 blocks each", t_mem, t_dask)


def weak_scaling(s, rng):
    """1 then 2 single-threaded worker processes, the work doubled with the workers."""
    import dask.array as da
    from distributed import Client, LocalCluster

    import divest
    import divest.distributed as dd

    print("\nweak scaling (worker processes, 1 Dask thread and DIVEST_NUM_THREADS=1 each):")
    print(f"{'case':40s} {'1 worker s':>11s} {'2 workers s':>12s} {'eff':>5s}  load avg")
    xx = rng.normal(size=(300, 2))
    yy = xx[:, :1] + rng.normal(size=(300, 1))
    res = {}
    x = rng.normal(size=(256, 2))
    for nw in (1, 2):
        load0 = os.getloadavg()[0]
        with (
            LocalCluster(
                n_workers=nw,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                env={"DIVEST_NUM_THREADS": "1"},
            ) as cluster,
            Client(cluster) as c,
        ):
            dd.configure_workers(c, 1)
            mq = 2_000_000 * nw // s  # 4 tasks of about 2 s of one core per worker
            qd = da.random.default_rng(1).normal(size=(mq, 2), chunks=(mq // (4 * nw), 2)).persist()
            model = divest.KDE(x)
            dd.kde_logpdf(model, qd[:10]).compute()  # warm up the workers
            t_kde = best(lambda qd=qd, model=model: dd.kde_logpdf(model, qd).compute(), 2)
            R = 20_000 * nw // s
            t_dcov = best(
                lambda R=R, per=R // (4 * nw): dd.dcov_test(
                    xx, yy, n_resamples=R, rng=1, resamples_per_task=per
                ).compute(),
                2,
            )
            res[nw] = (t_kde, t_dcov, load0, os.getloadavg()[0])
    for i, name in enumerate(
        (
            f"kde_logpdf, {2_000_000 // s} queries per worker",
            f"dcov_test, n = 300, {20_000 // s} per worker",
        )
    ):
        t1, t2 = res[1][i], res[2][i]
        load = f"{res[1][2]:.1f}-{res[1][3]:.1f} / {res[2][2]:.1f}-{res[2][3]:.1f}"
        print(f"{name:40s} {t1:11.3f} {t2:12.3f} {t1 / t2:5.2f}  {load}")
    print("(efficiency = t(1 worker) / t(2 workers), target >= 0.8 on a quiet machine; load")
    print(" average before-after the 1-worker / 2-worker runs)")


if __name__ == "__main__":
    main()
