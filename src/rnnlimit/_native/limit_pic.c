/*
 * Native fast path of rnnlimit.limit's grid solve (MODEL.md §4, particle-in-cell), float64.
 *
 * The limit writes h_t(z) = h_0(z) + alpha * sum_j A(z, z_j) R_j(t) over the nodes z_j of a
 * tensor grid with n nodes per axis on [-1, 1]^D, D = d + m <= 3, and
 *
 *     dR/dt = E_{pi_t}[ phi(Z) (Y - h_t(Z)) ],   phi_j = multilinear hat function of node j.
 *
 * One stage freezes R, forms the node values hgrid = h0 + alpha * K R (K the fixed node Gram),
 * and runs cs chain steps of the M particles: Z = (X, S); h(Z) by multilinear interpolation of
 * hgrid; r = Y - h(Z) deposited onto the 2^D corner nodes with the hat weights; S <- psi(h(Z))
 * when the memory is on. The stage returns rho = sum of deposits / (M cs) and the mean loss
 * 1/2 |r|^2. The chain paths X (steps x M x d) and Y (steps x M x m) are exogenous (they do not
 * depend on h) and come precomputed from JAX, so this file holds only the h-coupled part.
 * Heun: R <- R + dt/2 (rho(R) + rho(R + dt rho(R))), the two stages on consecutive chain
 * steps; Euler: R <- R + dt rho(R). Same arithmetic as the JAX stages (rnnlimit.drift) up to
 * the summation order of the deposits and of K R.
 *
 * RTRL (MODEL.md §4b, rtrl != 0): every particle also carries its trace coefficients
 * e (G x m x m) and psi'(h(Z_{k-1})) (m); each chain step
 *
 *     e <- e diag(psi'_{k-1}) J^T + phi(Z_k) (x) I_m,   J[b][c] = d h_b / d s_c at Z_k,
 *
 * with J the derivative of the multilinear interpolant in the s axes (the cell's difference
 * quotient, rnnlimit.bases.GridBasis.slope), and the deposit is e r instead of phi(Z) r.
 *
 * Exported: rnnlimit_pic_run(...) (see its comment). No threads: LimitSolver runs its base and
 * refinement solves side by side, one per core.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* the particle loop and K R are MULTIVERSION: the SSE2 baseline has no floor/min/max
   instructions and runs the particle loop ~1.5x slower */
#include "rnnlimit_native.h"

#define PIC_MAX_D 3
#define PIC_MAX_M 2

typedef struct {
    int64_t G, M;
    int n, D, d, m, memory, clip, rtrl;
    double alpha;
    const double *K, *h0;
    double *hgrid;
    double *E, *dpsi; /* RTRL: traces (M x G x m x m), psi' at the last output (M x m) */
    int64_t stride[PIC_MAX_D];
} pic_t;

/* e <- e diag(dpsi) J^T + phi (x) I, then rho += e r (when rho): one particle's trace step.
   e (G x m x m), J (m x m, J[b * m + c] = d h_b / d s_c), corners idx/w, residual r (m). */
INLINE void trace_step(const pic_t *p, double *e, const double *dpsi, const double *J,
                       const int64_t *idx, const double *w, int corners, const double *r,
                       double *rho, const int m) {
    const int64_t G = p->G;
    if (m == 1) {
        const double fac = dpsi[0] * J[0];
        for (int64_t g = 0; g < G; g++) e[g] = e[g] * fac;
        for (int c = 0; c < corners; c++) e[idx[c]] += w[c];
        if (rho)
            for (int64_t g = 0; g < G; g++) rho[g] += e[g] * r[0];
        return;
    }
    double F[PIC_MAX_M * PIC_MAX_M]; /* F[c][b] = dpsi_c J[b][c] */
    for (int c = 0; c < m; c++)
        for (int b = 0; b < m; b++) F[c * m + b] = dpsi[c] * J[b * m + c];
    for (int64_t g = 0; g < G; g++) {
        double *eg = e + g * m * m;
        for (int a = 0; a < m; a++) {
            double row[PIC_MAX_M];
            for (int b = 0; b < m; b++) {
                double acc = 0.0;
                for (int c = 0; c < m; c++) acc += eg[a * m + c] * F[c * m + b];
                row[b] = acc;
            }
            for (int b = 0; b < m; b++) eg[a * m + b] = row[b];
        }
    }
    for (int c = 0; c < corners; c++)
        for (int a = 0; a < m; a++) e[idx[c] * m * m + a * m + a] += w[c];
    if (rho)
        for (int64_t g = 0; g < G; g++)
            for (int a = 0; a < m; a++) {
                double acc = 0.0;
                for (int b = 0; b < m; b++) acc += e[g * m * m + a * m + b] * r[b];
                rho[g * m + a] += acc;
            }
}

