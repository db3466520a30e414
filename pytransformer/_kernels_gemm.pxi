# Included by _kernels.pyx: the GEMM -- sgemm on unpacked operands and
# PackedMatrix, a weight packed once into the micro-kernel's panels.  Buffers
# are checked here, against what each kernel reads and writes; the semantics
# (broadcasting, dtype conversion, torch-style errors) live in ops/.

def sgemm(a, b, bint trans_a=False, bint trans_b=False,
          bias=None, act=None, a_index=None,
          b_index=None, bint ref=False):
    """out[i] = act(op(a[a_index[i]]) @ op(b[b_index[i]]) + bias) for each batch i.

    a: (Ba, M, K) or (Ba, K, M) with trans_a; b: (Bb, K, N) or (Bb, N, K) with
    trans_b.  a_index / b_index: int64 batch indices (None: batch i itself),
    which is how numpy-style batch broadcasting reaches the kernel without
    copies.
    Returns (B, M, N).
    """
    _check(a, "a")
    _check(b, "b")
    if a.ndim != 3 or b.ndim != 3:
        raise ValueError("sgemm: a and b must be 3-d (batch, rows, cols)")
    cdef int64_t M = a.shape[2] if trans_a else a.shape[1]
    cdef int64_t Ka = a.shape[1] if trans_a else a.shape[2]
    cdef int64_t Kb = b.shape[2] if trans_b else b.shape[1]
    cdef int64_t N = b.shape[1] if trans_b else b.shape[2]
    if Ka != Kb:
        raise ValueError(f"sgemm: inner dimensions differ: a {a.shape} (trans_a={trans_a}), "
                         f"b {b.shape} (trans_b={trans_b})")
    cdef Py_ssize_t B = _result_batches((a_index, b_index), a.shape[0])
    cdef const int64_t *ai = _index_ptr(a_index, "sgemm: a_index", B, a.shape[0])
    cdef const int64_t *bi = _index_ptr(b_index, "sgemm: b_index", B, b.shape[0])
    cdef const float *pbias = NULL
    if bias is not None:
        _check(bias, "bias", N)
        pbias = _fptr(bias)
    cdef int iact = ACT[act]
    out = np.empty((B, M, N), dtype=np.float32)
    cdef const float *pa = _fptr(a)
    cdef const float *pb = _fptr(b)
    cdef float *pc = _fptr(out)
    cdef int64_t sa = a.shape[1] * a.shape[2], sb = b.shape[1] * b.shape[2]
    cdef int64_t lda = a.shape[2], ldb = b.shape[2], i, ia, ib
    cdef int nt = _nthreads, status = 0
    with nogil:
        for i in range(B):
            ia = ai[i] if ai != NULL else i
            ib = bi[i] if bi != NULL else i
            if ref:
                pt_sgemm_ref(pc + i * M * N, N, pa + ia * sa, lda, trans_a,
                             pb + ib * sb, ldb, trans_b, M, N, Ka, pbias, iact)
            else:
                status = KT.sgemm(pc + i * M * N, N, pa + ia * sa, lda, trans_a,
                                  pb + ib * sb, ldb, trans_b, M, N, Ka, pbias, iact, nt)
                if status != PT_OK:
                    break
    if status != PT_OK:
        _raise_status(status, "sgemm")
    return out


cdef enum:
    PT_PACK_SLOTS = 4   # > the largest PT_ISA value


cdef class PackedMatrix:
    """A right-hand GEMM operand packed once for the current kernel path.

    PackedMatrix(w, transpose=True) packs op(B) = w.T for a torch-layout Linear
    weight w of shape (out_features, in_features).  Packed panels are
    immutable once made: if the kernel path changes, the first call on the new
    path packs a second set from the kept source (under the GIL, so two
    threads never pack the same path twice) and both sets live until the
    matrix is freed -- a call still running on the old path keeps reading
    panels that nobody frees under it.
    """
    cdef pt_packed_b *packs[PT_PACK_SLOTS]
    cdef readonly object source
    cdef readonly bint transpose
    cdef readonly int64_t K, N

    def __cinit__(self, b, bint transpose=True):
        cdef int i
        for i in range(PT_PACK_SLOTS):
            self.packs[i] = NULL
        _check(b, "weight")
        if b.ndim != 2:
            raise ValueError(f"PackedMatrix: a 2-d matrix is needed, got shape {b.shape}")
        self.source = b
        self.transpose = transpose
        self.K = b.shape[1] if transpose else b.shape[0]
        self.N = b.shape[0] if transpose else b.shape[1]
        self._packed(KT)

    cdef const pt_packed_b *_packed(self, const pt_kernel_table *kt) except NULL:
        """The panels for path kt, packed on first use.  Runs with the GIL
        held throughout: the check and the publication are one step."""
        if kt.isa < 0 or kt.isa >= PT_PACK_SLOTS:
            raise RuntimeError(f"PackedMatrix: kernel path {kt.isa} has no slot")
        if self.packs[kt.isa] == NULL:
            self.packs[kt.isa] = kt.sgemm_pack_b(_fptr(self.source), self.source.shape[1],
                                                 self.transpose, self.K, self.N)
            if self.packs[kt.isa] == NULL:
                raise MemoryError("PackedMatrix: out of memory while packing")
        return self.packs[kt.isa]

    def __dealloc__(self):
        cdef int i
        for i in range(PT_PACK_SLOTS):
            if self.packs[i] != NULL:
                pt_packed_b_free(self.packs[i])

    @property
    def shape(self):
        """Shape of op(B): (K, N) = (in_features, out_features)."""
        return (self.K, self.N)

    @property
    def compute_type(self):
        return "float32"

    def matmul(self, a, bias=None, act=None):
        """act(a @ op(B) + bias) for a of shape (M, K)."""
        _check(a, "input")
        if a.ndim != 2 or a.shape[1] != self.K:
            raise ValueError(f"PackedMatrix.matmul: input of shape (M, {self.K}) expected, "
                             f"got {a.shape}")
        cdef const float *pbias = NULL
        if bias is not None:
            _check(bias, "bias", self.N)
            pbias = _fptr(bias)
        # one read of the path: a switch by another thread mid-call changes nothing here
        cdef const pt_kernel_table *kt = KT
        cdef const pt_packed_b *pb = self._packed(kt)
        cdef int iact = ACT[act]
        cdef int64_t M = a.shape[0]
        out = np.empty((M, self.N), dtype=np.float32)
        cdef int nt = _nthreads, status
        cdef float *pc = _fptr(out)
        cdef const float *pa = _fptr(a)
        with nogil:
            status = kt.sgemm_packed(pc, self.N, pa, self.K, M, pb, pbias, iact, nt)
        if status != PT_OK:
            _raise_status(status, "PackedMatrix.matmul")
        return out
