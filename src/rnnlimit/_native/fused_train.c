/*
 * Native fast path of rnnlimit.train's truncated online SGD (MODEL.md §2-3), float64.
 *
 * rnnlimit_truncated() runs steps k0 <= k < k1 exactly as train._truncated_interval does: the
 * skewed single pass per step. Step k needs only the scalars e_k = Y_k - g_k and
 * S_{k+1} = psi(g_k); one pass over the units then applies the update with the stored
 * H_k = sigma(pre_k), sigma'(pre_k) and forms pre_{k+1}, H_{k+1}, sigma'_{k+1} and
 * sum_i c^i H^i_{k+1} from the new parameters, X_{k+1} and S_{k+1}. Each parameter column is a
 * contiguous (N,) vector. The unit loop is branch free (erf/tanh/exp as rational functions with
 * both branches blended by selects, one division per unit) so that gcc vectorises it under
 * `#pragma omp simd` (-fopenmp-simd); target_clones builds AVX-512, AVX2 and baseline versions
 * chosen at load time. No -ffast-math: NaN and Inf propagate and are detected.
 *
 * Exported (plain C ABI, loaded with ctypes by rnnlimit.native):
 *   rnnlimit_truncated(...)        the interval runner
 *   rnnlimit_act(...)              sigma and sigma' of the kernel's activations (tests)
 *   rnnlimit_exp(...)              the kernel's exp (tests)
 *   rnnlimit_abi_version()         bumped when a signature changes (also limit_pic.c's and seq_features.c's)
 *
 * Two threads (nthreads = 2, pthreads; the helper is created once per call and joined at its
 * end) share each step's pass: the units are cut into fixed chunks (<= 64, >= 512 units,
 * multiples of 8) that either thread claims from a generation-tagged atomic counter; each
 * chunk's partial sums sum_i c_j h_i go to that chunk's cache-line-padded slot and the leader
 * (the calling thread) adds the slots in chunk order once all are done, then does the scalar
 * per-step work alone. Dynamic claiming rather than fixed halves: on a loaded machine a
 * descheduled helper then stalls the leader for at most the chunk it holds, not a whole step.
 * The result does not depend on which thread ran which chunk (bit-identical run to run) and
 * differs from one thread only in the summation order of g. Waits spin with pause, then
 * sched_yield.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if !defined(_WIN32) && !defined(__STDC_NO_ATOMICS__) && \
    (defined(__unix__) || defined(__APPLE__))
#define HAVE_THREADS 1
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#else
#define HAVE_THREADS 0
#endif

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

/* --------------------------------------------------------------------------- the unit pass */
/* One pass over units [i0, i1): apply step k's update with the stored h, hp (scalars
 * ee_j = eta N^-b e_j, x_j, s_j), then form pre_{k+1} from the new parameters, xn, sn and
 * store h, hp; returns sum_i c_j h_i in g[j]. D, M (1 or 2 here) and ACT are compile-time after
 * inlining. With ee, x, s zero and h, hp zeroed the update adds exact zeros: that is the
 * interval's first (forward-only) pass. */
