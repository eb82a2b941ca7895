/*
 * Native fast path of rnnlimit.train's online SGD (docs/model.md §2-3), float64, both gradients:
 * truncated (G_k = grad_theta g(X_k, S_k), S_k an input) and RTRL (G_k = D_k, the derivative
 * through the memory, D_k = grad_theta g(Z_k) + ds_k J_k, J_{k+1} = psi'(g_k) D_k, J_0 = 0).
 *
 * rnnlimit_train() runs steps k0 <= k < k1 as rnnlimit.steps does: one skewed pass over the
 * units per step (fused_passes.h). Step k needs only scalars: e_k = Y_k - g_k, S_{k+1} =
 * psi(g_k) and, for RTRL, the m x m memory derivative ds_k = dg_k/dS_k (a sum over units formed
 * by the previous pass, like g_k). One pass then applies the update with the stored
 * H_k = sigma(pre_k), sigma'(pre_k) (and D_{k-1}) and forms pre_{k+1}, H_{k+1},
 * sigma'_{k+1} and the sums for g_{k+1} (and ds_{k+1}) from the new parameters, X_{k+1} and
 * S_{k+1}. The unit loops are branch free (fused_math.h) so that gcc vectorises them under
 * `#pragma omp simd` (-fopenmp-simd); target_clones builds AVX-512, AVX2 and baseline
 * versions chosen at load time. No -ffast-math: NaN and Inf propagate and are detected.
 * RTRL costs O(N m (d + 2m + 1)) per step: m sensitivity columns per parameter column.
 *
 * A step stops the run (*bad = k) when its loss is non-finite or some |g_k,j| exceeds `bound`
 * (runaway growth: the targets lie in [-1, 1]^m).
 *
 * Exported (plain C ABI, loaded with ctypes by rnnlimit.nativelib):
 *   rnnlimit_train(...)            the interval runner
 *   rnnlimit_act(...)              sigma and sigma' of the kernel's activations (tests)
 *   rnnlimit_exp(...)              the kernel's exp (tests)
 *   rnnlimit_limits(...)           the size limits of rnnlimit_native.h (checked at load)
 *   rnnlimit_abi_version()         bumped when a signature changes (also limit_pic.c's and
 *                                  seq_features.c's)
 *
 * Two threads (nthreads = 2, pthreads; the helper is created once per call and joined at its
 * end) share each step's pass: the units are cut into fixed chunks (<= 64, >= 512 units,
 * multiples of 8) that either thread claims from a generation-tagged atomic counter; each
 * chunk's partial sums go to that chunk's cache-line-padded slot and the leader (the calling
 * thread) adds the slots in chunk order once all are done, then does the scalar per-step work
 * alone. Dynamic claiming rather than fixed halves: on a loaded machine a descheduled helper
 * then stalls the leader for at most the chunk it holds, not a whole step. The result does not
 * depend on which thread ran which chunk (bit-identical run to run) and differs from one
 * thread only in the summation order of the sums over units. Waits spin with pause, then
 * sched_yield.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
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

#include "fused_passes.h"
#include "rnnlimit_native.h"

/* --------------------------------------------------------------------------- the intervals */

typedef struct {
    net_t net;
    int64_t K;
    int clip;
    const double *xs, *ys;
    double eta, bound;
    double *s;   /* (m,) in/out: S_{k0} -> S_{k1} */
    double *psp; /* (m,) in/out, RTRL: psi'(g_{k0-1}) -> psi'(g_{k1-1}) */
    double *acc; /* (1 + 2m,) out: sum loss, sum S, sum S^2 */
    int64_t *bad;
    double *trace;
    int64_t trace_stride;
    double *red, *dsp; /* leader's sums (m + m^2) and dsp (m^2) */
    double *wk[2];     /* per-thread scratch of the *_pass_any loops */
} job_t;

#define MAX_CHUNKS 64
#define MIN_CHUNK 512
#define SPINS_BEFORE_YIELD 2000

/* Shared by the two threads of one call. The leader (thread 0) publishes each pass's step,
 * then sets `claim` = gen << 32 (release); both threads claim chunk indices by CAS on `claim`
 * (a stale generation claims nothing), run the pass over that chunk into part + chunk * pstride
 * and count it in `done`. The leader waits for done == nchunks and sums the slots in order. */
