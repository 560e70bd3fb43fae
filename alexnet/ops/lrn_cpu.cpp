// The CPU kernel behind alexnet.ops.lrn (LRN, and the fused ReLU -> LRN -> max pool of channels_last
// inputs): compiled by alexnet/ops/_lrn_cpu.py with the system compiler on first use, no PyTorch headers,
// called through ctypes (the extern "C" functions at the end).
//
// Window of channel c: [c - lo, c + hi] with lo = size // 2, hi = (size - 1) // 2 (torch's convention,
// the paper's for odd size); the backward sums over the transposed window [i - hi, i + lo].
// Each block (a channels_last pixel, or an NCHW tile of pixels) is read once from memory into small
// zero-padded scratch buffers, so the edges need no branches and every loop vectorises.

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <algorithm>

namespace {
constexpr int64_t TILE = 128;  // NCHW: pixels per block, so a block's C x TILE values stay in cache

template <typename T>
struct Lrn { int64_t C, inner, size; T alpha, beta, k; int64_t G; };   // G: channel groups (rows only)

template <typename T, bool B075>   // s ** -beta; 0.75 as 1 / (sqrt(s) * sqrt(sqrt(s))), no pow
inline T inv_pow(T s, T beta) {
    if (B075) { T q = std::sqrt(s); return T(1) / (q * std::sqrt(q)); }
    return std::pow(s, -beta);
}

template <typename T, bool B075>   // r = s ** -beta and r1 = s ** (-beta - 1) with one division
inline void inv_pows(T s, T beta, T& r, T& r1) {
    if (B075) { T q = std::sqrt(s); r1 = T(1) / (q * std::sqrt(q) * s); r = r1 * s; }
    else { r = std::pow(s, -beta); r1 = r / s; }
}

// Window sums over channels of a zero-padded scratch buffer holding channel c at p[c * step]:
// for SIZE > 0 summed inline (unrolled, fused into the caller's loop); SIZE == 0 (any size) fills acc.
template <typename T>
void window_sums(const T* __restrict__ p, T* __restrict__ acc, int64_t n, int64_t size, int64_t step) {
    for (int64_t i = 0; i < n; ++i) acc[i] = p[i];
    for (int64_t j = 1; j < size; ++j)
        for (int64_t i = 0; i < n; ++i) acc[i] += p[i + j * step];
}

template <int SIZE, typename T>
inline T window(const T* p, const T* acc, int64_t i, int64_t step) {
    if constexpr (SIZE == 0) { return acc[i]; }
    else { T a = p[i]; for (int j = 1; j < SIZE; ++j) a += p[i + j * step]; return a; }
}

// Scratch per thread: sq and tb (squares, and g x s^(-beta-1)) of (C + size) lanes-wide rows, zero padded:
// sq has size/2 zero rows before the data (the window), tb (size-1)/2 (the transposed window).
template <typename T>
struct Scratch {
    T *__restrict__ sq, *__restrict__ tb, *__restrict__ rb, *__restrict__ acc;
    explicit Scratch(int64_t C, int64_t size, int64_t lanes)
        : sq(zeros((C + size) * lanes)), tb(zeros((C + size) * lanes)), rb(zeros(C * lanes)), acc(zeros(C * lanes)) {}
    ~Scratch() { std::free(sq); std::free(tb); std::free(rb); std::free(acc); }
    static T* zeros(int64_t n) { return static_cast<T*>(std::calloc(n, sizeof(T))); }
};

// The LRN input: x itself, or relu(x) as torch's (NaN passes) when the fused block applies ReLU first.
template <typename T, bool RELU>
inline T input(T x) { return RELU && x < T(0) ? T(0) : x; }

// Channels_last: one pixel's C channels are contiguous; vectorised along C. RELU: LRN of relu(x), and
// the backward through both (no gradient where relu(x) <= 0, as torch's threshold_backward).
// A pixel's squared (ReLU'd) inputs into the zero-padded scratch rows, block after block; for SIZE == 0
// (any size) also their window sums into acc.
template <typename T, int SIZE, bool RELU>
inline void squares(const T* __restrict__ x, Scratch<T>& s, int64_t G, int64_t C, int64_t size, int64_t at) {
    for (int64_t b = 0; b < G; ++b)
        for (int64_t c = 0; c < C; ++c) {
            const T a = input<T, RELU>(x[b * C + c]);
            s.sq[b * at + size / 2 + c] = a * a;
        }
    if (SIZE == 0) window_sums(s.sq, s.acc, (G - 1) * at + C, size, 1);
}

// GROUPED: the C channels are p.G blocks of C / G (the two towers [3.2]), each padded in the scratch rows by
// size - 1 zeros, so no window crosses a block's edge; each pass still runs over all the pixel's channels
// before the next reads them (rows of C / G, one after another, stall on reading just-written scratch).
template <typename T, bool B075, int SIZE, bool RELU = false, bool GROUPED = false>
void forward_row(const T* __restrict__ x, T* __restrict__ y, const Lrn<T> p, Scratch<T>& s) {
    const int64_t G = GROUPED ? p.G : 1, C = p.C / G, size = SIZE ? SIZE : p.size, at = GROUPED ? C + size - 1 : 0;
    squares<T, SIZE, RELU>(x, s, G, C, size, at);
    for (int64_t b = 0; b < G; ++b)
        for (int64_t c = 0; c < C; ++c)
            y[b * C + c] = input<T, RELU>(x[b * C + c])
                * inv_pow<T, B075>(p.k + p.alpha * window<SIZE>(s.sq, s.acc, b * at + c, 1), p.beta);
}

template <typename T, bool B075, int SIZE, bool RELU = false, bool GROUPED = false>
void backward_row(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ out, const Lrn<T> p,
                  Scratch<T>& s) {
    const int64_t G = GROUPED ? p.G : 1, C = p.C / G, size = SIZE ? SIZE : p.size, at = GROUPED ? C + size - 1 : 0;
    const T coef = T(2) * p.alpha * p.beta;
    squares<T, SIZE, RELU>(x, s, G, C, size, at);
    for (int64_t b = 0; b < G; ++b)
        for (int64_t c = 0; c < C; ++c) {
            T r1;
            inv_pows<T, B075>(p.k + p.alpha * window<SIZE>(s.sq, s.acc, b * at + c, 1), p.beta, s.rb[b * C + c], r1);
            s.tb[b * at + (size - 1) / 2 + c] = g[b * C + c] * input<T, RELU>(x[b * C + c]) * r1;
        }
    if (SIZE == 0) window_sums(s.tb, s.acc, (G - 1) * at + C, size, 1);
    for (int64_t b = 0; b < G; ++b)
        for (int64_t c = 0; c < C; ++c) {
            const int64_t i = b * C + c;
            out[i] = RELU && x[i] <= T(0) ? T(0)
                : g[i] * s.rb[i] - coef * x[i] * window<SIZE>(s.tb, s.acc, b * at + c, 1);
        }
}

// Contiguous NCHW: L <= TILE pixels of C planes `inner` apart; vectorised along the pixels.
template <typename T, bool B075, int SIZE>
void forward_tile(const T* __restrict__ x, T* __restrict__ y, int64_t L, const Lrn<T> p, Scratch<T>& s) {
    const int64_t C = p.C, n = p.inner, size = SIZE ? SIZE : p.size;
    for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < L; ++t) s.sq[(size / 2 + c) * TILE + t] = x[c * n + t] * x[c * n + t];
    if (SIZE == 0) window_sums(s.sq, s.acc, C * TILE, size, TILE);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < L; ++t)
            y[c * n + t] = x[c * n + t]
                * inv_pow<T, B075>(p.k + p.alpha * window<SIZE>(s.sq, s.acc, c * TILE + t, TILE), p.beta);
}

