/*
 * Native fused feature scan of the diagonal-recurrence RNN's sequence kernel (docs/model.md §6),
 * float32: the recursion and readouts of rnnlimit.seqfeatures._unit_features.
 *
 * For samples omega_p = (w_p, b_p, u_p) every unit runs H_k = sigma(a_k),
 * a_k = w.X_k + b H_{k-1} + u, H_0 = 0, with its forward-mode sensitivities
 *   dH_k/dw = sigma'(a_k)(X_k + b dH_{k-1}/dw),  dH_k/db = sigma'(a_k)(H_{k-1} + b dH_{k-1}/db),
 *   dH_k/du = sigma'(a_k)(1 + b dH_{k-1}/du),
 * over the true length L_i of each series. The readouts are the last state H_{L_i} and the
 * means over S equal parts of the true length (segment j holds the steps k < L_i with
 * min(floor(k S / L_i), S - 1) = j; an empty segment reads 0). Segments are contiguous in k,
 * so one running sum per component suffices: it is written out (times 1/count and the
 * scale) when the segment ends. The output row of series i is (P, f R): for each omega the
 * readouts (last first, then segments 0..S-1) of the f = d + 3 components
 * [H, dH/dw_1..dH/dw_d, dH/db, dH/du] (f = 1, [H], for the NNGP part).
 *
 * The omega samples are processed in blocks of LANES; within a block the lane loop is branch
 * free (erf/tanh from one exp and polynomials, no division for erf) and vectorised by gcc under
 * `#pragma omp simd` (-fopenmp-simd), AVX-512/AVX2/baseline clones chosen at load time.
 * Accuracy (tests/test_seqnative.py): erf and erf' within 2e-7 (absolute) of the exact
 * values; the features agree with the JAX scan to float32 rounding.
 *
 * Exported: rnnlimit_seq_features(...) (rows [i0, i1) of the output; the caller runs several
 * row ranges on threads) and rnnlimit_seq_act(...) (sigma, sigma' of the kernel, tests).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "rnnlimit_native.h"

enum { SEQ_ERF = 0, SEQ_TANH = 1, SEQ_RELU = 2 };

/* c[0] + c[1] x + ... + c[n-1] x^{n-1} by Horner (n is a constant at every call: unrolled) */
INLINE float horner_f(const float *c, int n, float x) {
    float p = c[n - 1];
    for (int i = n - 2; i >= 0; --i) p = p * x + c[i];
    return p;
}

/* Taylor coefficients of e^r to degree 7 */
static const float EXP_TAYLOR[8] = {1.0f,         1.0f,          0.5f,          1.0f / 6.0f,
                                    1.0f / 24.0f, 1.0f / 120.0f, 1.0f / 720.0f, 1.0f / 5040.0f};
/* erf(a)/a in t = a^2 on [0, 1], and erfcx on [1, 4] in z = (|a| - 2.5)/1.5 (Chebyshev fits) */
static const float ERF_SMALL[7] = {1.128379166e+00f,  -3.761262691e-01f, 1.128359749e-01f,
                                   -2.685432954e-02f, 5.189312812e-03f,  -8.018859013e-04f,
                                   7.882500441e-05f};
static const float ERFCX_MID[11] = {2.108063575e-01f,  -1.115214015e-01f, 5.611095852e-02f,
                                    -2.699778989e-02f, 1.248403471e-02f,  -5.611769039e-03f,
                                    2.425888219e-03f,  -9.155542474e-04f, 3.678646644e-04f,
                                    -2.455073563e-04f, 9.640629660e-05f};

/* e^x for x <= 0: x = k ln2 + r (Cody-Waite, Cephes expf's split of ln2), |r| <= ln2/2, and
 * the degree-7 Taylor polynomial of e^r (remainder < 5e-9). x is clamped at -87 so that 2^k
 * stays normal (e^-87 ~ 1.6e-38 instead of a smaller number). NaN passes through. */
