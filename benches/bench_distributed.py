"""divest.distributed: overhead against the in-memory call, and weak scaling.

    python benches/bench_distributed.py [--quick] [--mode all|overhead|weak|sinkhorn]

``--mode weak`` runs the weak-scaling part alone (on a quiet machine: it prints each
efficiency with the load average before and after each run).

Not an asv benchmark (it starts its own clusters); asv imports this module and finds
nothing to run. Prints one table:

* overhead: the Dask path on an in-process LocalCluster (one worker, one Dask thread, the
  divest pool at its default size in the worker's thread as in the client's, checked and
  printed, so both sides use every core) against the in-memory call on the same data:
  KDE at 10^6 queries, kl on 10^6 x 100, dcov_test with 10^4 resamples at n = 200 and
  1000, and the point-cloud sinkhorn_divergence at n = m = 4000 in two blocks per cloud
  (one task by default; the forced block-pair graph is printed as a diagnostic row; run
  sinkhorn alone with ``--mode sinkhorn``). Each side gets one warm-up run (not timed),
  then the two sides alternate, best of 5 (sinkhorn 3); between Dask repetitions the
  bench waits until the cluster has released the previous run's keys, so no repetition
  reuses a result held from the last one. The process CPU time of the best run is
  printed too, with the load average before and after;
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


def best(f, client, repeat=3):
    """Best wall time of `repeat` runs of `f`, each computing afresh (see _settle)."""
    held = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
        _settle(client, held)
    return min(out)


def _settle(client, held):
    """Waits until the scheduler holds no more tasks than `held` (the persisted inputs):
    the previous run's keys are released, so the next run computes afresh."""
    for _ in range(2000):
        if client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) <= held:
            return
        time.sleep(0.005)


def paired(mem, dsk, client, held, repeat=5):
    """One warm-up run of each side (not timed), then the two alternate `repeat` times.
    Returns (wall, cpu) of the best in-memory run and of the best Dask run."""
    mem()
    dsk()
    _settle(client, held)
    tm, td = [], []
    for _ in range(repeat):
        for f, out in ((mem, tm), (dsk, td)):
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            out.append((time.perf_counter() - t0, time.process_time() - c0))
            if f is dsk:
                _settle(client, held)
    return min(tm), min(td)


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
            Client(cluster) as client,
        ):
            for ot in (None, 0):
                name, tm, td = sinkhorn_case(s, rng, client, one_task_pairs=ot)
                print(
                    f"{name}: in-memory {tm[0]:.3f} s, dask {td[0]:.3f} s, ratio {td[0] / tm[0]:.2f}"
                )