template <typename T, bool B075, int SIZE>
void backward_tile(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ out, int64_t L, const Lrn<T> p,
                   Scratch<T>& s) {
    const int64_t C = p.C, n = p.inner, size = SIZE ? SIZE : p.size;
    const T coef = T(2) * p.alpha * p.beta;
    for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < L; ++t) s.sq[(size / 2 + c) * TILE + t] = x[c * n + t] * x[c * n + t];
    if (SIZE == 0) window_sums(s.sq, s.acc, C * TILE, size, TILE);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < L; ++t) {
            T r1;
            inv_pows<T, B075>(p.k + p.alpha * window<SIZE>(s.sq, s.acc, c * TILE + t, TILE), p.beta,
                              s.rb[c * TILE + t], r1);
            s.tb[((size - 1) / 2 + c) * TILE + t] = g[c * n + t] * x[c * n + t] * r1;
        }
    if (SIZE == 0) window_sums(s.tb, s.acc, C * TILE, size, TILE);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < L; ++t)
            out[c * n + t] = g[c * n + t] * s.rb[c * TILE + t]
                - coef * x[c * n + t] * window<SIZE>(s.tb, s.acc, c * TILE + t, TILE);
}

// Blocks split statically over the threads; each thread zeroes its scratch once.
// Rows (inner == 1: channels_last, or a plain (N, C) input) or NCHW tiles of TILE pixels.
// GROUPED: rows only (the caller views grouped NCHW planes as more images of fewer channels).
template <typename T, bool B075, int SIZE, bool GROUPED>
void run(const T* x, const T* g, T* out, int64_t outer, const Lrn<T> p, int threads) {
    const bool rows = p.inner == 1;
    const int64_t tiles = rows ? 1 : (p.inner + TILE - 1) / TILE, lanes = rows ? 1 : TILE;
    #pragma omp parallel num_threads(threads)
    {
        Scratch<T> s(GROUPED ? p.C + p.G * p.size : p.C, p.size, lanes);
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < outer * tiles; ++b) {
            const int64_t t0 = (b % tiles) * TILE, at = rows ? b * p.C : b / tiles * p.C * p.inner + t0;
            const int64_t L = rows ? 1 : std::min(TILE, p.inner - t0);
            if (g == nullptr && rows) forward_row<T, B075, SIZE, false, GROUPED>(x + at, out + at, p, s);
            else if (g == nullptr) forward_tile<T, B075, SIZE>(x + at, out + at, L, p, s);
            else if (rows) backward_row<T, B075, SIZE, false, GROUPED>(x + at, g + at, out + at, p, s);
            else backward_tile<T, B075, SIZE>(x + at, g + at, out + at, L, p, s);
        }
    }
}

