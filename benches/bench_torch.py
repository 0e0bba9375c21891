"""divest.torch against plain PyTorch and GeomLoss: forward plus backward, ratios in one run.

Run as a script (not an asv suite: it needs torch and, for the Sinkhorn row, geomloss):

    python benches/bench_torch.py [--threads 2] [--repeat 3] [--only kl,js,sinkhorn,mmd,energy,dcov]

Every row times the loss and its gradient (``backward``) with both libraries limited to the
same number of threads (divest's pool and torch's intra-op pool), best of ``--repeat``,
on the same inputs, and prints the ratio. Peak memory is not measured here; the naive
torch versions form n×n matrices (O(n²)), divest's never do (O((n + m)·d)).
"""

import argparse
import time


def _best(f, repeat):
    f()  # warm-up (allocations, lazy initialisation)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="kl,js,sinkhorn,mmd,energy,dcov")
    args = ap.parse_args(argv)
    import torch

    import divest
    import divest.torch as dt

    torch.set_num_threads(args.threads)
    divest.set_num_threads(args.threads)
    only = set(args.only.split(","))
    rows = []

    def row(name, ours, theirs, peer):
        a = _best(ours, args.repeat)
        b = _best(theirs, args.repeat)
        rows.append((name, a, b, peer))
        print(f"{name:42s} divest {a:8.3f} s   {peer} {b:8.3f} s   ratio {b / a:5.2f}x", flush=True)

    g = torch.Generator().manual_seed(0)
    if only & {"kl", "js"}:
        s = torch.randn(512, 32000, generator=g)
        t = torch.randn(512, 32000, generator=g)
        F = torch.nn.functional

        def run_ours(fn):
            def f():
                a, b = s.clone().requires_grad_(), t.clone().requires_grad_()
                fn(b, a, from_logits=True, reduction="batchmean").backward()

            return f

        def torch_kl():
            a, b = s.clone().requires_grad_(), t.clone().requires_grad_()
            F.kl_div(
                F.log_softmax(a, -1), F.log_softmax(b, -1), log_target=True, reduction="batchmean"
            ).backward()

        def torch_js():
            a, b = s.clone().requires_grad_(), t.clone().requires_grad_()
            lp, lq = F.log_softmax(a, -1), F.log_softmax(b, -1)
            lm = torch.logaddexp(lp, lq) - 0.6931471805599453
            kw = dict(log_target=True, reduction="batchmean")
            (0.5 * (F.kl_div(lm, lp, **kw) + F.kl_div(lm, lq, **kw))).backward()

        if "kl" in only:
            row("KL from logits 512x32000 f32, fwd+bwd", run_ours(dt.kl), torch_kl, "torch")
        if "js" in only:
            row("JS from logits 512x32000 f32, fwd+bwd", run_ours(dt.js), torch_js, "torch")

    if "sinkhorn" in only:
        try:
            from geomloss import SamplesLoss
        except ImportError:
            print("geomloss not installed (pip install geomloss): Sinkhorn row skipped")
        else:
            n, blur, scaling = 5000, 0.05, 0.5
            x0 = torch.rand(n, 3, generator=g, dtype=torch.float64)
            y0 = torch.rand(n, 3, generator=g, dtype=torch.float64)
            loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=scaling, backend="tensorized")

            def ours():
                x = x0.clone().requires_grad_()
                # GeomLoss's cost |x-y|²/2 and ε = blur²: divest's value/2 at eps = 2 blur².
                v = dt.sinkhorn_divergence(x, y0, eps=2 * blur**2, p=2, scaling=scaling).value / 2
                v.backward()

            def theirs():
                x = x0.clone().requires_grad_()
                loss(x, y0).backward()

            row(
                f"Sinkhorn div. n=m={n} d=3 blur {blur} (s={scaling})",
                ours,
                theirs,
                "GeomLoss tensorized",
            )

    n, d = 5000, 8
    x0 = torch.randn(n, d, generator=g, dtype=torch.float64)
    y0 = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.3

    def two(fn):
        def f():
            x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
            fn(x, y).backward()

        return f

    sigma = 2.0

    def mmd_naive(x, y):
        def k(u, v):
            return torch.exp(-torch.cdist(u, v).square() / (2 * sigma**2))

        kxx, kyy = k(x, x), k(y, y)
        nx, ny = len(x), len(y)
        return (
            (kxx.sum() - kxx.diagonal().sum()) / (nx * (nx - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (ny * (ny - 1))
            - 2 * k(x, y).mean()
        )

    def energy_naive(x, y):
        return 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()

    def dcov_naive(x, y):
        def centred(z):
            a = torch.cdist(z, z)
            return a - a.mean(0, keepdim=True) - a.mean(1, keepdim=True) + a.mean()

        return (centred(x) * centred(y)).mean()

    if "mmd" in only:
        row(f"MMD² (Gaussian, U) n=m={n} d={d}", two(lambda x, y: dt.mmd(x, y, sigma)),
            two(mmd_naive), "torch.cdist")  # fmt: skip
    if "energy" in only:
        row(f"energy distance n=m={n} d={d}", two(dt.energy_distance), two(energy_naive),
            "torch.cdist")  # fmt: skip
    if "dcov" in only:
        row(f"dCov² (V) n={n} d={d}", two(dt.dcov_sqr), two(dcov_naive), "torch.cdist")
    return rows


if __name__ == "__main__":
    main()