INLINE void unit_pass2(const int D, const int M, const int ACT, int64_t i0, int64_t i1,
                       int64_t N, double *restrict c, double *restrict w, double *restrict b,
                       double *restrict u, double *restrict h, double *restrict hp,
                       const double *ee, const double *x, const double *s, const double *xn,
                       const double *sn, double *g) {
    const double ee0 = ee[0], ee1 = M > 1 ? ee[1] : 0.0;
    const double x0 = x[0], x1 = D > 1 ? x[1] : 0.0;
    const double s0 = s[0], s1 = M > 1 ? s[1] : 0.0;
    const double xn0 = xn[0], xn1 = D > 1 ? xn[1] : 0.0;
    const double sn0 = sn[0], sn1 = M > 1 ? sn[1] : 0.0;
    double *restrict c0 = c, *restrict c1 = c + N;
    double *restrict w0 = w, *restrict w1 = w + N;
    double *restrict b0 = b, *restrict b1 = b + N;
    double g0 = 0.0, g1 = 0.0;
#pragma omp simd reduction(+ : g0, g1)
    for (int64_t i = i0; i < i1; ++i) {
        const double H = h[i];
        double C0 = c0[i], C1 = 0.0, W0 = w0[i], W1 = 0.0, B0 = b0[i], B1 = 0.0;
        if (M > 1) C1 = c1[i], B1 = b1[i];
        if (D > 1) W1 = w1[i];
        double ce = C0 * ee0;
        if (M > 1) ce = ce + C1 * ee1;
        const double q = ce * hp[i];
        C0 = C0 + H * ee0;
        c0[i] = C0;
        if (M > 1) C1 = C1 + H * ee1, c1[i] = C1;
        W0 = W0 + q * x0;
        w0[i] = W0;
        if (D > 1) W1 = W1 + q * x1, w1[i] = W1;
        B0 = B0 + q * s0;
        b0[i] = B0;
        if (M > 1) B1 = B1 + q * s1, b1[i] = B1;
        const double Uu = u[i] + q;
        u[i] = Uu;
        double pre = Uu + W0 * xn0;
        if (D > 1) pre = pre + W1 * xn1;
        pre = pre + B0 * sn0;
        if (M > 1) pre = pre + B1 * sn1;
        double Hn, HPn;
        act_pair(ACT, pre, &Hn, &HPn);
        h[i] = Hn;
        hp[i] = HPn;
        g0 += C0 * Hn;
        if (M > 1) g1 += C1 * Hn;
    }
    g[0] = g0;
    if (M > 1) g[1] = g1;
}

/* The same pass for any d, m (column loops at run time; not specialised). */
INLINE void unit_pass_any(const int ACT, int D, int M, int64_t i0, int64_t i1, int64_t N,
                          double *restrict c, double *restrict w, double *restrict b,
                          double *restrict u, double *restrict h, double *restrict hp,
                          const double *ee, const double *x, const double *s,
                          const double *xn, const double *sn, double *g) {
    for (int j = 0; j < M; ++j) g[j] = 0.0;
    for (int64_t i = i0; i < i1; ++i) {
        const double H = h[i];
        double ce = 0.0;
        for (int j = 0; j < M; ++j) ce = j ? ce + c[j * N + i] * ee[j] : c[i] * ee[0];
        const double q = ce * hp[i];
        for (int j = 0; j < M; ++j) c[j * N + i] = c[j * N + i] + H * ee[j];
        double pre = u[i] + q;
        u[i] = pre;
        for (int j = 0; j < D; ++j) {
            const double W = w[j * N + i] + q * x[j];
            w[j * N + i] = W;
            pre = pre + W * xn[j];
        }
        for (int j = 0; j < M; ++j) {
            const double B = b[j * N + i] + q * s[j];
            b[j * N + i] = B;
            pre = pre + B * sn[j];
        }
        double Hn, HPn;
        act_pair(ACT, pre, &Hn, &HPn);
        h[i] = Hn;
        hp[i] = HPn;
        for (int j = 0; j < M; ++j) g[j] += c[j * N + i] * Hn;
    }
}

/* --------------------------------------------------------------------------- the intervals */

#define MAX_DM 64

typedef struct {
    int64_t N, K;
    int d, m;
    double *c, *w, *b, *u, *h, *hp;
    const double *xs, *ys;
    double eta, scale;
    int clip;
    double *s;   /* (m,) in/out: S_{k0} -> S_{k1} */
    double *acc; /* (1 + 2m,) out: sum loss, sum S, sum S^2 */
    int64_t *bad;
    double *trace;
    int64_t trace_stride;
} job_t;

#define MAX_CHUNKS 64
#define MIN_CHUNK 512
#define SPINS_BEFORE_YIELD 2000

/* Shared by the two threads of one call. The leader (thread 0) publishes each pass's scalars,
 * then sets `claim` = gen << 32 (release); both threads claim chunk indices by CAS on `claim`
 * (a stale generation claims nothing), run the pass over that chunk into part[chunk] and
 * count it in `done`. The leader waits for done == nchunks and sums part[0..nchunks) in
 * order. */
typedef struct {
#if HAVE_THREADS
    _Alignas(64) _Atomic uint64_t claim;
    _Alignas(64) atomic_int_fast64_t done;
    _Alignas(64) atomic_int quit;
#endif
    _Alignas(64) const double *ee, *x, *s, *xn, *sn;
    int64_t nchunks, chunk;
    int nt;
    _Alignas(64) double part[MAX_CHUNKS][MAX_DM]; /* 512 B (cache-line multiple) per chunk */
} shared_t;

