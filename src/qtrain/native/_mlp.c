/* qtrain's compiled kernel for the mapping MLP of a generator (qtrain.generator's
 * _MLPKernel; timed by benchmarks/bench_mlp_kernel.py): outputs forward, and the backward
 * with the activations recomputed, over the rows r < R of
 *
 *     h_0 = lo[r mod TR] + hi[r div TR] + x_r wx        (the first layer, from two tables)
 *     h_i = W_i act(h_{i-1}) + b_i,   i = 1..K          (out_r = h_K, C values)
 *
 * The caller passes each nn.Linear's weight and bias as they are (any widths: they are
 * copied into zero-padded buffers). The first layer's bit columns become two tables, lo
 * (the low TB bits, by row in a tile) and hi (b + the high bits, by tile), and its
 * gradient is taken back from the tables' gradients at the end.
 *
 * Layout. Rows go through in tiles of TR = TV vectors: every buffer of a tile is
 * (features, TV) vectors, row t of the tile in lane t mod VL of vector t div VL, so each
 * layer is a register-blocked product (4 outputs x 4 vectors of accumulators, weights
 * broadcast) and each activation one elementwise sweep. Nothing of a tile leaves the
 * cache: the backward recomputes the tile's forward, then walks it back.
 *
 * Gradients. Weight and bias gradients are kept per thread as vectors (lanes summed
 * later), flushed into double every FLUSH tiles; the table gradients dL/dlo are kept the
 * same way by lane, dL/dhi is one sum per tile. Tiles are grouped into a fixed number of
 * slots whatever the thread count and the slots are added in order, so results do not
 * depend on the number of threads.
 *
 * Widths are padded to multiples of 4 with zero units, which every supported activation
 * maps to 0, so padded units carry nothing. Compiled twice:
 * -DQT_DOUBLE=0 (float) / 1 (double).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "_vectors.h" /* the vector types, shared with the circuit kernels */

#define TV 8           /* vectors per feature in a tile */
#define TB (VB + 3)    /* log2 of the rows per tile (TV = 2^3) */
#define TR (1L << TB)  /* rows per tile: 128 (float) / 64 (double) */
#define FLUSH 32       /* tiles between flushes of the float accumulators */
#define SLOTS 16       /* fixed groups of tiles, added in order */

enum { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU = 2, ACT_SILU = 3, ACT_TANH = 4 };

static inline V splat(T s) { return (V){0} + s; }

/* ---- activations: a = act(h), and g *= act'(h) ---- */

#if QT_DOUBLE
/* double: libm per lane (the float path below is the fast one) */
static inline T s_act(int act, T h, T *d) {
    switch (act) {
    case ACT_RELU: *d = h > 0; return h > 0 ? h : 0;
    case ACT_GELU: {
        T cdf = 0.5 * erfc(-h * M_SQRT1_2);
        *d = cdf + h * exp(-0.5 * h * h) * (0.5 * M_2_SQRTPI * M_SQRT1_2);
        return h * cdf;
    }
    case ACT_SILU: {
        T s = 1 / (1 + exp(-h));
        *d = s * (1 + h * (1 - s));
        return h * s;
    }
    case ACT_TANH: {
        T t = tanh(h);
        *d = 1 - t * t;
        return t;
    }
    default: *d = 1; return h;
    }
}
static inline __attribute__((always_inline)) V v_act(int act, V h, V *d) {
    V a = {0};
    for (int l = 0; l < VL; l++) {
        T dl;
        a[l] = s_act(act, h[l], &dl);
        (*d)[l] = dl;
    }
    return a;
}
#else
/* float: Cephes' expf (relative error ~1e-7; n = round(x log2 e) by the 1.5 * 2^23 shifter,
 * whose low mantissa bits then hold n) and Abramowitz-Stegun 7.1.26 for erf (absolute error
 * < 1.5e-7, the same formula as PyTorch's vectorised CPU erf) */