def overhead(a, s, rng):
    import dask.array as da
    from distributed import Client, LocalCluster

    import divest
    import divest.distributed as dd

    rows = []
    load0 = os.getloadavg()
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        # Equal resources: the worker's thread runs divest with the client's pool size.
        tw = client.submit(divest.get_num_threads, pure=False).result()
        print(f"divest threads: in-memory {divest.get_num_threads()}, in the Dask worker {tw}")
        if tw != divest.get_num_threads():
            raise SystemExit("the two sides would not use the same threads")

        def held():
            return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))

        # The Dask arrays are generated on the worker and persisted there (no data in the
        # graph); the in-memory side gets a NumPy copy of the same values.
        drng = da.random.default_rng(0)
        # KDE: 10^6 queries against 256 points in 2-D, 8 query blocks.
        x = rng.normal(size=(256, 2))
        m = 10**6 // s
        qd = drng.normal(size=(m, 2), chunks=(m // 8 + 1, 2)).persist()
        q = qd.compute()
        model = divest.KDE(x)
        tm, td = paired(
            lambda q=q: model.logpdf(q),
            lambda qd=qd: dd.kde_logpdf(model, qd).compute(),
            client,
            held(),
        )
        rows.append(("kde_logpdf, 10^6 queries x 256 points, 2-D", tm, td))
        del q, qd
        # kl: 10^6 x 100 float64 rows, 8 blocks of rows.
        pd = drng.random((m, 100), chunks=(m // 8 + 1, 100)) + 1e-3
        pd = (pd / pd.sum(1, keepdims=True)).persist()
        rd = drng.random((m, 100), chunks=(m // 8 + 1, 100)) + 1e-3
        rd = (rd / rd.sum(1, keepdims=True)).persist()
        p, r = pd.compute(), rd.compute()
        tm, td = paired(
            lambda p=p, r=r: divest.kl(p, r),
            lambda pd=pd, rd=rd: dd.kl(pd, rd).compute(),
            client,
            held(),
        )
        rows.append(("kl, 10^6 x 100 float64", tm, td))
        del p, r, pd, rd
        # dcov_test: 10^4 resamples, the default split (tasks of about 2 s of one core:
        # here a single task).
        R = 10**4 // s
        for n in (200, 1000):
            xx = rng.normal(size=(n, 3))
            yy = xx[:, :1] + rng.normal(size=(n, 1))
            tm, td = paired(
                lambda xx=xx, yy=yy: divest.dcov_test(xx, yy, n_resamples=R, rng=1),
                lambda xx=xx, yy=yy: dd.dcov_test(xx, yy, n_resamples=R, rng=1).compute(),
                client,
                held(),
                repeat=5 if n == 200 else 3,
            )
            rows.append((f"dcov_test, n = {n}, 10^4 resamples", tm, td))
        # Point-cloud Sinkhorn divergence: n = m = 4000 in 3-D, two blocks per cloud.
        rows.append(sinkhorn_case(s, rng, client))
        rows.append(sinkhorn_case(s, rng, client, one_task_pairs=0))
    load1 = os.getloadavg()
    print("\noverhead (in-process LocalCluster, 1 worker x 1 Dask thread):")
    print(
        f"{'case':56s} {'in-memory s':>11s} {'dask s':>8s} {'ratio':>6s}"
        f" {'cpu in-mem':>10s} {'cpu dask':>8s}"
    )
    for name, tm, td in rows:
        print(
            f"{name:56s} {tm[0]:11.3f} {td[0]:8.3f} {td[0] / tm[0]:6.2f} {tm[1]:10.3f} {td[1]:8.3f}"
        )
    print(
        f"(best wall times; cpu = process CPU seconds of that run; load average "
        f"{load0[0]:.1f} before, {load1[0]:.1f} after)"
    )


def sinkhorn_case(s, rng, client, n=4000, one_task_pairs=None):
    import dask.array as da

    import divest
    import divest.distributed as dd

    n = n // s
    x, y = rng.random((n, 3)), rng.random((n, 3)) * 0.8 + 0.2
    kw = dict(eps=2 * 0.05**2)
    xd, yd = da.from_array(x, chunks=(n // 2 + 1, 3)), da.from_array(y, chunks=(n // 2 + 1, 3))
    dkw = {} if one_task_pairs is None else dict(one_task_pairs=one_task_pairs)

    def run():
        r = dd.sinkhorn_divergence(xd, yd, **kw, **dkw)
        da.compute(r.value, r.f, r.g, r.grad)

    held = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    tm, td = paired(lambda: divest.sinkhorn_divergence(x, y, **kw), run, client, held, 3)
    what = "2 blocks each" if one_task_pairs is None else "block-pair graph forced"
    return (f"sinkhorn_divergence, n = m = {n}, 3-D, {what}", tm, td)


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
            t_kde = best(lambda qd=qd, model=model: dd.kde_logpdf(model, qd).compute(), c, 2)
            R = 20_000 * nw // s
            t_dcov = best(
                lambda R=R, per=R // (4 * nw): dd.dcov_test(
                    xx, yy, n_resamples=R, rng=1, resamples_per_task=per
                ).compute(),
                c,
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
