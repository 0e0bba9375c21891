// divest's fused CUDA kernels. Compiled at run time with NVRTC (cupy.RawModule), once per
// process, for float and double (template instances named by divest/_gpu.py). No headers:
// NVRTC needs none of the toolkit. Every index into an array is 64-bit (long long), so
// inputs beyond 2^31 elements are addressed correctly. The kernels compute in the input
// type T; sums that are returned as totals are accumulated in double.

typedef long long i64;

template <typename T> struct Lim;
template <> struct Lim<float> {
    __device__ static float inf() { return __int_as_float(0x7f800000); }
};
template <> struct Lim<double> {
    __device__ static double inf() { return __longlong_as_double(0x7ff0000000000000LL); }
};

__device__ __forceinline__ float ex(float v) { return expf(v); }
__device__ __forceinline__ double ex(double v) { return exp(v); }
__device__ __forceinline__ float lg(float v) { return logf(v); }
__device__ __forceinline__ double lg(double v) { return log(v); }
__device__ __forceinline__ float sq(float v) { return sqrtf(v); }
__device__ __forceinline__ double sq(double v) { return sqrt(v); }
__device__ __forceinline__ float pw(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double pw(double a, double b) { return pow(a, b); }

// |u - v|^p from the squared distance (p = 1 and 2 without pow).
template <typename T> __device__ __forceinline__ T dist_pow(T d2, T p) {
    if (p == T(2)) return d2;
    if (p == T(1)) return sq(d2);
    return d2 > T(0) ? pw(d2, T(0.5) * p) : T(0);
}

// Sum over the block (every thread gets the result). `sh` holds 32 values of type S.
template <typename S> __device__ S block_sum(S v, S* sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = (threadIdx.x < nw) ? sh[threadIdx.x] : S(0);
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    S r = sh[0];
    __syncthreads();
    return r;
}

template <typename S> __device__ S block_max(S v, S* sh) {
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_down_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = (threadIdx.x < nw) ? sh[threadIdx.x] : -Lim<S>::inf();
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_down_sync(0xffffffffu, v, o));
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    S r = sh[0];
    __syncthreads();
    return r;
}

// ---------------------------------------------------------------- 1. online log-sum-exp
// One thread per query i: L_i = log sum_j exp(h_j - coef |q_i - x_j|^p), with a running
// maximum and sum; tiles of `tile` points of x (and their h) are staged in shared memory.
// With grad != 0 it also writes M_i = sum_j pi_ij grad_q |q_i - x_j|^p (softmax weights),
// accumulated in the thread's own row of `gout` (m x d). exclude_self skips j == i.
template <typename T>
__device__ void lse_pairs_body(const T* __restrict__ q, const T* __restrict__ x,
                               const T* __restrict__ h, T coef, T p, i64 m, i64 n, i64 d,
                               int tile, int exclude_self, T* __restrict__ out,
                               T* __restrict__ gout) {
    extern __shared__ unsigned char smem_raw[];
    T* sx = reinterpret_cast<T*>(smem_raw);
    T* sh = sx + (i64)tile * d;
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const bool live = i < m;
    const T ninf = -Lim<T>::inf();
    T mx = ninf, s = T(0);
    if (live && gout)
        for (i64 k = 0; k < d; ++k) gout[i * d + k] = T(0);
    for (i64 j0 = 0; j0 < n; j0 += tile) {
        const i64 cnt = (n - j0 < tile) ? (n - j0) : tile;
        __syncthreads();
        for (i64 t = threadIdx.x; t < cnt * d; t += blockDim.x) sx[t] = x[j0 * d + t];
        for (i64 t = threadIdx.x; t < cnt; t += blockDim.x) sh[t] = h[j0 + t];
        __syncthreads();
        if (!live) continue;
        for (i64 jj = 0; jj < cnt; ++jj) {
            const T hj = sh[jj];
            if (hj == ninf || (exclude_self && j0 + jj == i)) continue;
            T d2 = T(0);
            for (i64 k = 0; k < d; ++k) {
                const T df = q[i * d + k] - sx[jj * d + k];
                d2 += df * df;
            }
            const T lgt = hj - coef * dist_pow(d2, p);
            if (lgt == ninf) continue;
            T w;
            if (lgt > mx) {
                const T sc = (mx == ninf) ? T(0) : ex(mx - lgt);
                s = s * sc + T(1);
                if (gout)
                    for (i64 k = 0; k < d; ++k) gout[i * d + k] *= sc;
                mx = lgt;
                w = T(1);
            } else {
                w = ex(lgt - mx);
                s += w;
            }
            if (gout) {
                T f = T(2);
                if (p != T(2)) f = d2 > T(0) ? T(1) / sq(d2) : T(0);
                for (i64 k = 0; k < d; ++k)
                    gout[i * d + k] += w * f * (q[i * d + k] - sx[jj * d + k]);
            }
        }
    }
    if (!live) return;
    out[i] = (s > T(0)) ? mx + lg(s) : ninf;
    if (gout) {
        const T inv = (s > T(0)) ? T(1) / s : T(0);
        for (i64 k = 0; k < d; ++k) gout[i * d + k] *= inv;
    }
}

