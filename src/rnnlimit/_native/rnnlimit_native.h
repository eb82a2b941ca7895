/*
 * What the native kernels (fused_train.c: the trainer; limit_pic.c: the limit's grid stages;
 * seq_features.c: the sequence kernel's feature scan) share: the export and multiversioning
 * macros, the size limits, bit casts and the memory clip psi and its derivative (docs/model.md §2).
 */
#ifndef RNNLIMIT_NATIVE_H
#define RNNLIMIT_NATIVE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* AVX-512 / AVX2 / baseline versions of a function, chosen at load time (gcc on x86-64 Linux) */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MULTIVERSION
#endif

#if defined(_WIN32)
#define EXPORT __declspec(dllexport)
#else
#define EXPORT __attribute__((visibility("default")))
#endif

#define INLINE static inline __attribute__((always_inline))

/* Size limits of the kernels, exported by rnnlimit_limits() and checked by rnnlimit.nativelib at
 * load time (a mismatch would overrun buffers rather than raise). */
#define MAX_DM 64   /* fused_train.c: largest d and m of the trainer */
#define PIC_MAX_D 3 /* limit_pic.c: largest d + m of the grid limit kernel */
#define PIC_MAX_M 2 /* limit_pic.c: largest m of the grid limit kernel */
#define LANES 128   /* seq_features.c: omega samples per block of the feature scan */

/* Bit casts (memcpy: no aliasing trouble, compiled to register moves) */
INLINE double bits_to_double(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

INLINE uint64_t double_to_bits(double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

INLINE float bits_to_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

INLINE uint32_t float_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

enum { CLIP_HARD = 0, CLIP_SMOOTH = 1 };

/* psi(g): the hard clip into [-1, 1] or tanh (rnnlimit.activations.psi) */
INLINE double psi_clip(int clip, double g) {
    if (clip == CLIP_HARD) return g < -1.0 ? -1.0 : (g > 1.0 ? 1.0 : g);
    return tanh(g);
}

/* psi'(g): 1 inside (-1, 1) and 0 outside for the hard clip (its a.e. derivative), 1 - tanh^2
 * for the smooth one (rnnlimit.activations.psi) */
INLINE double psi_prime(int clip, double g) {
    if (clip == CLIP_HARD) return fabs(g) < 1.0 ? 1.0 : 0.0;
    const double t = tanh(g);
    return 1.0 - t * t;
}

#endif