// g == nullptr: forward (out = y); otherwise backward (out = grad x). Size 5 (the paper's, Caffe's, VGG's)
// and beta 0.75 get their own compiled versions; other values take the general loops. Grouped: the paper's
// constants or the general loops (fewer versions to compile).
template <typename T>
void lrn(const T* x, const T* g, T* out, int64_t outer, int64_t C, int64_t inner, int64_t size, int64_t groups,
         double alpha, double beta, double k, int threads) {
    const Lrn<T> p{C, inner, size, T(alpha), T(beta), T(k), groups};
    if (groups > 1 && size == 5 && beta == 0.75) run<T, true, 5, true>(x, g, out, outer, p, threads);
    else if (groups > 1) run<T, false, 0, true>(x, g, out, outer, p, threads);
    else if (size == 5 && beta == 0.75) run<T, true, 5, false>(x, g, out, outer, p, threads);
    else if (size == 5) run<T, false, 5, false>(x, g, out, outer, p, threads);
    else if (beta == 0.75) run<T, true, 0, false>(x, g, out, outer, p, threads);
    else run<T, false, 0, false>(x, g, out, outer, p, threads);
}
// ReLU -> LRN -> max pool (K x K, stride S, no padding), the paper's order [3.3, 3.4], channels_last only.
// Forward: each task is one pooled row (n, ph): it computes the K LRN rows under it (overlapping rows are
// computed twice, which costs arithmetic, not memory), pools them and writes the pooled row and the
// argmax within each window (0 .. K*K-1, PyTorch's scan order and tie rule: first max, NaN wins).
// Backward: each task is one input row (n, r): it gathers the pooled gradients whose argmax falls in it
// and runs the LRN and ReLU backward on that row. The LRN output is never written to memory.
template <typename T>
struct Pool { int64_t H, W, PH, PW, K, S; };