static inline V v_exp(V x) {
    M lo = x < splat(-87.3f), hi = x > splat(88.3f);
    x = blend(blend(x, splat(-87.3f), lo), splat(88.3f), hi);
    V big = x * 1.44269504088896341f + 12582912.0f;
    V fn = big - 12582912.0f;
    M n = (M)big - (M)splat(12582912.0f);
    x = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    V z = x * x;
    V y = ((((1.9875691500E-4f * x + 1.3981999507E-3f) * x + 8.3334519073E-3f) * x + 4.1665795894E-2f) * x +
           1.6666665459E-1f) * x + 5.0000001201E-1f;
    y = y * z + x + 1.0f;
    return y * (V)((n + 127) << 23);
}
/* 1 / d for d >= 1: with AVX-512 a 14-bit estimate and one Newton step (~2^-28 relative:
 * below float's rounding), which pipelines where a division (~10 cycles a vector) does not */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline V v_recip(V d) {
    V r = (V)_mm512_rcp14_ps((__m512)d);
    return r * (2.0f - d * r);
}
#else
static inline V v_recip(V d) { return 1.0f / d; }
#endif
#define SIGN ((M){0} + (int)0x80000000)
static inline __attribute__((always_inline)) V v_act(int act, V h, V *d) {
    switch (act) {
    case ACT_RELU: {
        M pos = h > splat(0);
        *d = blend(splat(0), splat(1), pos);
        return blend(splat(0), h, pos);
    }
    case ACT_GELU: {
        V e = v_exp(-0.5f * h * h);                       /* exp(-z^2), z = h / sqrt(2) */
        V az = (V)((M)h & ~SIGN) * 0.70710678118654752f;  /* |z| */
        V t = v_recip(1.0f + 0.3275911f * az);
        V poly = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
        V erf_abs = 1.0f - poly * e;
        V erf_z = (V)((M)erf_abs | ((M)h & SIGN));
        V cdf = 0.5f + 0.5f * erf_z;
        *d = cdf + h * e * 0.39894228040143268f;          /* + h phi(h) */
        return h * cdf;
    }
    case ACT_SILU: {
        V s = v_recip(1.0f + v_exp(-h));
        *d = s * (1.0f + h * (1.0f - s));
        return h * s;
    }
    case ACT_TANH: {
        V e = v_exp(-2.0f * (V)((M)h & ~SIGN));
        V t = (1.0f - e) * v_recip(1.0f + e);
        t = (V)((M)t | ((M)h & SIGN));
        *d = 1.0f - t * t;
        return t;
    }
    default: *d = splat(1); return h;
    }
}
#endif

/* the switch outside the loop, so that each loop is compiled for one activation */
#define FOR_ACT(act, BODY)                                                   \
    switch (act) {                                                           \
    case ACT_RELU: { const int a_ = ACT_RELU; BODY; } break;                 \
    case ACT_GELU: { const int a_ = ACT_GELU; BODY; } break;                 \
    case ACT_SILU: { const int a_ = ACT_SILU; BODY; } break;                 \
    case ACT_TANH: { const int a_ = ACT_TANH; BODY; } break;                 \
    default: { const int a_ = ACT_NONE; BODY; }                              \
    }

static void act_forward(int act, const V *h, V *a, long nv) {
    FOR_ACT(act, for (long i = 0; i < nv; i++) { V d; a[i] = v_act(a_, h[i], &d); })
}

/* a = act(h) and h = act'(h) in place: the backward's recomputation keeps the derivative */
static void act_forward_d(int act, V *h, V *a, long nv) {
    FOR_ACT(act, for (long i = 0; i < nv; i++) { V d; a[i] = v_act(a_, h[i], &d); h[i] = d; })
}

/* ---- the products ---- */

