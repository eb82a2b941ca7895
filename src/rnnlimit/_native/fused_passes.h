/*
 * The unit passes of the native trainer (fused_train.c; docs/model.md §2-3), float64.
 *
 * A pass over units [i0, i1) applies step k's update with the stored H_k = sigma(pre_k),
 * sigma'(pre_k) and the step's scalars, then forms pre_{k+1} from the new parameters, X_{k+1}
 * and S_{k+1}, stores H_{k+1}, sigma'_{k+1} and returns the sums the next step needs:
 * out[j] = sum_i c^i_j H^i_{k+1} and, for RTRL, out[m + j m + r] = sum_i c^i_j sigma'^i b^i_r
 * (N^-beta times them are g_{k+1} and the memory derivative ds_{k+1}[j][r] = dg_j/ds_r).
 *
 * Parameter columns (P = 2m + d + 1 contiguous (N,) rows of `cols`): c_0..c_{m-1},
 * w_0..w_{d-1}, b_0..b_{m-1}, u. RTRL sensitivities: `sens` (m, P, N), row (j, p) the
 * derivative of output j along column p. The kernel stores D_{k-1} there rather than
 * J_k = psi'(g_{k-1}) D_{k-1}: the step's scalars carry dsp[j][r] = ds_k[j][r] psi'_r(g_{k-1}),
 * so that D_k = grad_theta g_k + ds_k J_k = grad_theta g_k + dsp D_{k-1} costs one
 * multiply-add per entry and J is never formed (J_0 = 0 is D_{-1} = 0).
 *
 * Two forms of each pass: `*_pass2` with D, M (1 or 2) compile-time after inlining, one fused
 * loop whose unit body stays in registers; `*_pass_any` for any d, m, over blocks of BLOCK
 * units, each stage a separate loop over the block (the column loops outside, the unit loop
 * inside, vectorised) with the block's intermediates in `wk` (L1-resident). Both sum in the
 * same order per unit as the JAX step (rnnlimit.steps), so they differ from it only in the
 * order of the sums over units.
 */
#ifndef RNNLIMIT_FUSED_PASSES_H
#define RNNLIMIT_FUSED_PASSES_H

#include "fused_math.h"

/* Units per block of the *_pass_any loops, and the scratch doubles one thread needs. */
#define BLOCK 256
#define SCRATCH(m) ((int64_t)(2 * (m) + 3) * BLOCK)

/* The network of one call: N units, parameter columns, H, sigma', sensitivities. */
typedef struct {
    int64_t N;
    int d, m;
    double a; /* N^-beta */
    double *cols, *h, *hp, *sens;
} net_t;

/* One step's scalars: ee = eta e_k (truncated: eta N^-beta e_k), X_k, S_k, X_{k+1}, S_{k+1},
 * and dsp (m, m) (RTRL); fwd: no update, only the forward half at (xn, sn). */
typedef struct {
    const double *ee, *x, *s, *xn, *sn, *dsp;
    int fwd;
} step_t;

/* ------------------------------------------------------------------------- forward only */
/* H, sigma' at (xn, sn) from the current parameters, and the sums of the header (no update):
 * the first pass of an interval. */
INLINE void fwd_pass(const int ACT, const int RT, const net_t *n, int64_t i0, int64_t i1,
                     const double *xn, const double *sn, double *out) {
    const int64_t N = n->N;
    const int d = n->d, m = n->m;
    const double *c = n->cols, *w = c + m * N, *b = w + d * N, *u = b + m * N;
    for (int j = 0; j < m + (RT ? m * m : 0); ++j) out[j] = 0.0;
    for (int64_t i = i0; i < i1; ++i) {
        double pre = u[i];
        for (int j = 0; j < d; ++j) pre = pre + w[j * N + i] * xn[j];
        for (int j = 0; j < m; ++j) pre = pre + b[j * N + i] * sn[j];
        double H, HP;
        act_pair(ACT, pre, &H, &HP);
        n->h[i] = H;
        n->hp[i] = HP;
        for (int j = 0; j < m; ++j) {
            out[j] += c[j * N + i] * H;
            if (RT)
                for (int r = 0; r < m; ++r)
                    out[m + j * m + r] += (c[j * N + i] * HP) * b[r * N + i];
        }
    }
}

