/* cpu.h -- which kernel path this CPU can run, and the table of kernels for
 * each path.  Compiled once (not per ISA); with cpu.c, the only files that
 * name all three variants of every kernel. */
#ifndef PT_CPU_H
#define PT_CPU_H

#include <stdint.h>
#include "attention/attention.h"
#include "gemm/gemm.h"
#include "rowwise/activation.h"
#include "rowwise/layernorm.h"
#include "rowwise/rmsnorm.h"
#include "rowwise/rope.h"
#include "rowwise/softmax.h"
#include "rowwise/swiglu.h"
#include "runtime/peak.h"
#include "runtime/simd.h"

/* One path's kernels: a member per entry of kernels.def. */
typedef struct {
    const char *name; /* "scalar", "avx2", "avx512" */
    int isa;          /* PT_ISA_* */
#define PT_KERNEL(ret, name, args) ret (*name) args;
#include "runtime/kernels.def"
#undef PT_KERNEL
} pt_kernel_table;

/* 1 if this build has path `isa` and the CPU (and OS) can run it. */
int pt_cpu_supports(int isa);
/* The best path both built and supported. */
int pt_cpu_best_isa(void);
/* The kernels of path `isa`, or NULL when it was not built. */
const pt_kernel_table *pt_kernels_for(int isa);

#endif
