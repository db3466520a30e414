# Weight-only GGUF blocks (csrc/gemm/gemm_q.h): float32 rows times weights
# kept in ggml's Q8_0 / Q4_0 / Q4_1 blocks, as a GGUF file stores them.
# Included by _kernels.pyx.

QUANTIZED_TYPES = {"Q8_0": PT_Q8_0, "Q4_0": PT_Q4_0, "Q4_1": PT_Q4_1}


cdef class QuantizedMatrix:
    """A right-hand GEMM operand held in GGUF's own blocks: the weight of a
    Linear (out_features, in_features) as ``blocks``, a (out_features,
    bytes per row) uint8 array of ggml type ``qtype`` ('Q8_0', 'Q4_0',
    'Q4_1'; in_features a multiple of 32).  ``matmul`` multiplies float32
    rows by the dequantized weights without materialising them: the
    result is the float32 GEMM of the matrix gguf's dequantizer gives, up to
    float32 rounding (each block's scale is applied to its sum of q * x,
    gemm_q.c).  The blocks are re-laid once, 16 rows
    interleaved (gemm_q.h: the same bytes, one layout for every kernel
    path); ``blocks`` stays as given (a view of a memory-mapped file serves)
    for the naive twin.  The same interface as PackedMatrix."""
    cdef readonly object blocks
    cdef readonly str qtype
    cdef readonly int64_t K, N
    cdef int code
    cdef pt_packed_q *packed

    def __cinit__(self, blocks, str qtype, int64_t in_features):
        if qtype not in QUANTIZED_TYPES:
            raise ValueError(f"QuantizedMatrix: ggml type {qtype!r} has no kernel; "
                             f"expected one of {sorted(QUANTIZED_TYPES)}")
        if not isinstance(blocks, np.ndarray) or blocks.dtype != np.uint8 or blocks.ndim != 2 \
                or not blocks.flags.c_contiguous:
            raise ValueError("QuantizedMatrix: blocks must be a C-contiguous 2-d uint8 array "
                             "(out_features, bytes per row)")
        self.code = QUANTIZED_TYPES[qtype]
        if in_features < 0 or in_features % 32:
            raise ValueError(f"QuantizedMatrix: in_features must be a multiple of 32 "
                             f"(the block size), got {in_features}")
        row = in_features // 32 * pt_q_block_bytes(self.code)
        if blocks.shape[1] != row:
            raise ValueError(f"QuantizedMatrix: {qtype} rows of {in_features} weights take "
                             f"{row} bytes, got {blocks.shape[1]}")
        self.blocks, self.qtype = blocks, qtype
        self.K, self.N = in_features, blocks.shape[0]
        self.packed = pt_qgemm_pack(<const uint8_t *>cnp.PyArray_DATA(<cnp.ndarray>blocks),
                                    row, self.code, self.N, self.K)
        if self.packed == NULL:
            raise MemoryError("QuantizedMatrix: out of memory while packing")

    def __dealloc__(self):
        if self.packed != NULL:
            pt_packed_q_free(self.packed)

    @property
    def shape(self):
        """Shape of op(B): (K, N) = (in_features, out_features)."""
        return (self.K, self.N)

    @property
    def compute_type(self):
        return self.qtype

    def __copy__(self):
        return self                 # immutable: copies share the blocks

    def __deepcopy__(self, memo):
        return self

    def matmul(self, a, bias=None, act=None, bint ref=False):
        """act(a @ dequant(W).T + bias) for a of shape (M, K); ref: the naive
        twin (each weight dequantized, double sums) instead."""
        _check(a, "input")
        if a.ndim != 2 or a.shape[1] != self.K:
            raise ValueError(f"QuantizedMatrix.matmul: input of shape (M, {self.K}) "
                             f"expected, got {a.shape}")
        cdef const float *pbias = NULL
        if bias is not None:
            _check(bias, "bias", self.N)
            pbias = _fptr(bias)
        cdef const pt_kernel_table *kt = KT
        cdef int iact = ACT[act]
        cdef int64_t M = a.shape[0]
        out = np.empty((M, self.N), dtype=np.float32)
        cdef int nt = _nthreads, status = PT_OK, code = self.code
        cdef float *pc = _fptr(out)
        cdef const float *pa = _fptr(a)
        cdef const uint8_t *pw = <const uint8_t *>cnp.PyArray_DATA(
            <cnp.ndarray>self.blocks)
        cdef int64_t ldw = self.blocks.shape[1], N = self.N, K = self.K
        with nogil:
            if ref:
                status = pt_qgemm_ref(pc, N, pa, K, M, pw, ldw, code, N, K, pbias, iact)
            else:
                status = kt.qgemm_packed(pc, N, pa, K, M, self.packed, pbias, iact, nt)
        if status != PT_OK:
            _raise_status(status, "QuantizedMatrix.matmul")
        return out