/* ----------------------------------------------------------------------------- truncated */
/* Truncated step: q_i = (c^i . ee) sigma'_i, c^i += H^i ee, (w^i, b^i, u^i) += q_i (x, s, 1). */
INLINE void trunc_pass2(const int D, const int M, const int ACT, const net_t *n, int64_t i0,
                        int64_t i1, const step_t *st, double *out) {
    const int64_t N = n->N;
    const double ee0 = st->ee[0], ee1 = M > 1 ? st->ee[1] : 0.0;
    const double x0 = st->x[0], x1 = D > 1 ? st->x[1] : 0.0;
    const double s0 = st->s[0], s1 = M > 1 ? st->s[1] : 0.0;
    const double xn0 = st->xn[0], xn1 = D > 1 ? st->xn[1] : 0.0;
    const double sn0 = st->sn[0], sn1 = M > 1 ? st->sn[1] : 0.0;
    double *restrict c0 = n->cols, *restrict c1 = c0 + N;
    double *restrict w0 = c0 + M * N, *restrict w1 = w0 + N;
    double *restrict b0 = w0 + D * N, *restrict b1 = b0 + N;
    double *restrict u = b0 + M * N, *restrict h = n->h, *restrict hp = n->hp;
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
    out[0] = g0;
    if (M > 1) out[1] = g1;
}

/* The forward half of a block, shared by both *_pass_any: pre = u + w.xn + b.sn from the new
 * parameters (pre holds u + q or u already), then H, sigma'. */
INLINE void block_forward(const int ACT, const net_t *n, int64_t i, int64_t nb, double *pre,
                          const double *xn, const double *sn) {
    const int64_t N = n->N;
    const int d = n->d, m = n->m;
    const double *w = n->cols + m * N + i, *b = w + d * N;
    for (int j = 0; j < d; ++j) {
        const double *restrict wj = w + j * N;
        const double xj = xn[j];
#pragma omp simd
        for (int64_t t = 0; t < nb; ++t) pre[t] = pre[t] + wj[t] * xj;
    }
    for (int j = 0; j < m; ++j) {
        const double *restrict bj = b + j * N;
        const double sj = sn[j];
#pragma omp simd
        for (int64_t t = 0; t < nb; ++t) pre[t] = pre[t] + bj[t] * sj;
    }
    double *restrict h = n->h + i, *restrict hp = n->hp + i;
#pragma omp simd
    for (int64_t t = 0; t < nb; ++t) {
        double H, HP;
        act_pair(ACT, pre[t], &H, &HP);
        h[t] = H;
        hp[t] = HP;
    }
}

/* out[j] += sum_t c_j H over a block */
INLINE void block_sum_g(const net_t *n, int64_t i, int64_t nb, double *out) {
    const int64_t N = n->N;
    const double *restrict h = n->h + i;
    for (int j = 0; j < n->m; ++j) {
        const double *restrict cj = n->cols + j * N + i;
        double g = 0.0;
#pragma omp simd reduction(+ : g)
        for (int64_t t = 0; t < nb; ++t) g += cj[t] * h[t];
        out[j] += g;
    }
}

/* trunc_pass2 for any d, m, blocked; wk: SCRATCH(m) doubles. */
INLINE void trunc_pass_any(const int ACT, const net_t *n, int64_t i0, int64_t i1,
                           const step_t *st, double *out, double *wk) {
    const int64_t N = n->N;
    const int d = n->d, m = n->m;
    double *restrict q = wk, *restrict pre = wk + BLOCK;
    for (int j = 0; j < m; ++j) out[j] = 0.0;
    for (int64_t i = i0; i < i1; i += BLOCK) {
        const int64_t nb = i1 - i < BLOCK ? i1 - i : BLOCK;
        double *restrict c = n->cols + i, *restrict w = c + m * N, *restrict b = w + d * N;
        double *restrict u = b + m * N;
        const double *restrict h = n->h + i, *restrict hp = n->hp + i;
        for (int j = 0; j < m; ++j) { /* q = (c . ee) sigma', then c += H ee */
            double *restrict cj = c + j * N;
            const double e = st->ee[j];
#pragma omp simd
            for (int64_t t = 0; t < nb; ++t) {
                const double ce = j ? q[t] + cj[t] * e : cj[t] * e;
                q[t] = j == m - 1 ? ce * hp[t] : ce;
                cj[t] = cj[t] + h[t] * e;
            }
        }
#pragma omp simd
        for (int64_t t = 0; t < nb; ++t) pre[t] = u[t] = u[t] + q[t];
        for (int j = 0; j < d; ++j) {
            double *restrict wj = w + j * N;
            const double xj = st->x[j];
#pragma omp simd
            for (int64_t t = 0; t < nb; ++t) wj[t] = wj[t] + q[t] * xj;
        }
        for (int j = 0; j < m; ++j) {
            double *restrict bj = b + j * N;
            const double sj = st->s[j];
#pragma omp simd
            for (int64_t t = 0; t < nb; ++t) bj[t] = bj[t] + q[t] * sj;
        }
        block_forward(ACT, n, i, nb, pre, st->xn, st->sn);
        block_sum_g(n, i, nb, out);
    }
}

