/*
 * Native fast path of rnnlimit.limit's grid solve (docs/model.md §4, particle-in-cell), float64.
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
 * RTRL (docs/model.md §4b, rtrl != 0): every particle also carries its trace coefficients
 * e (G x m x m) and psi'(h(Z_{k-1})) (m); each chain step
 *
 *     e_k = e_{k-1} F_k + phi(Z_k) (x) I_m,   F_k[c][b] = psi'_c(h(Z_{k-1})) d h_b / d s_c (Z_k),
 *
 * with d h / d s the derivative of the multilinear interpolant in the s axes (the cell's
 * difference quotient, rnnlimit.bases.GridBasis.slope), and the deposit is e_k r_k instead of
 * phi(Z_k) r_k. As in rnnlimit.drift.rtrl_drift, a stage runs each particle forward (its path
 * does not depend on e), then backward: a_k = r_k + F_{k+1} a_{k+1}, P_{k-1} = F_k P_k, and
 * sum_k e_k r_k = sum_k phi(Z_k) a_k + e_0 F_1 a_1,  e_n = e_0 P_0 + sum_k phi(Z_k) (x) P_k,
 * so the dense trace is read and written once per stage, not per chain step.
 * The forward pass runs a block of particles step by step (one particle's steps are a serial
 * chain, s_{k+1} = psi(h(Z_k)); interleaving particles overlaps them), the backward pass and
 * the history below run particle by particle.
 *
 * The trace as a history: e_k = sum_j phi(Z_j) (x) Q_j with Q_j = F_{j+1} ... F_k, a sum of
 * deposits that forget geometrically (|F| <= L < 1). Each particle keeps its recent deposits
 * in a ring (ring_cap entries: the lower corner of the cell, the 2^D hat weights and Q_j), so a
 * stage touches O(live deposits) numbers instead of the G m^2 of a dense trace: the old part's
 * drift sum_j phi_j Q_j F_1 a_1 is deposited corner by corner, Q_j <- Q_j P_0, and the stage's
 * own phi(Z_k) (x) P_k are appended. A deposit whose |Q_j| (largest entry) falls to RING_TOL =
 * 1e-16 is dropped: it would add less than 1e-16 to any coefficient of e from then on (the
 * rounding level of e's O(1) entries). Only a deposit still above RING_TOL when the ring is
 * full is folded into the dense trace E, which then runs the dense update above until all its
 * entries fall below RING_TOL (then it is zeroed and switched off); with the contraction of
 * docs/model.md §4b (|F| <= 0.22 in its §5 setting) the ring never fills.
 *
 * Exported: rnnlimit_pic_run(...) (see its comment). No threads: LimitSolver runs its base and
 * refinement solves side by side, one per core.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* the particle loop and K R are MULTIVERSION: the SSE2 baseline has no floor/min/max
   instructions and runs the particle loop ~1.5x slower */
#include "rnnlimit_native.h"

/* a history deposit whose coefficients all fall to this is dropped (see the header) */
#define RING_TOL 1e-16

typedef struct {
    int64_t G, M;
    int n, D, d, m, memory, clip, rtrl;
    double alpha;
    const double *K, *h0;
    double *hgrid;
    double *E, *dpsi; /* RTRL: dense traces (M x G x m x m), psi' at the last output (M x m) */
    double *ring;     /* RTRL: per particle ring_cap deposits of 1 + 2^D + m^2 doubles */
    int64_t *meta;    /* RTRL: per particle (oldest slot, live deposits, dense E in use) */
    int64_t ring_cap;
    int64_t block; /* RTRL: particles per block of the forward pass */
    struct rtrl_step *steps; /* RTRL: scratch of one particle's chain steps in a stage */
    int64_t stride[PIC_MAX_D];
} pic_t;

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

/* The grid cell of a point z (D coordinates, clipped to [-1, 1]): the fractional offsets f in
   the cell and the flat index of its lower corner. half = (n - 1) / 2, top = n - 2. */
INLINE int64_t locate_cell(const pic_t *p, const double *z, const int D, const double half,
                           const double top, double *f) {
    int64_t base = 0;
    for (int a = 0; a < D; a++) {
        const double za = z[a] < -1.0 ? -1.0 : (z[a] > 1.0 ? 1.0 : z[a]);
        const double u = (za + 1.0) * half; /* >= 0: truncation is floor */
        double i0 = (double)(int64_t)u;
        i0 = i0 > top ? top : i0;
        f[a] = u - i0;
        base += (int64_t)i0 * p->stride[a];
    }
    return base;
}

/* Corner c of a cell (bit D-1-a of c: the upper node on axis a): its flat offset from the
   cell's lower corner. The one place that orders the 2^D corners. */
INLINE int64_t corner_offset(const pic_t *p, const int c, const int D) {
    int64_t off = 0;
    for (int a = 0; a < D; a++) off += ((c >> (D - 1 - a)) & 1) * p->stride[a];
    return off;
}