template <typename T>
__global__ void lse_pairs(const T* q, const T* x, const T* h, T coef, T p, i64 m, i64 n,
                          i64 d, int tile, int exclude_self, T* out, T* gout) {
    lse_pairs_body<T>(q, x, h, coef, p, m, n, d, tile, exclude_self, out, gout);
}

// The same reducer for a compile-time dimension D (the caller pads the points with zero
// coordinates up to D, which changes no distance): the query row and the gradient
// accumulator live in registers and the distance loop is unrolled; each shared-memory read
// is a broadcast to the whole warp.
template <typename T, int D>
__global__ void lse_pairs_fixed(const T* __restrict__ q, const T* __restrict__ x,
                                const T* __restrict__ h, T coef, T p, i64 m, i64 n, int tile,
                                int exclude_self, T* __restrict__ out, T* __restrict__ gout) {
    extern __shared__ unsigned char smem_raw[];
    T* sx = reinterpret_cast<T*>(smem_raw);
    T* sh = sx + (i64)tile * D;
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const bool live = i < m;
    const T ninf = -Lim<T>::inf();
    T qr[D], acc[D];
#pragma unroll
    for (int k = 0; k < D; ++k) {
        qr[k] = live ? q[i * D + k] : T(0);
        acc[k] = T(0);
    }
    T mx = ninf, s = T(0);
    for (i64 j0 = 0; j0 < n; j0 += tile) {
        const i64 cnt = (n - j0 < tile) ? (n - j0) : tile;
        __syncthreads();
        for (i64 t = threadIdx.x; t < cnt * D; t += blockDim.x) sx[t] = x[j0 * D + t];
        for (i64 t = threadIdx.x; t < cnt; t += blockDim.x) sh[t] = h[j0 + t];
        __syncthreads();
        if (!live) continue;
        for (int jj = 0; jj < (int)cnt; ++jj) {
            const T hj = sh[jj];
            if (hj == ninf || (exclude_self && j0 + jj == i)) continue;
            const T* xj = sx + (i64)jj * D;
            T d2 = T(0);
#pragma unroll
            for (int k = 0; k < D; ++k) {
                const T df = qr[k] - xj[k];
                d2 += df * df;
            }
            const T lgt = hj - coef * dist_pow(d2, p);
            if (lgt == ninf) continue;
            T w;
            if (lgt > mx) {
                const T sc = (mx == ninf) ? T(0) : ex(mx - lgt);
                s = s * sc + T(1);
                if (gout) {
#pragma unroll
                    for (int k = 0; k < D; ++k) acc[k] *= sc;
                }
                mx = lgt;
                w = T(1);
            } else {
                w = ex(lgt - mx);
                s += w;
            }
            if (gout) {
                T f = T(2);
                if (p != T(2)) f = d2 > T(0) ? T(1) / sq(d2) : T(0);
                const T wf = w * f;
#pragma unroll
                for (int k = 0; k < D; ++k) acc[k] += wf * (qr[k] - xj[k]);
            }
        }
    }
    if (!live) return;
    out[i] = (s > T(0)) ? mx + lg(s) : ninf;
    if (gout) {
        const T inv = (s > T(0)) ? T(1) / s : T(0);
#pragma unroll
        for (int k = 0; k < D; ++k) gout[i * D + k] = acc[k] * inv;
    }
}

