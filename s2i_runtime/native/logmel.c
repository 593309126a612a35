/* The log-Mel front end's heavy part for one clip, in C (s2i_runtime/native_frontend.py loads it with ctypes).

   The same spec as s2i_runtime/frontend.py, which stays the definition: the caller turns the mel power written
   here into dB with that module's own code, and the tests hold the two paths within 1e-3 dB.

   Why C: numpy does each step (window, FFT, power, mel products) as a pass over the whole block, and every call
   takes the GIL back, so two threads in one process fall well short of twice one (docs/performance.md). Here one
   call does a clip's frames in cache-sized blocks without the GIL.

   Frames go through the FFT in pairs (one as the real part, one as the imaginary part of a complex transform,
   split apart afterwards), LANES pairs side by side: element e of pair l sits at [e * LANES + l], so every
   butterfly loop runs over contiguous lanes and the compiler vectorises it. The transform is a self-sorting
   (Stockham) mixed-radix FFT in double precision; its stages and twiddles come from the caller. */

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
/* One build runs on every x86-64 CPU and still uses the wide vectors of those that have them. */
#define S2I_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define S2I_CLONES
#endif

#ifdef _WIN32
#define S2I_EXPORT __declspec(dllexport)
#else
#define S2I_EXPORT __attribute__((visibility("default")))
#endif

#define LANES 8

/* Frame pairs transformed side by side: the caller sizes its work buffer with this. */
S2I_EXPORT int s2i_lanes(void) { return LANES; }

/* ---- preparation: DC removal, pre-emphasis, reflect padding ------------------------------------------ */

static int64_t reflect(int64_t index, int64_t length) {
    if (length == 1) return 0;
    int64_t period = 2 * (length - 1);
    int64_t folded = (index < 0 ? -index : index) % period;
    return folded >= length ? period - folded : folded;
}

/* signal (padded_length doubles) <- the clip with its mean removed, pre-emphasised, reflect-padded by `pad` on
   both sides (repeatedly for clips shorter than pad + 1) and zero-filled to padded_length. One version per sample
   type, so that float64 input is not rounded to float32 on the way. */
#define S2I_PREPARE(NAME, SAMPLE)                                                                                \
    S2I_EXPORT int NAME(const SAMPLE *samples, int64_t size, int64_t pad, int remove_dc, double preemphasis,     \
                        double *signal, int64_t padded_length) {                                                \
        if (size < 1 || padded_length < size + 2 * pad) return -1;                                               \
        double mean = 0.0;                                                                                       \
        if (remove_dc) {                                                                                         \
            /* Eight running sums: one would be a chain of dependent additions, several times slower. */        \
            double sums[8] = {0.0}, sum = 0.0;                                                                   \
            int64_t i = 0;                                                                                       \
            for (; i + 8 <= size; i += 8)                                                                        \
                for (int j = 0; j < 8; j++) sums[j] += samples[i + j];                                           \
            for (int j = 0; j < 8; j++) sum += sums[j];                                                          \
            for (; i < size; i++) sum += samples[i];                                                             \
            mean = sum / (double)size;                                                                           \
        }                                                                                                        \
        double *body = signal + pad;                                                                             \
        body[0] = samples[0] - mean;                                                                             \
        for (int64_t i = 1; i < size; i++)                                                                       \
            body[i] = ((double)samples[i] - mean) - preemphasis * ((double)samples[i - 1] - mean);               \
        for (int64_t i = 1; i <= pad; i++) {                                                                     \
            signal[pad - i] = body[reflect(-i, size)];                                                           \
            signal[pad + size - 1 + i] = body[reflect(size - 1 + i, size)];                                      \
        }                                                                                                        \
        memset(signal + size + 2 * pad, 0, (size_t)(padded_length - size - 2 * pad) * sizeof(double));         \
        return 0;                                                                                                \
    }

S2I_PREPARE(s2i_prepare_f32, float)
S2I_PREPARE(s2i_prepare_f64, double)

/* ---- the FFT ----------------------------------------------------------------------------------------- */

/* One stage: radix r, m = n / r butterflies per stride s (s * LANES contiguous values each); x -> y.
   y[q + s (r p + k)] = w^(p k) * sum_j x[q + s (p + j m)] e^(-2 pi i j k / r), w = e^(-2 pi i / n). */
/* Butterflies of one radix over LANES contiguous values: a[j] are the r inputs, y[k] the r outputs, w the
   r - 1 twiddles (re/im) multiplying outputs 1..r-1. Each is its own function so that the compiler sees plain
   arrays and vectorises the loop. */
