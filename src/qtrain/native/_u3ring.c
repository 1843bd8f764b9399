/* qtrain's compiled kernel for "u3-cu3-ring": layers of "U3 on every wire, then CU3(k, k+1
 * mod N) for k = 0..N-1", probabilities forward and adjoint backward, for a state that fits in
 * cache as one block (N <= 14 in complex64). See kernel.py for how it is built and used.
 *
 * The state is complex, interleaved (re, im), wire k at bit N-1-k of the basis index. The
 * gates come in as 2x2 complex matrices (U3 and each CU3's target matrix), built and
 * differentiated by PyTorch; this code returns dL/dU = sum lambda_after psi_before^H for
 * each (PyTorch's convention for complex gradients). A gate on bit b is a butterfly across
 * vectors (b >= CB) or between lanes of one vector (b < CB); a control restricts it to
 * pairs whose control bit is 1 (skipped vectors, or a lane mask). The backward un-computes
 * psi with U^H, accumulates the gradient, and propagates lambda with U^H.
 *
 * Compiled twice: -DQT_DOUBLE=0 (complex64) / 1 (complex128).
 */
#include <stdlib.h>
#include <string.h>

#include "_vectors.h"
#define CB (VB - 1) /* complex lane bits: VL / 2 amplitudes per vector */

static M SWAP;     /* lane r -> r ^ 1: (re, im) -> (im, re) */
static V SGNRI;    /* -1 on real lanes, +1 on imaginary ones */
static M XORC[CB]; /* lane partner for complex bit b */
static M HI[CB];   /* all bits set where complex bit b of the lane reads 1 */
static M ALL;

__attribute__((constructor)) static void init_masks(void) {
    for (int r = 0; r < VL; r++) {
        SWAP[r] = r ^ 1;
        SGNRI[r] = (r & 1) ? 1 : -1;
        ALL[r] = -1;
        for (int b = 0; b < CB; b++) {
            XORC[b][r] = r ^ (2 << b);
            HI[b][r] = ((r >> 1 >> b) & 1) ? -1 : 0;
        }
    }
}

static inline V times_i(V v) { return __builtin_shuffle(v, SWAP) * SGNRI; }

/* u: u00r u00i u01r u01i u10r u10i u11r u11i. ctype 0: no control; 1: control bit c is
 * vector-level (c >= CB); 2: control bit c is in the lanes (c < CB) */
static void gate(T *x, int n, int b, const T *u, int ctype, int c) {
    V *X = (V *)x;
    long nv = 1L << (n - CB);
    M mask = ctype == 2 ? HI[c] : ALL;
    long cv = ctype == 1 ? 1L << (c - CB) : 0;
    if (b >= CB) {
        long sv = 1L << (b - CB);
        for (long i0 = 0; i0 < nv; i0 += 2 * sv)
            for (long j = i0; j < i0 + sv; j++) {
                if (cv && !(j & cv)) continue;
                V a = X[j], d = X[j + sv], ia = times_i(a), id = times_i(d);
                V a2 = u[0] * a + u[1] * ia + u[2] * d + u[3] * id;
                V d2 = u[4] * a + u[5] * ia + u[6] * d + u[7] * id;
                X[j] = blend(a, a2, mask);
                X[j + sv] = blend(d, d2, mask);
            }
        return;
    }
    /* in-lane: a lane whose bit b reads 0 gets u00 v + u01 partner, one reading 1 u11 v + u10 partner */
    V k0r, k0i, k1r, k1i;
    for (int r = 0; r < VL; r++) {
        int hi = (r >> 1 >> b) & 1;
        k0r[r] = hi ? u[6] : u[0];
        k0i[r] = hi ? u[7] : u[1];
        k1r[r] = hi ? u[4] : u[2];
        k1i[r] = hi ? u[5] : u[3];
    }
    for (long q = 0; q < nv; q++) {
        if (cv && !(q & cv)) continue;
        V v = X[q], p = __builtin_shuffle(v, XORC[b]);
        V v2 = k0r * v + k0i * times_i(v) + k1r * p + k1i * times_i(p);
        X[q] = blend(v, v2, mask);
    }
}

/* g (8 doubles: G00, G01, G10, G11 as re, im) += sum lambda_i conj(psi_j) over the pairs the
 * gate acts on, i, j the target bit's values. For x conj(y): re = sum x.y, im = sum
 * SGNRI . (x . swap(y)). */
#define FLUSH2(P, Q, MASK, k)                                         \
    do {                                                              \
        g[2 * (k)] += hsum(blend((V){0}, P, MASK));                   \
        g[2 * (k) + 1] += hsum(blend((V){0}, (Q) * SGNRI, MASK));     \
        P = (V){0};                                                   \
        Q = (V){0};                                                   \
    } while (0)

