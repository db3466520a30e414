#include <math.h>
#include <stdarg.h>
#include "harness.h"

int pt_test_passed = 0, pt_test_failed = 0;

void pt_test_fill(float *x, int64_t n, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
}

double pt_test_max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) != isnan(b[i])) return NAN;
        if (isnan(a[i])) continue;
        if (isinf(a[i]) || isinf(b[i])) {
            if (a[i] != b[i]) return INFINITY;
            continue;
        }
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m) m = d;
    }
    return m;
}

void pt_test_check(int ok, const char *fmt, ...) {
    if (ok) { pt_test_passed++; return; }
    pt_test_failed++;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

const pt_kernel_table **pt_test_paths(void) {
    static const pt_kernel_table *paths[4];
    int n = 0;
    for (int isa = PT_ISA_SCALAR; isa <= PT_ISA_AVX512; isa++)
        if (pt_cpu_supports(isa)) paths[n++] = pt_kernels_for(isa);
    paths[n] = NULL;
    return paths;
}

int pt_test_summary(void) {
    printf("%d passed, %d failed\n", pt_test_passed, pt_test_failed);
    return pt_test_failed ? 1 : 0;
}
