/* The scalar and vector types the compiled kernels share (_ryring.c, _u3ring.c, _mlp.c): 64-byte GCC
 * vectors of T (AVX-512 where the compiler targets it, split into narrower registers
 * elsewhere), declared with T's alignment so that any T pointer may be read as vectors.
 * Compiled with -DQT_DOUBLE=0 (float) or 1 (double). */
#ifndef QT_VECTORS_H
#define QT_VECTORS_H

#if QT_DOUBLE
typedef double T;
typedef long long IT;
#define VB 3
#else
typedef float T;
typedef int IT;
#define VB 4
#endif
#define VL (1 << VB) /* lanes per vector */
typedef T V __attribute__((vector_size(VL * sizeof(T)), aligned(sizeof(T))));
typedef IT M __attribute__((vector_size(VL * sizeof(T)))); /* lane masks and shuffle indices */

static inline V blend(V a, V b, M m) { return (V)(((M)a & ~m) | ((M)b & m)); } /* b where m is set */

static inline double hsum(V v) {
    double s = 0;
    for (int i = 0; i < VL; i++) s += v[i];
    return s;
}

#endif
