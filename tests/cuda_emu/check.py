"""Runs every kernel of kernels.cu on the CPU stand-in (libemu.so, built from shim.h and
driver.cpp, normally under AddressSanitizer) and compares it with the array-API algorithms
of divest._xp on NumPy. Exits non-zero on any mismatch. Usage: python check.py LIBEMU"""

import ctypes
import sys

import numpy as np

from divest._xp.discrete import discrete_rows
from divest._xp.pairs import dcov_sums, lse_pairs, pair_sum
from divest._xp.sinkhorn import sinkhorn_batch_log

lib = ctypes.CDLL(sys.argv[1])
rng = np.random.default_rng(0)
LL, Int, SZ = ctypes.c_longlong, ctypes.c_int, ctypes.c_size_t
NULL = ctypes.c_void_p(0)
failures = []


def ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p) if a is not None else NULL


def scal(dt, v):
    return ctypes.c_double(v) if dt == np.float64 else ctypes.c_float(v)


def close(name, got, want, tol):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    ok = got.shape == want.shape and np.allclose(got, want, rtol=tol, atol=tol, equal_nan=True)
    print(("ok   " if ok else "FAIL ") + name, flush=True)
    if not ok:
        failures.append(name)
        print("  got ", got.ravel()[:8], "\n  want", want.ravel()[:8])