/* H[j] = b[j] + sum_k W[j nin + k] A[k] for j < nout; A, H: (features, TV) vectors */
static void dense(const T *W, const T *b, int nout, int nin, const V *A, V *H) {
    for (int j0 = 0; j0 < nout; j0 += 4)
        for (int v0 = 0; v0 < TV; v0 += 4) {
            V acc[4][4];
            for (int jj = 0; jj < 4; jj++)
                for (int vv = 0; vv < 4; vv++) acc[jj][vv] = splat(b ? b[j0 + jj] : 0);
            const T *w = W + (long)j0 * nin;
            for (int k = 0; k < nin; k++) {
                const V *a = A + (long)k * TV + v0;
                V a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
                for (int jj = 0; jj < 4; jj++) {
                    T s = w[(long)jj * nin + k];
                    acc[jj][0] += s * a0;
                    acc[jj][1] += s * a1;
                    acc[jj][2] += s * a2;
                    acc[jj][3] += s * a3;
                }
            }
            for (int jj = 0; jj < 4; jj++)
                for (int vv = 0; vv < 4; vv++) H[(long)(j0 + jj) * TV + v0 + vv] = acc[jj][vv];
        }
}

/* G[j nin + k] += gH[j] * A[k] lane by lane, summed over the tile's TV vectors */
static void outer(V *G, int nout, int nin, const V *gH, const V *A) {
    for (int j0 = 0; j0 < nout; j0 += 4)
        for (int k0 = 0; k0 < nin; k0 += 4) {
            V acc[4][4];
            for (int jj = 0; jj < 4; jj++)
                for (int kk = 0; kk < 4; kk++) acc[jj][kk] = G[(long)(j0 + jj) * nin + k0 + kk];
            for (int v = 0; v < TV; v++) {
                V g[4], a[4];
                for (int i = 0; i < 4; i++) {
                    g[i] = gH[(long)(j0 + i) * TV + v];
                    a[i] = A[(long)(k0 + i) * TV + v];
                }
                for (int jj = 0; jj < 4; jj++)
                    for (int kk = 0; kk < 4; kk++) acc[jj][kk] += g[jj] * a[kk];
            }
            for (int jj = 0; jj < 4; jj++)
                for (int kk = 0; kk < 4; kk++) G[(long)(j0 + jj) * nin + k0 + kk] = acc[jj][kk];
        }
}

/* ---- the plan: padded sizes, the packed layers and the first layer's tables ---- */

typedef struct {
    int K, act, n, creal, wmax;
    int w[64];               /* widths padded to multiples of 4 (w[0]: the first layer's outputs) */
    int wr[64];              /* the real widths */
    long R, ntiles;
    long woff[64], boff[64]; /* layer i's W and b in `params` (i = 1..K) */
    long nparams;
    long scratch;            /* vectors of one thread's tile buffers */
    T *params;               /* layers 1..K, padded with zeros, each W row-major then b */
    T *lo;                   /* (w0, TR): the low TB bits' part of the first layer, by row in the tile */
    T *hi;                   /* (ntiles, w0): b0 + the high bits' part, by tile */
    T *wx;                   /* (w0): the first layer's x column */
} Plan;

/* +-1: bit `s` of r */
static inline double bit(long r, int s) { return (r >> s) & 1 ? 1.0 : -1.0; }

static void plan_free(Plan *p) { free(p->params), free(p->lo), free(p->hi), free(p->wx); }

