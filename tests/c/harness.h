/* harness.h -- a few helpers shared by the C kernel tests. */
#ifndef PT_TEST_HARNESS_H
#define PT_TEST_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include "runtime/cpu.h"

extern int pt_test_passed, pt_test_failed;

/* Deterministic pseudo-random floats in [-1, 1). */
void pt_test_fill(float *x, int64_t n, uint64_t seed);
/* Max |a - b| over n; NaN if either has a NaN where the other does not. */
double pt_test_max_abs_diff(const float *a, const float *b, int64_t n);
/* Record one check; prints the failure. */
void pt_test_check(int ok, const char *fmt, ...);
/* The paths this CPU runs, NULL-terminated. */
const pt_kernel_table **pt_test_paths(void);
/* Prints "N passed, N failed"; returns the exit status. */
int pt_test_summary(void);

#endif
