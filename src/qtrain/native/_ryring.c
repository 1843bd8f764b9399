/* qtrain's compiled kernel: probabilities, forward and adjoint backward, of circuits made
 * of layers "RY on every wire, then CNOT(k, k+1) for k = 0..N-2 [then CNOT(N-1, 0)]"
 * (qtrain's "ry-cnot-chain" / "ry-cnot-ring"). See kernel.py for how it is built and used.
 *
 * Layout. Wire k is bit N-1-k of the basis index. The state is cut into blocks of 2^l
 * contiguous amplitudes (the low l bits, wires h..N-1, h = N - l) and into tiles (the same
 * low offsets in all 2^h blocks, gathered into a contiguous scratch). Each layer is two
 * passes over memory, each pass doing all its work while the data is in cache:
 *   tile pass T_j : CNOT(N-1, 0) of layer j-1, RY on the high wires, the CNOTs among them
 *                   (a row permutation, applied on the way back to memory);
 *   block pass B_j: RY on the low wires, CNOT(h-1, h) (its control is a bit of the block
 *                   index) and the CNOTs among the low wires (one permuted copy).
 * With h = 0 the whole state is one block and B_j does everything. The ring's last CNOT
 * is folded into the next layer's pass, and the final one into the probabilities.
 *
 * The backward walks the layers in reverse, un-computing psi and propagating lambda in the
 * same cache-resident passes, with dL/dtheta = 1/2 sum (lambda_b psi_a - lambda_a psi_b)
 * over each RY's amplitude pairs (a: its wire reads 0, b: 1), taken after the gate.
 * Partial sums are kept per block and tile and added in a fixed order, so results do not
 * depend on the number of threads.
 *
 * Arithmetic uses GCC vector extensions (64-byte vectors: AVX-512 where the compiler
 * targets it, split into narrower registers elsewhere). Compiled twice: -DQT_DOUBLE=0/1.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "_vectors.h"

static M XORM[VB];  /* lane r -> r ^ 2^b: the partner of an in-vector butterfly */
static V SGN[VB];   /* -1 where bit b of the lane is 0, +1 where it is 1 */
static M PATG[2];   /* lanes of the chain's forward permutation */
static M PATI[2];   /* lanes of its inverse */
static M ODD;       /* all bits set in odd lanes */

static long igray(long q) { /* bit k = XOR of bits >= k */
    for (int s = 1; s < 64; s <<= 1) q ^= q >> s;
    return q;
}

__attribute__((constructor)) static void init_masks(void) {
    for (int b = 0; b < VB; b++)
        for (int r = 0; r < VL; r++) {
            XORM[b][r] = r ^ (1 << b);
            SGN[b][r] = ((r >> b) & 1) ? 1 : -1;
        }
    for (int f = 0; f < 2; f++)
        for (int r = 0; r < VL; r++) {
            PATG[f][r] = r ^ (r >> 1) ^ (f << (VB - 1));
            PATI[f][r] = igray(r) ^ (f ? VL - 1 : 0);
        }
    for (int r = 0; r < VL; r++) ODD[r] = (r & 1) ? -1 : 0;
}


/* ---- primitives on a contiguous buffer of 2^m amplitudes (m > VB) ---- */

/* RY on the k consecutive bits b..b+k-1 (all >= VB, k <= 3) in one sweep, 2^k vectors at a
 * time (named variables, so that they stay in registers): (a, d) -> (c a - s d, s a + c d)
 * per bit; cs[2e], cs[2e+1] = cos, sin of bit b+e's gate */
#define BF(a, d, e)                                \
    do {                                           \
        V a_ = (a), d_ = (d);                      \
        (a) = cs[2 * (e)] * a_ - cs[2 * (e) + 1] * d_; \
        (d) = cs[2 * (e) + 1] * a_ + cs[2 * (e)] * d_; \
    } while (0)
