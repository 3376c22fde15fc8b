// The peephole sequence's two loops (models/peephole_fused.py) for small cells, in C++.
//
// Same buffers, same formulas, same column order as the ATen loops of _PeepholeSequence;
// see that module's docstring for the equations (C = −2c, s = σ(C), g = 2σ(a_g) − 1).
// What changes is the loop order: the ATen loops run step by step over the whole batch,
// each op a pass over (n × B) values, so every step streams its working set through the
// caches some twenty times. Here the batch is cut into blocks of bw columns and each
// block runs all its steps with its gates, state and gradients in cache; the buffers the
// backward reads (gates, C_t, s_t, z_t) are written once and read once. Blocks are
// independent (each keeps its own ∇W and peephole sums, added in block order), so they
// run on several threads with the same result.
//
// Layouts (batch innermost, "feature-major", row-major C arrays):
//   z     (T + 1, K, B)   [1; x_t; h_{t-1}] in slot t; K = inputs + n
//   acts  (T, G, n, B)    gate activations i, (f,) g, o
//   cs    (T + 1, n, B)   C_{t-1} = −2 c_{t-1} in slot t
//   tcs   (T, n, B)       s_t = σ(C_t)
//   active (T,)           columns still running at step t (columns sorted by decreasing length)
//
// Only float64; shapes and types are checked by peephole_kernel.py; distlstm/native.py builds
// this with the host compiler (no torch headers). An allocation failure here ends the process.

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// Columns per block: a block's G·n gate rows take about 128 KiB (L1 and L2), between 128 and
// 512 columns (measured on a 32 KiB-L1, 1 MiB-L2 core: 512 best for n = 4, 128–256 for n = 16–32).
inline int64_t block_width(int64_t rows) {
    const int64_t width = 16384 / rows / 8 * 8;
    return width < 128 ? 128 : (width > 512 ? 512 : width);
}

// σ(a) = 1 / (1 + e^{−a}) within a few ulp, branch-free so the loops that call it vectorise.
// e^{−a} = 2^k e^r with k = round(−a / ln 2), |r| ≤ ½ ln 2, and e^r = (Q + P) / (Q − P) with
// P = r P(r²), Q = Q(r²) Cephes' Padé form of exp (peak error 2.1e-16 on its range); then
// σ = (Q − P) / ((Q − P) + 2^k (Q + P)), one division for the exponential and the sigmoid.
// a is clamped to ±708, where σ is 1 or below 1e-307.
inline double sigmoid(double a) {
    double x = -a;
    x = x < -708.0 ? -708.0 : (x > 708.0 ? 708.0 : x);
    const double shifter = 6755399441055744.0;  // 1.5 · 2^52: adding it rounds to an integer in the low bits
    const double kd = x * 1.4426950408889634 + shifter;
    int64_t kbits;
    std::memcpy(&kbits, &kd, sizeof kbits);
    const double k = kd - shifter;
    const double r = (x - k * 6.93145751953125e-1) - k * 1.42860682030941723212e-6;  // Cody–Waite ln 2
    const double rr = r * r;
    const double P = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1);
    const double Q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr + 2.27265548208155028766e-1)
                     * rr + 2.00000000000000000009e0;
    const uint64_t scale_bits = static_cast<uint64_t>(kbits - 0x4338000000000000LL + 1023) << 52;  // 2^k
    double scale;
    std::memcpy(&scale, &scale_bits, sizeof scale);
    const double den = Q - P;
    return den / (den + scale * (Q + P));
}

inline int64_t running(const int64_t* active, int64_t t, int64_t j0, int64_t bw) {
    const int64_t k = active[t] - j0;
    return k < 0 ? 0 : (k > bw ? bw : k);
}

// Eight doubles, one AVX-512 register (two AVX2 ones): the unit of the small products below,
// written with the compiler's vector extension so the accumulators stay in registers.
constexpr int64_t V = 8;
typedef double vec __attribute__((vector_size(V * sizeof(double)), aligned(sizeof(double))));

