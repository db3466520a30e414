/* mem.h -- the kernels' memory, allocated in one place: working buffers
 * (packed blocks, per-thread scratch) and packed weights.  Compiled once.
 *
 * Kernels allocate their buffers once per call, never inside a hot loop, and
 * report a failed allocation to their caller as an error (PT_ERR_NOMEM,
 * runtime/status.h): they never fall back to a slower route whose results
 * would then depend on malloc.
 */
#ifndef PT_MEM_H
#define PT_MEM_H

#include <stddef.h>

#define PT_ALIGN 64   /* a cache line, and one AVX-512 vector */

/* PT_ALIGN-aligned memory of `bytes` rounded up to a multiple of PT_ALIGN
 * (0 bytes: one line), or NULL.  Free with pt_free. */
void *pt_alloc(size_t bytes);
/* The same, zero filled. */
void *pt_alloc_zero(size_t bytes);
void pt_free(void *p);

/* Memory for weights that are streamed again and again (64-byte aligned;
 * 2 MiB and more: huge pages where the OS has them), or NULL.  Free with the
 * size. */
float *pt_weights_alloc(size_t bytes);
void pt_weights_free(float *p, size_t bytes);

/* For tests: the next n allocations above succeed and every later one fails,
 * until pt_mem_fail_after(-1) lets all succeed again (the default).  Counted
 * across threads.  Costs one atomic load per allocation. */
void pt_mem_fail_after(long long n);

#endif