#define SWEEP(k, ...)                                                    \
    do {                                                                 \
        int sb = b - VB;                                                 \
        long s0 = 1L << sb, nq = 1L << (m - VB - (k));                   \
        for (long q = 0; q < nq; q++) {                                  \
            long j = ((q >> sb) << (sb + (k))) | (q & (s0 - 1));         \
            __VA_ARGS__                                                  \
        }                                                                \
    } while (0)

static void ry_fwd_k(T *x, int m, int b, int k, const T *cs) {
    V *X = (V *)x;
    if (k == 3)
        SWEEP(3, {
            V *P = X + j;
            V v0 = P[0], v1 = P[s0], v2 = P[2 * s0], v3 = P[3 * s0];
            V v4 = P[4 * s0], v5 = P[5 * s0], v6 = P[6 * s0], v7 = P[7 * s0];
            BF(v0, v1, 0); BF(v2, v3, 0); BF(v4, v5, 0); BF(v6, v7, 0);
            BF(v0, v2, 1); BF(v1, v3, 1); BF(v4, v6, 1); BF(v5, v7, 1);
            BF(v0, v4, 2); BF(v1, v5, 2); BF(v2, v6, 2); BF(v3, v7, 2);
            P[0] = v0; P[s0] = v1; P[2 * s0] = v2; P[3 * s0] = v3;
            P[4 * s0] = v4; P[5 * s0] = v5; P[6 * s0] = v6; P[7 * s0] = v7;
        });
    else if (k == 2)
        SWEEP(2, {
            V *P = X + j;
            V v0 = P[0], v1 = P[s0], v2 = P[2 * s0], v3 = P[3 * s0];
            BF(v0, v1, 0); BF(v2, v3, 0); BF(v0, v2, 1); BF(v1, v3, 1);
            P[0] = v0; P[s0] = v1; P[2 * s0] = v2; P[3 * s0] = v3;
        });
    else
        SWEEP(1, {
            V *P = X + j;
            V v0 = P[0], v1 = P[s0];
            BF(v0, v1, 0);
            P[0] = v0; P[s0] = v1;
        });
}

/* RY on the bits b0..b1-1 (all >= VB), three at a time */
static void ry_fwd_bits(T *x, int m, int b0, int b1, const T *cs) {
    int b = b0;
    for (; b + 3 <= b1; b += 3) ry_fwd_k(x, m, b, 3, cs + 2 * (b - b0));
    if (b1 > b) ry_fwd_k(x, m, b, b1 - b, cs + 2 * (b - b0));
}

/* RY on the in-vector bits 0..VB-1 at once; cs[2b], cs[2b+1] = cos, sin of bit b's gate */
static void ry_fwd_lanes(T *x, int m, const T *cs) {
    V *X = (V *)x;
    V ss[VB];
    for (int b = 0; b < VB; b++) ss[b] = cs[2 * b + 1] * SGN[b];
    long nv = 1L << (m - VB);
    for (long q = 0; q < nv; q++) {
        V v = X[q];
        for (int b = 0; b < VB; b++) v = cs[2 * b] * v + ss[b] * __builtin_shuffle(v, XORM[b]);
        X[q] = v;
    }
}

/* backward of ry_fwd_k: adds each gate's gradient to g[e], un-rotates psi (x) and lambda (y) */
#define BB(a, d, la, ld, e)                                   \
    do {                                                      \
        V a_ = (a), d_ = (d), la_ = (la), ld_ = (ld);         \
        T c_ = cs[2 * (e)], s_ = cs[2 * (e) + 1];             \
        acc##e += ld_ * a_ - la_ * d_;                        \
        (a) = c_ * a_ + s_ * d_;                              \
        (d) = c_ * d_ - s_ * a_;                              \
        (la) = c_ * la_ + s_ * ld_;                           \
        (ld) = c_ * ld_ - s_ * la_;                           \
    } while (0)