INLINE void spin_pause(int *spins) {
#if HAVE_THREADS
    if (*spins < SPINS_BEFORE_YIELD) {
        ++*spins;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        sched_yield();
    }
#else
    (void)spins;
#endif
}

#if HAVE_THREADS
/* Claim the next chunk of generation gen; -1 when none is left (or gen is stale). */
INLINE int64_t claim_chunk(shared_t *S, uint64_t gen) {
    uint64_t cur = atomic_load_explicit(&S->claim, memory_order_acquire);
    for (;;) {
        if ((cur >> 32) != gen || (int64_t)(cur & 0xffffffffu) >= S->nchunks) return -1;
        if (atomic_compare_exchange_weak_explicit(&S->claim, &cur, cur + 1,
                                                  memory_order_acq_rel, memory_order_acquire))
            return (int64_t)(cur & 0xffffffffu);
    }
}
#endif

/* D, M > 0: specialised pass; D = M = 0: generic pass with J->d, J->m. */
#define PASS(I0, I1, EE, X, S_, XN, SN, G)                                                     \
    do {                                                                                       \
        if (D)                                                                                 \
            unit_pass2(D, M, ACT, I0, I1, N, J->c, J->w, J->b, J->u, J->h, J->hp, EE, X, S_,    \
                       XN, SN, G);                                                             \
        else                                                                                   \
            unit_pass_any(ACT, d, m, I0, I1, N, J->c, J->w, J->b, J->u, J->h, J->hp, EE, X,     \
                          S_, XN, SN, G);                                                      \
    } while (0)

/* Claim and run chunks of generation gen until none is left. */
INLINE void run_chunks(const int D, const int M, const int ACT, job_t *J, shared_t *S,
                       uint64_t gen) {
#if HAVE_THREADS
    const int d = D ? D : J->d, m = M ? M : J->m;
    const int64_t N = J->N;
    int64_t ch;
    while ((ch = claim_chunk(S, gen)) >= 0) {
        const int64_t i0 = ch * S->chunk, i1 = i0 + S->chunk < N ? i0 + S->chunk : N;
        PASS(i0, i1, S->ee, S->x, S->s, S->xn, S->sn, S->part[ch]);
        atomic_fetch_add_explicit(&S->done, 1, memory_order_release);
    }
#else
    (void)J, (void)S, (void)gen;
#endif
}

/* The leader's pass with a helper: publish, work, wait, reduce in chunk order into g. */
INLINE void par_pass(const int D, const int M, const int ACT, job_t *J, shared_t *S,
                     uint64_t gen, const double *ee, const double *x, const double *s,
                     const double *xn, const double *sn, double *g) {
#if HAVE_THREADS
    const int m = M ? M : J->m;
    S->ee = ee, S->x = x, S->s = s, S->xn = xn, S->sn = sn;
    atomic_store_explicit(&S->done, 0, memory_order_relaxed);
    atomic_store_explicit(&S->claim, gen << 32, memory_order_release);
    run_chunks(D, M, ACT, J, S, gen);
    int spins = 0;
    while (atomic_load_explicit(&S->done, memory_order_acquire) < S->nchunks) spin_pause(&spins);
    for (int j = 0; j < m; ++j) g[j] = 0.0;
    for (int64_t ch = 0; ch < S->nchunks; ++ch)
        for (int j = 0; j < m; ++j) g[j] += S->part[ch][j];
#else
    (void)J, (void)S, (void)gen, (void)ee, (void)x, (void)s, (void)xn, (void)sn, (void)g;
#endif
}

/* The helper thread: run chunks of each new generation until told to quit. */
INLINE int64_t helper_loop(const int D, const int M, const int ACT, job_t *J, shared_t *S) {
#if HAVE_THREADS
    uint64_t seen = 0;
    int spins = 0;
    while (!atomic_load_explicit(&S->quit, memory_order_acquire)) {
        const uint64_t gen = atomic_load_explicit(&S->claim, memory_order_acquire) >> 32;
        if (gen == seen) {
            spin_pause(&spins);
            continue;
        }
        spins = 0;
        run_chunks(D, M, ACT, J, S, gen);
        seen = gen;
    }
#else
    (void)J, (void)S;
#endif
    return 0;
}

