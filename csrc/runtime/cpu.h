/* cpu.h -- which kernel path this CPU can run, and the table of kernels for
 * each path.  Compiled once (not per ISA); the only file that names all three
 * variants of every kernel. */
#ifndef PT_CPU_H
#define PT_CPU_H

#include <stdint.h>
#include "runtime/simd.h"
#include "rowwise/activation.h"
#include "attention/attention.h"
#include "gemm/gemm.h"
#include "rowwise/layernorm.h"
#include "runtime/peak.h"
#include "rowwise/softmax.h"

typedef struct {
    const char *name; /* "scalar", "avx2", "avx512" */
    int isa;          /* PT_ISA_* */
    void (*relu)(float *, const float *, int64_t, int);
    void (*gelu)(float *, const float *, int64_t, int);
    void (*gelu_tanh)(float *, const float *, int64_t, int);
    void (*softmax)(float *, const float *, int64_t, int64_t, const pt_mask *, int);
    void (*layer_norm)(float *, const float *, const float *, const float *, int64_t, int64_t,
                       float, int);
    void (*sgemm)(float *, int64_t, const float *, int64_t, int, const float *, int64_t, int,
                  int64_t, int64_t, int64_t, const float *, int, int);
    pt_packed_b *(*sgemm_pack_b)(const float *, int64_t, int, int64_t, int64_t);
    void (*sgemm_packed)(float *, int64_t, const float *, int64_t, int64_t, const pt_packed_b *,
                         const float *, int, int);
    int (*attention)(float *, const float *, const int64_t *, const float *, const int64_t *,
                     int64_t, const float *, const int64_t *, int64_t, int64_t, int64_t,
                     int64_t, int64_t, int64_t, float, const pt_mask *, int, int);
    double (*fma_peak_gflops)(int, int64_t);
} pt_kernel_table;

/* 1 if this build has path `isa` and the CPU (and OS) can run it. */
int pt_cpu_supports(int isa);
/* The best path both built and supported. */
int pt_cpu_best_isa(void);
/* The kernels of path `isa`, or NULL when it was not built. */
const pt_kernel_table *pt_kernels_for(int isa);

#endif