/* hgrid = h0 + alpha * K R   (G x m) */
MULTIVERSION static void node_values(const pic_t *p, const double *R) {
    const int64_t G = p->G;
    const int m = p->m;
    for (int64_t i = 0; i < G; i++) {
        const double *row = p->K + i * G;
        for (int j = 0; j < m; j++) {
            double acc = 0.0;
            if (m == 1) {
#pragma omp simd reduction(+ : acc)
                for (int64_t k = 0; k < G; k++) acc += row[k] * R[k];
            } else {
                for (int64_t k = 0; k < G; k++) acc += row[k] * R[k * m + j];
            }
            p->hgrid[i * m + j] = p->h0[i * m + j] + p->alpha * acc;
        }
    }
}

/* cs chain steps with hgrid frozen; rho (G x m) gets sum of deposits / (M cs) when non-NULL.
   Returns the mean of 1/2 |Y - h(Z)|^2 over the M particles and cs steps. D, d, m are
   compile-time constants in each instantiation (see stage), so the corner loops unroll. */
INLINE double stage_dm(const pic_t *p, const double *xs, const double *ys, double *s,
                       int64_t cs, double *rho, const int d, const int m) {
    const int D = d + m;
    const int64_t M = p->M;
    const int n = p->n;
    const int corners = 1 << D;
    const double half = 0.5 * (n - 1), top = n - 2;
    const double *hgrid = p->hgrid;
    double loss = 0.0;
    if (rho) memset(rho, 0, sizeof(double) * (size_t)(p->G * m));
    for (int64_t k = 0; k < cs; k++) {
        const double *x = xs + k * M * d;
        const double *y = ys + k * M * m;
        for (int64_t q = 0; q < M; q++) {
            double f[PIC_MAX_D];
            int64_t base = 0;
            for (int a = 0; a < D; a++) {
                double z = a < d ? x[q * d + a] : s[q * m + (a - d)];
                z = z < -1.0 ? -1.0 : (z > 1.0 ? 1.0 : z);
                const double u = (z + 1.0) * half; /* >= 0: truncation is floor */
                double i0 = (double)(int64_t)u;
                i0 = i0 > top ? top : i0;
                f[a] = u - i0;
                base += (int64_t)i0 * p->stride[a];
            }
            int64_t idx[1 << PIC_MAX_D];
            double w[1 << PIC_MAX_D];
            for (int c = 0; c < corners; c++) {
                int64_t off = base;
                double wc = 1.0;
                for (int a = 0; a < D; a++) {
                    const int bit = (c >> (D - 1 - a)) & 1;
                    off += bit * p->stride[a];
                    wc *= bit ? f[a] : 1.0 - f[a];
                }
                idx[c] = off;
                w[c] = wc;
            }
            double hz[PIC_MAX_M], r[PIC_MAX_M];
            for (int j = 0; j < m; j++) {
                double acc = 0.0;
                for (int c = 0; c < corners; c++) acc += w[c] * hgrid[idx[c] * m + j];
                hz[j] = acc;
                r[j] = y[q * m + j] - acc;
                loss += 0.5 * r[j] * r[j];
            }
            if (p->rtrl) {
                /* J[b][c]: the hat weights differentiated in s axis c (factor +-1/dz) */
                double J[PIC_MAX_M * PIC_MAX_M];
                for (int c = 0; c < m; c++) {
                    double dw[1 << PIC_MAX_D];
                    for (int cc = 0; cc < corners; cc++) {
                        double wc = 1.0;
                        for (int a = 0; a < D; a++) {
                            const int bit = (cc >> (D - 1 - a)) & 1;
                            if (a == d + c)
                                wc *= bit ? half : -half;
                            else
                                wc *= bit ? f[a] : 1.0 - f[a];
                        }
                        dw[cc] = wc;
                    }
                    for (int b = 0; b < m; b++) {
                        double acc = 0.0;
                        for (int cc = 0; cc < corners; cc++) acc += dw[cc] * hgrid[idx[cc] * m + b];
                        J[b * m + c] = acc;
                    }
                }
                trace_step(p, p->E + q * p->G * m * m, p->dpsi + q * m, J, idx, w, corners, r,
                           rho, m);
            } else if (rho) {
                for (int j = 0; j < m; j++)
                    for (int c = 0; c < corners; c++) rho[idx[c] * m + j] += w[c] * r[j];
            }
            if (p->memory)
                for (int j = 0; j < m; j++) {
                    const double t = psi_clip(p->clip, hz[j]);
                    s[q * m + j] = t;
                    if (p->rtrl)
                        p->dpsi[q * m + j] = p->clip == CLIP_HARD ? (fabs(hz[j]) < 1.0) : 1.0 - t * t;
                }
        }
    }
    const double norm = 1.0 / ((double)M * (double)cs);
    if (rho)
        for (int64_t i = 0; i < p->G * m; i++) rho[i] *= norm;
    return loss * norm;
}

