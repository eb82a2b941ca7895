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

/* The 2^D corners of that cell: their flat indices and multilinear hat weights (>= 0, sum 1). */
INLINE void hat_weights(const pic_t *p, const int64_t base, const double *f, const int D,
                        int64_t *idx, double *w) {
    for (int c = 0; c < 1 << D; c++) {
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

/* Per chain step of one particle, recorded by the forward pass of an RTRL stage. */
typedef struct rtrl_step {
    int64_t base; /* the cell's lower corner (its corners: base + the stage's offsets) */
    double w[1 << PIC_MAX_D];
    double r[PIC_MAX_M];
    double F[PIC_MAX_M * PIC_MAX_M]; /* F[c * m + b] = psi'_c(previous output) dh_b/ds_c */
    double P[PIC_MAX_M * PIC_MAX_M]; /* P_k = F_{k+1} ... F_n (backward pass) */
} rtrl_step_t;

/* out = A B for m x m row-major matrices (out may not alias) */
INLINE void matmul_m(double *out, const double *A, const double *B, const int m) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++) {
            double acc = 0.0;
            for (int c = 0; c < m; c++) acc += A[i * m + c] * B[c * m + j];
            out[i * m + j] = acc;
        }
}

/* largest |x_i| of n numbers */
INLINE double max_abs(const double *x, const int n) {
    double mx = 0.0;
    for (int i = 0; i < n; i++) mx = fabs(x[i]) > mx ? fabs(x[i]) : mx;
    return mx;
}

/* The dense trace's share of a stage: rho += e_0 (F_1 a_1) (when rho), e <- e_0 P_0. Returns
   the largest |entry| of the new e (the caller switches the dense trace off below RING_TOL). */
INLINE double dense_update(double *e, const int64_t G, const int m, const double *Fa,
                           const double *P0, double *rho) {
    const int mm = m * m;
    double mx = 0.0;
    if (m == 1) { /* one pass over e */
        const double v = Fa[0], pz = P0[0];
#pragma omp simd reduction(max : mx)
        for (int64_t g = 0; g < G; g++) {
            const double eg = e[g];
            if (rho) rho[g] += eg * v;
            e[g] = eg * pz;
            mx = fabs(eg * pz) > mx ? fabs(eg * pz) : mx;
        }
        return mx;
    }
    for (int64_t g = 0; g < G; g++) {
        double *eg = e + g * mm, row[PIC_MAX_M * PIC_MAX_M];
        if (rho)
            for (int i = 0; i < m; i++) {
                double acc = 0.0;
                for (int c = 0; c < m; c++) acc += eg[i * m + c] * Fa[c];
                rho[g * m + i] += acc;
            }
        matmul_m(row, eg, P0, m);
        memcpy(eg, row, sizeof(double) * (size_t)mm);
        const double r = max_abs(row, mm);
        mx = r > mx ? r : mx;
    }
    return mx;
}

/* Ask for one particle's ring slots from its oldest live deposit on, the live ones and the
   stage's n_new to come (wrapping), to be brought into the cache while the forward pass runs:
   the ring was last touched a stage ago. */
INLINE void prefetch_ring(const double *ring, const int64_t *meta, const int64_t cap,
                          const int64_t width, const int64_t n_new) {
    const int64_t first = meta[0], n = meta[1] + n_new < cap ? meta[1] + n_new : cap;
    const int64_t head = first + n < cap ? n : cap - first; /* slots before the wrap */
    for (int64_t i = 0; i < head * width; i += 8) __builtin_prefetch(ring + first * width + i);
    for (int64_t i = 0; i < (n - head) * width; i += 8) __builtin_prefetch(ring + i);
}

/* One chain step of one particle in the forward pass of an RTRL stage: Z = (x, s), r = y - h(Z),
   F[c][b] = psi'_c(previous output) dh_b/ds_c (Z) into st; s and psi' move on.
   Returns 1/2 |r|^2. */