/* Ws[i], bs[i]: layer i's weight (wr[i] x in_i, row-major; in_0 = n + 1) and bias (or NULL) */
static int plan_init(Plan *p, int K, const int *wr, int n, long R, int act, const T *const *Ws,
                     const T *const *bs) {
    memset(p, 0, sizeof *p);
    if (K < 1 || K > 63 || n < 1 || n > 62 || R < 1 || R > (1L << n) || act < 0 || act > ACT_TANH) return 2;
    p->K = K, p->n = n, p->R = R, p->act = act, p->creal = wr[K];
    p->ntiles = (R + TR - 1) / TR;
    long off = 0, hidden = 0;
    for (int i = 0; i <= K; i++) {
        if (wr[i] < 1 || !Ws[i]) return 2;
        p->wr[i] = wr[i], p->w[i] = (wr[i] + 3) / 4 * 4;
        if (p->w[i] > p->wmax) p->wmax = p->w[i];
        if (i < K) hidden += p->w[i];
    }
    for (int i = 1; i <= K; i++) {
        p->woff[i] = off, off += (long)p->w[i] * p->w[i - 1];
        p->boff[i] = off, off += p->w[i];
    }
    p->nparams = off;
    /* H_i and A_i for the hidden layers, the output, and two gradient buffers */
    p->scratch = (2 * hidden + p->w[K] + 2L * p->wmax) * TV;
    int w0 = p->w[0], lb = n < TB ? n : TB; /* lb: the bits that vary inside a tile */
    p->params = calloc(off, sizeof(T));
    p->lo = aligned_alloc(64, (size_t)w0 * TR * sizeof(T));
    p->hi = calloc((size_t)p->ntiles * w0, sizeof(T));
    p->wx = calloc(w0, sizeof(T));
    if (!p->params || !p->lo || !p->hi || !p->wx) return plan_free(p), 1;
    for (int i = 1; i <= K; i++)
        for (int j = 0; j < wr[i]; j++) {
            for (int k = 0; k < wr[i - 1]; k++)
                p->params[p->woff[i] + (long)j * p->w[i - 1] + k] = Ws[i][(long)j * wr[i - 1] + k];
            p->params[p->boff[i] + j] = bs[i] ? bs[i][j] : 0;
        }
    memset(p->lo, 0, (size_t)w0 * TR * sizeof(T));
    /* the tables in double, each sum in the order of the bit columns; loops ordered so that
     * the innermost runs over independent sums (vectorised) instead of along one */
    int nh = n - lb, wr0 = wr[0];
    double *acc = malloc((TR > wr0 ? TR : wr0) * sizeof(double)), *col = malloc((size_t)(nh > 0 ? nh : 1) * wr0 * sizeof(double));
    double *sg = malloc((size_t)lb * TR * sizeof(double));
    if (!acc || !col || !sg) return free(acc), free(col), free(sg), plan_free(p), 1;
    for (int c = 0; c < lb; c++)
        for (long t = 0; t < TR; t++) sg[c * TR + t] = bit(t, lb - 1 - c);
    for (int j = 0; j < wr0; j++) {
        const T *row = Ws[0] + (long)j * (n + 1); /* bit columns MSB first, then x */
        for (long t = 0; t < TR; t++) acc[t] = 0;
        for (int c = 0; c < lb; c++) {
            double wc = row[nh + c];
            for (long t = 0; t < TR; t++) acc[t] += wc * sg[c * TR + t];
        }
        for (long t = 0; t < TR; t++) p->lo[(long)j * TR + t] = (T)acc[t];
        for (int b = 0; b < nh; b++) col[b * wr0 + j] = row[b];
        p->wx[j] = row[n];
    }
    for (long q = 0; q < p->ntiles; q++) {
        double *h = acc; /* (room for max(TR, wr0)) */
        for (int j = 0; j < wr0; j++) h[j] = bs[0] ? bs[0][j] : 0;
        for (int b = 0; b < nh; b++) {
            double sb = bit(q, n - 1 - b - TB);
            for (int j = 0; j < wr0; j++) h[j] += col[b * wr0 + j] * sb;
        }
        for (int j = 0; j < wr0; j++) p->hi[q * w0 + j] = (T)h[j];
    }
    free(acc), free(col), free(sg);
    return 0;
}

/* one tile's forward: A[i] (activations) of the hidden layers and out, the last layer; H[i]
 * ends as the pre-activations, or with `deriv` as the activations' derivatives there; xs: the
 * tile's x (zero past the last row) */