/* ---------------------------------------------------------------------------------- RTRL */
/* RTRL step, per unit, with q_j = N^-beta c^i_j sigma' (before the update):
 *   D[j][p] = grad[j][p] + sum_r dsp[j][r] D_prev[r][p],
 *   grad[j][c_l] = N^-beta H delta_jl, grad[j][(w, b, u)] = q_j (x, s, 1),
 *   theta_p += sum_j ee_j D[j][p],   D_prev <- D.
 * rtrl_col does this for column p of unit i given grad[0][p], grad[1][p] (M <= 2) and returns
 * the new theta_p. */
INLINE double rtrl_col(const int M, const int P, const int p, double gr0, double gr1,
                       const double *dsp, const double *ee, double *restrict sens,
                       double *restrict col, int64_t N, int64_t i) {
    double *restrict S0 = sens + (int64_t)p * N, *restrict S1 = sens + (int64_t)(P + p) * N;
    const double D0 = S0[i], D1 = M > 1 ? S1[i] : 0.0;
    double n0 = gr0 + dsp[0] * D0;
    if (M > 1) n0 = n0 + dsp[1] * D1;
    S0[i] = n0;
    double dp = ee[0] * n0;
    if (M > 1) {
        const double n1 = (gr1 + dsp[2] * D0) + dsp[3] * D1;
        S1[i] = n1;
        dp = dp + ee[1] * n1;
    }
    const double th = col[i] + dp;
    col[i] = th;
    return th;
}

INLINE void rtrl_pass2(const int D, const int M, const int ACT, const net_t *n, int64_t i0,
                       int64_t i1, const step_t *st, double *out) {
    const int P = 2 * M + D + 1;
    const int64_t N = n->N;
    const double a = n->a;
    double ee[2] = {0.0, 0.0}, dsp[4] = {0.0, 0.0, 0.0, 0.0};
    for (int j = 0; j < M; ++j) ee[j] = st->ee[j];
    for (int j = 0; j < M * M; ++j) dsp[j] = st->dsp[j];
    const double x0 = st->x[0], x1 = D > 1 ? st->x[1] : 0.0;
    const double s0 = st->s[0], s1 = M > 1 ? st->s[1] : 0.0;
    const double xn0 = st->xn[0], xn1 = D > 1 ? st->xn[1] : 0.0;
    const double sn0 = st->sn[0], sn1 = M > 1 ? st->sn[1] : 0.0;
    double *restrict c0 = n->cols, *restrict c1 = c0 + N;
    double *restrict w0 = c0 + M * N, *restrict w1 = w0 + N;
    double *restrict b0 = w0 + D * N, *restrict b1 = b0 + N;
    double *restrict u = b0 + M * N, *restrict sens = n->sens;
    double *restrict h = n->h, *restrict hp = n->hp;
    double g0 = 0.0, g1 = 0.0, r00 = 0.0, r01 = 0.0, r10 = 0.0, r11 = 0.0;
#pragma omp simd reduction(+ : g0, g1, r00, r01, r10, r11)
    for (int64_t i = i0; i < i1; ++i) {
        const double aH = a * h[i], HP = hp[i];
        const double q0 = a * c0[i] * HP, q1 = M > 1 ? a * c1[i] * HP : 0.0;
        const double C0 = rtrl_col(M, P, 0, aH, 0.0, dsp, ee, sens, c0, N, i);
        const double C1 = M > 1 ? rtrl_col(M, P, 1, 0.0, aH, dsp, ee, sens, c1, N, i) : 0.0;
        const double W0 = rtrl_col(M, P, M, q0 * x0, q1 * x0, dsp, ee, sens, w0, N, i);
        double pre = rtrl_col(M, P, P - 1, q0, q1, dsp, ee, sens, u, N, i) + W0 * xn0;
        if (D > 1)
            pre = pre + rtrl_col(M, P, M + 1, q0 * x1, q1 * x1, dsp, ee, sens, w1, N, i) * xn1;
        const double B0 = rtrl_col(M, P, M + D, q0 * s0, q1 * s0, dsp, ee, sens, b0, N, i);
        pre = pre + B0 * sn0;
        const double B1 =
            M > 1 ? rtrl_col(M, P, M + D + 1, q0 * s1, q1 * s1, dsp, ee, sens, b1, N, i) : 0.0;
        if (M > 1) pre = pre + B1 * sn1;
        double Hn, HPn;
        act_pair(ACT, pre, &Hn, &HPn);
        h[i] = Hn;
        hp[i] = HPn;
        const double t0 = C0 * HPn;
        g0 += C0 * Hn;
        r00 += t0 * B0;
        if (M > 1) {
            const double t1 = C1 * HPn;
            g1 += C1 * Hn;
            r01 += t0 * B1;
            r10 += t1 * B0;
            r11 += t1 * B1;
        }
    }
    out[0] = g0;
    if (M == 1) out[1] = r00;
    if (M > 1) out[1] = g1, out[2] = r00, out[3] = r01, out[4] = r10, out[5] = r11;
}

