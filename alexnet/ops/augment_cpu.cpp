// The CPU kernel behind alexnet.ops.augment: the training augmentation's crop, mirror, uint8 -> float,
// mean-image subtraction, scale and per-image shift in one pass over memory (DALI's CropMirrorNormalize).
// Built by alexnet/ops/augment.py (the machinery of alexnet/ops/_kernels.py) with the system compiler on
// first use, no PyTorch headers, called through ctypes (the extern "C" function at the end).
//
// Layouts: x (n_images, H, W, C) uint8, mean_pair (2, H, W, C) float32 (the mean image in x's 0-255 scale and
// its mirror image), out (B, size, size, C) float32, all contiguous (NHWC = channels_last). Output b is image
// source[b] cropped at offsets[b] = (top, left), mirrored where flips[b]:
//   out[b, i, j, c] = shift[b, c] + (x[source[b], top + i, col, c] - mean[top + i, col, c]) * scale[c]
// with col = left + j, or left + size - 1 - j when mirrored (the mean where the pixel came from, read for a mirrored
// crop as alexnet.data.augment.crop_mirror_pair does: the crop of the mirrored mean at left' = W - size - left, so
// that its row is contiguous too). The arithmetic is PyTorch's, operation by operation (a float subtraction, then
// shift + product as one fused multiply-add when `fma`, as PyTorch's addcmul is on CPUs with FMA, else a product
// and a sum; built with -ffp-contract=off so that the compiler fuses nothing on its own), so the output is
// bit-identical to alexnet.data.transforms' PyTorch path. One task is one output row (b, i): size * C contiguous
// values, computed by one vectorised loop (a mirrored row's pixels first put in mirrored order in a small buffer).

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#if defined(__SSSE3__)
#include <immintrin.h>
#endif

namespace {

struct Args {
    const uint8_t* x; const int64_t* source; const int64_t* offsets; const uint8_t* flips;
    const float* mean_pair; const float* scale; const float* shift; float* out;
    int64_t B, H, W, C, size, n_images;
};

// One row of n = size * C values: pixels p (uint8), mean m, scale row s, shift row h (both repeated per pixel).
template <bool MEAN, bool SHIFT, bool FMA>
inline void row(const uint8_t* __restrict__ p, const float* __restrict__ m, const float* __restrict__ s,
                const float* __restrict__ h, float* __restrict__ out, int64_t n) {
    #pragma omp simd
    for (int64_t k = 0; k < n; ++k) {
        float v = static_cast<float>(p[k]);
        if (MEAN) v = v - m[k];
        if (!SHIFT) out[k] = v * s[k];
        else if (FMA) out[k] = std::fma(v, s[k], h[k]);
        else { const float product = v * s[k]; out[k] = h[k] + product; }
    }
}

// The row's pixels in mirrored order: pixel j of dst is pixel size - 1 - j of src (channels kept in order). The
// source is read forwards, as the hardware prefetches it (read backwards, mirrored rows took twice as long).
template <int CC>
inline void mirror_pixels(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, int64_t size, int64_t C) {
    const int64_t channels = CC > 0 ? CC : C;
    for (int64_t q = 0; q < size; ++q)
        for (int64_t c = 0; c < channels; ++c) dst[(size - 1 - q) * channels + c] = src[q * channels + c];
}

#if defined(__SSSE3__)
// Three channels, 16 pixels (48 bytes, three 16-byte registers) at a time: output register k takes its bytes from
// the source registers q by byte shuffles; kMirror.m[k][q][i] is the source byte of output byte 16k + i if that
// lies in register q, else 0x80 (a zero, so the three shuffles combine by OR).
struct MirrorMasks {
    alignas(16) uint8_t m[3][3][16];
    constexpr MirrorMasks() : m() {
        for (int k = 0; k < 3; ++k)
            for (int i = 0; i < 16; ++i) {
                const int t = 16 * k + i, source = 3 * (15 - t / 3) + t % 3;
                for (int q = 0; q < 3; ++q) m[k][q][i] = source / 16 == q ? uint8_t(source % 16) : uint8_t(0x80);
            }
    }
};
constexpr MirrorMasks kMirror{};

template <>
inline void mirror_pixels<3>(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, int64_t size, int64_t) {
    __m128i mask[3][3];
    for (int k = 0; k < 3; ++k)
        for (int q = 0; q < 3; ++q) mask[k][q] = _mm_load_si128(reinterpret_cast<const __m128i*>(kMirror.m[k][q]));
    // the source read forwards: first the pixels before the last whole block ...
    const int64_t first = size % 16;
    for (int64_t q = 0; q < first; ++q)
        for (int c = 0; c < 3; ++c) dst[3 * (size - 1 - q) + c] = src[3 * q + c];
    for (int64_t q = first; q < size; q += 16) {   // ... then source pixels q .. q + 15: output size - 16 - q ..
        const uint8_t* block = src + 3 * q;
        __m128i in[3];
        for (int i = 0; i < 3; ++i) in[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16 * i));
        for (int k = 0; k < 3; ++k) {
            __m128i o = _mm_or_si128(_mm_shuffle_epi8(in[0], mask[k][0]), _mm_shuffle_epi8(in[1], mask[k][1]));
            o = _mm_or_si128(o, _mm_shuffle_epi8(in[2], mask[k][2]));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 3 * (size - 16 - q) + 16 * k), o);
        }
    }
}
#endif