static void tile_forward(const Plan *p, long q, const T *xs, V **H, V **A, V *out, int deriv) {
    const V *xv = (const V *)xs;
    const T *lo = p->lo, *hi = p->hi, *wx = p->wx, *params = p->params;
    int w0 = p->w[0];
    for (int j = 0; j < w0; j++) {
        const V *l = (const V *)(lo + (long)j * TR);
        V base = splat(hi[q * w0 + j]);
        T s = wx[j];
        for (int v = 0; v < TV; v++) H[0][(long)j * TV + v] = l[v] + base + s * xv[v];
    }
    for (int i = 1; i <= p->K; i++) {
        if (deriv)
            act_forward_d(p->act, H[i - 1], A[i - 1], (long)p->w[i - 1] * TV);
        else
            act_forward(p->act, H[i - 1], A[i - 1], (long)p->w[i - 1] * TV);
        dense(params + p->woff[i], params + p->boff[i], p->w[i], p->w[i - 1], A[i - 1], i < p->K ? H[i] : out);
    }
}

static void load_x(const Plan *p, long q, const T *x, T *xs) {
    long r0 = q * TR, k = p->R - r0 < TR ? p->R - r0 : TR;
    memcpy(xs, x + r0, k * sizeof(T));
    memset(xs + k, 0, (TR - k) * sizeof(T));
}

static void *vectors(long n) { return aligned_alloc(64, ((n * sizeof(V) + 63) / 64) * 64); }

/* carve one thread's tile buffers out of `s` */
static void carve(const Plan *p, V *s, V **H, V **A, V **out, V **g1, V **g2) {
    for (int i = 0; i < p->K; i++) {
        H[i] = s, s += (long)p->w[i] * TV;
        A[i] = s, s += (long)p->w[i] * TV;
    }
    *out = s, s += (long)p->w[p->K] * TV;
    *g1 = s, s += (long)p->wmax * TV;
    *g2 = s;
}

int qt_mlp_forward(int K, const int *w, int n, long R, int act, int nthreads, const T *x, const T *const *Ws,
                   const T *const *bs, T *out) {
    Plan p;
    int code = plan_init(&p, K, w, n, R, act, Ws, bs);
    if (code) return code;
    int nt = nthreads < 1 ? 1 : nthreads, creal = p.creal;
    V *work = vectors(p.scratch * nt);
    T *xw = aligned_alloc(64, (size_t)TR * nt * sizeof(T));
    if (!work || !xw) {
        free(work), free(xw), plan_free(&p);
        return 1;
    }
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int me = 0;
#ifdef _OPENMP
        me = omp_get_thread_num();
#endif
        V *H[64], *A[64], *o, *g1, *g2;
        carve(&p, work + p.scratch * me, H, A, &o, &g1, &g2);
        T *xs = xw + (long)TR * me;
#pragma omp for schedule(static)
        for (long q = 0; q < p.ntiles; q++) {
            load_x(&p, q, x, xs);
            tile_forward(&p, q, xs, H, A, o, 0);
            long r0 = q * TR, k = R - r0 < TR ? R - r0 : TR;
            const T *ot = (const T *)o;
            for (int c = 0; c < creal; c++)
                for (long t = 0; t < k; t++) out[(r0 + t) * creal + c] = ot[(long)c * TR + t];
        }
    }
    free(work), free(xw), plan_free(&p);
    return 0;
}

typedef double DV __attribute__((vector_size(VL * sizeof(double)), aligned(sizeof(double))));

/* Accumulators: [W_1, b_1, ..., W_K, b_K | wx] (lanes summed at the end), then [lo] by lane. */
typedef struct {
    V *acc;      /* float, this thread's */
    long nsum;   /* entries whose lanes are summed */
    long nlane;  /* by-lane vectors of lo: w0 * TV */
} Acc;

/* A slot's doubles: the summed entries (padded to whole vectors), then lo's by lane. */
static long slot_sums(const Acc *a) { return (a->nsum + VL - 1) / VL * VL; }

static void flush(const Acc *a, double *d) {
    for (long i = 0; i < a->nsum; i++) d[i] += hsum(a->acc[i]);
    DV *dl = (DV *)(d + slot_sums(a));
    const V *l = a->acc + a->nsum;
    for (long i = 0; i < a->nlane; i++) dl[i] += __builtin_convertvector(l[i], DV);
    memset(a->acc, 0, (a->nsum + a->nlane) * sizeof(V));
}

