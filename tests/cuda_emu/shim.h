// A CPU stand-in for the few CUDA constructs divest's kernels use, so that kernels.cu can be
// compiled by g++ and run (under AddressSanitizer) without a GPU: every CUDA thread of a
// block is an OS thread, __syncthreads is a std::barrier over the block, warp shuffles go
// through a per-warp buffer and barrier, blocks run one after another (so the block's
// shared memory can be one buffer). Exited threads drop out of the barriers, as on a GPU.
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

using std::exp;
using std::fabs;
using std::fmax;
using std::log;
using std::pow;
using std::sqrt;

struct EmuIdx {
    unsigned int x;
};
inline thread_local EmuIdx threadIdx{0}, blockIdx{0};
inline EmuIdx blockDim{1}, gridDim{1};
inline unsigned char* g_smem = nullptr;
inline std::barrier<>* g_block_bar = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>> g_warp_bar;
inline double g_warp_buf[64][32];

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict

inline void __syncthreads() { g_block_bar->arrive_and_wait(); }

template <typename S>
S __shfl_down_sync(unsigned, S v, int o) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    g_warp_buf[w][lane] = static_cast<double>(v);
    g_warp_bar[w]->arrive_and_wait();
    S r = (lane + o < 32) ? static_cast<S>(g_warp_buf[w][lane + o]) : v;
    g_warp_bar[w]->arrive_and_wait();
    return r;
}

inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline double __longlong_as_double(long long i) {
    double d;
    std::memcpy(&d, &i, 8);
    return d;
}

template <typename F>
void emu_launch(unsigned grid, unsigned block, size_t smem, F kernel) {
    blockDim.x = block;
    gridDim.x = grid;
    std::vector<unsigned char> sm(smem > 0 ? smem : 1);  // exact size: ASan sees overruns
    g_smem = sm.data();
    for (unsigned b = 0; b < grid; ++b) {
        std::barrier<> bar(block);
        g_block_bar = &bar;
        g_warp_bar.clear();
        for (unsigned w = 0; w < (block + 31) / 32; ++w)
            g_warp_bar.emplace_back(std::make_unique<std::barrier<>>(32));
        std::vector<std::thread> ts;
        ts.reserve(block);
        for (unsigned t = 0; t < block; ++t)
            ts.emplace_back([&, t, b] {
                threadIdx.x = t;
                blockIdx.x = b;
                kernel();
                g_block_bar->arrive_and_drop();
                g_warp_bar[t >> 5]->arrive_and_drop();
            });
        for (auto& th : ts) th.join();
    }
}