inline vec load(const double* p) { vec v; std::memcpy(&v, p, sizeof v); return v; }
inline void store(double* p, vec v, int64_t lanes) {  // the first `lanes` (≤ V) values
    if (lanes >= V) std::memcpy(p, &v, sizeof v);
    else for (int64_t l = 0; l < lanes; ++l) p[l] = v[l];
}

inline vec load_first(const double* p, int64_t lanes) {  // the first `lanes` (< V) values, zeros after
    vec v = {};
    for (int64_t l = 0; l < lanes; ++l) v[l] = p[l];
    return v;
}

// Y[m][j] = Σ_k A[m][k] X[k][j] for j < kb: A (M × Kd, row stride lda), X's rows ldx apart,
// Y's rows ldy apart. The block's small products (W z_t, W_hhᵀ δa_t, W_xᵀ δa_t).
inline void product(int64_t M, int64_t Kd, const double* A, int64_t lda, const double* X, int64_t ldx, double* Y,
                    int64_t ldy, int64_t kb) {
    for (int64_t j = 0; j < kb; j += V) {
        const int64_t lanes = kb - j;  // the last chunk reads only its own values: z's last row ends there
        int64_t m = 0;
        for (; m + 4 <= M; m += 4) {  // four rows at once: four independent chains of additions
            const double* am = A + m * lda;
            vec acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
            for (int64_t k = 0; k < Kd; ++k) {
                const vec xk = lanes >= V ? load(X + k * ldx + j) : load_first(X + k * ldx + j, lanes);
                acc0 += am[k] * xk;
                acc1 += am[lda + k] * xk;
                acc2 += am[2 * lda + k] * xk;
                acc3 += am[3 * lda + k] * xk;
            }
            store(Y + m * ldy + j, acc0, lanes);
            store(Y + (m + 1) * ldy + j, acc1, lanes);
            store(Y + (m + 2) * ldy + j, acc2, lanes);
            store(Y + (m + 3) * ldy + j, acc3, lanes);
        }
        for (; m < M; ++m) {
            const double* am = A + m * lda;
            vec acc = {};
            for (int64_t k = 0; k < Kd; ++k)
                acc += am[k] * (lanes >= V ? load(X + k * ldx + j) : load_first(X + k * ldx + j, lanes));
            store(Y + m * ldy + j, acc, lanes);
        }
    }
}

// dw[r][c] += Σ_{j<kb} D[r][j] Z[c][j]: D's R rows ldd apart, Z's K rows ldz apart. Eight
// accumulators per row of D, one per column of dw, so the additions do not wait on each other.
inline void add_outer(int64_t R, int64_t K, const double* D, int64_t ldd, const double* Z, int64_t ldz, double* dw,
                      int64_t kb) {
    const int64_t full = kb / V * V;
    for (int64_t r = 0; r < R; ++r) {
        const double* dr = D + r * ldd;
        for (int64_t c0 = 0; c0 < K; c0 += V) {
            const int64_t cols = K - c0 < V ? K - c0 : V;
            vec acc[V] = {};
            for (int64_t j = 0; j < full; j += V) {
                const vec dv = load(dr + j);
                for (int64_t c = 0; c < cols; ++c) acc[c] += dv * load(Z + (c0 + c) * ldz + j);
            }
            if (full < kb) {
                const vec dv = load_first(dr + full, kb - full);
                for (int64_t c = 0; c < cols; ++c) acc[c] += dv * load_first(Z + (c0 + c) * ldz + full, kb - full);
            }
            for (int64_t c = 0; c < cols; ++c) {
                double sum = 0.0;
                for (int64_t l = 0; l < V; ++l) sum += acc[c][l];
                dw[r * K + c0 + c] += sum;
            }
        }
    }
}