for dt, sfx, tol in [(np.float64, "f64", 1e-11), (np.float32, "f32", 2e-4)]:
    it = np.dtype(dt).itemsize
    # 1. online log-sum-exp, run-time d (d = 5) and compiled D = 3; ragged tiles, zero weights
    for p in (2.0, 1.0):
        m, n, d = 70, 45, 5
        q = rng.normal(size=(m, d)).astype(dt)
        x = rng.normal(size=(n, d)).astype(dt)
        h = rng.normal(size=n).astype(dt)
        h[[0, 17, 44]] = -np.inf
        want, wgrad = lse_pairs(np, q, x, h, 0.7, p=p, grad=True)
        out = np.empty(m, dtype=dt)
        g = np.empty((m, d), dtype=dt)
        tile = 7
        lib[f"emu_lse_pairs_{sfx}"](
            ptr(q), ptr(x), ptr(h), scal(dt, 0.7), scal(dt, p), LL(m), LL(n), LL(d),
            Int(tile), Int(0), ptr(out), ptr(g), ctypes.c_uint(64), SZ(tile * (d + 1) * it),
        )  # fmt: skip
        close(f"lse_pairs {sfx} p={p}", out, want, tol)
        close(f"lse_pairs grad {sfx} p={p}", g, wgrad, tol * 10)
        q3 = np.ascontiguousarray(q[:, :3])
        want, wgrad = lse_pairs(np, q3, q3, np.zeros(m, dt), 0.7,
                                p=p, grad=True, exclude_self=True)  # fmt: skip
        hz = np.zeros(m, dtype=dt)
        g3 = np.empty((m, 3), dtype=dt)
        lib[f"emu_lse_pairs_fixed3_{sfx}"](
            ptr(q3), ptr(q3), ptr(hz), scal(dt, 0.7), scal(dt, p), LL(m), LL(m), Int(tile), Int(1),
            ptr(out), ptr(g3), ctypes.c_uint(64), SZ(tile * 4 * it),
        )  # fmt: skip
        close(f"lse_pairs_fixed<3> exclude_self {sfx} p={p}", out, want, tol)
        close(f"lse_pairs_fixed<3> grad {sfx} p={p}", g3, wgrad, tol * 10)

    # 2. cuBLAS-tile epilogue: two column tiles merged into the running (max, sum) per row
    m, n, d = 41, 53, 16
    q = rng.normal(size=(m, d)).astype(dt)
    x = rng.normal(size=(n, d)).astype(dt)
    h = rng.normal(size=n).astype(dt)
    h[[1, 30]] = -np.inf
    want = lse_pairs(np, q, x, h, 0.05)
    qn = (q * q).sum(1)
    mx, s = np.full(m, -np.inf, dtype=dt), np.zeros(m, dtype=dt)
    for j0, j1 in [(0, 30), (30, n)]:
        G = np.ascontiguousarray(q @ x[j0:j1].T)
        xn = np.ascontiguousarray((x[j0:j1] * x[j0:j1]).sum(1))
        hh = np.ascontiguousarray(h[j0:j1])
        lib[f"emu_lse_merge_gemm_{sfx}"](
            ptr(G), ptr(qn), ptr(xn), ptr(hh), scal(dt, 0.05), LL(m), LL(j1 - j0), ptr(mx),
            ptr(s), ctypes.c_uint(128),
        )  # fmt: skip
    close(f"lse_merge_gemm {sfx}", mx + np.log(s), want, tol * 10)

    # 3. tiled sums: run-time d and compiled D = 8 (points zero-padded from 6)
    n, m, d = 77, 50, 6
    x = rng.normal(size=(n, d)).astype(dt)
    y = rng.normal(size=(m, d)).astype(dt)
    wx, wy = rng.random(n).astype(dt), rng.random(m).astype(dt)
    for k, (kernel, param) in enumerate([("power", 1.3), ("gaussian", 0.8), ("laplacian", 0.6)]):
        for ex_ in (0, 1):
            yy = x if ex_ else y
            mm = n if ex_ else m
            wyy = wx if ex_ else wy
            want = float(pair_sum(np, x, yy, wx, wyy, kernel, param, exclude_self=bool(ex_)))
            blocks = (n + 63) // 64
            part = np.empty(blocks)
            tile = 9
            lib[f"emu_pair_sum_{sfx}"](
                ptr(x), ptr(yy), ptr(wx), ptr(wyy), Int(k), scal(dt, param), LL(n), LL(mm),
                LL(d), Int(tile), Int(ex_), ptr(part), ctypes.c_uint(64), SZ(tile * d * it),
            )  # fmt: skip
            close(f"pair_sum {kernel} ex={ex_} {sfx}", part.sum(), want, tol)
            x8 = np.zeros((n, 8), dtype=dt)
            x8[:, :d] = x
            y8 = np.zeros((mm, 8), dtype=dt)
            y8[:, :d] = yy
            lib[f"emu_pair_sum_fixed8_{sfx}"](
                ptr(x8), ptr(y8), NULL, NULL, Int(k), scal(dt, param), LL(n), LL(mm), Int(tile),
                Int(ex_), ptr(part), ctypes.c_uint(64), SZ(tile * 8 * it),
            )  # fmt: skip
            want = float(pair_sum(np, x, yy, None, None, kernel, param, exclude_self=bool(ex_)))
            close(f"pair_sum_fixed<8> {kernel} ex={ex_} {sfx}", part.sum(), want, tol)

    # dcov one-pass sums
    n, pdim, qdim = 70, 3, 2
    x = rng.normal(size=(n, pdim)).astype(dt)
    y = rng.normal(size=(n, qdim)).astype(dt)
    ra_w, rb_w, ab, aa, bb = dcov_sums(np, x, y, 0.9)
    blocks = (n + 63) // 64
    ra, rb, part = np.empty(n), np.empty(n), np.empty((blocks, 3))
    tile = 11
    lib[f"emu_dcov_sums_{sfx}"](
        ptr(x), ptr(y), scal(dt, 0.9), LL(n), LL(pdim), LL(qdim), Int(tile), ptr(ra), ptr(rb),
        ptr(part), ctypes.c_uint(64), SZ(tile * (pdim + qdim) * it),
    )  # fmt: skip
    close(f"dcov_sums rows {sfx}", np.r_[ra, rb], np.r_[ra_w, rb_w], tol)
    close(f"dcov_sums totals {sfx}", part.sum(0), [float(ab), float(aa), float(bb)], tol)

    # 4. batched Sinkhorn: one block per problem, each with its own tolerance
    nb, n, m = 4, 9, 7
    a = rng.random((nb, n))
    b = rng.random((nb, m))
    a[1, 2] = 0
    a /= a.sum(1, keepdims=True)
    b /= b.sum(1, keepdims=True)
    a, b = a.astype(dt), b.astype(dt)
    c = rng.random((nb, n, m)).astype(dt)
    stol = 1e-10 if dt == np.float64 else 1e-5
    fw, gw, itw, errw, *_ = sinkhorn_batch_log(np, a, b, c, 0.2, 500, stol)
    for cache in (0, 1):  # the cost read from global memory, or staged in shared memory
        f, g = np.empty((nb, n), dtype=dt), np.empty((nb, m), dtype=dt)
        its, err = np.empty(nb, dtype=np.int64), np.empty(nb, dtype=dt)
        lib[f"emu_sinkhorn_batch_{sfx}"](
            ptr(a), ptr(b), ptr(c), LL(n * m), LL(nb), LL(n), LL(m), scal(dt, 0.2), LL(500),
            scal(dt, stol), Int(cache), ptr(f), ptr(g), ptr(its), ptr(err), ctypes.c_uint(64),
            SZ((2 * (n + m) + cache * n * m) * it),
        )  # fmt: skip
        close(f"sinkhorn_batch f cache={cache} {sfx}", f, fw, tol * 100)
        close(f"sinkhorn_batch g cache={cache} {sfx}", g, gw, tol * 100)
        close(f"sinkhorn_batch n_iter {sfx}", its, itw, 0.0 if dt == np.float64 else 0.2)

    # dense half-steps: a warp per row, a thread per column
    n, m = 37, 29
    c = rng.random((n, m)).astype(dt)
    v = rng.normal(size=m).astype(dt)
    v[3] = -np.inf
    u = rng.normal(size=n).astype(dt)
    out_r, out_c = np.empty(n, dtype=dt), np.empty(m, dtype=dt)
    lib[f"emu_lse_rows_{sfx}"](ptr(c), ptr(v), LL(n), LL(m), scal(dt, 0.3), ptr(out_r),
                               ctypes.c_uint(64))  # fmt: skip
    lib[f"emu_lse_cols_{sfx}"](ptr(c), ptr(u), LL(n), LL(m), scal(dt, 0.3), ptr(out_c),
                               ctypes.c_uint(64))  # fmt: skip
    c64, v64, u64 = c.astype(np.float64), v.astype(np.float64), u.astype(np.float64)
    with np.errstate(divide="ignore"):
        want_r = -0.3 * np.log(np.exp(v64[None, :] - c64 / 0.3).sum(1))
        want_c = -0.3 * np.log(np.exp(u64[:, None] - c64 / 0.3).sum(0))
    close(f"lse_rows {sfx}", out_r, want_r, tol * 10)
    close(f"lse_cols {sfx}", out_c, want_c, tol * 10)

    # 5. discrete divergences, one block per row (K not a multiple of the block)
    rows, K = 5, 301
    for kind, code in [("prob", 0), ("logits", 1), ("log", 2)]:
        pr = rng.random((rows, K))
        qr = rng.random((rows, K))
        pr[0, :50] = 0
        pr /= pr.sum(1, keepdims=True)
        qr /= qr.sum(1, keepdims=True)
        if kind != "prob":
            with np.errstate(divide="ignore"):
                pr, qr = np.log(pr), np.log(qr)
            if kind == "logits":
                pr, qr = pr + 3.0, qr - 1.0
        pr, qr = pr.astype(dt), qr.astype(dt)
        for meas, mc in [("kl", 0), ("js", 1), ("tv", 2), ("hellinger", 3)]:
            want = discrete_rows(np, pr, qr, meas, kind)
            out, lt = np.empty(rows, dtype=dt), np.empty((rows, 2), dtype=dt)
            lib[f"emu_discrete_rows_{sfx}"](
                ptr(pr), ptr(qr), LL(rows), LL(K), Int(code), Int(0), Int(mc), ptr(out), ptr(lt),
                ctypes.c_uint(128),
            )  # fmt: skip
            close(f"discrete_rows {meas} {kind} {sfx}", out, want, tol * 10)
            if kind != "logits":
                close(f"discrete_rows log totals {kind} {sfx}", lt, np.zeros((rows, 2)), tol * 10)
        # an invalid entry (negative probability, NaN or +inf log input) flags its row
        bad = pr.copy()
        bad[2, 7] = -0.1 if kind == "prob" else np.inf
        bad[4, 0] = np.nan
        lib[f"emu_discrete_rows_{sfx}"](
            ptr(bad), ptr(qr), LL(rows), LL(K), Int(code), Int(0), Int(0), ptr(out), ptr(lt),
            ctypes.c_uint(128),
        )  # fmt: skip
        close(f"discrete_rows flags {kind} {sfx}", np.isnan(lt[:, 0]), [0, 0, 1, 0, 1], 0)

if failures:
    sys.exit(f"{len(failures)} mismatches: {failures}")
print("all kernels agree with the xp algorithms")