// The tiled sum reducer for a compile-time (zero-padded) dimension D.
template <typename T, int D>
__global__ void pair_sum_fixed(const T* __restrict__ x, const T* __restrict__ y,
                               const T* __restrict__ wx, const T* __restrict__ wy, int kernel,
                               T param, i64 n, i64 m, int tile, int exclude_self,
                               double* __restrict__ partial) {
    extern __shared__ unsigned char smem_raw[];
    T* sy = reinterpret_cast<T*>(smem_raw);
    __shared__ double red[32];
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const bool live = i < n;
    T xr[D];
#pragma unroll
    for (int k = 0; k < D; ++k) xr[k] = live ? x[i * D + k] : T(0);
    double acc = 0.0;
    for (i64 j0 = 0; j0 < m; j0 += tile) {
        const i64 cnt = (m - j0 < tile) ? (m - j0) : tile;
        __syncthreads();
        for (i64 t = threadIdx.x; t < cnt * D; t += blockDim.x) sy[t] = y[j0 * D + t];
        __syncthreads();
        if (!live) continue;
        T row = T(0);
        for (int jj = 0; jj < (int)cnt; ++jj) {
            if (exclude_self && j0 + jj == i) continue;
            const T* yj = sy + (i64)jj * D;
            T d2 = T(0);
#pragma unroll
            for (int k = 0; k < D; ++k) {
                const T df = xr[k] - yj[k];
                d2 += df * df;
            }
            T kv;
            if (kernel == 0) kv = dist_pow(d2, param);
            else if (kernel == 1) kv = ex(T(-0.5) * param * d2);
            else kv = ex(-param * sq(d2));
            row += wy ? kv * wy[j0 + jj] : kv;
        }
        acc += (double)row;
    }
    if (live && wx) acc *= (double)wx[i];
    acc = block_sum<double>(live ? acc : 0.0, red);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// 2. The epilogue of a cuBLAS tile (for d >= 16): G = Q X^T (rows x cols, row-major) holds
// the inner products of a block of queries and a block of data; with the squared norms qn,
// xn it gives the squared distances max(qn_i + xn_j - 2 G_ij, 0), and each row's terms
// h_j - coef d2 are merged into that row's running log-sum-exp (mx, s): one warp per row,
// lanes strided over the columns (coalesced), merged across the warp, then into (mx, s).
template <typename T>
__global__ void lse_merge_gemm(const T* __restrict__ G, const T* __restrict__ qn,
                               const T* __restrict__ xn, const T* __restrict__ h, T coef,
                               i64 rows, i64 cols, T* __restrict__ mxo, T* __restrict__ so) {
    const i64 row = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // whole warps leave together
    const T ninf = -Lim<T>::inf();
    const T qi = qn[row];
    T mx = ninf, s = T(0);
    for (i64 j = lane; j < cols; j += 32) {
        const T hj = h[j];
        if (hj == ninf) continue;
        T d2 = qi + xn[j] - T(2) * G[row * cols + j];
        d2 = d2 > T(0) ? d2 : T(0);
        const T val = hj - coef * d2;
        if (val == ninf) continue;
        if (val > mx) { s = s * (mx == ninf ? T(0) : ex(mx - val)) + T(1); mx = val; }
        else s += ex(val - mx);
    }
    for (int o = 16; o > 0; o >>= 1) {
        const T om = __shfl_down_sync(0xffffffffu, mx, o);
        const T os = __shfl_down_sync(0xffffffffu, s, o);
        const T nm = fmax(mx, om);
        if (nm != ninf) {
            s = (mx == ninf ? T(0) : s * ex(mx - nm)) + (om == ninf ? T(0) : os * ex(om - nm));
            mx = nm;
        }
    }
    if (lane == 0) {
        const T pm = mxo[row], ps = so[row];
        const T nm = fmax(pm, mx);
        if (nm != ninf) {
            so[row] = (pm == ninf ? T(0) : ps * ex(pm - nm)) + (mx == ninf ? T(0) : s * ex(mx - nm));
            mxo[row] = nm;
        }
    }
}

// ------------------------------------------------------------------- 3. tiled sum reducer
// partial[block] = sum over this block's rows i and all j of wx_i wy_j k(|x_i - y_j|),
// accumulated in double (per thread, then over the block). kernel: 0 power (|r|^param),
// 1 gaussian (exp(-param r^2 / 2)), 2 laplacian (exp(-param r)). wx, wy may be null.
template <typename T>
__global__ void pair_sum(const T* __restrict__ x, const T* __restrict__ y,
                         const T* __restrict__ wx, const T* __restrict__ wy, int kernel,
                         T param, i64 n, i64 m, i64 d, int tile, int exclude_self,
                         double* __restrict__ partial) {
    extern __shared__ unsigned char smem_raw[];
    T* sy = reinterpret_cast<T*>(smem_raw);
    __shared__ double red[32];
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const bool live = i < n;
    double acc = 0.0;
    for (i64 j0 = 0; j0 < m; j0 += tile) {
        const i64 cnt = (m - j0 < tile) ? (m - j0) : tile;
        __syncthreads();
        for (i64 t = threadIdx.x; t < cnt * d; t += blockDim.x) sy[t] = y[j0 * d + t];
        __syncthreads();
        if (!live) continue;
        T row = T(0);
        for (i64 jj = 0; jj < cnt; ++jj) {
            if (exclude_self && j0 + jj == i) continue;
            T d2 = T(0);
            for (i64 k = 0; k < d; ++k) {
                const T df = x[i * d + k] - sy[jj * d + k];
                d2 += df * df;
            }
            T kv;
            if (kernel == 0) kv = dist_pow(d2, param);
            else if (kernel == 1) kv = ex(T(-0.5) * param * d2);
            else kv = ex(-param * sq(d2));
            row += wy ? kv * wy[j0 + jj] : kv;
        }
        acc += (double)row;  // float64 block accumulation: one tile's sum at a time
    }
    if (live && wx) acc *= (double)wx[i];
    acc = block_sum<double>(live ? acc : 0.0, red);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Distance covariance pieces in one pass: row sums ra_i, rb_i of a_ij = |x_i - x_j|^alpha
// and b_ij = |y_i - y_j|^alpha (double), and per block the totals of a*b, a*a, b*b.
template <typename T>
__global__ void dcov_sums(const T* __restrict__ x, const T* __restrict__ y, T alpha, i64 n,
                          i64 p, i64 qd, int tile, double* __restrict__ ra,
                          double* __restrict__ rb, double* __restrict__ partial) {
    extern __shared__ unsigned char smem_raw[];
    T* sx = reinterpret_cast<T*>(smem_raw);
    T* sy = sx + (i64)tile * p;
    __shared__ double red[32];
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const bool live = i < n;
    double sa = 0.0, sb = 0.0, ab = 0.0, aa = 0.0, bb = 0.0;
    for (i64 j0 = 0; j0 < n; j0 += tile) {
        const i64 cnt = (n - j0 < tile) ? (n - j0) : tile;
        __syncthreads();
        for (i64 t = threadIdx.x; t < cnt * p; t += blockDim.x) sx[t] = x[j0 * p + t];
        for (i64 t = threadIdx.x; t < cnt * qd; t += blockDim.x) sy[t] = y[j0 * qd + t];
        __syncthreads();
        if (!live) continue;
        T ta = T(0), tb = T(0), tab = T(0), taa = T(0), tbb = T(0);
        for (i64 jj = 0; jj < cnt; ++jj) {
            T dx = T(0), dy = T(0);
            for (i64 k = 0; k < p; ++k) {
                const T df = x[i * p + k] - sx[jj * p + k];
                dx += df * df;
            }
            for (i64 k = 0; k < qd; ++k) {
                const T df = y[i * qd + k] - sy[jj * qd + k];
                dy += df * df;
            }
            const T a = dist_pow(dx, alpha), b = dist_pow(dy, alpha);
            ta += a;
            tb += b;
            tab += a * b;
            taa += a * a;
            tbb += b * b;
        }
        sa += ta;
        sb += tb;
        ab += tab;
        aa += taa;
        bb += tbb;
    }
    if (live) {
        ra[i] = sa;
        rb[i] = sb;
    }
    ab = block_sum<double>(live ? ab : 0.0, red);
    aa = block_sum<double>(live ? aa : 0.0, red);
    bb = block_sum<double>(live ? bb : 0.0, red);
    if (threadIdx.x == 0) {
        partial[3 * (i64)blockIdx.x] = ab;
        partial[3 * (i64)blockIdx.x + 1] = aa;
        partial[3 * (i64)blockIdx.x + 2] = bb;
    }
}

// ------------------------------------------------------------ 4. batched small Sinkhorn
// One block per problem k: a (B, n), b (B, m), cost (B, n, m) (cost_stride 0: one shared
// cost). Log-domain half-steps from g = 0, rows first; after each iteration the L1 row
// violation (columns are exact) is reduced over the block and the problem stops on its own
// tolerance. Shared memory: f (n), g (m), log a (n), log b (m), and with cache_cost the
// n x m cost itself (read once from global memory). Writes f, g, n_iter, err.
template <typename T>
__global__ void sinkhorn_batch(const T* __restrict__ a, const T* __restrict__ b,
                               const T* __restrict__ cost, i64 cost_stride, i64 n, i64 m,
                               T reg, i64 max_iter, T tol, int cache_cost, T* __restrict__ fo,
                               T* __restrict__ go, i64* __restrict__ iters,
                               T* __restrict__ erro) {
    extern __shared__ unsigned char smem_raw[];
    T* f = reinterpret_cast<T*>(smem_raw);
    T* g = f + n;
    T* la = g + m;
    T* lb = la + n;
    __shared__ T red[32];
    const i64 k = blockIdx.x;
    const T* C = cost + k * cost_stride;
    if (cache_cost) {  // the problem's cost fits in shared memory after the vectors
        T* cc = lb + m;
        for (i64 t = threadIdx.x; t < n * m; t += blockDim.x) cc[t] = C[t];
        C = cc;
    }
    const T* ak = a + k * n;
    const T* bk = b + k * m;
    const T ninf = -Lim<T>::inf();
    const T inv = T(1) / reg;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) {
        f[i] = T(0);
        la[i] = ak[i] > T(0) ? lg(ak[i]) : ninf;
    }
    for (i64 j = threadIdx.x; j < m; j += blockDim.x) {
        g[j] = T(0);
        lb[j] = bk[j] > T(0) ? lg(bk[j]) : ninf;
    }
    __syncthreads();
    i64 it = 0;
    T err = Lim<T>::inf();
    while (it < max_iter) {
        for (i64 i = threadIdx.x; i < n; i += blockDim.x) {  // rows
            T mx = ninf, s = T(0);
            for (i64 j = 0; j < m; ++j) {
                const T v = lb[j] + (g[j] - C[i * m + j]) * inv;
                if (v == ninf) continue;
                if (v > mx) { s = s * (mx == ninf ? T(0) : ex(mx - v)) + T(1); mx = v; }
                else s += ex(v - mx);
            }
            f[i] = -reg * (mx + lg(s));
        }
        __syncthreads();
        for (i64 j = threadIdx.x; j < m; j += blockDim.x) {  // columns
            T mx = ninf, s = T(0);
            for (i64 i = 0; i < n; ++i) {
                const T v = la[i] + (f[i] - C[i * m + j]) * inv;
                if (v == ninf) continue;
                if (v > mx) { s = s * (mx == ninf ? T(0) : ex(mx - v)) + T(1); mx = v; }
                else s += ex(v - mx);
            }
            g[j] = -reg * (mx + lg(s));
        }
        __syncthreads();
        ++it;
        T e = T(0);
        for (i64 i = threadIdx.x; i < n; i += blockDim.x) {  // row marginals of the plan
            if (la[i] == ninf) continue;
            T mx = ninf, s = T(0);
            for (i64 j = 0; j < m; ++j) {
                const T v = lb[j] + (g[j] - C[i * m + j]) * inv;
                if (v == ninf) continue;
                if (v > mx) { s = s * (mx == ninf ? T(0) : ex(mx - v)) + T(1); mx = v; }
                else s += ex(v - mx);
            }
            const T r = ex(la[i] + f[i] * inv + mx + lg(s));
            e += fabs(r - ak[i]);
        }
        err = block_sum<T>(e, red);
        if (err <= tol) break;
    }
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) fo[k * n + i] = f[i];
    for (i64 j = threadIdx.x; j < m; j += blockDim.x) go[k * m + j] = g[j];
    if (threadIdx.x == 0) {
        iters[k] = it;
        erro[k] = err;
    }
}