#define FLUSH(k)                                                                 \
    if ((q & 255) == 255 || q == nq - 1) { /* float partial sums over <= 256 steps */ \
        g[0] += 0.5 * hsum(acc0);                                                \
        acc0 = (V){0};                                                           \
        if ((k) > 1) { g[1] += 0.5 * hsum(acc1); acc1 = (V){0}; }                \
    }

/* (pairs of bits, not triples: the backward holds twice the vectors, and a triple's 16
 * do not stay in registers; measured 7% faster at N = 22) */
static void ry_bwd_k(T *x, T *y, int m, int b, int k, const T *cs, double *g) {
    V *X = (V *)x, *Y = (V *)y;
    V acc0 = {0}, acc1 = {0};
    if (k == 2)
        SWEEP(2, {
            V *P = X + j, *Q = Y + j;
            V v0 = P[0], v1 = P[s0], v2 = P[2 * s0], v3 = P[3 * s0];
            V w0 = Q[0], w1 = Q[s0], w2 = Q[2 * s0], w3 = Q[3 * s0];
            BB(v0, v1, w0, w1, 0); BB(v2, v3, w2, w3, 0); BB(v0, v2, w0, w2, 1); BB(v1, v3, w1, w3, 1);
            P[0] = v0; P[s0] = v1; P[2 * s0] = v2; P[3 * s0] = v3;
            Q[0] = w0; Q[s0] = w1; Q[2 * s0] = w2; Q[3 * s0] = w3;
            FLUSH(2)
        });
    else
        SWEEP(1, {
            V *P = X + j, *Q = Y + j;
            V v0 = P[0], v1 = P[s0], w0 = Q[0], w1 = Q[s0];
            BB(v0, v1, w0, w1, 0);
            P[0] = v0; P[s0] = v1; Q[0] = w0; Q[s0] = w1;
            FLUSH(1)
        });
}

static void ry_bwd_bits(T *x, T *y, int m, int b0, int b1, const T *cs, double *g) {
    int b = b0;
    for (; b + 2 <= b1; b += 2) ry_bwd_k(x, y, m, b, 2, cs + 2 * (b - b0), g + (b - b0));
    if (b1 > b) ry_bwd_k(x, y, m, b, 1, cs + 2 * (b - b0), g + (b - b0));
}

/* backward of the in-vector RYs; adds each gradient to g[b]. The lanes' signs are applied
 * when the partial sums are flushed (sum_q w SGN pv = SGN . sum_q w pv). */
static void ry_bwd_lanes(T *x, T *y, int m, const T *cs, double *g) {
    V *X = (V *)x, *Y = (V *)y;
    V ss[VB], acc[VB];
    for (int b = 0; b < VB; b++) {
        ss[b] = cs[2 * b + 1] * SGN[b];
        acc[b] = (V){0};
    }
    long nv = 1L << (m - VB);
    for (long q = 0; q < nv; q++) {
        V v = X[q], w = Y[q];
        for (int b = 0; b < VB; b++) {
            V pv = __builtin_shuffle(v, XORM[b]), pw = __builtin_shuffle(w, XORM[b]);
            acc[b] += w * pv;
            v = cs[2 * b] * v - ss[b] * pv;
            w = cs[2 * b] * w - ss[b] * pw;
        }
        X[q] = v;
        Y[q] = w;
        if ((q & 255) == 255 || q == nv - 1)
            for (int b = 0; b < VB; b++) {
                g[b] += 0.5 * hsum(acc[b] * SGN[b]);
                acc[b] = (V){0};
            }
    }
}

/* CNOT(k, k+1) for the wires of bits m-1 (first) .. 0, after flipping bit m-1 when f:
 * new[y] = old[y ^ (y >> 1) ^ f 2^(m-1)], one permuted copy through tmp */
static void chain_fwd(T *x, T *tmp, int m, int f) {
    V *X = (V *)x, *Tm = (V *)tmp;
    long nq = 1L << (m - VB), fl = (long)f << (m - 1 - VB);
    for (long q = 0; q < nq; q++) Tm[q] = __builtin_shuffle(X[(q ^ (q >> 1)) ^ fl], PATG[q & 1]);
    memcpy(x, tmp, sizeof(T) << m);
}