INLINE float expneg_f(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float kd = x * 1.44269504088896341f + shifter;
    int32_t k = (int32_t)(float_to_bits(kd) - float_to_bits(shifter));
    kd -= shifter;
    float r = x - kd * 0.693359375f;
    r = r - kd * -2.12194440e-4f;
    float p = horner_f(EXP_TAYLOR, 8, r);
    return p * bits_to_float((uint32_t)(k + 127) << 23);
}

/* erf(a) = a p(a^2) for |a| < 1; erf(a) = sign(a)(1 - e^{-a^2} q(z)) for |a| >= 1, with
 * q ~ erfcx(|a|) on [1, 4] in z = (min(|a|, 4) - 2.5)/1.5 (past 4, erfc < 2e-8: erf is 1 to
 * float precision). Both are Chebyshev fits (degrees 6 in a^2 and 10 in z) written in the
 * monomial basis; erf' = 2/sqrt(pi) e^{-a^2} shares the exp. */
INLINE void erf_pair_f(float a, float *h, float *hp) {
    float t = a * a;
    float E = expneg_f(-t);
    float ax = fabsf(a);
    float p = horner_f(ERF_SMALL, 7, t);
    float z = ((ax > 4.0f ? 4.0f : ax) - 2.5f) * (1.0f / 1.5f);
    float q = horner_f(ERFCX_MID, 11, z);
    *h = ax < 1.0f ? a * p : copysignf(1.0f - E * q, a);
    *hp = 1.12837916709551257f * E;
}

/* tanh(a) = sign(a)(1 - e^{-2|a|})/(1 + e^{-2|a|}); tanh' = 1 - tanh^2 (as the JAX path). */
INLINE void tanh_pair_f(float a, float *h, float *hp) {
    float E = expneg_f(-2.0f * fabsf(a));
    float v = copysignf((1.0f - E) / (1.0f + E), a);
    *h = v;
    *hp = 1.0f - v * v;
}

INLINE void act_pair_f(const int act, float a, float *h, float *hp) {
    if (act == SEQ_ERF) {
        erf_pair_f(a, h, hp);
    } else if (act == SEQ_TANH) {
        tanh_pair_f(a, h, hp);
    } else {
        *h = a <= 0.0f ? 0.0f : a; /* NaN stays NaN, as jnp.maximum */
        *hp = a > 0.0f ? 1.0f : 0.0f;
    }
}

/* Segment j = min(floor(k S / len), S - 1) holds the steps ceil(j len / S) <= k <
 * ceil((j + 1) len / S) (the clamp changes nothing for k < len): its end, exclusive. */
INLINE int64_t segment_end(int64_t j, int64_t len, int64_t S) {
    return ((j + 1) * len + S - 1) / S;
}

/* Write the f components of lanes [0, nb) (rows of `src`, stride LANES) times `mul` into
 * readout slot `slot` of the output rows (stride FR per omega). */
INLINE void write_slot(float *o, int64_t FR, int64_t slot, int64_t f, int64_t nb,
                       const float *src, float mul) {
    for (int64_t c = 0; c < f; ++c)
        for (int64_t q = 0; q < nb; ++q) o[q * FR + slot * f + c] = src[c * LANES + q] * mul;
}

/* One series, one block of nb <= LANES omegas starting at p0, into `o` (nb, FR): the block's
 * slab of the output row, staged in a cache-resident buffer (its strided readout writes would
 * otherwise each touch a distinct cache line of the large output). `st` holds the state rows
 * [H, dH/dw_1..d, dH/db, dH/du] (f rows of LANES), `acc` the running segment sums, `tmp` three
 * rows for a, sigma', b sigma'. D = 1: d is 1 at compile time and each step is one fused lane
 * loop; D = 0: any d, each step in three lane passes (gcc vectorises a lane loop only when no
 * runtime-length loop over the channels sits inside it). ACC (S > 0): the passes also add the
 * new state to the running sums. */
