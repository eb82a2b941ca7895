/*
 * The float64 activations of the native trainer (fused_train.c, docs/model.md §2): sigma and sigma'
 * for erf, tanh and relu, and exp, all branch free (rational functions, both branches blended
 * by bit selects, one division per call) so that the unit loops vectorise under
 * `#pragma omp simd`. No -ffast-math: NaN and Inf propagate.
 */
#ifndef RNNLIMIT_FUSED_MATH_H
#define RNNLIMIT_FUSED_MATH_H

#include "rnnlimit_native.h"

enum { ACT_ERF = 0, ACT_TANH = 1, ACT_RELU = 2 };

/* ------------------------------------------------------------------------------------- exp */
/* Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, and the Cephes exp.c Pade form
 * e^r = (Q(r^2) + r P(r^2)) / (Q(r^2) - r P(r^2)). The caller does the division (so it can
 * share it); 2^k is applied as two exact powers of two built from the exponent bits, which
 * keeps gradual underflow and overflow to inf right. NaN propagates through r. */

static const double EXP_P0 = 1.26177193074810590878e-4;
static const double EXP_P1 = 3.02994407707441961300e-2;
static const double EXP_P2 = 9.99999999999999999910e-1;
static const double EXP_Q0 = 3.00198505138664455042e-6;
static const double EXP_Q1 = 2.52448340349684104192e-3;
static const double EXP_Q2 = 2.27265548208155028766e-1;
static const double EXP_Q3 = 2.00000000000000000009e0;
static const double LOG2E = 1.4426950408889634073599;
static const double LN2_HI = 6.93145751953125e-1;
static const double LN2_LO = 1.42860682030941723212e-6;
static const double SHIFTER = 6755399441055744.0; /* 1.5 * 2^52 */

/* Bitwise select (mask all ones or zero): keeps the compiler from moving the division of a
 * selected operand into both branches (it would then divide twice). */
INLINE int64_t mask_of(int cond) { return -(int64_t)cond; }

INLINE double sel(int64_t mask, double x, double y) {
    return bits_to_double((double_to_bits(x) & (uint64_t)mask) |
                          (double_to_bits(y) & ~(uint64_t)mask));
}

/* Cody–Waite reduction x = k ln2 + r and the Padé form e^r = ne / de; returns k. */
INLINE int64_t exp_reduce(double x, double *ne, double *de) {
    double kd = x * LOG2E + SHIFTER;
    int64_t k = (int64_t)(double_to_bits(kd) - double_to_bits(SHIFTER));
    kd -= SHIFTER;
    double r = x - kd * LN2_HI;
    r = r - kd * LN2_LO;
    double rr = r * r;
    double px = r * ((EXP_P0 * rr + EXP_P1) * rr + EXP_P2);
    double qx = ((EXP_Q0 * rr + EXP_Q1) * rr + EXP_Q2) * rr + EXP_Q3;
    *ne = qx + px;
    *de = qx - px;
    return k;
}

/* e^x = (ne * s1 * s2) / de */
INLINE void exp_parts(double x, double *ne, double *de, double *s1, double *s2) {
    x = x < -746.0 ? -746.0 : x; /* comparisons are false for NaN: it passes */
    x = x > 710.0 ? 710.0 : x;
    int64_t k = exp_reduce(x, ne, de);
    int64_t k1 = k >> 1;
    int64_t k2 = k - k1;
    *s1 = bits_to_double((uint64_t)(k1 + 1023) << 52);
    *s2 = bits_to_double((uint64_t)(k2 + 1023) << 52);
}

/* The same with one power of two, for the activations: `neg` (x <= 0, erf) clamps x at -708,
 * else (x >= 0, tanh) at 709, so 2^k stays normal. Past the clamp erf' is ~1e-308 instead of a
 * subnormal or zero (absolute error below 4e-308) and tanh is +-1 either way. */
INLINE void exp_parts1(const int neg, double x, double *ne, double *de, double *s) {
    if (neg)
        x = x < -708.0 ? -708.0 : x;
    else
        x = x > 709.0 ? 709.0 : x;
    int64_t k = exp_reduce(x, ne, de);
    *s = bits_to_double((uint64_t)(k + 1023) << 52);
}

INLINE double exp_inline(double x) {
    double ne, de, s1, s2;
    exp_parts(x, &ne, &de, &s1, &s2);
    return ((ne / de) * s1) * s2;
}

/* ------------------------------------------------------------------------------------- erf */
/* Cephes ndtr.c, as rnnlimit.fastmath: erf(a) = a T(t)/U(t) for |a| < 1 (t = a^2),
 * erf(a) = sign(a) (1 - e^{-t} P(|a|)/Q(|a|)) for |a| >= 1 (|a| clamped at 8 inside P/Q).
 * One division serves erf and erf' = 2/sqrt(pi) e^{-t}: with e^{-t} = E/de,
 * inv = 1/(de R) (R = U or Q), erf' = c E R inv, small: a T de inv, large: E P inv. */

static const double TWO_OVER_SQRT_PI = 1.1283791670955126;