INLINE double rtrl_forward(const pic_t *p, rtrl_step_t *st, const double *x, const double *y,
                           double *sq, double *dq, const int d, const int m) {
    const int D = d + m, corners = 1 << D;
    const double half = 0.5 * (p->n - 1), top = p->n - 2;
    const double *hgrid = p->hgrid;
    double loss = 0.0;
    double zq[PIC_MAX_D], f[PIC_MAX_D];
    for (int a = 0; a < D; a++) zq[a] = a < d ? x[a] : sq[a - d];
    const int64_t base = locate_cell(p, zq, D, half, top, f);
    int64_t idx[1 << PIC_MAX_D];
    hat_weights(p, base, f, D, idx, st->w);
    st->base = base;
    double dw[PIC_MAX_M][1 << PIC_MAX_D]; /* hat weights differentiated in s axis c */
    for (int c = 0; c < corners; c++) {
        for (int sc = 0; sc < m; sc++) {
            double dc = 1.0;
            for (int a = 0; a < D; a++) {
                const int bit = (c >> (D - 1 - a)) & 1;
                if (a == d + sc)
                    dc *= bit ? half : -half;
                else
                    dc *= bit ? f[a] : 1.0 - f[a];
            }
            dw[sc][c] = dc;
        }
    }
    double hz[PIC_MAX_M];
    for (int b = 0; b < m; b++) {
        double acc = 0.0;
        for (int c = 0; c < corners; c++) acc += st->w[c] * hgrid[idx[c] * m + b];
        hz[b] = acc;
        st->r[b] = y[b] - acc;
        loss += 0.5 * st->r[b] * st->r[b];
        for (int sc = 0; sc < m; sc++) {
            double slope = 0.0;
            for (int c = 0; c < corners; c++) slope += dw[sc][c] * hgrid[idx[c] * m + b];
            st->F[sc * m + b] = dq[sc] * slope;
        }
    }
    if (p->memory)
        for (int b = 0; b < m; b++) {
            const double t = psi_clip(p->clip, hz[b]);
            sq[b] = t;
            dq[b] = p->clip == CLIP_HARD ? (fabs(hz[b]) < 1.0) : 1.0 - t * t;
        }
    return loss;
}

/* The RTRL stage (see the header): cs chain steps with hgrid frozen, particle by particle;
   rho as in stage_dm (NULL: the burn-in), traces E and psi' updated. */
