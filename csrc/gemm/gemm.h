/* gemm.h -- single-precision matrix multiply with a fused epilogue.
 *
 *   C[M x N] = act(op(A)[M x K] . op(B)[K x N] + bias[N])
 *
 * Row-major storage.  op(A) = A (M x K, row stride lda) or, with trans_a, A^T
 * where A is stored K x M; likewise op(B) = B (K x N) or B^T with B stored
 * N x K -- the layout of a torch Linear weight (out_features x in_features).
 * bias may be NULL; act is one of PT_ACT_*.  C must not overlap A or B.
 *
 * Determinism: each C element is a sum over k in a fixed order that depends
 * only on K -- never on M, on the thread count or on how the work is split
 * (threads split M and N, never K), and never on the CPU's cache sizes: the
 * M and N cache blocks follow the caches (pt_gemm_set_blocking forces
 * them), the K blocks are fixed per path (tiles.h), so a row has the same
 * bits on every machine that runs the same kernel path (tests/ops/
 * test_matmul.py forces two blockings).
 */
#ifndef PT_GEMM_H
#define PT_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include "rowwise/activation.h" /* PT_ACT_* */
#include "runtime/simd.h"
#include "runtime/status.h"

/* Returns PT_OK, or PT_ERR_NOMEM when its working buffers could not be
 * allocated: C is then untouched.  (Never a slower route instead: a row's bits
 * must not depend on malloc.) */
PT_DECLARE_VARIANTS(int, pt_sgemm,
                    (float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                     const float *B, int64_t ldb, int trans_b, int64_t M, int64_t N, int64_t K,
                     const float *bias, int act, int nthreads))

/* A B operand packed once for a kernel path and reused by every call: model
 * weights never change at inference.  Owns its memory; free with
 * pt_packed_b_free.  `isa` records the path whose layout it holds:
 * ceil(N/nr) panels of nr columns (the micro-kernel's NR: 32 on AVX-512,
 * 16 on AVX2, 4 scalar), panel p holding K rows of nr floats at
 * data + p*K*nr, zero padded past N.  pt_sgemm_packed of another path
 * returns PT_ERR_PATH and leaves C untouched: repack when the path changes. */
typedef struct {
    int isa;          /* PT_ISA_* whose micro-kernel layout `data` holds */
    int64_t K, N;     /* logical op(B) shape */
    int64_t nr;       /* panel width: the micro-kernel's NR on that path */
    size_t size;      /* floats in data */
    float *data;      /* packed panels, 64-byte aligned */
} pt_packed_b;

/* NULL when out of memory. */
PT_DECLARE_VARIANTS(pt_packed_b *, pt_sgemm_pack_b,
                    (const float *B, int64_t ldb, int trans_b, int64_t K, int64_t N))
/* C = act(A . B + bias) with A: M x K (row stride lda), B packed by the same
 * path.  Returns PT_OK, PT_ERR_NOMEM (C untouched) or PT_ERR_PATH. */
PT_DECLARE_VARIANTS(int, pt_sgemm_packed,
                    (float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                     const pt_packed_b *B, const float *bias, int act, int nthreads))
void pt_packed_b_free(pt_packed_b *p);

/* Naive triple loop with a double accumulator: the twin the tests trust. */
void pt_sgemm_ref(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                  const float *B, int64_t ldb, int trans_b, int64_t M, int64_t N, int64_t K,
                  const float *bias, int act);