#define ERF_P0 2.46196981473530512524e-10
#define ERF_P1 5.64189564831068821977e-1
#define ERF_P2 7.46321056442269912687e0
#define ERF_P3 4.86371970985681366614e1
#define ERF_P4 1.96520832956077098242e2
#define ERF_P5 5.26445194995477358631e2
#define ERF_P6 9.34528527171957607540e2
#define ERF_P7 1.02755188689515710272e3
#define ERF_P8 5.57535335369399327526e2
#define ERF_Q1 1.32281951154744992508e1
#define ERF_Q2 8.67072140885989742329e1
#define ERF_Q3 3.54937778887819891062e2
#define ERF_Q4 9.75708501743205489753e2
#define ERF_Q5 1.82390916687909736289e3
#define ERF_Q6 2.24633760818710981792e3
#define ERF_Q7 1.65666309194161350182e3
#define ERF_Q8 5.57535340817727675546e2
#define ERF_T0 9.60497373987051638749e0
#define ERF_T1 9.00260197203842689217e1
#define ERF_T2 2.23200534594684319226e3
#define ERF_T3 7.00332514112805075473e3
#define ERF_T4 5.55923013010394962768e4
#define ERF_U1 3.35617141647503099647e1
#define ERF_U2 5.21357949780152679795e2
#define ERF_U3 4.59432382970980127987e3
#define ERF_U4 2.26290000613890934246e4
#define ERF_U5 4.92673942608635921086e4

INLINE void erf_pair(double a, double *h, double *hp) {
    double t = a * a;
    double ne, de, s1;
    exp_parts1(1, -t, &ne, &de, &s1);
    double E = ne * s1;
    double ax = fabs(a);
    const int64_t small = mask_of(ax < 1.0);
    double xl = ax > 8.0 ? 8.0 : ax;
    double T = (((ERF_T0 * t + ERF_T1) * t + ERF_T2) * t + ERF_T3) * t + ERF_T4;
    double U = ((((t + ERF_U1) * t + ERF_U2) * t + ERF_U3) * t + ERF_U4) * t + ERF_U5;
    double P = (((((((ERF_P0 * xl + ERF_P1) * xl + ERF_P2) * xl + ERF_P3) * xl + ERF_P4) * xl +
                  ERF_P5) * xl + ERF_P6) * xl + ERF_P7) * xl + ERF_P8;
    double Q = (((((((xl + ERF_Q1) * xl + ERF_Q2) * xl + ERF_Q3) * xl + ERF_Q4) * xl + ERF_Q5) *
                 xl + ERF_Q6) * xl + ERF_Q7) * xl + ERF_Q8;
    double R = sel(small, U, Q);
    double num = sel(small, (a * T) * de, E * P);
    double inv = 1.0 / (de * R);
    double r = num * inv;
    *h = sel(small, r, copysign(1.0 - r, a));
    *hp = TWO_OVER_SQRT_PI * ((E * R) * inv);
}

/* ------------------------------------------------------------------------------------ tanh */
/* Cephes tanh.c: |a| < 0.625: a + a t P(t)/Q(t) (t = a^2); else sign(a)(1 - 2/(e^{2|a|} + 1)),
 * and with e^{2|a|} = E/de: 2/(e + 1) = 2 de/(E + de). One division. tanh' = 1 - tanh^2
 * (as the JAX path). */

#define TANH_P0 -9.64399179425052238628e-1
#define TANH_P1 -9.92877231001918586564e1
#define TANH_P2 -1.61468768441708447952e3
#define TANH_Q1 1.12811678491632931402e2
#define TANH_Q2 2.23548839060100448583e3
#define TANH_Q3 4.84406305325125486048e3

INLINE double tanh_inline(double a) {
    double ax = fabs(a);
    const int64_t small = mask_of(ax < 0.625);
    double ne, de, s1;
    exp_parts1(0, ax + ax, &ne, &de, &s1);
    double E = ne * s1;
    double t = a * a;
    double P = (TANH_P0 * t + TANH_P1) * t + TANH_P2;
    double Q = ((t + TANH_Q1) * t + TANH_Q2) * t + TANH_Q3;
    double num = sel(small, (a * t) * P, de + de);
    double den = sel(small, Q, E + de);
    double r = num / den;
    return sel(small, a + r, copysign(1.0 - r, a));
}

INLINE void tanh_pair(double a, double *h, double *hp) {
    double v = tanh_inline(a);
    *h = v;
    *hp = 1.0 - v * v;
}

INLINE void relu_pair(double a, double *h, double *hp) {
    *h = a <= 0.0 ? 0.0 : a; /* NaN stays NaN, as jnp.maximum */
    *hp = a > 0.0 ? 1.0 : 0.0;
}

INLINE void act_pair(int act, double a, double *h, double *hp) {
    if (act == ACT_ERF)
        erf_pair(a, h, hp);
    else if (act == ACT_TANH)
        tanh_pair(a, h, hp);
    else
        relu_pair(a, h, hp);
}

#endif