INLINE void scan_block(const int act, const int ntk, const int64_t D, const int ACC, int64_t len,
                       int64_t d,
                       int64_t P, int64_t p0, int64_t nb, const float *restrict x,
                       const float *restrict wT, const float *restrict b,
                       const float *restrict u, int last, int64_t S, float scale,
                       float *restrict o, float *restrict st, float *restrict acc,
                       float *restrict tmp) {
    if (D) d = D;
    const int64_t f = ntk ? d + 3 : 1, FR = f * ((last ? 1 : 0) + S);
    float *restrict h = st, *restrict gw = st + LANES, *restrict gb = st + (d + 1) * LANES;
    float *restrict gu = st + (d + 2) * LANES;
    float *restrict ta = tmp, *restrict ts = tmp + LANES, *restrict tsb = tmp + 2 * LANES;
    memset(st, 0, sizeof(float) * (size_t)(f * LANES));
    memset(acc, 0, sizeof(float) * (size_t)(f * LANES));
    memset(o, 0, sizeof(float) * (size_t)(nb * FR)); /* empty segments read 0 */
    int64_t seg = 0, count = 0, seg_end = S ? segment_end(0, len, S) : 0;
    const float *restrict wb = wT + p0, *restrict bb = b + p0, *restrict ub = u + p0;
    for (int64_t k = 0; k < len; ++k) {
        const float *restrict xk = x + k * d;
        if (D == 1) {
            const float x0 = xk[0];
#pragma omp simd
            for (int64_t q = 0; q < nb; ++q) {
                float a = ub[q] + bb[q] * h[q] + wb[q] * x0;
                float H, s;
                act_pair_f(act, a, &H, &s);
                if (ntk) {
                    float sb = s * bb[q];
                    float nw = s * x0 + sb * gw[q], nb_ = s * h[q] + sb * gb[q];
                    float nu = s + sb * gu[q];
                    gw[q] = nw;
                    gb[q] = nb_;
                    gu[q] = nu;
                    if (ACC) {
                        acc[LANES + q] += nw;
                        acc[2 * LANES + q] += nb_;
                        acc[3 * LANES + q] += nu;
                    }
                }
                h[q] = H;
                if (ACC) acc[q] += H;
            }
        } else {
#pragma omp simd
            for (int64_t q = 0; q < nb; ++q) ta[q] = ub[q] + bb[q] * h[q];
            for (int64_t c = 0; c < d; ++c) {
                const float xc = xk[c];
#pragma omp simd
                for (int64_t q = 0; q < nb; ++q) ta[q] += wb[c * P + q] * xc;
            }
#pragma omp simd
            for (int64_t q = 0; q < nb; ++q) {
                float H, s;
                act_pair_f(act, ta[q], &H, &s);
                if (ntk) {
                    float sb = s * bb[q];
                    ts[q] = s;
                    tsb[q] = sb;
                    float nb_ = s * h[q] + sb * gb[q], nu = s + sb * gu[q];
                    gb[q] = nb_;
                    gu[q] = nu;
                    if (ACC) {
                        acc[(d + 1) * LANES + q] += nb_;
                        acc[(d + 2) * LANES + q] += nu;
                    }
                }
                h[q] = H;
                if (ACC) acc[q] += H;
            }
            if (ntk) {
                for (int64_t c = 0; c < d; ++c) {
                    const float xc = xk[c];
                    float *restrict g = gw + c * LANES, *restrict ag = acc + (c + 1) * LANES;
#pragma omp simd
                    for (int64_t q = 0; q < nb; ++q) {
                        float v = ts[q] * xc + tsb[q] * g[q];
                        g[q] = v;
                        if (ACC) ag[q] += v;
                    }
                }
            }
        }
        if (!ACC) continue;
        ++count;
        if (k + 1 == seg_end) { /* segment `seg` ends at step k; skip the empty ones after it */
            write_slot(o, FR, (last ? 1 : 0) + seg, f, nb, acc, (1.0f / (float)count) * scale);
            memset(acc, 0, sizeof(float) * (size_t)(f * LANES));
            count = 0;
            do seg_end = segment_end(++seg, len, S);
            while (seg < S && seg_end <= k + 1);
        }
    }
    if (last) write_slot(o, FR, 0, f, nb, st, scale);
}

