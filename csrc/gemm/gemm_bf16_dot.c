/* gemm_bf16_dot.c -- the bfloat16 GEMM on VDPBF16PS (AVX512_BF16): the
 * loops of gemm_bf16_loops.h on the avx512 layout, each pair of k multiplied
 * and added by one instruction.  Built once, with PT_ISA=avx512 and
 * -mavx512bf16 (setup.py, tests/c/run.sh), and called only where
 * pt_bgemm_packed_dot() (cpu.c) found the feature: see gemm.h. */
#define PT_BF16_DOT 1
#include "gemm/gemm_bf16_loops.h"

#if PT_ISA != PT_ISA_AVX512 || !defined(__AVX512BF16__)
#error "gemm_bf16_dot.c is built with -DPT_ISA=2 -mavx512bf16 only"
#endif
