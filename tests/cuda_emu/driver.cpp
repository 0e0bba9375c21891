// C entry points that launch each kernel of kernels.cu on the CPU stand-in (shim.h).
// kernels_emu.cu is kernels.cu with its shared-memory declarations rewritten by the test.
#include "shim.h"
#include "kernels_emu.cu"

typedef long long LL;

#define DEFINE(T, S)                                                                         \
    extern "C" void emu_lse_pairs_##S(const T* q, const T* x, const T* h, T coef, T p, LL m,  \
                                      LL n, LL d, int tile, int ex_, T* out, T* gout,        \
                                      unsigned block, size_t smem) {                          \
        emu_launch((unsigned)((m + block - 1) / block), block, smem, [=] {                    \
            lse_pairs<T>(q, x, h, coef, p, m, n, d, tile, ex_, out, gout);                    \
        });                                                                                   \
    }                                                                                         \
    extern "C" void emu_lse_pairs_fixed3_##S(const T* q, const T* x, const T* h, T coef, T p, \
                                             LL m, LL n, int tile, int ex_, T* out, T* gout,  \
                                             unsigned block, size_t smem) {                   \
        emu_launch((unsigned)((m + block - 1) / block), block, smem, [=] {                    \
            lse_pairs_fixed<T, 3>(q, x, h, coef, p, m, n, tile, ex_, out, gout);              \
        });                                                                                   \
    }                                                                                         \
    extern "C" void emu_lse_merge_gemm_##S(const T* G, const T* qn, const T* xn, const T* h,  \
                                           T coef, LL rows, LL cols, T* mx, T* s,             \
                                           unsigned block) {                                  \
        emu_launch((unsigned)((rows * 32 + block - 1) / block), block, 0, [=] {               \
            lse_merge_gemm<T>(G, qn, xn, h, coef, rows, cols, mx, s);                         \
        });                                                                                   \
    }                                                                                         \
    extern "C" void emu_pair_sum_##S(const T* x, const T* y, const T* wx, const T* wy, int k, \
                                     T param, LL n, LL m, LL d, int tile, int ex_,            \
                                     double* partial, unsigned block, size_t smem) {          \
        emu_launch((unsigned)((n + block - 1) / block), block, smem, [=] {                    \
            pair_sum<T>(x, y, wx, wy, k, param, n, m, d, tile, ex_, partial);                 \
        });                                                                                   \
    }                                                                                         \
    extern "C" void emu_pair_sum_fixed8_##S(const T* x, const T* y, const T* wx, const T* wy, \
                                            int k, T param, LL n, LL m, int tile, int ex_,    \
                                            double* partial, unsigned block, size_t smem) {   \
        emu_launch((unsigned)((n + block - 1) / block), block, smem, [=] {                    \
            pair_sum_fixed<T, 8>(x, y, wx, wy, k, param, n, m, tile, ex_, partial);           \
        });                                                                                   \
    }                                                                                         \
    extern "C" void emu_dcov_sums_##S(const T* x, const T* y, T alpha, LL n, LL p, LL qd,     \
                                      int tile, double* ra, double* rb, double* partial,     \
                                      unsigned block, size_t smem) {                          \
        emu_launch((unsigned)((n + block - 1) / block), block, smem, [=] {                    \
            dcov_sums<T>(x, y, alpha, n, p, qd, tile, ra, rb, partial);                       \
        });                                                                                   \
    }                                                                                         \
    extern "C" void emu_sinkhorn_batch_##S(const T* a, const T* b, const T* c, LL stride,     \
                                           LL nb, LL n, LL m, T reg, LL max_iter, T tol,      \
                                           int cache, T* f, T* g, LL* it, T* err,            \
                                           unsigned block,                                    \
                                           size_t smem) {                                     \
        emu_launch((unsigned)nb, block, smem, [=] {                                           \
            sinkhorn_batch<T>(a, b, c, stride, n, m, reg, max_iter, tol, cache, f, g, it,     \
                              err);                                                           \
        });                                                                                   \
    }                                                                                         \
    extern "C" void emu_lse_rows_##S(const T* c, const T* v, LL n, LL m, T reg, T* out,       \
                                     unsigned block) {                                        \
        emu_launch((unsigned)((n * 32 + block - 1) / block), block, 0,                        \
                   [=] { lse_rows<T>(c, v, n, m, reg, out); });                               \
    }                                                                                         \
    extern "C" void emu_lse_cols_##S(const T* c, const T* u, LL n, LL m, T reg, T* out,       \
                                     unsigned block) {                                        \
        emu_launch((unsigned)((m + block - 1) / block), block, 0,                             \
                   [=] { lse_cols<T>(c, u, n, m, reg, out); });                               \
    }                                                                                         \
    extern "C" void emu_discrete_rows_##S(const T* p, const T* q, LL rows, LL K, int kind,    \
                                          int norm, int meas, T* out, T* logtot,             \
                                          unsigned block) {                                   \
        emu_launch((unsigned)rows, block, 0, [=] {                                            \
            discrete_rows<T>(p, q, rows, K, kind, norm, meas, out, logtot);                   \
        });                                                                                   \
    }

DEFINE(double, f64)
DEFINE(float, f32)
