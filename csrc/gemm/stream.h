/* stream.h -- when a GEMM stores its C with non-temporal (streaming)
 * stores: on avx512, where C's rows start on cache lines and C is larger
 * than the caches keep (4 MiB and more: it goes to memory either way), which
 * saves reading each line of C before it is overwritten.  The values stored
 * are the same.  Used by the int8 kernels and the bf16 AMX kernel. */
#ifndef PT_GEMM_STREAM_H
#define PT_GEMM_STREAM_H

#include <stdint.h>
#include "runtime/simd.h"

#define PT_STREAM_C_BYTES (4 << 20)

static inline int pt_stream_c(const float *C, int64_t ldc, int64_t M, int64_t N) {
#if PT_ISA == PT_ISA_AVX512
    return ((uintptr_t)C & 63) == 0 && ldc % 16 == 0 &&
           (double)M * (double)N * 4.0 >= (double)PT_STREAM_C_BYTES;
#else
    (void)C; (void)ldc; (void)M; (void)N;
    return 0;
#endif
}

/* After a thread's streaming stores, before C is read by any thread. */
static inline void pt_stream_c_done(int nt) {
#if PT_ISA == PT_ISA_AVX512
    if (nt) _mm_sfence();
#else
    (void)nt;
#endif
}

#endif