MULTIVERSION static double stage(const pic_t *p, const double *xs, const double *ys, double *s,
                                int64_t cs, double *rho) {
    if (p->d == 1 && p->m == 1) return stage_dm(p, xs, ys, s, cs, rho, 1, 1);
    if (p->d == 2 && p->m == 1) return stage_dm(p, xs, ys, s, cs, rho, 2, 1);
    return stage_dm(p, xs, ys, s, cs, rho, 1, 2); /* d + m <= 3, m <= 2 */
}

/*
 * Run n_steps time steps (Heun when heun != 0, else Euler) of the grid limit solve, or, with
 * n_steps = 0, a burn-in of cs chain steps with R frozen and no deposits.
 *   K (G x G), h0 (G x m), R (G x m, updated), s (M x m, updated)
 *   xs (steps x M x d), ys (steps x M x m) with steps = n_steps * stages * cs (burn-in: cs)
 *   losses (n_steps): the first stage's mean loss of each time step
 *   work: 3 G m doubles of scratch
 *   rtrl != 0: E (M x G x m x m) and dpsi (M x m), the particles' traces, updated (else NULL)
 * Returns 0, or -1 when the arguments are outside what this kernel handles.
 */
EXPORT int rnnlimit_pic_run(int n, int d, int m, int64_t M, int64_t cs, int64_t n_steps, int heun,
                            double alpha, double dt, int memory, int clip, const double *K,
                            const double *h0, double *R, const double *xs, const double *ys,
                            double *s, double *losses, double *work, int rtrl, double *E,
                            double *dpsi) {
    const int D = d + m;
    if (n < 2 || d < 1 || m < 1 || m > PIC_MAX_M || D > PIC_MAX_D || M < 1 || cs < 1 ||
        n_steps < 0 || (d == 2 && m == 2) || (rtrl && (!E || !dpsi)))
        return -1;
    pic_t p;
    p.n = n, p.D = D, p.d = d, p.m = m, p.M = M, p.memory = memory, p.clip = clip;
    p.rtrl = rtrl, p.E = E, p.dpsi = dpsi;
    p.alpha = alpha, p.K = K, p.h0 = h0;
    p.G = 1;
    for (int a = 0; a < D; a++) p.G *= n;
    for (int a = 0; a < D; a++) {
        int64_t st = 1;
        for (int b = a + 1; b < D; b++) st *= n;
        p.stride[a] = st;
    }
    const int64_t Gm = p.G * m;
    p.hgrid = work;
    double *rho1 = work + Gm, *rho2 = work + 2 * Gm;
    if (n_steps == 0) {
        node_values(&p, R);
        stage(&p, xs, ys, s, cs, NULL);
        return 0;
    }
    const int64_t chunk = cs * M;
    for (int64_t t = 0; t < n_steps; t++) {
        node_values(&p, R);
        losses[t] = stage(&p, xs, ys, s, cs, rho1);
        xs += chunk * d, ys += chunk * m;
        if (heun) {
            for (int64_t i = 0; i < Gm; i++) rho2[i] = R[i] + dt * rho1[i];
            node_values(&p, rho2);
            stage(&p, xs, ys, s, cs, rho2);
            xs += chunk * d, ys += chunk * m;
            for (int64_t i = 0; i < Gm; i++) R[i] += 0.5 * dt * (rho1[i] + rho2[i]);
        } else {
            for (int64_t i = 0; i < Gm; i++) R[i] += dt * rho1[i];
        }
    }
    return 0;
}

/* Version of rnnlimit_pic_run's signature (2: the RTRL traces), checked by native.pic_run so
   that a stale build is refused rather than called with arguments it would ignore. */
EXPORT int rnnlimit_pic_version(void) { return 2; }