MULTIVERSION static void scan_rows(int act, int ntk, int64_t i0, int64_t i1, int64_t L,
                                   int64_t d, int64_t P, const float *xs,
                                   const int32_t *lengths, const float *wT, const float *b,
                                   const float *u, int last, int64_t S, float scale, float *out,
                                   float *work) {
    const int64_t f = ntk ? d + 3 : 1, FR = f * ((last ? 1 : 0) + S);
    float *st = work, *acc = work + f * LANES, *tmp = work + 2 * f * LANES;
    float *slab = work + (2 * f + 3) * LANES; /* (LANES, FR) */
    for (int64_t i = i0; i < i1; ++i) {
        int64_t len = lengths[i] < 0 ? 0 : (lengths[i] > L ? L : lengths[i]);
        const float *x = xs + i * L * d;
        for (int64_t p0 = 0; p0 < P; p0 += LANES) {
            int64_t nb = P - p0 < LANES ? P - p0 : LANES;
            float *o = slab;
#define SCAN(ACT, NTK, D, ACC) \
    scan_block(ACT, NTK, D, ACC, len, d, P, p0, nb, x, wT, b, u, last, S, scale, o, st, acc, tmp)
#define SCAN_D(ACT, NTK) \
    if (d == 1 && S) SCAN(ACT, NTK, 1, 1); \
    else if (d == 1) SCAN(ACT, NTK, 1, 0); \
    else if (S) SCAN(ACT, NTK, 0, 1); \
    else SCAN(ACT, NTK, 0, 0)
            if (ntk) {
                if (act == SEQ_ERF) SCAN_D(SEQ_ERF, 1);
                else if (act == SEQ_TANH) SCAN_D(SEQ_TANH, 1);
                else SCAN_D(SEQ_RELU, 1);
            } else {
                if (act == SEQ_ERF) SCAN_D(SEQ_ERF, 0);
                else if (act == SEQ_TANH) SCAN_D(SEQ_TANH, 0);
                else SCAN_D(SEQ_RELU, 0);
            }
#undef SCAN_D
#undef SCAN
            memcpy(out + (i * P + p0) * FR, slab, sizeof(float) * (size_t)(nb * FR));
        }
    }
}

/* Features of rows [i0, i1) into out (n, P, f R) float32: xs (n, L, d), lengths (n,) int32,
 * wT (d, P), b, u (P,); last: the last-state readout first; S >= 0 segment means after it
 * (S = 1: the time mean); work: (2 f + 3 + f R) LANES floats. Returns 0, or -1 for bad
 * arguments. */
EXPORT int rnnlimit_seq_features(int act, int ntk, int64_t i0, int64_t i1, int64_t L,
                                 int64_t d, int64_t P, const float *xs, const int32_t *lengths,
                                 const float *wT, const float *b, const float *u, int last,
                                 int64_t S, float scale, float *out, float *work) {
    if (act < SEQ_ERF || act > SEQ_RELU || i0 < 0 || i1 < i0 || L < 0 || d < 1 || P < 1 ||
        S < 0 || (!last && S == 0))
        return -1;
    scan_rows(act, ntk ? 1 : 0, i0, i1, L, d, P, xs, lengths, wT, b, u, last, S, scale, out,
              work);
    return 0;
}

/* sigma and sigma' of the kernel's float32 activations (tests) */
MULTIVERSION static void act_many_f(int act, int64_t n, const float *a, float *h, float *hp) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) act_pair_f(act, a[i], &h[i], &hp[i]);
}

EXPORT int rnnlimit_seq_act(int act, int64_t n, const float *a, float *h, float *hp) {
    if (act < SEQ_ERF || act > SEQ_RELU || n < 0) return -1;
    act_many_f(act, n, a, h, hp);
    return 0;
}
