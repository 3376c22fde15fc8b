// The Kalman filters' covariance downdate Σ − Σ_k w_k w_kᵀ (ops/kalman.py: downdate) in one pass.
//
// The ATen path makes one elementwise pass over the n × n matrix per row w_k: for the DEKF's
// rank-3 update at n = 5,408 (223 MB, far beyond the caches) that is three reads and three
// writes of Σ from memory. Here each row of the output is computed from its row of Σ and
// all m vectors while it is in registers: one read of Σ, one write of the result.
//
// The numbers are ATen's, bit for bit, where its addcmul rounds P_ij − w_i w_j once (a fused
// multiply-add: its AVX2 and AVX-512 kernels), as std::fma does here, in the same order
// k = 0 .. m − 1; downdate_kernel.py checks that on load and keeps the ATen passes where
// ATen rounds twice (its default kernel, a CPU without FMA). Entry (i, j) and entry (j, i)
// use the same exact product w_i w_j, so a symmetric Σ stays symmetric.
//
// Layouts (row-major C arrays): P, out (n, n); W (m, n), row k = w_k. Only float64; shapes
// and types are checked by downdate_kernel.py, which builds this with the host compiler.

#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

constexpr int64_t MAX_ROWS = 8;

void downdate_rows(int64_t n, int64_t m, const double* __restrict P, const double* __restrict W,
                   double* __restrict out, int64_t first, int64_t last) {
    double a[MAX_ROWS];
    for (int64_t i = first; i < last; ++i) {
        for (int64_t k = 0; k < m; ++k) a[k] = -W[k * n + i];
        const double* p = P + i * n;
        double* o = out + i * n;
        switch (m) {  // the common ranks unrolled, so each loop vectorises with its coefficients in registers
            case 1:
#pragma omp simd
                for (int64_t j = 0; j < n; ++j) o[j] = std::fma(a[0], W[j], p[j]);
                break;
            case 2:
#pragma omp simd
                for (int64_t j = 0; j < n; ++j) o[j] = std::fma(a[1], W[n + j], std::fma(a[0], W[j], p[j]));
                break;
            case 3:
#pragma omp simd
                for (int64_t j = 0; j < n; ++j)
                    o[j] = std::fma(a[2], W[2 * n + j], std::fma(a[1], W[n + j], std::fma(a[0], W[j], p[j])));
                break;
            default:
#pragma omp simd
                for (int64_t j = 0; j < n; ++j) {
                    double v = std::fma(a[0], W[j], p[j]);
                    for (int64_t k = 1; k < m; ++k) v = std::fma(a[k], W[k * n + j], v);
                    o[j] = v;
                }
        }
    }
}

}  // namespace

extern "C" {

// out = P − Σ_{k<m} W[k]ᵀ W[k]; rows split in contiguous ranges over up to `threads` threads
// (part 0 on the caller's thread), started per call, for a Σ of 2²² entries (32 MiB) and up: a
// pass of several milliseconds from memory, where two threads draw more bandwidth and a start
// (tens of microseconds) does not count. Below that one thread: inside a DEKF step at n = 1,680
// it was as quick as two (threads started per call, or kept waiting in a pool).
// 1 ≤ m ≤ MAX_ROWS; out must not overlap P or W.
void distlstm_downdate(int64_t n, int64_t m, const double* P, const double* W, double* out, int64_t threads) {
    if (threads < 1 || n * n < (int64_t{1} << 22)) threads = 1;
    if (threads > n) threads = n;
    const int64_t per = (n + threads - 1) / threads;
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (int64_t t = 1; t < threads; ++t) {
        const int64_t first = t * per, last = first + per < n ? first + per : n;
        if (first >= last) continue;
        try {
            pool.emplace_back(downdate_rows, n, m, P, W, out, first, last);
        } catch (...) {  // no thread to be had (a process or memory limit): these rows on this thread
            downdate_rows(n, m, P, W, out, first, last);
        }
    }
    downdate_rows(n, m, P, W, out, 0, per < n ? per : n);
    for (auto& thread : pool) thread.join();
}

int64_t distlstm_downdate_max_rows() { return MAX_ROWS; }

}  // extern "C"