/* gWs, gbs: like Ws, bs (a gbs[i] may be NULL); gx: dL/dx, or NULL */
int qt_mlp_backward(int K, const int *w, int n, long R, int act, int nthreads, const T *x, const T *const *Ws,
                    const T *const *bs, const T *gout, T *gx, T *const *gWs, T *const *gbs) {
    Plan p;
    int code = plan_init(&p, K, w, n, R, act, Ws, bs);
    if (code) return code;
    int nt = nthreads < 1 ? 1 : nthreads, creal = p.creal;
    int w0 = p.w[0];
    /* a dozen tiles or more per slot: each slot costs a flush and its share of the final sum */
    long nslots = p.ntiles / 12 < 1 ? 1 : p.ntiles / 12 > SLOTS ? SLOTS : p.ntiles / 12;
    Acc shape = {NULL, p.nparams + w0, (long)w0 * TV};
    long nd = slot_sums(&shape) + shape.nlane * VL; /* doubles per slot */
    /* transposed weights for the propagation: layer i's W^T (w[i-1] x w[i]) at woff[i] */
    T *wt = malloc(p.nparams * sizeof(T));
    V *work = vectors((p.scratch + shape.nsum + shape.nlane) * nt);
    T *xw = aligned_alloc(64, (size_t)TR * nt * sizeof(T));
    double *slot = aligned_alloc(64, (size_t)nd * nslots * sizeof(double));
    double *ghi = malloc((size_t)p.ntiles * w0 * sizeof(double)); /* dL/dhi by tile */
    if (!wt || !work || !xw || !slot || !ghi) {
        free(wt), free(work), free(xw), free(slot), free(ghi), plan_free(&p);
        return 1;
    }
    memset(slot, 0, (size_t)nd * nslots * sizeof(double));
    const int *pw = p.w;
    for (int i = 1; i <= K; i++)
        for (int j = 0; j < pw[i]; j++)
            for (int k = 0; k < pw[i - 1]; k++)
                wt[p.woff[i] + (long)k * pw[i] + j] = p.params[p.woff[i] + (long)j * pw[i - 1] + k];
    const T *pwx = p.wx;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int me = 0;
#ifdef _OPENMP
        me = omp_get_thread_num();
#endif
        V *base = work + (p.scratch + shape.nsum + shape.nlane) * me;
        V *H[64], *A[64], *o, *g1, *g2;
        carve(&p, base, H, A, &o, &g1, &g2);
        Acc a = shape;
        a.acc = base + p.scratch;
        V *glo_acc = a.acc + a.nsum, *gwx_acc = a.acc + p.nparams;
        T *xs = xw + (long)TR * me;
        memset(a.acc, 0, (a.nsum + a.nlane) * sizeof(V));
#pragma omp for schedule(dynamic, 1)
        for (long s = 0; s < nslots; s++) {
            long q0 = p.ntiles * s / nslots, q1 = p.ntiles * (s + 1) / nslots;
            double *d = slot + nd * s;
            for (long q = q0; q < q1; q++) {
                load_x(&p, q, x, xs);
                tile_forward(&p, q, xs, H, A, o, 1);
                long r0 = q * TR, k = R - r0 < TR ? R - r0 : TR;
                /* dL/dout into the (C, TV) layout, zero on padded units and rows */
                T *g = (T *)g1;
                memset(g, 0, (size_t)pw[K] * TR * sizeof(T));
                for (int c = 0; c < creal; c++)
                    for (long t = 0; t < k; t++) g[(long)c * TR + t] = gout[(r0 + t) * creal + c];
                V *gh = g1, *ga = g2;
                for (int i = K; i >= 1; i--) {
                    outer(a.acc + p.woff[i], pw[i], pw[i - 1], gh, A[i - 1]);
                    V *gb = a.acc + p.boff[i];
                    for (int j = 0; j < pw[i]; j++)
                        for (int v = 0; v < TV; v++) gb[j] += gh[(long)j * TV + v];
                    dense(wt + p.woff[i], NULL, pw[i - 1], pw[i], gh, ga);
                    const V *dv = H[i - 1]; /* act'(h), kept by the recomputation */
                    for (long v = 0; v < (long)pw[i - 1] * TV; v++) ga[v] *= dv[v];
                    V *tmp = gh;
                    gh = ga, ga = tmp;
                }
                /* gh: dL/dh_0 (w0, TV) */
                const V *xv = (const V *)xs;
                V gxv[TV];
                for (int v = 0; v < TV; v++) gxv[v] = splat(0);
                for (int j = 0; j < w0; j++) {
                    const V *gj = gh + (long)j * TV;
                    V sum = splat(0), sx = splat(0);
                    for (int v = 0; v < TV; v++) {
                        glo_acc[(long)j * TV + v] += gj[v];
                        sum += gj[v];
                        sx += gj[v] * xv[v];
                        gxv[v] += pwx[j] * gj[v];
                    }
                    ghi[q * w0 + j] = hsum(sum);
                    gwx_acc[j] += sx;
                }
                if (gx) {
                    const T *gt = (const T *)gxv;
                    for (long t = 0; t < k; t++) gx[r0 + t] = gt[t];
                }
                if ((q - q0 + 1) % FLUSH == 0) flush(&a, d);
            }
            flush(&a, d);
        }
    }
    /* slots in order, then lanes, then out by layer */
    for (long s = 1; s < nslots; s++)
        for (long i = 0; i < nd; i++) slot[i] += slot[nd * s + i];
    for (int i = 1; i <= K; i++)
        for (int j = 0; j < w[i]; j++) {
            for (int k = 0; k < w[i - 1]; k++)
                gWs[i][(long)j * w[i - 1] + k] = (T)slot[p.woff[i] + (long)j * pw[i - 1] + k];
            if (gbs[i]) gbs[i][j] = (T)slot[p.boff[i] + j];
        }
    /* the first layer from its tables: dL/dW0 = sum over rows of dL/dh_0 [bits, x]; each sum
     * runs in row (tile) order, the innermost loops over independent sums */
    int lb = n < TB ? n : TB, nh = n - lb, wr0 = w[0];
    const double *glo = slot + slot_sums(&shape);
    double *sums = calloc((size_t)(nh + 1) * wr0 + lb, sizeof(double)); /* [b][j] high bits, [j] bias, [c] */
    if (!sums) {
        free(wt), free(work), free(xw), free(slot), free(ghi), plan_free(&p);
        return 1;
    }
    double *bsum = sums + (size_t)nh * wr0, *lsum = bsum + wr0;
    for (int j = 0; j < wr0; j++) {
        T *row = gWs[0] + (long)j * (n + 1);
        for (int c = 0; c < lb; c++) lsum[c] = 0;
        for (long t = 0; t < TR; t++) {
            double g = glo[(long)j * TR + t];
            for (int c = 0; c < lb; c++) lsum[c] += g * bit(t, lb - 1 - c);
        }
        for (int c = 0; c < lb; c++) row[nh + c] = (T)lsum[c];
        row[n] = (T)slot[p.nparams + j];
    }
    for (long q = 0; q < p.ntiles; q++) {
        const double *g = ghi + q * w0;
        for (int b = 0; b < nh; b++) {
            double sb = bit(q, n - 1 - b - TB);
            for (int j = 0; j < wr0; j++) sums[b * wr0 + j] += g[j] * sb;
        }
        for (int j = 0; j < wr0; j++) bsum[j] += g[j];
    }
    for (int j = 0; j < wr0; j++) {
        for (int b = 0; b < nh; b++) gWs[0][(long)j * (n + 1) + b] = (T)sums[b * wr0 + j];
        if (gbs[0]) gbs[0][j] = (T)bsum[j];
    }
    free(sums);
    free(wt), free(work), free(xw), free(slot), free(ghi), plan_free(&p);
    return 0;
}
