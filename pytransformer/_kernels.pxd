# Declarations of the C kernels (csrc/).  The .pyx beside this file wraps them.
from libc.stdint cimport int64_t, uint8_t

cdef extern from "runtime/simd.h":
    int PT_ISA_SCALAR
    int PT_ISA_AVX2
    int PT_ISA_AVX512

cdef extern from "runtime/mask.h":
    int PT_MAX_DIMS
    ctypedef struct pt_mask:
        const void *data
        int is_bool
        int ndim
        int64_t shape[16]
        int64_t stride[16]
        int64_t stride_last

cdef extern from "gemm/gemm.h":
    ctypedef struct pt_packed_b:
        int isa
        int64_t K
        int64_t N
        int64_t nr
        size_t size
        float *data
    void pt_packed_b_free(pt_packed_b *p) nogil
    void pt_sgemm_ref(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                      const float *B, int64_t ldb, int trans_b, int64_t M, int64_t N,
                      int64_t K, const float *bias, int act) nogil

cdef extern from "rowwise/activation.h":
    int PT_ACT_NONE
    int PT_ACT_RELU
    int PT_ACT_GELU
    int PT_ACT_GELU_TANH
    void pt_relu_ref(float *y, const float *x, int64_t n) nogil
    void pt_gelu_ref(float *y, const float *x, int64_t n) nogil
    void pt_gelu_tanh_ref(float *y, const float *x, int64_t n) nogil

cdef extern from "rowwise/layernorm.h":
    void pt_layer_norm_ref(float *y, const float *x, const float *weight, const float *bias,
                           int64_t rows, int64_t n, float eps) nogil

cdef extern from "rowwise/softmax.h":
    void pt_softmax_ref(float *y, const float *x, int64_t rows, int64_t n,
                        const pt_mask *mask) nogil

cdef extern from "attention/attention.h":
    int PT_ATTN_BK
    int PT_ATTN_BQ
    void pt_attention_ref(float *out, const float *q, const int64_t *q_index, const float *k,
                          const int64_t *k_index, int64_t k_bs, const float *v,
                          const int64_t *v_index, int64_t v_bs, int64_t B, int64_t L, int64_t S, int64_t E, int64_t Ev, float scale,
                          const pt_mask *mask, int causal) nogil

cdef extern from "runtime/cpu.h":
    ctypedef struct pt_kernel_table:
        const char *name
        int isa
        void (*relu)(float *, const float *, int64_t, int) nogil
        void (*gelu)(float *, const float *, int64_t, int) nogil
        void (*gelu_tanh)(float *, const float *, int64_t, int) nogil
        void (*softmax)(float *, const float *, int64_t, int64_t, const pt_mask *, int) nogil
        void (*layer_norm)(float *, const float *, const float *, const float *, int64_t,
                           int64_t, float, int) nogil
        void (*sgemm)(float *, int64_t, const float *, int64_t, int, const float *, int64_t,
                      int, int64_t, int64_t, int64_t, const float *, int, int) nogil
        pt_packed_b *(*sgemm_pack_b)(const float *, int64_t, int, int64_t, int64_t) nogil
        void (*sgemm_packed)(float *, int64_t, const float *, int64_t, int64_t,
                             const pt_packed_b *, const float *, int, int) nogil
        int (*attention)(float *, const float *, const int64_t *, const float *,
                         const int64_t *, int64_t, const float *, const int64_t *, int64_t,
                         int64_t, int64_t, int64_t, int64_t, int64_t, float, const pt_mask *,
                         int, int) nogil
        double (*fma_peak_gflops)(int, int64_t) nogil
    int pt_cpu_supports(int isa)
    int pt_cpu_best_isa()
    const pt_kernel_table *pt_kernels_for(int isa)