typedef struct {
#if HAVE_THREADS
    _Alignas(64) _Atomic uint64_t claim;
    _Alignas(64) atomic_int_fast64_t done;
    _Alignas(64) atomic_int quit;
#endif
    _Alignas(64) const step_t *st;
    int64_t nchunks, chunk, pstride;
    int nt;
    double *part; /* (nchunks, pstride), pstride a multiple of 8 doubles (64 B) */
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

/* One pass over units [i0, i1): forward only, or a step of the gradient RT (0 truncated,
 * 1 RTRL); D, M > 0: the fused form, D = M = 0: the blocked form for any d, m. */
INLINE void do_pass(const int D, const int M, const int ACT, const int RT, const job_t *J,
                    int64_t i0, int64_t i1, const step_t *st, double *out, double *wk) {
    if (st->fwd)
        fwd_pass(ACT, RT, &J->net, i0, i1, st->xn, st->sn, out);
    else if (RT && D)
        rtrl_pass2(D, M, ACT, &J->net, i0, i1, st, out);
    else if (RT)
        rtrl_pass_any(ACT, &J->net, i0, i1, st, out, wk);
    else if (D)
        trunc_pass2(D, M, ACT, &J->net, i0, i1, st, out);
    else
        trunc_pass_any(ACT, &J->net, i0, i1, st, out, wk);
}

/* Claim and run chunks of generation gen until none is left. */
INLINE void run_chunks(const int D, const int M, const int ACT, const int RT, const job_t *J,
                       shared_t *S, uint64_t gen, double *wk) {
#if HAVE_THREADS
    const int64_t N = J->net.N;
    int64_t ch;
    while ((ch = claim_chunk(S, gen)) >= 0) {
        const int64_t i0 = ch * S->chunk, i1 = i0 + S->chunk < N ? i0 + S->chunk : N;
        do_pass(D, M, ACT, RT, J, i0, i1, S->st, S->part + ch * S->pstride, wk);
        atomic_fetch_add_explicit(&S->done, 1, memory_order_release);
    }
#else
    (void)J, (void)S, (void)gen, (void)wk;
#endif
}

/* A pass over all units into out (nout sums): alone, or with the helper (publish, work, wait,
 * reduce in chunk order). */
INLINE void pass(const int D, const int M, const int ACT, const int RT, const job_t *J,
                 shared_t *S, uint64_t gen, const step_t *st, double *out, int nout) {
#if HAVE_THREADS
    if (S->nt > 1) {
        S->st = st;
        atomic_store_explicit(&S->done, 0, memory_order_relaxed);
        atomic_store_explicit(&S->claim, gen << 32, memory_order_release);
        run_chunks(D, M, ACT, RT, J, S, gen, J->wk[0]);
        int spins = 0;
        while (atomic_load_explicit(&S->done, memory_order_acquire) < S->nchunks)
            spin_pause(&spins);
        for (int j = 0; j < nout; ++j) out[j] = 0.0;
        for (int64_t ch = 0; ch < S->nchunks; ++ch)
            for (int j = 0; j < nout; ++j) out[j] += S->part[ch * S->pstride + j];
        return;
    }
#endif
    (void)S, (void)gen, (void)nout;
    do_pass(D, M, ACT, RT, J, 0, J->net.N, st, out, J->wk[0]);
}

/* The helper thread: run chunks of each new generation until told to quit. */
INLINE int64_t helper_loop(const int D, const int M, const int ACT, const int RT, job_t *J,
                           shared_t *S) {
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
        run_chunks(D, M, ACT, RT, J, S, gen, J->wk[1]);
        seen = gen;
    }
#else
    (void)J, (void)S;
#endif
    return 0;
}