// body(b) for the blocks b = 0 .. blocks − 1 on up to `threads` threads, block b on thread b mod
// threads (thread 0 is the caller's). Blocks write disjoint columns, so no locks; a thread that
// cannot be started leaves its blocks to the caller.
template <class Body>
void for_blocks(int64_t blocks, int64_t threads, const Body& body) {
    threads = threads < 1 ? 1 : (threads > blocks ? blocks : threads);
    const auto share = [&](int64_t first) {
        for (int64_t b = first; b < blocks; b += threads) body(b);
    };
    std::vector<std::thread> pool;
    std::vector<int64_t> orphaned;
    for (int64_t i = 1; i < threads; ++i) {
        try {
            pool.emplace_back(share, i);
        } catch (...) {
            orphaned.push_back(i);
        }
    }
    share(0);
    for (const int64_t i : orphaned) share(i);
    for (auto& thread : pool) thread.join();
}

}  // namespace

extern "C" {

// The forward loop. On entry z holds the bias row (ones, when the layer has a bias) in slots
// 0..T−1 and h_0 in slot 0, cs[0] = C_0. Copies x_t into z (rows inputs − F .. inputs − 1) as it
// goes, and writes acts, cs[1..T], tcs and h_t into z's slots 1..T; a finished column's h is 0.
// x is read at x[order[j]·sx_b + t·sx_t + f·sx_f] for sorted column j (order null: j itself), so
// a batch-first input is gathered in place: a block's sequences stay in L2 over its steps.
// W (G·n, K) has α and the doubled g rows folded in; p_in (G − 2, n) and p_o (n) are −½ p.
void distlstm_peephole_forward(int64_t T, int64_t B, int64_t G, int64_t n, int64_t K, int64_t F,
                               const double* x, int64_t sx_b, int64_t sx_t, int64_t sx_f, const int64_t* order,
                               const double* W, const double* p_in, const double* p_o,
                               double* z, double* acts, double* cs, double* tcs, const int64_t* active,
                               int64_t threads) {
    const int64_t R = G * n, inputs = K - n, bw = block_width(R);
    for_blocks((B + bw - 1) / bw, threads, [&](int64_t block) {
        std::vector<double> a_buf(R * bw);  // the block's a_t
        double* a = a_buf.data();
        const int64_t j0 = block * bw, width = B - j0 < bw ? B - j0 : bw;
        for (int64_t t = 0; t < T; ++t) {
            const int64_t kb = running(active, t, j0, bw);
            double* h_next = z + ((t + 1) * K + inputs) * B + j0;
            for (int64_t u = 0; u < n; ++u)
                for (int64_t j = kb; j < width; ++j) h_next[u * B + j] = 0.0;
            if (kb == 0) continue;
            double* x_rows = z + (t * K + inputs - F) * B + j0;
            for (int64_t j = 0; j < kb; ++j) {  // one sequence's features share a cache line
                const double* xj = x + (order ? order[j0 + j] : j0 + j) * sx_b + t * sx_t;
                __builtin_prefetch(xj + 8 * sx_t);  // the sequence's input a few steps on
                for (int64_t f = 0; f < F; ++f) x_rows[f * B + j] = xj[f * sx_f];
            }
            product(R, K, W, K, z + t * K * B + j0, B, a, bw, kb);  // a_t = W z_t
            const double* c_prev = cs + t * n * B + j0;
            double* c_next = cs + (t + 1) * n * B + j0;
            double* s_out = tcs + t * n * B + j0;
            double* act = acts + t * R * B + j0;
            for (int64_t u = 0; u < n; ++u) {
                const double* ai = a + u * bw;
                const double* af = a + (n + u) * bw;  // the forget gate's row when G = 4
                const double* ag = a + ((G - 2) * n + u) * bw;
                const double* ao = a + ((G - 1) * n + u) * bw;
                double* out_i = act + u * B;
                double* out_f = act + (n + u) * B;
                double* out_g = act + ((G - 2) * n + u) * B;
                double* out_o = act + ((G - 1) * n + u) * B;
                const double* cp = c_prev + u * B;
                double* cn = c_next + u * B;
                double* so = s_out + u * B;
                double* h = h_next + u * B;
                const double pi = p_in[u], pf = G == 4 ? p_in[n + u] : 0.0, po = p_o[u];
                if (G == 4) {
#pragma omp simd
                    for (int64_t j = 0; j < kb; ++j) {
                        const double i = sigmoid(ai[j] + cp[j] * pi);
                        const double f = sigmoid(af[j] + cp[j] * pf);
                        const double g = 2.0 * sigmoid(ag[j]) - 1.0;
                        const double C = f * cp[j] - 2.0 * i * g;
                        const double o = sigmoid(ao[j] + C * po);
                        const double s = sigmoid(C);
                        out_i[j] = i; out_f[j] = f; out_g[j] = g; out_o[j] = o;
                        cn[j] = C; so[j] = s; h[j] = o - 2.0 * o * s;
                    }
                } else {
#pragma omp simd
                    for (int64_t j = 0; j < kb; ++j) {
                        const double i = sigmoid(ai[j] + cp[j] * pi);
                        const double g = 2.0 * sigmoid(ag[j]) - 1.0;
                        const double C = cp[j] - 2.0 * i * g;
                        const double o = sigmoid(ao[j] + C * po);
                        const double s = sigmoid(C);
                        out_i[j] = i; out_g[j] = g; out_o[j] = o;
                        cn[j] = C; so[j] = s; h[j] = o - 2.0 * o * s;
                    }
                }
            }
        }
    });
}

// The backward loop. dh, dc (n, B) hold δh_T, δc_T on entry and δh_0, δc_0 on return; dys
// (T, n, B) is δy or null. Adds Σ_t δa_t z_tᵀ to dweight (G·n, K) and the peepholes' sums to
// dpeep (G − 1, n), in the scaled units of the ATen loop (δa_g doubled, δa_f as −2 δa_f; the
// caller multiplies by `half` and the peephole scales). w_h (n, G·n) and w_x (F, G·n), null when
// δx is not wanted, are the transposed weights with `half` folded in; p_in is (G − 2, n) with
// `half` folded in, p_o (n). dx (T, F, B) is written where a column runs (zero elsewhere on entry).
void distlstm_peephole_backward(int64_t T, int64_t B, int64_t G, int64_t n, int64_t K, int64_t F,
                                const double* z, const double* acts, const double* cs, const double* tcs,
                                const double* w_h, const double* w_x, const double* p_in, const double* p_o,
                                const double* dys, double* dh, double* dc, double* dweight, double* dpeep,
                                double* dx, const int64_t* active, int64_t threads) {
    const int64_t R = G * n, bw = block_width(R), blocks = (B + bw - 1) / bw, P = (G - 1) * n;
    // every block's own ∇W and peephole sums, added in block order at the end: the same numbers
    // whatever the thread count
    std::vector<double> dw_blocks(blocks * R * K), dp_blocks(blocks * P);
    for_blocks(blocks, threads, [&](int64_t block) {
        std::vector<double> d_buf(R * bw), dh_buf(n * bw), dc_buf(n * bw);  // the block's δa_t, δh, δc
        double* d = d_buf.data();
        double* dhl = dh_buf.data();
        double* dcl = dc_buf.data();
        double* dw_buf = dw_blocks.data() + block * R * K;
        double* dp_buf = dp_blocks.data() + block * P;
        const int64_t j0 = block * bw, width = B - j0 < bw ? B - j0 : bw;
        for (int64_t u = 0; u < n; ++u) {
            std::memcpy(dhl + u * bw, dh + u * B + j0, width * sizeof(double));
            std::memcpy(dcl + u * bw, dc + u * B + j0, width * sizeof(double));
        }
        for (int64_t t = T - 1; t >= 0; --t) {
            const int64_t kb = running(active, t, j0, bw);
            if (kb == 0) continue;
            const double* act = acts + t * R * B + j0;
            const double* c_prev = cs + t * n * B + j0;
            const double* c_now = cs + (t + 1) * n * B + j0;
            const double* s_now = tcs + t * n * B + j0;
            for (int64_t u = 0; u < n; ++u) {
                const double* ig = act + u * B;
                const double* fg = act + (n + u) * B;
                const double* gg = act + ((G - 2) * n + u) * B;
                const double* og = act + ((G - 1) * n + u) * B;
                const double* cp = c_prev + u * B;
                const double* cn = c_now + u * B;
                const double* s = s_now + u * B;
                const double* dy = dys ? dys + (t * n + u) * B + j0 : nullptr;
                double* dht = dhl + u * bw;
                double* dct = dcl + u * bw;
                double* di = d + u * bw;
                double* df = d + (n + u) * bw;
                double* dg = d + ((G - 2) * n + u) * bw;
                double* dop = d + ((G - 1) * n + u) * bw;
                const double pi = p_in[u], pf = G == 4 ? p_in[n + u] : 0.0, po = p_o[u];
                if (dy) {
#pragma omp simd
                    for (int64_t j = 0; j < kb; ++j) dht[j] += dy[j];
                }
                double sum_i = 0.0, sum_f = 0.0, sum_o = 0.0;
#pragma omp simd reduction(+ : sum_i, sum_f, sum_o)
                for (int64_t j = 0; j < kb; ++j) {
                    const double o = og[j], sj = s[j], i = ig[j], g = gg[j];
                    const double r = dht[j] * o;                            // δh ⊙ o
                    const double q = r - 2.0 * r * sj;                      // r ⊙ tanh c
                    const double da_o = q - q * o;                          // δa_o
                    double c = dct[j] + 2.0 * sj * (r + q) + da_o * po;     // δc_t
                    double d_i = c * g;
                    d_i = d_i * i - d_i * i * i;                            // δa_i
                    const double d_g = c * i;
                    const double d_g2 = d_g - d_g * g * g;                  // 2 δa_g
                    double d_f = 0.0;
                    if (G == 4) {
                        const double f = fg[j];
                        d_f = c * cp[j];
                        d_f = d_f * f - d_f * f * f;                        // −2 δa_f
                        c = c * f + d_i * pi + d_f * pf;
                        df[j] = d_f;
                    } else {
                        c = c + d_i * pi;
                    }
                    dct[j] = c;
                    di[j] = d_i; dg[j] = d_g2; dop[j] = da_o;
                    sum_i += d_i * cp[j];
                    sum_f += d_f * cp[j];
                    sum_o += da_o * cn[j];
                }
                dp_buf[u] += sum_i;
                if (G == 4) dp_buf[n + u] += sum_f;
                dp_buf[(G - 2) * n + u] += sum_o;
            }
            add_outer(R, K, d, bw, z + t * K * B + j0, B, dw_buf, kb);  // ∇W += δa_t z_tᵀ
            if (w_x) product(F, R, w_x, R, d, bw, dx + t * F * B + j0, B, kb);  // δx_t = W_xᵀ δa_t
            product(n, R, w_h, R, d, bw, dhl, bw, kb);  // δh_{t-1} = W_hhᵀ δa_t
        }
        for (int64_t u = 0; u < n; ++u) {
            std::memcpy(dh + u * B + j0, dhl + u * bw, width * sizeof(double));
            std::memcpy(dc + u * B + j0, dcl + u * bw, width * sizeof(double));
        }
    });
    for (int64_t b = 0; b < blocks; ++b) {
        for (int64_t i = 0; i < R * K; ++i) dweight[i] += dw_blocks[b * R * K + i];
        for (int64_t i = 0; i < P; ++i) dpeep[i] += dp_blocks[b * P + i];
    }
}

// σ of n values, for the tests: the kernel's sigmoid against torch.sigmoid.
void distlstm_sigmoid(int64_t n, const double* a, double* out) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] = sigmoid(a[j]);
}

}  // extern "C"