/* ------------------------------------------------------------------------ */
/* bfloat16 GEMM (compute type "bfloat16"): weights packed once as bf16,    */
/* activations rounded to bf16 as the A panels are packed, fp32 accumulation */
/* and the same fused epilogue (bias, act) as pt_sgemm.                      */
/*                                                                          */
/*   C[M x N] = act(bf16(A)[M x K] . bf16(op(B))[K x N] + bias[N])          */
/*                                                                          */
/* Rounding is to nearest even on the bits, as torch's .to(torch.bfloat16)   */
/* (NaN stays NaN, subnormals are kept, overflow goes to inf).               */
/*                                                                          */
/* Packed layout (the VNNI pair layout VDPBF16PS and AMX read): K is padded */
/* to Kp, a multiple of 32 on avx512 (whole AMX tiles), of 2 elsewhere;      */
/* ceil(N/nr) panels of nr columns (32 on AVX-512, 16 on AVX2, 4    */
/* scalar); panel p holds Kp/2 rows of nr 32-bit pairs at data + p*Kp*nr,   */
/* pair (kk, j) = {bf16 B(2kk, j) in the low half, bf16 B(2kk+1, j) high},  */
/* zero padded past N and past K.                                            */
/*                                                                          */
/* Paths.  pt_bgemm_packed_<isa> (kernels.def, every path) converts each    */
/* bf16 pair to two floats (a shift, a mask) and multiplies with fp32 FMAs.  */
/* pt_bgemm_packed_avx512bf16 (gemm_bf16_dot.c, built once with             */
/* -mavx512bf16) multiplies the pairs with VDPBF16PS on the avx512 layout;   */
/* it is not a kernel-table entry, since no other path has it: cpu.c hands  */
/* it out through pt_bgemm_packed_dot() only where CPUID says AVX512_BF16    */
/* and the OS saves the zmm state (NULL otherwise), and the caller picks     */
/* it in place of the avx512 table's entry.  VDPBF16PS reads subnormal bf16  */
/* inputs as zero and flushes subnormal results (|x| < 2^-126).  The        */
/* conversion kernels add the same exact products in the same order (odd k, */
/* then even, one rounding each), and on Zen 5 all paths were measured to   */
/* give the same bits; nothing relies on it: each path is held to the bound. */
/* pt_bgemm_packed_amx (gemm_bf16_amx.c) multiplies 16 x 16 x 32 tiles with  */
/* TDPBF16PS on the same avx512 panels (cpu.c: pt_bgemm_packed_amx_fn()).    */
/*                                                                          */
/* Determinism, on every path: the sum over k runs in K blocks fixed by K    */
/* alone (whole pairs), each block one chain per element (pair by pair,     */
/* the odd k before the even one, as VDPBF16PS does), added to C in order;   */
/* on AMX one chain of TDPBF16PS over all of K, 32 k per step (its tiles     */
/* store and reload exactly, so its blocks change nothing).  Threads split   */
/* M or N, never K, so a row's bits do not depend on M, on the thread count  */
/* or on which tile it falls in.                                            */
/* ------------------------------------------------------------------------ */
typedef struct {
    int isa;          /* PT_ISA_* whose layout `data` holds (panel width nr) */
    int64_t K, N;     /* logical op(B) shape */
    int64_t Kp;       /* K rounded up to 32 (avx512) or to even */
    int64_t nr;       /* panel width */
    size_t size;      /* bytes of data */
    uint32_t *data;   /* ceil(N/nr) panels of Kp/2 x nr bf16 pairs, 64-byte aligned */
} pt_packed_bf16;

/* Packs op(B) (B stored N x K with trans_b: a Linear weight) rounded to
 * bf16; NULL when out of memory. */
PT_DECLARE_VARIANTS(pt_packed_bf16 *, pt_bgemm_pack_b,
                    (const float *B, int64_t ldb, int trans_b, int64_t K, int64_t N))
/* C = act(bf16(A) . B + bias), A: M x K (row stride lda), B packed by the
 * same path.  Returns PT_OK, PT_ERR_NOMEM (C untouched) or PT_ERR_PATH. */
PT_DECLARE_VARIANTS(int, pt_bgemm_packed,
                    (float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                     const pt_packed_bf16 *B, const float *bias, int act, int nthreads))
int pt_bgemm_packed_avx512bf16(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                               const pt_packed_bf16 *B, const float *bias, int act,
                               int nthreads);
/* The same on AMX tiles (gemm_bf16_amx.c, built once with -mamx-bf16): the
 * avx512 table's packing, handed out by cpu.c's pt_bgemm_packed_amx() only
 * where the CPU has AMX-BF16 and the OS granted the tile state. */
int pt_bgemm_packed_amx(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                        const pt_packed_bf16 *B, const float *bias, int act, int nthreads);
void pt_packed_bf16_free(pt_packed_bf16 *p);

/* bf16(x) as its 16 bits: round to nearest even, NaN kept quiet. */
uint16_t pt_bf16_from_float(float x);
float pt_bf16_to_float(uint16_t h);

/* The twin: both operands rounded to bf16 (pt_bf16_from_float), the products
 * summed in double, the epilogue by the activation twins. */
void pt_bgemm_ref(float *C, int64_t ldc, const float *A, int64_t lda, const float *B,
                  int64_t ldb, int trans_b, int64_t M, int64_t N, int64_t K,
                  const float *bias, int act);

#endif
