/* mem.c -- aligned working memory and huge-page weights. */
#define _DEFAULT_SOURCE   /* mmap's MAP_ANONYMOUS and madvise under -std=c11 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include "runtime/mem.h"

static size_t round_up(size_t bytes, size_t to) { return (bytes + to - 1) / to * to; }

/* Allocations left before they fail; < 0: none fails. */
static _Atomic long long budget = -1;

void pt_mem_fail_after(long long n) { atomic_store(&budget, n < 0 ? -1 : n); }

static int fail_now(void) {
    long long left = atomic_load_explicit(&budget, memory_order_relaxed);
    while (left > 0 && !atomic_compare_exchange_weak(&budget, &left, left - 1)) {
    }
    return left == 0;
}

void *pt_alloc(size_t bytes) {
    if (fail_now()) return NULL;
    if (bytes > SIZE_MAX - PT_ALIGN) return NULL;   /* the rounding would wrap */
    return aligned_alloc(PT_ALIGN, bytes ? round_up(bytes, PT_ALIGN) : PT_ALIGN);
}

void *pt_alloc_zero(size_t bytes) {
    void *p = pt_alloc(bytes);
    if (p) memset(p, 0, bytes ? round_up(bytes, PT_ALIGN) : PT_ALIGN);
    return p;
}

void pt_free(void *p) { free(p); }

/* Weights of 2 MiB and more get memory of their own, 2 MiB aligned and
 * marked for transparent huge pages on Linux: decoding streams every packed
 * weight once per token, and on 4 KiB pages that stream takes a TLB miss
 * every 4 KiB (measured here: one core reads 43 GB/s from huge pages, 39.5
 * from small ones).  The mapping covers the exact size rounded to 4 KiB, so
 * a partial last huge page stays small pages and nothing is wasted.
 * Elsewhere, and below 2 MiB, an ordinary aligned allocation. */
#define PT_HUGE (2u << 20)
#define PT_PAGE 4096u

float *pt_weights_alloc(size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= PT_HUGE) {
        if (fail_now() || bytes > SIZE_MAX - 2 * (size_t)PT_HUGE) return NULL;
        size_t size = round_up(bytes, PT_PAGE), span = size + PT_HUGE;
        char *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return NULL;
        char *p = (char *)(((uintptr_t)m + PT_HUGE - 1) & ~(uintptr_t)(PT_HUGE - 1));
        if (p > m) munmap(m, (size_t)(p - m));                   /* unaligned head */
        if (m + span > p + size) munmap(p + size, (size_t)(m + span - (p + size)));
        madvise(p, size, MADV_HUGEPAGE);   /* a hint: without THP, small pages */
        return (float *)p;
    }
#endif
    return pt_alloc(bytes);
}

void pt_weights_free(float *p, size_t bytes) {
    if (!p) return;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= PT_HUGE) {
        munmap(p, round_up(bytes, PT_PAGE));
        return;
    }
#endif
    pt_free(p);
}