/* The 2^D corners of that cell: their flat indices and multilinear hat weights (>= 0, sum 1). */
INLINE void hat_weights(const pic_t *p, const int64_t base, const double *f, const int D,
                        int64_t *idx, double *w) {
    for (int c = 0; c < 1 << D; c++) {
        double wc = 1.0;
        for (int a = 0; a < D; a++) wc *= (c >> (D - 1 - a)) & 1 ? f[a] : 1.0 - f[a];
        idx[c] = base + corner_offset(p, c, D);
        w[c] = wc;
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
            double zq[PIC_MAX_D], f[PIC_MAX_D];
            for (int a = 0; a < D; a++) zq[a] = a < d ? x[q * d + a] : s[q * m + (a - d)];
            const int64_t base = locate_cell(p, zq, D, half, top, f);
            int64_t idx[1 << PIC_MAX_D];
            double w[1 << PIC_MAX_D];
            hat_weights(p, base, f, D, idx, w);
            double hz[PIC_MAX_M], r[PIC_MAX_M];
            for (int j = 0; j < m; j++) {
                double acc = 0.0;
                for (int c = 0; c < corners; c++) acc += w[c] * hgrid[idx[c] * m + j];
                hz[j] = acc;
                r[j] = y[q * m + j] - acc;
                loss += 0.5 * r[j] * r[j];
            }
            if (rho)
                for (int j = 0; j < m; j++)
                    for (int c = 0; c < corners; c++) rho[idx[c] * m + j] += w[c] * r[j];
            if (p->memory)
                for (int j = 0; j < m; j++) s[q * m + j] = psi_clip(p->clip, hz[j]);
        }
    }
    const double norm = 1.0 / ((double)M * (double)cs);
    if (rho)
        for (int64_t i = 0; i < p->G * m; i++) rho[i] *= norm;
    return loss * norm;
}

#include "pic_rtrl.h" /* the RTRL stage: rtrl_stage_dm */

MULTIVERSION static double stage(const pic_t *p, const double *xs, const double *ys, double *s,
                                int64_t cs, double *rho) {
    if (p->rtrl) {
        if (p->d == 1 && p->m == 1) return rtrl_stage_dm(p, xs, ys, s, cs, rho, 1, 1);
        if (p->d == 2 && p->m == 1) return rtrl_stage_dm(p, xs, ys, s, cs, rho, 2, 1);
        return rtrl_stage_dm(p, xs, ys, s, cs, rho, 1, 2);
    }
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
 *   rtrl != 0 (else all NULL / 0), the particles' traces, updated: dpsi (M x m); the history
 *     ring (M x ring_cap x (1 + 2^D + m^2)) with meta (M x 3: oldest slot, live deposits,
 *     dense in use), all zero before the first call; E (M x G x m x m), the dense overflow
 * Returns 0, -1 when the arguments are outside what this kernel handles, -2 out of memory.
 */
EXPORT int rnnlimit_pic_run(int n, int d, int m, int64_t M, int64_t cs, int64_t n_steps, int heun,
                            double alpha, double dt, int memory, int clip, const double *K,
                            const double *h0, double *R, const double *xs, const double *ys,
                            double *s, double *losses, double *work, int rtrl, double *E,
                            double *dpsi, double *ring, int64_t *meta, int64_t ring_cap) {
    const int D = d + m;
    if (n < 2 || d < 1 || m < 1 || m > PIC_MAX_M || D > PIC_MAX_D || M < 1 || cs < 1 ||
        n_steps < 0 || (d == 2 && m == 2) ||
        (rtrl && (!E || !dpsi || !ring || !meta || ring_cap < 1)))
        return -1;
    pic_t p;
    p.n = n, p.D = D, p.d = d, p.m = m, p.M = M, p.memory = memory, p.clip = clip;
    p.rtrl = rtrl, p.E = E, p.dpsi = dpsi, p.steps = NULL;
    p.ring = ring, p.meta = meta, p.ring_cap = ring_cap;
    p.alpha = alpha, p.K = K, p.h0 = h0;
    p.G = 1;
    for (int a = 0; a < D; a++) p.G *= n;
    for (int a = 0; a < D; a++) {
        int64_t st = 1;
        for (int b = a + 1; b < D; b++) st *= n;
        p.stride[a] = st;
    }
    if (rtrl) { /* a block's chain steps in a stage: <= 4096 records (~0.8 MB) */
        p.block = 4096 / cs < 1 ? 1 : (4096 / cs > 64 ? 64 : 4096 / cs);
        p.steps = malloc(sizeof(rtrl_step_t) * (size_t)(cs * p.block));
        if (!p.steps) return -2;
    }
    const int64_t Gm = p.G * m;
    p.hgrid = work;
    double *rho1 = work + Gm, *rho2 = work + 2 * Gm;
    if (n_steps == 0) {
        node_values(&p, R);
        stage(&p, xs, ys, s, cs, NULL);
        free(p.steps);
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
    free(p.steps);
    return 0;
}

/* Version of rnnlimit_pic_run's signature (2: the RTRL traces; 3: their history ring), checked
   by native.pic_run so that a stale build is refused rather than called with arguments it
   would ignore. */
EXPORT int rnnlimit_pic_version(void) { return 3; }