/* its inverse: old[x] = new[igray(x) ^ (f ? all ones : 0)]. The block is first copied in
 * order (it comes from memory here, and the permuted reads would defeat the prefetcher). */
static void chain_bwd(T *x, T *tmp, int m, int f) {
    V *X = (V *)x, *Tm = (V *)tmp;
    long nq = 1L << (m - VB), fl = f ? nq - 1 : 0;
    memcpy(tmp, x, sizeof(T) << m);
    for (long q = 0; q < nq; q++) X[q] = __builtin_shuffle(Tm[igray(q) ^ fl], PATI[__builtin_parityl(q) ^ f]);
}

/* CNOT with control bit 0 and target bit m-1 (the ring's last CNOT): swap the odd lanes
 * of the two halves */
static void cnot_wrap(T *x, int m) {
    V *X = (V *)x;
    long h = 1L << (m - 1 - VB);
    for (long q = 0; q < h; q++) {
        V a = X[q], b = X[q + h];
        X[q] = blend(a, b, ODD);
        X[q + h] = blend(b, a, ODD);
    }
}

/* ---- the circuit ---- */

typedef struct {
    int n, L, ring, l, h, ch, mt, nt; /* mt: bits of a tile (h + ch) */
    long nblocks, ntiles, scratch;    /* scratch: amplitudes of one thread's buffer */
    T *cs; /* (L, n, 2): cos, sin of theta / 2, by bit of the basis index (wire k: bit n-1-k) */
} Plan;

/* 0: ready; 1: out of memory; 2: arguments it cannot take (a block must hold two vectors) */
static int plan_init(Plan *p, int n, int L, int ring, int lbits, int nthreads, const double *theta) {
    if (n <= VB + 1 || lbits <= VB || L < 1) return 2;
    p->n = n;
    p->L = L;
    p->ring = ring;
    p->l = n < lbits ? n : lbits;
    p->h = n - p->l;
    p->ch = p->l - p->h;
    if (p->ch < VB + 1) p->ch = VB + 1;
    if (p->ch > p->l) p->ch = p->l;
    p->mt = p->h + p->ch;
    p->nblocks = 1L << p->h;
    p->ntiles = 1L << (p->l - p->ch);
    p->scratch = 1L << (p->mt > p->l ? p->mt : p->l);
    p->nt = nthreads < 1 ? 1 : nthreads;
    p->cs = malloc(sizeof(T) * 2 * (size_t)n * L);
    if (!p->cs) return 1;
    for (long j = 0; j < L; j++)
        for (int k = 0; k < n; k++) {
            long i = j * n + (n - 1 - k);
            p->cs[2 * i] = (T)cos(0.5 * theta[j * n + k]);
            p->cs[2 * i + 1] = (T)sin(0.5 * theta[j * n + k]);
        }
    return 0;
}

/* RYs of layer j on wires k0..k1-1, which sit at bits n-1-k-shift of the buffer (the low
 * wires of a block: shift 0; the high wires of a tile: shift l - ch). The bits are
 * consecutive; those below VB (the last wires) are in-vector. */
static void layer_ry_fwd(const Plan *p, T *x, int m, int j, int k0, int k1, int shift) {
    int b0 = p->n - k1 - shift, b1 = p->n - k0 - shift; /* bits b0..b1-1 */
    const T *bits = p->cs + 2L * (p->n * j + b0 + shift); /* buffer bit b is basis bit b + shift */
    int lo = b0 < VB ? VB : b0;
    if (b0 < VB) ry_fwd_lanes(x, m, bits); /* b0 == 0 then */
    ry_fwd_bits(x, m, lo, b1, bits + 2 * (lo - b0));
}