/* tid 0 runs the steps (with S->nt = 2 the passes are shared with the helper, tid 1). */
INLINE int64_t run_interval(const int D, const int M, const int ACT, job_t *J, int64_t k0,
                            int64_t k1, int tid, shared_t *S) {
    if (tid) return helper_loop(D, M, ACT, J, S);
    const int d = D ? D : J->d, m = M ? M : J->m;
    const int64_t N = J->N, last = J->K - 1;
    const int par = S->nt > 1;
    uint64_t gen = 0;
    const double a = J->scale, ea = J->eta * J->scale;
    double g[MAX_DM], s[MAX_DM], sn[MAX_DM], ee[MAX_DM], s1[MAX_DM], s2[MAX_DM], zero[MAX_DM];
    double loss_acc = 0.0;
    int64_t bad = *J->bad;
    for (int j = 0; j < MAX_DM; ++j) zero[j] = 0.0;
    for (int j = 0; j < m; ++j) s[j] = J->s[j], s1[j] = 0.0, s2[j] = 0.0;
    memset(J->h, 0, (size_t)N * sizeof(double));
    memset(J->hp, 0, (size_t)N * sizeof(double));
    const double *x0 = J->xs + k0 * d;
    if (par)
        par_pass(D, M, ACT, J, S, ++gen, zero, zero, zero, x0, s, g);
    else
        PASS(0, N, zero, zero, zero, x0, s, g);
    for (int j = 0; j < m; ++j) g[j] *= a;
    int64_t k;
    for (k = k0; k < k1; ++k) {
        const double *x = J->xs + k * d, *y = J->ys + k * m;
        double loss = 0.0;
        for (int j = 0; j < m; ++j) {
            const double e = y[j] - g[j], gj = g[j];
            loss += e * e;
            ee[j] = e * ea;
            sn[j] = psi_clip(J->clip, gj);
        }
        loss *= 0.5;
        loss_acc += loss;
        for (int j = 0; j < m; ++j) s1[j] += s[j], s2[j] += s[j] * s[j];
        if (J->trace_stride && k % J->trace_stride == 0) {
            double *row = J->trace + (k / J->trace_stride) * 3 * m;
            for (int j = 0; j < m; ++j) row[j] = s[j], row[m + j] = g[j], row[2 * m + j] = y[j];
        }
        if (!isfinite(loss)) {
            if (bad < 0) bad = k;
            ++k;
            break; /* the caller stops here and keeps the interval's starting parameters */
        }
        const double *xn = J->xs + (k + 1 < last ? k + 1 : last) * d;
        if (par)
            par_pass(D, M, ACT, J, S, ++gen, ee, x, s, xn, sn, g);
        else
            PASS(0, N, ee, x, s, xn, sn, g);
        for (int j = 0; j < m; ++j) g[j] *= a, s[j] = sn[j];
    }
    for (int j = 0; j < m; ++j) J->s[j] = s[j], J->acc[1 + j] = s1[j], J->acc[1 + m + j] = s2[j];
    J->acc[0] = loss_acc;
    *J->bad = bad;
    return k;
}

#define CASE_ACT(D, M)                                                                         \
    switch (act) {                                                                             \
    case ACT_ERF: return run_interval(D, M, ACT_ERF, J, k0, k1, tid, S);                               \
    case ACT_TANH: return run_interval(D, M, ACT_TANH, J, k0, k1, tid, S);                             \
    default: return run_interval(D, M, ACT_RELU, J, k0, k1, tid, S);                                   \
    }

MULTIVERSION static int64_t dispatch(int act, job_t *J, int64_t k0, int64_t k1, int tid,
                                     shared_t *S) {
    const int dm = J->d * 10 + J->m;
    switch (dm) {
    case 11: CASE_ACT(1, 1)
    case 12: CASE_ACT(1, 2)
    case 21: CASE_ACT(2, 1)
    case 22: CASE_ACT(2, 2)
    default: CASE_ACT(0, 0)
    }
}

#if HAVE_THREADS
typedef struct {
    int act;
    job_t *J;
    int64_t k0, k1;
    shared_t *S;
} worker_t;