// Dense Sinkhorn on one large cost C (n x m, row-major), one half-step per launch and no
// n x m temporary: out_i = -reg * log sum_j exp(v_j - C_ij / reg).
// Rows: one warp per row, each lane an online log-sum-exp over a strided part of the row
// (coalesced reads), merged across the warp.
template <typename T>
__global__ void lse_rows(const T* __restrict__ C, const T* __restrict__ v, i64 n, i64 m, T reg,
                         T* __restrict__ out) {
    const i64 row = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= n) return;  // whole warps leave together
    const T ninf = -Lim<T>::inf();
    const T inv = T(1) / reg;
    T mx = ninf, s = T(0);
    for (i64 j = lane; j < m; j += 32) {
        const T val = v[j] - C[row * m + j] * inv;
        if (val == ninf) continue;
        if (val > mx) { s = s * (mx == ninf ? T(0) : ex(mx - val)) + T(1); mx = val; }
        else s += ex(val - mx);
    }
    for (int o = 16; o > 0; o >>= 1) {  // merge (max, sum) pairs across the warp
        const T om = __shfl_down_sync(0xffffffffu, mx, o);
        const T os = __shfl_down_sync(0xffffffffu, s, o);
        const T nm = fmax(mx, om);
        if (nm != ninf) {
            s = (mx == ninf ? T(0) : s * ex(mx - nm)) + (om == ninf ? T(0) : os * ex(om - nm));
            mx = nm;
        }
    }
    if (lane == 0) out[row] = (s > T(0)) ? -reg * (mx + lg(s)) : Lim<T>::inf();
}