static void layer_ry_bwd(const Plan *p, T *x, T *y, int m, int j, int k0, int k1, int shift, double *g) {
    double gb[64] = {0};
    int b0 = p->n - k1 - shift, b1 = p->n - k0 - shift;
    const T *bits = p->cs + 2L * (p->n * j + b0 + shift);
    int lo = b0 < VB ? VB : b0;
    ry_bwd_bits(x, y, m, lo, b1, bits + 2 * (lo - b0), gb + (lo - b0));
    if (b0 < VB) ry_bwd_lanes(x, y, m, bits, gb);
    for (int b = b0; b < b1; b++) g[p->n - 1 - b - shift - k0] += gb[b - b0];
}

static void tile_gather(const Plan *p, T *dst, const T *src, long c0, int inverse_rows) {
    size_t row = sizeof(T) << p->ch;
    for (long r = 0; r < p->nblocks; r++) {
        long b = inverse_rows ? igray(r) & (p->nblocks - 1) : r;
        memcpy(dst + (r << p->ch), src + (b << p->l) + c0, row);
    }
}

static void tile_scatter(const Plan *p, T *dst, const T *src, long c0, int gray_rows) {
    size_t row = sizeof(T) << p->ch;
    for (long r = 0; r < p->nblocks; r++) {
        long b = gray_rows ? r ^ (r >> 1) : r;
        memcpy(dst + (r << p->l) + c0, src + (b << p->ch), row);
    }
}

/* high wire k of a tile sits at bit ch + h-1-k = n-1-k - (l - ch) */
#define TILE_SHIFT(p) ((p)->l - (p)->ch)

int qt_forward(int n, int L, int ring, int lbits, int nthreads, const double *theta, T *psi, T *probs) {
    Plan P;
    int err = plan_init(&P, n, L, ring, lbits, nthreads, theta);
    if (err) return err;
    Plan *p = &P;
    T *work = aligned_alloc(64, sizeof(T) * p->scratch * p->nt);
    if (!work) {
        free(p->cs);
        return 1;
    }
    long dim = 1L << n;
#pragma omp parallel num_threads(p->nt)
    {
#ifdef _OPENMP
        T *s = work + p->scratch * omp_get_thread_num();
#else
        T *s = work;
#endif
#pragma omp for schedule(static)
        for (long i = 0; i < dim; i++) psi[i] = 0;
#pragma omp single
        psi[0] = 1;
        for (int j = 0; j < p->L; j++) {
            if (p->h > 0) {
#pragma omp for schedule(static)
                for (long t = 0; t < p->ntiles; t++) {
                    long c0 = t << p->ch;
                    tile_gather(p, s, psi, c0, 0);
                    if (p->ring && j > 0) cnot_wrap(s, p->mt);
                    layer_ry_fwd(p, s, p->mt, j, 0, p->h, TILE_SHIFT(p));
                    tile_scatter(p, psi, s, c0, 1);
                }
            }
#pragma omp for schedule(static)
            for (long blk = 0; blk < p->nblocks; blk++) {
                T *x = psi + (blk << p->l);
                if (p->h == 0 && p->ring && j > 0) cnot_wrap(x, p->l);
                layer_ry_fwd(p, x, p->l, j, p->h, p->n, 0);
                chain_fwd(x, s, p->l, p->h > 0 ? (int)(blk & 1) : 0);
            }
        }
        /* probabilities of the final state: the ring's last CNOT swaps odd lanes of halves */
        long half = dim >> 1;
        V *X = (V *)psi, *Pr = (V *)probs;
#pragma omp for schedule(static)
        for (long q = 0; q < (half >> VB); q++) {
            V a = X[q], b = X[q + (half >> VB)];
            V fa = p->ring ? blend(a, b, ODD) : a, fb = p->ring ? blend(b, a, ODD) : b;
            Pr[q] = fa * fa;
            Pr[q + (half >> VB)] = fb * fb;
        }
    }
    free(work);
    free(p->cs);
    return 0;
}

/* psi: the state qt_forward left (destroyed: un-computed to |0...0>); gp: dL/dp;
 * lam: scratch of 2^n; grad: (L, n) dL/dtheta */