static void *worker_main(void *arg) {
    worker_t *W = (worker_t *)arg;
    dispatch(W->act, W->J, W->k0, W->k1, 1, W->S);
    return NULL;
}
#endif

/* Steps k0 <= k < k1 of truncated online SGD; returns the step after the last one run (k1, or
 * bad + 1 when step `bad` produced a non-finite loss: *bad is set and the run stops there).
 * Layout: c (m, N), w (d, N), b (m, N), u (N), h and hp (N) scratch, xs (K, d), ys (K, m)
 * row-major; trace (ceil(K / stride), 3m) rows (S_k, g_k, Y_k) or NULL with stride 0.
 * nthreads (1 or 2) splits the units between that many threads (1 when N < 1024 or threads are
 * not built in; 1 also when the second thread cannot be created). Returns -1 on unsupported
 * arguments. */
EXPORT int64_t rnnlimit_truncated(int64_t N, int d, int m, int act, int clip, double *c,
                                  double *w, double *b, double *u, double *h, double *hp,
                                  const double *xs, const double *ys, int64_t K, int64_t k0,
                                  int64_t k1, double eta, double scale, double *s, double *acc,
                                  int64_t *bad, double *trace, int64_t trace_stride,
                                  int nthreads) {
    if (nthreads < 1 || nthreads > 2 || N < 1 || d < 1 || d > MAX_DM || m < 1 || m > MAX_DM || act < 0 || act > 2 || clip < 0 ||
        clip > 1 || k0 < 0 || k1 < k0 || k1 > K || (trace_stride && !trace) || trace_stride < 0)
        return -1;
    job_t J = {N, K, d, m, c, w, b, u, h, hp, xs, ys, eta, scale, clip, s, acc, bad, trace,
               trace_stride};
    static shared_t S0; /* zero template; S itself is on this call's stack */
    shared_t S = S0;
    S.nt = 1;
#if HAVE_THREADS
    if (nthreads == 2 && N >= 2 * MIN_CHUNK && k1 > k0) {
        int64_t chunk = (N + MAX_CHUNKS - 1) / MAX_CHUNKS;
        chunk = chunk < MIN_CHUNK ? MIN_CHUNK : chunk;
        chunk = (chunk + 7) & ~(int64_t)7;
        S.chunk = chunk;
        S.nchunks = (N + chunk - 1) / chunk;
        atomic_init(&S.claim, 0);
        atomic_init(&S.done, 0);
        atomic_init(&S.quit, 0);
        S.nt = 2;
        worker_t W = {act, &J, k0, k1, &S};
        pthread_t th;
        if (pthread_create(&th, NULL, worker_main, &W) == 0) {
            const int64_t k = dispatch(act, &J, k0, k1, 0, &S);
            atomic_store_explicit(&S.quit, 1, memory_order_release);
            pthread_join(th, NULL);
            return k;
        }
        S.nt = 1;
    }
#endif
    return dispatch(act, &J, k0, k1, 0, &S);
}

/* Whether nthreads = 2 is built in. */
EXPORT int rnnlimit_threads_supported(void) { return HAVE_THREADS; }

/* Largest d and m accepted. */
EXPORT int rnnlimit_max_dm(void) { return MAX_DM; }

MULTIVERSION static void act_many(int act, int64_t n, const double *a, double *h, double *hp) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        double H, HP;
        if (act == ACT_ERF)
            erf_pair(a[i], &H, &HP);
        else if (act == ACT_TANH)
            tanh_pair(a[i], &H, &HP);
        else
            relu_pair(a[i], &H, &HP);
        h[i] = H;
        hp[i] = HP;
    }
}

MULTIVERSION static void exp_many(int64_t n, const double *x, double *y) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = exp_inline(x[i]);
}

/* sigma(a) and sigma'(a) elementwise, as the kernel computes them. */
EXPORT int rnnlimit_act(int act, int64_t n, const double *a, double *h, double *hp) {
    if (act < 0 || act > 2 || n < 0) return -1;
    act_many(act, n, a, h, hp);
    return 0;
}

/* e^x elementwise, as the kernel computes it. */
EXPORT int rnnlimit_exp(int64_t n, const double *x, double *y) {
    if (n < 0) return -1;
    exp_many(n, x, y);
    return 0;
}

EXPORT int rnnlimit_abi_version(void) { return 4; }