// Columns: one thread per column, an online log-sum-exp down the column (consecutive
// threads read consecutive addresses).
template <typename T>
__global__ void lse_cols(const T* __restrict__ C, const T* __restrict__ u, i64 n, i64 m, T reg,
                         T* __restrict__ out) {
    const i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= m) return;
    const T ninf = -Lim<T>::inf();
    const T inv = T(1) / reg;
    T mx = ninf, s = T(0);
    for (i64 i = 0; i < n; ++i) {
        const T val = u[i] - C[i * m + j] * inv;
        if (val == ninf) continue;
        if (val > mx) { s = s * (mx == ninf ? T(0) : ex(mx - val)) + T(1); mx = val; }
        else s += ex(val - mx);
    }
    out[j] = (s > T(0)) ? -reg * (mx + lg(s)) : Lim<T>::inf();
}

// -------------------------------------------------------------- 5. discrete divergences
// One block per row of K categories (rows of p and q, each row contiguous). kind: 0
// probabilities, 1 logits, 2 log-probabilities; normalize: divide each row by its total
// (in log space). measure: 0 kl, 1 js, 2 tv, 3 hellinger. Also writes each row's log total
// before normalisation for p and q (the caller checks |log total| against its tolerance).
template <typename T>
__device__ __forceinline__ void online_add(T& mx, T& s, T v) {
    const T ninf = -Lim<T>::inf();
    if (v == ninf) return;
    if (v > mx) {
        s = s * (mx == ninf ? T(0) : ex(mx - v)) + T(1);
        mx = v;
    } else {
        s += ex(v - mx);
    }
}