template <typename T, bool B075, int SIZE, bool GROUPED>
void fused_forward(const T* z, T* out, uint8_t* idx, int64_t N, const Lrn<T> p, const Pool<T> q, int threads) {
    const int64_t C = p.C, row = q.W * C;
    #pragma omp parallel num_threads(threads)
    {
        Scratch<T> s(GROUPED ? C + p.G * p.size : C, p.size, 1);
        T* rows = static_cast<T*>(std::malloc(sizeof(T) * q.K * row));
        #pragma omp for schedule(static)
        for (int64_t task = 0; task < N * q.PH; ++task) {
            const int64_t n = task / q.PH, ph = task % q.PH;
            for (int64_t i = 0; i < q.K; ++i)
                for (int64_t w = 0; w < q.W; ++w)
                    forward_row<T, B075, SIZE, true, GROUPED>(z + (n * q.H + ph * q.S + i) * row + w * C,
                                                              rows + i * row + w * C, p, s);
            T* o = out + (n * q.PH + ph) * q.PW * C;
            uint8_t* ix = idx + (n * q.PH + ph) * q.PW * C;
            for (int64_t pw = 0; pw < q.PW; ++pw, o += C, ix += C) {
                for (int64_t c = 0; c < C; ++c) { o[c] = rows[pw * q.S * C + c]; ix[c] = 0; }
                for (int64_t i = 0; i < q.K; ++i)
                    for (int64_t j = 0; j < q.K; ++j) {
                        if (i == 0 && j == 0) continue;
                        const T* v = rows + i * row + (pw * q.S + j) * C;
                        const uint8_t at = uint8_t(i * q.K + j);
                        for (int64_t c = 0; c < C; ++c)
                            if (v[c] > o[c] || std::isnan(v[c])) { o[c] = v[c]; ix[c] = at; }
                    }
            }
        }
        std::free(rows);
    }
}

template <typename T, bool B075, int SIZE, bool GROUPED>
void fused_backward(const T* z, const T* gp, const uint8_t* idx, T* gz, int64_t N, const Lrn<T> p,
                    const Pool<T> q, int threads) {
    const int64_t C = p.C;
    #pragma omp parallel num_threads(threads)
    {
        Scratch<T> s(GROUPED ? C + p.G * p.size : C, p.size, 1);
        T* gy = static_cast<T*>(std::malloc(sizeof(T) * q.W * C));
        #pragma omp for schedule(static)
        for (int64_t task = 0; task < N * q.H; ++task) {
            const int64_t n = task / q.H, r = task % q.H;
            for (int64_t e = 0; e < q.W * C; ++e) gy[e] = T(0);
            // pooled rows whose window covers r: ph * S <= r <= ph * S + K - 1
            const int64_t ph_lo = r >= q.K ? (r - q.K) / q.S + 1 : 0, ph_hi = std::min(q.PH - 1, r / q.S);
            for (int64_t ph = ph_lo; ph <= ph_hi; ++ph) {
                const int64_t i = r - ph * q.S;
                const T* g = gp + (n * q.PH + ph) * q.PW * C;
                const uint8_t* ix = idx + (n * q.PH + ph) * q.PW * C;
                for (int64_t pw = 0; pw < q.PW; ++pw, g += C, ix += C)
                    for (int64_t j = 0; j < q.K; ++j) {
                        T* dst = gy + (pw * q.S + j) * C;
                        const uint8_t at = uint8_t(i * q.K + j);
                        for (int64_t c = 0; c < C; ++c) dst[c] += ix[c] == at ? g[c] : T(0);
                    }
            }
            const int64_t at = (n * q.H + r) * q.W * C;
            for (int64_t w = 0; w < q.W; ++w)
                backward_row<T, B075, SIZE, true, GROUPED>(z + at + w * C, gy + w * C, gz + at + w * C, p, s);
        }
        std::free(gy);
    }
}