int qt_backward(int n, int L, int ring, int lbits, int nthreads, const double *theta, T *psi, const T *gp,
                T *lam, double *grad) {
    Plan P;
    int err = plan_init(&P, n, L, ring, lbits, nthreads, theta);
    if (err) return err;
    Plan *p = &P;
    int nlow = p->n - p->h;
    /* partial sums: per layer, per block (low wires) and per tile (high wires) */
    double *part = calloc((size_t)p->L * (p->nblocks * nlow + p->ntiles * p->h), sizeof(double));
    T *work = aligned_alloc(64, sizeof(T) * p->scratch * 2 * p->nt);
    if (!work || !part) {
        free(work);
        free(part);
        free(p->cs);
        return 1;
    }
    long dim = 1L << n, half = dim >> 1;
#pragma omp parallel num_threads(p->nt)
    {
#ifdef _OPENMP
        T *s = work + 2 * p->scratch * omp_get_thread_num();
#else
        T *s = work;
#endif
        T *s2 = s + p->scratch;
        V *X = (V *)psi, *Lm = (V *)lam;
        const V *G = (const V *)gp;
        long hv = half >> VB;
        /* lambda = dL/dpsi before the final CNOT: 2 gp[C(j)] psi[j] */
#pragma omp for schedule(static)
        for (long q = 0; q < hv; q++) {
            V ga = G[q], gb = G[q + hv];
            V fa = p->ring ? blend(ga, gb, ODD) : ga, fb = p->ring ? blend(gb, ga, ODD) : gb;
            Lm[q] = 2 * fa * X[q];
            Lm[q + hv] = 2 * fb * X[q + hv];
        }
        for (int j = p->L - 1; j >= 0; j--) {
            double *pb = part + (size_t)j * (p->nblocks * nlow + p->ntiles * p->h);
            double *pt = pb + p->nblocks * nlow;
#pragma omp for schedule(static)
            for (long blk = 0; blk < p->nblocks; blk++) {
                T *x = psi + (blk << p->l), *y = lam + (blk << p->l);
                int f = p->h > 0 ? (int)(blk & 1) : 0;
                chain_bwd(x, s, p->l, f);
                chain_bwd(y, s, p->l, f);
                layer_ry_bwd(p, x, y, p->l, j, p->h, p->n, 0, pb + blk * nlow);
                if (p->h == 0 && p->ring && j > 0) {
                    cnot_wrap(x, p->l);
                    cnot_wrap(y, p->l);
                }
            }
            if (p->h > 0) {
#pragma omp for schedule(static)
                for (long t = 0; t < p->ntiles; t++) {
                    long c0 = t << p->ch;
                    tile_gather(p, s, psi, c0, 1);
                    tile_gather(p, s2, lam, c0, 1);
                    layer_ry_bwd(p, s, s2, p->mt, j, 0, p->h, TILE_SHIFT(p), pt + t * p->h);
                    if (p->ring && j > 0) {
                        cnot_wrap(s, p->mt);
                        cnot_wrap(s2, p->mt);
                    }
                    tile_scatter(p, psi, s, c0, 0);
                    tile_scatter(p, lam, s2, c0, 0);
                }
            }
        }
    }
    for (int j = 0; j < p->L; j++) {
        double *pb = part + (size_t)j * (p->nblocks * nlow + p->ntiles * p->h);
        double *pt = pb + p->nblocks * nlow;
        double *g = grad + (size_t)j * n;
        for (int k = 0; k < n; k++) g[k] = 0;
        for (long blk = 0; blk < p->nblocks; blk++)
            for (int k = 0; k < nlow; k++) g[p->h + k] += pb[blk * nlow + k];
        for (long t = 0; t < p->ntiles; t++)
            for (int k = 0; k < p->h; k++) g[k] += pt[t * p->h + k];
    }
    free(work);
    free(part);
    free(p->cs);
    return 0;
}