static void accumulate(const T *lam, const T *psi, int n, int b, int ctype, int c, double *g) {
    const V *Lm = (const V *)lam, *X = (const V *)psi;
    long nv = 1L << (n - CB);
    M mask = ctype == 2 ? HI[c] : ALL;
    long cv = ctype == 1 ? 1L << (c - CB) : 0;
    long count = 0;
    if (b >= CB) {
        long sv = 1L << (b - CB);
        V p00 = {0}, q00 = {0}, p01 = {0}, q01 = {0}, p10 = {0}, q10 = {0}, p11 = {0}, q11 = {0};
        for (long i0 = 0; i0 < nv; i0 += 2 * sv)
            for (long j = i0; j < i0 + sv; j++) {
                if (cv && !(j & cv)) continue;
                V la = blend((V){0}, Lm[j], mask), ld = blend((V){0}, Lm[j + sv], mask);
                V a = X[j], d = X[j + sv];
                V sa = __builtin_shuffle(a, SWAP), sd = __builtin_shuffle(d, SWAP);
                p00 += la * a; q00 += la * sa;
                p01 += la * d; q01 += la * sd;
                p10 += ld * a; q10 += ld * sa;
                p11 += ld * d; q11 += ld * sd;
                if (++count == 256) {
                    FLUSH2(p00, q00, ALL, 0); FLUSH2(p01, q01, ALL, 1);
                    FLUSH2(p10, q10, ALL, 2); FLUSH2(p11, q11, ALL, 3);
                    count = 0;
                }
            }
        FLUSH2(p00, q00, ALL, 0); FLUSH2(p01, q01, ALL, 1);
        FLUSH2(p10, q10, ALL, 2); FLUSH2(p11, q11, ALL, 3);
        return;
    }
    /* in-lane: the same lane gives G00 (bit 0) / G11 (bit 1), the partner lane G01 / G10 */
    M lo = ~HI[b], hi = HI[b];
    V ps = {0}, qs = {0}, pc = {0}, qc = {0}, ps2, qs2, pc2, qc2;
    for (long q = 0; q < nv; q++) {
        if (cv && !(q & cv)) continue;
        V l = blend((V){0}, Lm[q], mask), v = X[q], p = __builtin_shuffle(v, XORC[b]);
        ps += l * v; qs += l * __builtin_shuffle(v, SWAP);
        pc += l * p; qc += l * __builtin_shuffle(p, SWAP);
        if (++count == 256) {
            ps2 = ps; qs2 = qs; pc2 = pc; qc2 = qc;
            FLUSH2(ps, qs, lo, 0); FLUSH2(ps2, qs2, hi, 3);
            FLUSH2(pc, qc, lo, 1); FLUSH2(pc2, qc2, hi, 2);
            count = 0;
        }
    }
    if (count) { /* the rest */
        ps2 = ps; qs2 = qs; pc2 = pc; qc2 = qc;
        FLUSH2(ps, qs, lo, 0); FLUSH2(ps2, qs2, hi, 3);
        FLUSH2(pc, qc, lo, 1); FLUSH2(pc2, qc2, hi, 2);
    }
}

static void adjoint(const T *u, T *uh) { /* uh = u^H */
    uh[0] = u[0]; uh[1] = -u[1];
    uh[2] = u[4]; uh[3] = -u[5];
    uh[4] = u[2]; uh[5] = -u[3];
    uh[6] = u[6]; uh[7] = -u[7];
}

/* the ring's k-th CU3: control wire k, target wire (k+1) mod n */
static void ring_pair(int n, int k, int *b, int *ctype, int *c) {
    *c = n - 1 - k;
    *b = k + 1 < n ? n - 2 - k : n - 1;
    *ctype = *c >= CB ? 1 : 2;
}

static int check(int n, int L) { return n <= CB + 1 || L < 1; }

/* us, cs: (L, n, 8) U3 matrices and CU3 target matrices; psi: 2^n complex (2^(n+1) T) */
int qt_u3_forward(int n, int L, const double *us, const double *cs, T *psi, T *probs) {
    if (check(n, L)) return 2;
    long dim = 1L << n;
    memset(psi, 0, sizeof(T) * 2 * dim);
    psi[0] = 1;
    T u[8];
    for (int j = 0; j < L; j++) {
        for (int k = 0; k < n; k++) {
            for (int e = 0; e < 8; e++) u[e] = (T)us[((long)j * n + k) * 8 + e];
            gate(psi, n, n - 1 - k, u, 0, 0);
        }
        for (int k = 0; k < n; k++) {
            int b, ct, c;
            ring_pair(n, k, &b, &ct, &c);
            for (int e = 0; e < 8; e++) u[e] = (T)cs[((long)j * n + k) * 8 + e];
            gate(psi, n, b, u, ct, c);
        }
    }
    for (long i = 0; i < dim; i++) probs[i] = psi[2 * i] * psi[2 * i] + psi[2 * i + 1] * psi[2 * i + 1];
    return 0;
}

/* psi: as qt_u3_forward left it (un-computed in place); gp: dL/dp; lam: 2^n complex scratch;
 * gu, gc: (L, n, 8) dL/dU of the U3 and CU3 target matrices */
int qt_u3_backward(int n, int L, const double *us, const double *cs, T *psi, const T *gp, T *lam, double *gu,
                   double *gc) {
    if (check(n, L)) return 2;
    long dim = 1L << n;
    for (long i = 0; i < dim; i++) {
        lam[2 * i] = 2 * gp[i] * psi[2 * i];
        lam[2 * i + 1] = 2 * gp[i] * psi[2 * i + 1];
    }
    memset(gu, 0, sizeof(double) * 8 * n * L);
    memset(gc, 0, sizeof(double) * 8 * n * L);
    T u[8], uh[8];
    for (int j = L - 1; j >= 0; j--) {
        for (int k = n - 1; k >= 0; k--) {
            int b, ct, c;
            ring_pair(n, k, &b, &ct, &c);
            for (int e = 0; e < 8; e++) u[e] = (T)cs[((long)j * n + k) * 8 + e];
            adjoint(u, uh);
            gate(psi, n, b, uh, ct, c);
            accumulate(lam, psi, n, b, ct, c, gc + ((long)j * n + k) * 8);
            gate(lam, n, b, uh, ct, c);
        }
        for (int k = n - 1; k >= 0; k--) {
            for (int e = 0; e < 8; e++) u[e] = (T)us[((long)j * n + k) * 8 + e];
            adjoint(u, uh);
            gate(psi, n, n - 1 - k, uh, 0, 0);
            accumulate(lam, psi, n, n - 1 - k, 0, 0, gu + ((long)j * n + k) * 8);
            gate(lam, n, n - 1 - k, uh, 0, 0);
        }
    }
    return 0;
}