template <typename T>
void fused(const T* z, const T* gp, const uint8_t* idx_in, uint8_t* idx_out, T* out, int64_t N, int64_t C,
           int64_t H, int64_t W, int64_t K, int64_t S, int64_t size, int64_t groups, double alpha, double beta,
           double k, int threads) {
    const Lrn<T> p{C, 1, size, T(alpha), T(beta), T(k), groups};
    const Pool<T> q{H, W, (H - K) / S + 1, (W - K) / S + 1, K, S};
#define ALEXNET_FUSED(B075, SIZE, GROUPED) \
    if (gp == nullptr) fused_forward<T, B075, SIZE, GROUPED>(z, out, idx_out, N, p, q, threads); \
    else fused_backward<T, B075, SIZE, GROUPED>(z, gp, idx_in, out, N, p, q, threads);
    if (groups > 1 && size == 5 && beta == 0.75) { ALEXNET_FUSED(true, 5, true) }
    else if (groups > 1) { ALEXNET_FUSED(false, 0, true) }
    else if (size == 5 && beta == 0.75) { ALEXNET_FUSED(true, 5, false) }
    else if (size == 5) { ALEXNET_FUSED(false, 5, false) }
    else if (beta == 0.75) { ALEXNET_FUSED(true, 0, false) }
    else { ALEXNET_FUSED(false, 0, false) }
#undef ALEXNET_FUSED
}
}  // namespace

extern "C" {
void relu_lrn_pool_forward_f32(const float* z, float* out, uint8_t* idx, int64_t N, int64_t C, int64_t H,
                               int64_t W, int64_t K, int64_t S, int64_t size, int64_t groups, double alpha,
                               double beta, double k, int threads) {
    fused<float>(z, nullptr, nullptr, idx, out, N, C, H, W, K, S, size, groups, alpha, beta, k, threads);
}
void relu_lrn_pool_forward_f64(const double* z, double* out, uint8_t* idx, int64_t N, int64_t C, int64_t H,
                               int64_t W, int64_t K, int64_t S, int64_t size, int64_t groups, double alpha,
                               double beta, double k, int threads) {
    fused<double>(z, nullptr, nullptr, idx, out, N, C, H, W, K, S, size, groups, alpha, beta, k, threads);
}
void relu_lrn_pool_backward_f32(const float* z, const float* gp, const uint8_t* idx, float* gz, int64_t N,
                                int64_t C, int64_t H, int64_t W, int64_t K, int64_t S, int64_t size, int64_t groups,
                                double alpha, double beta, double k, int threads) {
    fused<float>(z, gp, idx, nullptr, gz, N, C, H, W, K, S, size, groups, alpha, beta, k, threads);
}
void relu_lrn_pool_backward_f64(const double* z, const double* gp, const uint8_t* idx, double* gz, int64_t N,
                                int64_t C, int64_t H, int64_t W, int64_t K, int64_t S, int64_t size, int64_t groups,
                                double alpha, double beta, double k, int threads) {
    fused<double>(z, gp, idx, nullptr, gz, N, C, H, W, K, S, size, groups, alpha, beta, k, threads);
}
void lrn_forward_f32(const float* x, float* y, int64_t outer, int64_t C, int64_t inner, int64_t size,
                     int64_t groups, double alpha, double beta, double k, int threads) {
    lrn<float>(x, nullptr, y, outer, C, inner, size, groups, alpha, beta, k, threads);
}
void lrn_forward_f64(const double* x, double* y, int64_t outer, int64_t C, int64_t inner, int64_t size,
                     int64_t groups, double alpha, double beta, double k, int threads) {
    lrn<double>(x, nullptr, y, outer, C, inner, size, groups, alpha, beta, k, threads);
}
void lrn_backward_f32(const float* x, const float* g, float* gx, int64_t outer, int64_t C, int64_t inner,
                      int64_t size, int64_t groups, double alpha, double beta, double k, int threads) {
    lrn<float>(x, g, gx, outer, C, inner, size, groups, alpha, beta, k, threads);
}
void lrn_backward_f64(const double* x, const double* g, double* gx, int64_t outer, int64_t C, int64_t inner,
                      int64_t size, int64_t groups, double alpha, double beta, double k, int threads) {
    lrn<double>(x, g, gx, outer, C, inner, size, groups, alpha, beta, k, threads);
}
}