static inline __attribute__((always_inline)) void radix2(const double *restrict w,
                                                         const double *restrict a0r, const double *restrict a0i,
                                                         const double *restrict a1r, const double *restrict a1i,
                                                         double *restrict y0r, double *restrict y0i,
                                                         double *restrict y1r, double *restrict y1i) {
    const double wr = w[0], wi = w[1];
    for (int v = 0; v < LANES; v++) {
        const double br = a0r[v] - a1r[v], bi = a0i[v] - a1i[v];
        y0r[v] = a0r[v] + a1r[v];
        y0i[v] = a0i[v] + a1i[v];
        y1r[v] = br * wr - bi * wi;
        y1i[v] = br * wi + bi * wr;
    }
}

static inline __attribute__((always_inline)) void radix4(const double *restrict w,
                                                         const double *restrict a0r, const double *restrict a0i,
                                                         const double *restrict a1r, const double *restrict a1i,
                                                         const double *restrict a2r, const double *restrict a2i,
                                                         const double *restrict a3r, const double *restrict a3i,
                                                         double *restrict y0r, double *restrict y0i,
                                                         double *restrict y1r, double *restrict y1i,
                                                         double *restrict y2r, double *restrict y2i,
                                                         double *restrict y3r, double *restrict y3i) {
    const double w1r = w[0], w1i = w[1], w2r = w[2], w2i = w[3], w3r = w[4], w3i = w[5];
    for (int v = 0; v < LANES; v++) {
        const double t0r = a0r[v] + a2r[v], t0i = a0i[v] + a2i[v], t1r = a0r[v] - a2r[v], t1i = a0i[v] - a2i[v];
        const double t2r = a1r[v] + a3r[v], t2i = a1i[v] + a3i[v];
        const double t3r = a1i[v] - a3i[v], t3i = a3r[v] - a1r[v]; /* (a1 - a3) * -i */
        const double b1r = t1r + t3r, b1i = t1i + t3i, b2r = t0r - t2r, b2i = t0i - t2i;
        const double b3r = t1r - t3r, b3i = t1i - t3i;
        y0r[v] = t0r + t2r;
        y0i[v] = t0i + t2i;
        y1r[v] = b1r * w1r - b1i * w1i;
        y1i[v] = b1r * w1i + b1i * w1r;
        y2r[v] = b2r * w2r - b2i * w2i;
        y2i[v] = b2r * w2i + b2i * w2r;
        y3r[v] = b3r * w3r - b3i * w3i;
        y3i[v] = b3r * w3i + b3i * w3r;
    }
}

/* rot: cos(2 pi / 5), cos(4 pi / 5), sin(2 pi / 5), sin(4 pi / 5). */
static inline __attribute__((always_inline)) void radix5(const double *restrict w, const double *restrict rot,
                                                         const double *restrict a0r, const double *restrict a0i,
                                                         const double *restrict a1r, const double *restrict a1i,
                                                         const double *restrict a2r, const double *restrict a2i,
                                                         const double *restrict a3r, const double *restrict a3i,
                                                         const double *restrict a4r, const double *restrict a4i,
                                                         double *restrict y0r, double *restrict y0i,
                                                         double *restrict y1r, double *restrict y1i,
                                                         double *restrict y2r, double *restrict y2i,
                                                         double *restrict y3r, double *restrict y3i,
                                                         double *restrict y4r, double *restrict y4i) {
    const double c1 = rot[0], c2 = rot[1], s1 = rot[2], s2 = rot[3];
    const double w1r = w[0], w1i = w[1], w2r = w[2], w2i = w[3], w3r = w[4], w3i = w[5], w4r = w[6], w4i = w[7];
    for (int v = 0; v < LANES; v++) {
        const double t1r = a1r[v] + a4r[v], t1i = a1i[v] + a4i[v], t2r = a2r[v] + a3r[v], t2i = a2i[v] + a3i[v];
        const double t3r = a1r[v] - a4r[v], t3i = a1i[v] - a4i[v], t4r = a2r[v] - a3r[v], t4i = a2i[v] - a3i[v];
        const double m1r = a0r[v] + c1 * t1r + c2 * t2r, m1i = a0i[v] + c1 * t1i + c2 * t2i;
        const double m2r = a0r[v] + c2 * t1r + c1 * t2r, m2i = a0i[v] + c2 * t1i + c1 * t2i;
        const double n1r = s1 * t3r + s2 * t4r, n1i = s1 * t3i + s2 * t4i;
        const double n2r = s2 * t3r - s1 * t4r, n2i = s2 * t3i - s1 * t4i;
        /* b1 = m1 - i n1, b4 = m1 + i n1, b2 = m2 - i n2, b3 = m2 + i n2 */
        const double b1r = m1r + n1i, b1i = m1i - n1r, b2r = m2r + n2i, b2i = m2i - n2r;
        const double b3r = m2r - n2i, b3i = m2i + n2r, b4r = m1r - n1i, b4i = m1i + n1r;
        y0r[v] = a0r[v] + t1r + t2r;
        y0i[v] = a0i[v] + t1i + t2i;
        y1r[v] = b1r * w1r - b1i * w1i;
        y1i[v] = b1r * w1i + b1i * w1r;
        y2r[v] = b2r * w2r - b2i * w2i;
        y2i[v] = b2r * w2i + b2i * w2r;
        y3r[v] = b3r * w3r - b3i * w3i;
        y3i[v] = b3r * w3i + b3i * w3r;
        y4r[v] = b4r * w4r - b4i * w4i;
        y4i[v] = b4r * w4i + b4i * w4r;
    }
}