INLINE double rtrl_stage_dm(const pic_t *p, const double *xs, const double *ys, double *s,
                            int64_t cs, double *rho, const int d, const int m) {
    rtrl_step_t *steps = p->steps;
    const int D = d + m, mm = m * m;
    const int64_t M = p->M, G = p->G;
    const int n = p->n;
    const int corners = 1 << D;
    const double half = 0.5 * (n - 1), top = n - 2;
    const double *hgrid = p->hgrid;
    const int64_t width = 1 + corners + mm; /* a ring deposit: lower corner, weights, Q */
    int64_t off[1 << PIC_MAX_D];            /* the corners' offsets from the lower one */
    for (int c = 0; c < corners; c++) {
        off[c] = 0;
        for (int a = 0; a < D; a++) off[c] += ((c >> (D - 1 - a)) & 1) * p->stride[a];
    }
    double loss = 0.0;
    if (rho) memset(rho, 0, sizeof(double) * (size_t)(G * m));
    /* particles in blocks of nb: the forward pass runs step by step across the block, so the
       serial chain of one particle's steps (s_{k+1} = psi(h(Z_k))) overlaps the others' */
    const int64_t nb = p->block;
    for (int64_t q0 = 0; q0 < M; q0 += nb) {
        const int64_t q1 = q0 + nb < M ? q0 + nb : M;
        for (int64_t q = q0; q < q1; q++) /* the block's histories, towards the cache */
            prefetch_ring(p->ring + q * p->ring_cap * width, p->meta + q * 3, p->ring_cap, width,
                          cs);
        for (int64_t k = 0; k < cs; k++)
            for (int64_t q = q0; q < q1; q++)
                loss += rtrl_forward(p, steps + (q - q0) * cs + k, xs + (k * M + q) * d,
                                     ys + (k * M + q) * m, s + q * m, p->dpsi + q * m, d, m);
        for (int64_t q = q0; q < q1; q++) {
            rtrl_step_t *const steps_q = steps + (q - q0) * cs;
            double *e = p->E + q * G * mm;
            /* backward: a_k = r_k + F_{k+1} a_{k+1}, P_k = F_{k+1} P_{k+1}; deposits phi_k a_k */
            double a[PIC_MAX_M] = {0.0}, Fa[PIC_MAX_M], P0[PIC_MAX_M * PIC_MAX_M];
            for (int64_t k = cs - 1; k >= 0; k--) {
                rtrl_step_t *st = steps_q + k;
                if (k == cs - 1) {
                    for (int b = 0; b < m; b++) a[b] = st->r[b];
                    for (int i = 0; i < mm; i++) st->P[i] = (i % (m + 1)) == 0;
                } else {
                    const rtrl_step_t *nx = steps_q + k + 1;
                    for (int c = 0; c < m; c++) {
                        double acc = 0.0;
                        for (int b = 0; b < m; b++) acc += nx->F[c * m + b] * a[b];
                        Fa[c] = acc;
                    }
                    for (int c = 0; c < m; c++) a[c] = st->r[c] + Fa[c];
                    matmul_m(st->P, nx->F, nx->P, m);
                }
                if (rho)
                    for (int b = 0; b < m; b++)
                        for (int c = 0; c < corners; c++)
                            rho[(st->base + off[c]) * m + b] += st->w[c] * a[b];
            }
            matmul_m(P0, steps_q[0].F, steps_q[0].P, m);
            for (int c = 0; c < m; c++) { /* F_1 a_1: the old trace's weight in this stage */
                double acc = 0.0;
                for (int b = 0; b < m; b++) acc += steps_q[0].F[c * m + b] * a[b];
                Fa[c] = acc;
            }
            int64_t *meta = p->meta + q * 3;
            double *ring = p->ring + q * p->ring_cap * width;
            /* the history: rho += sum_j phi_j Q_j F_1 a_1, Q_j <- Q_j P_0 */
            for (int64_t j = 0, slot = meta[0]; j < meta[1]; j++, slot++) {
                slot = slot == p->ring_cap ? 0 : slot;
                double *ent = ring + slot * width, *Q = ent + 1 + corners;
                const int64_t base = (int64_t)ent[0];
                if (m == 1) {
                    if (rho)
                        for (int c = 0; c < corners; c++)
                            rho[base + off[c]] += ent[1 + c] * Q[0] * Fa[0];
                    Q[0] *= P0[0];
                    continue;
                }
                if (rho)
                    for (int i = 0; i < m; i++) {
                        double coef = 0.0;
                        for (int c = 0; c < m; c++) coef += Q[i * m + c] * Fa[c];
                        for (int c = 0; c < corners; c++)
                            rho[(base + off[c]) * m + i] += ent[1 + c] * coef;
                    }
                double row[PIC_MAX_M * PIC_MAX_M];
                matmul_m(row, Q, P0, m);
                for (int i = 0; i < mm; i++) Q[i] = row[i];
            }
            if (meta[2]) meta[2] = dense_update(e, G, m, Fa, P0, rho) > RING_TOL;
            while (meta[1] > 0 && max_abs(ring + meta[0] * width + 1 + corners, mm) <= RING_TOL)
                meta[0] = meta[0] + 1 == p->ring_cap ? 0 : meta[0] + 1, meta[1]--; /* negligible */
            for (int64_t k = 0; k < cs; k++) { /* append phi(Z_k) (x) P_k, oldest first */
                const rtrl_step_t *st = steps_q + k;
                if (max_abs(st->P, mm) <= RING_TOL) continue;
                if (meta[1] == p->ring_cap) { /* full: the oldest goes to the dense trace */
                    const double *old = ring + meta[0] * width, *Q = old + 1 + corners;
                    if (max_abs(Q, mm) > RING_TOL) {
                        if (!meta[2]) memset(e, 0, sizeof(double) * (size_t)(G * mm));
                        meta[2] = 1;
                        for (int c = 0; c < corners; c++)
                            for (int i = 0; i < mm; i++)
                                e[((int64_t)old[0] + off[c]) * mm + i] += old[1 + c] * Q[i];
                    }
                    meta[0] = meta[0] + 1 == p->ring_cap ? 0 : meta[0] + 1, meta[1]--;
                }
                const int64_t slot = meta[0] + meta[1];
            double *ent = ring + (slot < p->ring_cap ? slot : slot - p->ring_cap) * width;
                ent[0] = (double)st->base;
                for (int c = 0; c < corners; c++) ent[1 + c] = st->w[c];
                memcpy(ent + 1 + corners, st->P, sizeof(double) * (size_t)mm);
                meta[1]++;
            }
        }
    }
    const double norm = 1.0 / ((double)M * (double)cs);
    if (rho)
        for (int64_t i = 0; i < G * m; i++) rho[i] *= norm;
    return loss * norm;
}

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