template <bool MEAN, bool SHIFT, bool FMA>
void run(const Args& a, int threads) {
    const int64_t n = a.size * a.C, rows = a.B * a.size;
    #pragma omp parallel num_threads(threads)
    {
        // per thread: the scale row, the current image's shift row, a mirrored row's pixels
        float* s = static_cast<float*>(std::malloc(sizeof(float) * n));
        float* h = static_cast<float*>(std::malloc(sizeof(float) * n));
        uint8_t* mirrored = static_cast<uint8_t*>(std::malloc(n));
        for (int64_t k = 0; k < n; ++k) s[k] = a.scale[k % a.C];
        int64_t shift_of = -1;
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t b = r / a.size, i = r % a.size;
            const int64_t top = a.offsets[2 * b], left = a.offsets[2 * b + 1];
            const int64_t image = a.source ? a.source[b] : b;
            const bool flip = a.flips && a.flips[b];
            if (SHIFT && shift_of != b) {
                for (int64_t k = 0; k < n; ++k) h[k] = a.shift[b * a.C + k % a.C];
                shift_of = b;
            }
            const uint8_t* p = a.x + ((image * a.H + top + i) * a.W + left) * a.C;
            if (flip) {
                if (a.C == 3) mirror_pixels<3>(p, mirrored, a.size, 3);
                else if (a.C == 1) mirror_pixels<1>(p, mirrored, a.size, 1);
                else mirror_pixels<0>(p, mirrored, a.size, a.C);
                p = mirrored;
            }
            const float* m = nullptr;   // a mirrored crop's mean: the mirrored mean's crop at the mirrored offset
            if (MEAN)
                m = a.mean_pair + (((flip ? a.H : 0) + top + i) * a.W + (flip ? a.W - a.size - left : left)) * a.C;
            row<MEAN, SHIFT, FMA>(p, m, s, h, a.out + r * n, n);
        }
        std::free(s); std::free(h); std::free(mirrored);
    }
}

}  // namespace

extern "C" {
// mean_pair, shift, flips and source may be null: no mean subtraction, no shift, no mirroring, source[b] = b.
// fma: 1 computes shift + v * scale as one fused multiply-add (PyTorch's addcmul where the CPU has FMA).
void crop_mirror_normalize_u8_f32(const uint8_t* x, const int64_t* source, const int64_t* offsets,
                                  const uint8_t* flips, const float* mean_pair, const float* scale,
                                  const float* shift, float* out, int64_t B, int64_t H, int64_t W, int64_t C,
                                  int64_t size, int64_t n_images, int fma, int threads) {
    const Args a{x, source, offsets, flips, mean_pair, scale, shift, out, B, H, W, C, size, n_images};
    if (threads < 1) threads = 1;
    const bool subtract = mean_pair != nullptr, shifted = shift != nullptr, fused = fma != 0;
    if (subtract && shifted && fused) run<true, true, true>(a, threads);
    else if (subtract && shifted) run<true, true, false>(a, threads);
    else if (subtract) run<true, false, false>(a, threads);
    else if (shifted && fused) run<false, true, true>(a, threads);
    else if (shifted) run<false, true, false>(a, threads);
    else run<false, false, false>(a, threads);
}
}