template <typename T>
__device__ T to_log(T v, int kind) {
    if (kind == 0) return v > T(0) ? lg(v) : -Lim<T>::inf();
    return v;
}

template <typename T>
__global__ void discrete_rows(const T* __restrict__ p, const T* __restrict__ q, i64 rows,
                             i64 K, int kind, int normalize, int measure,
                             T* __restrict__ out, T* __restrict__ logtot) {
    __shared__ T red[32];
    const i64 r = blockIdx.x;
    if (r >= rows) return;
    const T* pr = p + r * K;
    const T* qr = q + r * K;
    const T ninf = -Lim<T>::inf(), pinf = Lim<T>::inf();
    // One pass: an online log-sum-exp of each row of p and q, and the validity of every
    // entry (probabilities finite and >= 0; log inputs not NaN and not +inf).
    T mp = ninf, mq = ninf, tp = T(0), tq = T(0), bad = T(0);
    for (i64 k = threadIdx.x; k < K; k += blockDim.x) {
        const T vp = pr[k], vq = qr[k];
        if (kind == 0) {
            if (!(vp >= T(0)) || !(vq >= T(0)) || vp == pinf || vq == pinf) bad = T(1);
        } else if (vp != vp || vq != vq || vp == pinf || vq == pinf) {
            bad = T(1);
        }
        online_add(mp, tp, to_log(vp, kind));
        online_add(mq, tq, to_log(vq, kind));
    }
    const T bp = block_max<T>(mp, red), bq = block_max<T>(mq, red);
    tp = block_sum<T>((mp == ninf) ? T(0) : tp * ex(mp - bp), red);
    tq = block_sum<T>((mq == ninf) ? T(0) : tq * ex(mq - bq), red);
    bad = block_sum<T>(bad, red);
    const T nan = pinf - pinf;
    const T lzp = (bp == ninf) ? ninf : bp + lg(tp), lzq = (bq == ninf) ? ninf : bq + lg(tq);
    if (threadIdx.x == 0) {  // the caller checks these: NaN flags an invalid row
        logtot[2 * r] = bad > T(0) ? nan : lzp;
        logtot[2 * r + 1] = bad > T(0) ? nan : lzq;
    }
    const bool norm = (kind == 1) || normalize;
    const T cp = norm ? lzp : T(0), cq = norm ? lzq : T(0);
    T acc = T(0);
    for (i64 k = threadIdx.x; k < K; k += blockDim.x) {
        const T lp = to_log(pr[k], kind) - cp, lq = to_log(qr[k], kind) - cq;
        const T pp = ex(lp), qq = ex(lq);
        if (measure == 0) {
            if (pp > T(0)) acc += pp * (lp - lq);
        } else if (measure == 1) {
            const T hi = fmax(lp, lq);
            if (hi != ninf) {
                const T lm = hi + lg(ex(lp - hi) + ex(lq - hi)) - T(0.69314718055994530942);
                if (pp > T(0)) acc += pp * (lp - lm);
                if (qq > T(0)) acc += qq * (lq - lm);
            }
        } else if (measure == 2) {
            acc += fabs(pp - qq);
        } else {
            const T dd = sq(pp) - sq(qq);
            acc += dd * dd;
        }
    }
    acc = block_sum<T>(acc, red);
    if (threadIdx.x == 0) {
        T v = acc;
        if (measure == 1 || measure == 2) v = T(0.5) * acc;
        if (measure == 3) v = T(0.5) * acc;  // squared; the caller takes the root
        out[r] = v > T(0) ? v : T(0);
    }
}
