/*
 * What the native kernels (fused_train.c: the trainer; limit_pic.c: the limit's grid stages)
 * share: the export and multiversioning macros and the memory clip psi (MODEL.md §2).
 */
#ifndef RNNLIMIT_NATIVE_H
#define RNNLIMIT_NATIVE_H

#include <math.h>

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

enum { CLIP_HARD = 0, CLIP_SMOOTH = 1 };

/* psi(g): the hard clip into [-1, 1] or tanh (rnnlimit.activations.psi) */
INLINE double psi_clip(int clip, double g) {
    if (clip == CLIP_HARD) return g < -1.0 ? -1.0 : (g > 1.0 ? 1.0 : g);
    return tanh(g);
}

#endif
