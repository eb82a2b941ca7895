/*
 * The RTRL stage of the native grid limit kernel (limit_pic.c, docs/model.md §4b), float64:
 * included by limit_pic.c after pic_t, locate_cell and hat_weights. See limit_pic.c's header
 * for the algebra (forward pass, backward pass, the trace as a history ring of deposits).
 */
#ifndef RNNLIMIT_PIC_RTRL_H
#define RNNLIMIT_PIC_RTRL_H

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

/* Drop the oldest deposit of a ring (meta: oldest slot, live deposits, ...). */
INLINE void ring_drop_oldest(int64_t *meta, const int64_t cap) {
    meta[0] = meta[0] + 1 == cap ? 0 : meta[0] + 1;
    meta[1]--;
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
    for (int c = 0; c < corners; c++) off[c] = corner_offset(p, c, D);
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
                ring_drop_oldest(meta, p->ring_cap); /* negligible */
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
                    ring_drop_oldest(meta, p->ring_cap);
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

#endif /* RNNLIMIT_PIC_RTRL_H */