/* Any other radix: its DFT as a sum, rot holding e^(-2 pi i j / r) for j < r. */
static void radix_any(int r, int v_len, const double *restrict w, const double *restrict rot,
                      const double *restrict xr, const double *restrict xi, int64_t step, double *restrict yr,
                      double *restrict yi, int64_t o) {
    for (int k = 0; k < r; k++) {
        double *restrict outr = yr + k * o, *restrict outi = yi + k * o;
        const double wr = k ? w[2 * (k - 1)] : 1.0, wi = k ? w[2 * (k - 1) + 1] : 0.0;
        for (int v = 0; v < v_len; v++) {
            double sr = 0.0, si = 0.0;
            for (int j = 0; j < r; j++) {
                const int e = (j * k) % r;
                const double ar = xr[j * step + v], ai = xi[j * step + v];
                sr += ar * rot[2 * e] - ai * rot[2 * e + 1];
                si += ar * rot[2 * e + 1] + ai * rot[2 * e];
            }
            outr[v] = sr * wr - si * wi;
            outi[v] = sr * wi + si * wr;
        }
    }
}

/* One stage: radix r, m = n / r butterflies per stride s (s * LANES contiguous values each); x -> y.
   y[q + s (r p + k)] = w^(p k) * sum_j x[q + s (p + j m)] e^(-2 pi i j k / r), w = e^(-2 pi i / n). */
static inline __attribute__((always_inline)) void stage(int r, int m, int s, const double *restrict tw,
                                                        const double *restrict rot, const double *restrict xr,
                                                        const double *restrict xi, double *restrict yr,
                                                        double *restrict yi) {
    const int v_len = s * LANES;
    const int64_t step = (int64_t)s * m * LANES, o = (int64_t)s * LANES;
    for (int p = 0; p < m; p++) {
        const double *w = tw + 2 * (int64_t)p * (r - 1);
        const int64_t in = (int64_t)s * p * LANES, out = (int64_t)s * r * p * LANES;
        const double *ar = xr + in, *ai = xi + in;
        double *br = yr + out, *bi = yi + out;
        if (r == 4)
            for (int q = 0; q < v_len; q += LANES)
                radix4(w, ar + q, ai + q, ar + step + q, ai + step + q, ar + 2 * step + q, ai + 2 * step + q,
                       ar + 3 * step + q, ai + 3 * step + q, br + q, bi + q, br + o + q, bi + o + q,
                       br + 2 * o + q, bi + 2 * o + q, br + 3 * o + q, bi + 3 * o + q);
        else if (r == 2)
            for (int q = 0; q < v_len; q += LANES)
                radix2(w, ar + q, ai + q, ar + step + q, ai + step + q, br + q, bi + q, br + o + q, bi + o + q);
        else if (r == 5)
            for (int q = 0; q < v_len; q += LANES)
                radix5(w, rot, ar + q, ai + q, ar + step + q, ai + step + q, ar + 2 * step + q, ai + 2 * step + q,
                       ar + 3 * step + q, ai + 3 * step + q, ar + 4 * step + q, ai + 4 * step + q, br + q, bi + q,
                       br + o + q, bi + o + q, br + 2 * o + q, bi + 2 * o + q, br + 3 * o + q, bi + 3 * o + q,
                       br + 4 * o + q, bi + 4 * o + q);
        else
            radix_any(r, v_len, w, rot, ar, ai, step, br, bi, o);
    }
}

/* ---- frames to mel power ----------------------------------------------------------------------------- */