/* rtrl_pass2 for any d, m, blocked, one parameter column p at a time; wk: SCRATCH(m). */
INLINE void rtrl_pass_any(const int ACT, const net_t *n, int64_t i0, int64_t i1,
                          const step_t *st, double *out, double *wk) {
    const int64_t N = n->N;
    const int d = n->d, m = n->m, P = 2 * m + d + 1;
    const double a = n->a;
    double *restrict q = wk, *restrict nd = wk + m * BLOCK, *restrict pre = wk + 2 * m * BLOCK;
    double *restrict tj = pre + BLOCK, *restrict aH = tj + BLOCK;
    for (int j = 0; j < m + m * m; ++j) out[j] = 0.0;
    for (int64_t i = i0; i < i1; i += BLOCK) {
        const int64_t nb = i1 - i < BLOCK ? i1 - i : BLOCK;
        double *restrict th = n->cols + i, *restrict sens = n->sens + i;
        const double *restrict h = n->h + i, *restrict hp = n->hp + i;
#pragma omp simd
        for (int64_t t = 0; t < nb; ++t) aH[t] = a * h[t];
        for (int j = 0; j < m; ++j) {
            const double *restrict cj = th + j * N;
#pragma omp simd
            for (int64_t t = 0; t < nb; ++t) q[j * BLOCK + t] = a * cj[t] * hp[t];
        }
        for (int p = 0; p < P; ++p) {
            /* grad[j][p]: c_l: aH delta_jl; w, b: q_j times the scalar x or s; u: q_j */
            const int kind = p < m ? 0 : 1;
            const double z = p < m       ? 0.0
                             : p < m + d ? st->x[p - m]
                             : p < P - 1 ? st->s[p - m - d]
                                         : 1.0;
            for (int j = 0; j < m; ++j) {
                double *restrict v = nd + j * BLOCK;
                const double *restrict qj = q + j * BLOCK;
                if (kind == 0 && p == j) {
#pragma omp simd
                    for (int64_t t = 0; t < nb; ++t) v[t] = aH[t];
                } else if (kind == 0) {
#pragma omp simd
                    for (int64_t t = 0; t < nb; ++t) v[t] = 0.0;
                } else if (p == P - 1) {
#pragma omp simd
                    for (int64_t t = 0; t < nb; ++t) v[t] = qj[t];
                } else {
#pragma omp simd
                    for (int64_t t = 0; t < nb; ++t) v[t] = qj[t] * z;
                }
                for (int r = 0; r < m; ++r) {
                    const double *restrict Dr = sens + (int64_t)(r * P + p) * N;
                    const double f = st->dsp[j * m + r];
#pragma omp simd
                    for (int64_t t = 0; t < nb; ++t) v[t] = v[t] + f * Dr[t];
                }
            }
            double *restrict thp = th + (int64_t)p * N;
            for (int j = 0; j < m; ++j) {
                const double *restrict v = nd + j * BLOCK;
                double *restrict Dj = sens + (int64_t)(j * P + p) * N;
                const double e = st->ee[j];
#pragma omp simd
                for (int64_t t = 0; t < nb; ++t) {
                    tj[t] = j ? tj[t] + e * v[t] : e * v[t];
                    Dj[t] = v[t];
                }
            }
#pragma omp simd
            for (int64_t t = 0; t < nb; ++t) thp[t] = thp[t] + tj[t];
        }
        const double *restrict u = th + (int64_t)(P - 1) * N;
#pragma omp simd
        for (int64_t t = 0; t < nb; ++t) pre[t] = u[t];
        block_forward(ACT, n, i, nb, pre, st->xn, st->sn);
        block_sum_g(n, i, nb, out);
        const double *restrict b = th + (int64_t)(m + d) * N;
        for (int j = 0; j < m; ++j) {
            const double *restrict cj = th + j * N;
#pragma omp simd
            for (int64_t t = 0; t < nb; ++t) tj[t] = cj[t] * hp[t];
            for (int r = 0; r < m; ++r) {
                const double *restrict br = b + (int64_t)r * N;
                double acc = 0.0;
#pragma omp simd reduction(+ : acc)
                for (int64_t t = 0; t < nb; ++t) acc += tj[t] * br[t];
                out[m + j * m + r] += acc;
            }
        }
    }
}

#endif