/* tid 0 runs the steps (with S->nt = 2 the passes are shared with the helper, tid 1). */
INLINE int64_t run_interval(const int D, const int M, const int ACT, const int RT, job_t *J,
                            int64_t k0, int64_t k1, int tid, shared_t *S) {
    if (tid) return helper_loop(D, M, ACT, RT, J, S);
    const int d = D ? D : J->net.d, m = M ? M : J->net.m, nout = RT ? m + m * m : m;
    const int64_t last = J->K - 1;
    uint64_t gen = 0;
    const double a = J->net.a, ea = RT ? J->eta : J->eta * a;
    double g[MAX_DM], s[MAX_DM], sn[MAX_DM], ee[MAX_DM], s1[MAX_DM], s2[MAX_DM];
    double psp[MAX_DM], psn[MAX_DM];
    double *red = J->red, *dsp = J->dsp;
    double loss_acc = 0.0;
    int64_t bad = *J->bad;
    for (int j = 0; j < m; ++j) s[j] = J->s[j], s1[j] = 0.0, s2[j] = 0.0;
    if (RT)
        for (int j = 0; j < m; ++j) psp[j] = J->psp[j];
    step_t st = {NULL, NULL, NULL, J->xs + k0 * d, s, NULL, 1};
    pass(D, M, ACT, RT, J, S, ++gen, &st, red, nout);
    st.fwd = 0, st.ee = ee, st.sn = sn, st.dsp = dsp;
    int64_t k;
    for (k = k0; k < k1; ++k) {
        const double *x = J->xs + k * d, *y = J->ys + k * m;
        double loss = 0.0;
        int runaway = 0;
        for (int j = 0; j < m; ++j) {
            g[j] = red[j] * a;
            const double e = y[j] - g[j];
            loss += e * e;
            ee[j] = e * ea;
            sn[j] = psi_clip(J->clip, g[j]);
            runaway |= !(fabs(g[j]) <= J->bound); /* true for NaN too */
        }
        loss *= 0.5;
        loss_acc += loss;
        for (int j = 0; j < m; ++j) s1[j] += s[j], s2[j] += s[j] * s[j];
        if (J->trace_stride && k % J->trace_stride == 0) {
            double *row = J->trace + (k / J->trace_stride) * 3 * m;
            for (int j = 0; j < m; ++j) row[j] = s[j], row[m + j] = g[j], row[2 * m + j] = y[j];
        }
        if (!isfinite(loss) || runaway) {
            if (bad < 0) bad = k;
            ++k;
            break; /* the caller stops here and keeps the interval's starting parameters */
        }
        if (RT)
            for (int j = 0; j < m; ++j) {
                psn[j] = psi_prime(J->clip, g[j]);
                for (int r = 0; r < m; ++r) dsp[j * m + r] = (red[m + j * m + r] * a) * psp[r];
            }
        st.x = x, st.s = s, st.xn = J->xs + (k + 1 < last ? k + 1 : last) * d;
        pass(D, M, ACT, RT, J, S, ++gen, &st, red, nout);
        for (int j = 0; j < m; ++j) s[j] = sn[j];
        if (RT)
            for (int j = 0; j < m; ++j) psp[j] = psn[j];
    }
    for (int j = 0; j < m; ++j) J->s[j] = s[j], J->acc[1 + j] = s1[j], J->acc[1 + m + j] = s2[j];
    if (RT)
        for (int j = 0; j < m; ++j) J->psp[j] = psp[j];
    J->acc[0] = loss_acc;
    *J->bad = bad;
    return k;
}

#define CASE_ACT(D, M, RT)                                                                     \
    switch (act) {                                                                             \
    case ACT_ERF: return run_interval(D, M, ACT_ERF, RT, J, k0, k1, tid, S);                   \
    case ACT_TANH: return run_interval(D, M, ACT_TANH, RT, J, k0, k1, tid, S);                 \
    default: return run_interval(D, M, ACT_RELU, RT, J, k0, k1, tid, S);                       \
    }

#define CASE_DM(RT)                                                                            \
    switch (J->net.d * 10 + J->net.m) {                                                        \
    case 11: CASE_ACT(1, 1, RT)                                                                \
    case 12: CASE_ACT(1, 2, RT)                                                                \
    case 21: CASE_ACT(2, 1, RT)                                                                \
    case 22: CASE_ACT(2, 2, RT)                                                                \
    default: CASE_ACT(0, 0, RT)                                                                \
    }

MULTIVERSION static int64_t dispatch(int act, int rtrl, job_t *J, int64_t k0, int64_t k1,
                                     int tid, shared_t *S) {
    if (rtrl) CASE_DM(1)
    CASE_DM(0)
}