/* Mel-band power of frames first..first+count-1 of a prepared signal into out[band * out_stride + frame - first]
   (float32). Stages: radices[i] with twiddles (m * (r - 1) complex numbers, re/im interleaved, one block per
   stage in order) and rotations (radix 5: 4 numbers, other odd radices: r complex numbers, else none).
   Bands: band b takes bins band_start[b] .. band_start[b] + band_length[b] - 1 with band_weights (consecutive).
   work: 4 * n_fft * LANES doubles (two buffers of pairs, real and imaginary parts)
         + (n_fft / 2 + 1) * 2 * LANES doubles (power). */
S2I_EXPORT S2I_CLONES int s2i_mel_power(const double *signal, int64_t first, int64_t count, int n_fft, int hop,
                                        const double *window, int n_stages, const int32_t *radices,
                                        const double *twiddles, const double *rotations, int n_mels,
                                        const int32_t *band_start, const int32_t *band_length,
                                        const double *band_weights, float *out, int64_t out_stride, double *work) {
    if (n_fft < 2 || n_stages < 1 || count < 0) return -1;
    const int n_bins = n_fft / 2 + 1, block = 2 * LANES;
    double *xr = work, *xi = xr + (int64_t)n_fft * LANES, *yr = xi + (int64_t)n_fft * LANES;
    double *yi = yr + (int64_t)n_fft * LANES, *power = yi + (int64_t)n_fft * LANES;
    for (int64_t f0 = 0; f0 < count; f0 += block) {
        const int valid = count - f0 < block ? (int)(count - f0) : block;
        /* Window and pack: pair l holds frame f0 + l (real part) and frame f0 + LANES + l (imaginary part). */
        if (valid == block) {
            /* Lane by lane within each sample: gathered loads, whole-vector stores. */
            const double *a = signal + (first + f0) * hop, *b = a + (int64_t)LANES * hop;
            for (int n = 0; n < n_fft; n++) {
                for (int l = 0; l < LANES; l++) {
                    xr[n * LANES + l] = a[(int64_t)l * hop + n] * window[n];
                    xi[n * LANES + l] = b[(int64_t)l * hop + n] * window[n];
                }
            }
        } else {
            for (int l = 0; l < 2 * LANES; l++) {
                double *to = l < LANES ? xr + l : xi + (l - LANES);
                if (l < valid) {
                    const double *frame = signal + (first + f0 + l) * hop;
                    for (int n = 0; n < n_fft; n++) to[n * LANES] = frame[n] * window[n];
                } else {
                    for (int n = 0; n < n_fft; n++) to[n * LANES] = 0.0;
                }
            }
        }
        double *sr = xr, *si = xi, *dr = yr, *di = yi;
        const double *tw = twiddles, *rot = rotations;
        int n = n_fft, s = 1;
        for (int i = 0; i < n_stages; i++) {
            const int r = radices[i], m = n / r;
            stage(r, m, s, tw, rot, sr, si, dr, di);
            tw += 2 * (int64_t)m * (r - 1);
            rot += r == 5 ? 4 : (r == 2 || r == 4) ? 0 : 2 * r;
            double *t = sr; sr = dr; dr = t;
            t = si; si = di; di = t;
            n = m;
            s *= r;
        }
        /* Split the pairs: with Z = FFT(a + i b), |A_k|^2 = |Z_k + conj(Z_-k)|^2 / 4, |B_k|^2 = |Z_k - conj(Z_-k)|^2 / 4. */
        for (int k = 0; k < n_bins; k++) {
            const double *zr = sr + (int64_t)k * LANES, *zi = si + (int64_t)k * LANES;
            const int64_t mirror = (int64_t)((n_fft - k) % n_fft) * LANES;
            const double *yr_ = sr + mirror, *yi_ = si + mirror;
            double *pa = power + (int64_t)k * block, *pb = pa + LANES;
            for (int l = 0; l < LANES; l++) {
                const double pr = zr[l] + yr_[l], pi = zi[l] - yi_[l], qr = zr[l] - yr_[l], qi = zi[l] + yi_[l];
                pa[l] = 0.25 * (pr * pr + pi * pi);
                pb[l] = 0.25 * (qr * qr + qi * qi);
            }
        }
        const double *weights = band_weights;
        for (int band = 0; band < n_mels; band++) {
            double acc[2 * LANES] = {0.0};
            const double *p = power + (int64_t)band_start[band] * block;
            for (int j = 0; j < band_length[band]; j++)
                for (int v = 0; v < block; v++) acc[v] += weights[j] * p[(int64_t)j * block + v];
            weights += band_length[band];
            float *row = out + band * out_stride + f0;
            for (int v = 0; v < valid; v++) row[v] = (float)acc[v];
        }
    }
    return 0;
}
