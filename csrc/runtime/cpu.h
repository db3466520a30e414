/* cpu.h -- which kernel path this CPU can run, and the table of kernels for
 * each path.  Compiled once (not per ISA); with cpu.c, the only files that
 * name all three variants of every kernel. */
#ifndef PT_CPU_H
#define PT_CPU_H

#include <stdint.h>
#include "attention/attention.h"
#include "gemm/gemm.h"
#include "gemm/gemm_i8.h"
#include "gemm/gemm_q.h"
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

/* The data or unified cache of `level` (1, 2, 3) as one core has it, in
 * bytes: CPUID leaf 4 (Intel) or 0x8000001D (AMD), the cache's size over
 * the logical processors that share it; 0 where the CPU does not say.
 * Read once. */
int64_t pt_cpu_cache_bytes(int level);

/* The float32 GEMM's cache blocks -- rows of A packed per block (kept in
 * L2), columns of B per slab (kept in L3) -- are taken from the caches
 * above at first use; pt_gemm_set_blocking forces them (tests, tuning;
 * 0 returns to the caches').  Only the M and N blocks move: the K blocks
 * are fixed per path (gemm.h), so no result depends on these.  Not to be
 * called while a GEMM runs. */
void pt_gemm_set_blocking(int64_t mc, int64_t nc);
void pt_gemm_forced_blocking(int64_t *mc, int64_t *nc);   /* 0 where not forced */

/* CPU features beyond the paths' own, read from CPUID (and XCR0 for the OS
 * state): what the bf16 / int8 paths use or will use. */
enum {
    PT_FEAT_AVX512_BF16 = 0,  /* VDPBF16PS: leaf 7 subleaf 1 EAX bit 5 (and the zmm state) */
    PT_FEAT_AVX512_VNNI = 1,  /* VPDPBUSD: leaf 7 ECX bit 11 */
    PT_FEAT_AMX_BF16 = 2,     /* leaf 7 EDX bit 22 */
    PT_FEAT_AMX_INT8 = 3,     /* leaf 7 EDX bit 25 */
    PT_FEAT_AMX_TILE = 4,     /* leaf 7 EDX bit 24 */
    PT_FEAT_AMX_OS = 5,       /* XCR0 bits 17-18: the OS saves the tile state (Linux
                                 still asks each process to request it) */
    PT_NFEATURES
};
int pt_cpu_has(int feature);

/* The bf16 GEMM on VDPBF16PS (gemm_bf16_dot.c) when this build has it and
 * pt_cpu_has(PT_FEAT_AVX512_BF16), else NULL.  It takes operands packed by
 * the avx512 table's bgemm_pack_b.  (No table entry: see gemm.h.) */
typedef int (*pt_bgemm_packed_fn)(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                                  const pt_packed_bf16 *B, const float *bias, int act,
                                  int nthreads);
pt_bgemm_packed_fn pt_bgemm_packed_dot(void);

/* 1 when Linux has granted this process the AMX tile data (arch_prctl
 * ARCH_REQ_XCOMP_PERM, asked once, on the first call), 0 where the CPU, the
 * OS or the build lacks AMX or the request was refused. */
int pt_cpu_amx_granted(void);
/* The bf16 GEMM on AMX tiles (gemm_bf16_amx.c) when this build has it, the
 * CPU has AMX-BF16 and pt_cpu_amx_granted(), else NULL.  It
 * takes operands packed by the avx512 table's bgemm_pack_b. */
pt_bgemm_packed_fn pt_bgemm_packed_amx_fn(void);

/* The int8 GEMM on VPDPBUSD (gemm_i8_vnni.c) when this build has it and
 * pt_cpu_has(PT_FEAT_AVX512_VNNI), else NULL; on AMX tiles (gemm_i8_amx.c)
 * when the build has it, the CPU has AMX-INT8 and AVX512_VNNI and
 * pt_cpu_amx_granted(), else NULL.  Operands as pt_igemm_pack_b packs them
 * (one layout for every path). */
typedef int (*pt_igemm_packed_fn)(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                                  const pt_packed_i8 *B, const float *bias, int act,
                                  int nthreads);
pt_igemm_packed_fn pt_igemm_packed_vnni_fn(void);
pt_igemm_packed_fn pt_igemm_packed_amx_fn(void);

#endif