#if HAVE_THREADS
typedef struct {
    int act, rtrl;
    job_t *J;
    int64_t k0, k1;
    shared_t *S;
} worker_t;

static void *worker_main(void *arg) {
    worker_t *W = (worker_t *)arg;
    dispatch(W->act, W->rtrl, W->J, W->k0, W->k1, 1, W->S);
    return NULL;
}
#endif

/* Steps k0 <= k < k1 of online SGD, truncated (rtrl = 0) or RTRL (rtrl = 1); returns the step
 * after the last one run (k1, or bad + 1 when step `bad` produced a non-finite loss or an
 * output beyond `bound`: *bad is set and the run stops there).
 * Layout (row-major): cols (2m + d + 1, N) rows c_0..c_{m-1}, w_0..w_{d-1}, b_0..b_{m-1}, u;
 * sens (m, 2m + d + 1, N) D_{k-1} (RTRL; NULL for truncated) with psp (m,) psi'(g_{k-1}) (zeros
 * and anything at k = 0); h and hp (N) scratch; xs (K, d), ys (K, m); trace (ceil(K / stride),
 * 3m) rows (S_k, g_k, Y_k) or NULL with stride 0. nthreads (1 or 2) splits the units between
 * that many threads (1 when N < 1024 or threads are not built in; 1 also when the second thread
 * cannot be created). Returns -1 on unsupported arguments, -2 when scratch memory is short. */
EXPORT int64_t rnnlimit_train(int64_t N, int d, int m, int act, int clip, int rtrl,
                              double *cols, double *sens, double *h, double *hp,
                              const double *xs, const double *ys, int64_t K, int64_t k0,
                              int64_t k1, double eta, double scale, double bound, double *s,
                              double *psp, double *acc, int64_t *bad, double *trace,
                              int64_t trace_stride, int nthreads) {
    if (nthreads < 1 || nthreads > 2 || N < 1 || d < 1 || d > MAX_DM || m < 1 || m > MAX_DM ||
        act < 0 || act > 2 || clip < 0 || clip > 1 || rtrl < 0 || rtrl > 1 ||
        (rtrl && (!sens || !psp)) || k0 < 0 || k1 < k0 || k1 > K || (trace_stride && !trace) ||
        trace_stride < 0 || !(bound > 0.0))
        return -1;
    const int64_t nout = rtrl ? m + m * m : m, pstride = (nout + 7) & ~(int64_t)7;
    const int64_t nwork = 2 * pstride + MAX_CHUNKS * pstride + 2 * SCRATCH(m);
    double *work = aligned_alloc(64, (size_t)nwork * sizeof(double));
    if (!work) return -2;
    job_t J = {{N, d, m, scale, cols, h, hp, sens}, K, clip, xs, ys, eta, bound, s, psp, acc,
               bad, trace, trace_stride, work, work + pstride,
               {work + (2 + MAX_CHUNKS) * pstride, work + (2 + MAX_CHUNKS) * pstride + SCRATCH(m)}};
    shared_t S;
    memset(&S, 0, sizeof S);
    S.nt = 1;
    S.pstride = pstride;
    S.part = work + 2 * pstride;
    int64_t k = -3;
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
        worker_t W = {act, rtrl, &J, k0, k1, &S};
        pthread_t th;
        if (pthread_create(&th, NULL, worker_main, &W) == 0) {
            k = dispatch(act, rtrl, &J, k0, k1, 0, &S);
            atomic_store_explicit(&S.quit, 1, memory_order_release);
            pthread_join(th, NULL);
        } else {
            S.nt = 1;
        }
    }
#endif
    if (k == -3) k = dispatch(act, rtrl, &J, k0, k1, 0, &S);
    free(work);
    return k;
}

/* Whether nthreads = 2 is built in. */
EXPORT int rnnlimit_threads_supported(void) { return HAVE_THREADS; }

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

/* The size limits of rnnlimit_native.h: out[0..4) = MAX_DM, PIC_MAX_D, PIC_MAX_M, LANES. */
EXPORT void rnnlimit_limits(int64_t *out) {
    out[0] = MAX_DM, out[1] = PIC_MAX_D, out[2] = PIC_MAX_M, out[3] = LANES;
}

EXPORT int rnnlimit_abi_version(void) { return 5; }
