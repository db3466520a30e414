# The bfloat16 compute type (csrc/gemm/gemm.h, "bfloat16 GEMM"): weights
# packed once as bf16 pairs, activations rounded to bf16 in the GEMM, fp32
# accumulation.  Included by _kernels.pyx.
#
# Which kernel multiplies, on the avx512 path: AMX tiles (TDPBF16PS) where
# the CPU has AMX-BF16 and Linux grants the tile state (cpu.c's
# pt_bgemm_packed_amx_fn), else VDPBF16PS where the CPU has AVX512_BF16
# (pt_bgemm_packed_dot), else the path's own conversion kernel (bf16 -> fp32
# by a shift, fp32 FMA); on the other paths their conversion kernel.
# PYTRANSFORMER_BF16=amx_bf16 | avx512_bf16 | convert forces one
# (set_bf16_path for tests).

cdef extern from *:
    """
    #if PT_HAVE_BF16_DOT
    #include "runtime/peak.h"
    static double pt_bf16_peak(int n, int64_t iters) { return pt_bf16_dot_peak_gflops(n, iters); }
    #else
    static double pt_bf16_peak(int n, int64_t iters) { (void)n; (void)iters; return 0.0; }
    #endif
    #if PT_HAVE_AMX
    static double pt_amx_peak(int n, int64_t iters) { return pt_amx_bf16_peak_gflops(n, iters); }
    #else
    static double pt_amx_peak(int n, int64_t iters) { (void)n; (void)iters; return 0.0; }
    #endif
    """
    double pt_bf16_peak(int n, int64_t iters) nogil
    double pt_amx_peak(int n, int64_t iters) nogil

cdef pt_bgemm_packed_fn _BF16_DOT = pt_bgemm_packed_dot()
cdef pt_bgemm_packed_fn _BF16_AMX = pt_bgemm_packed_amx_fn()

BF16_AMX = "amx_bf16"
BF16_DOT = "avx512_bf16"
BF16_CONVERT = "convert"
# the kernel asked for on the avx512 path: the best this CPU has unless set
# (0: the conversion kernel, 1: VDPBF16PS, 2: AMX)
cdef int _bf16_wanted = 2 if _BF16_AMX != NULL else 1 if _BF16_DOT != NULL else 0
_BF16_NAMES = (BF16_CONVERT, BF16_DOT, BF16_AMX)


def cpu_features():
    """The CPU features the bf16 and int8 paths use or will use, from CPUID
    (and XCR0: whether the OS saves the zmm and AMX tile state;
    amx_granted: whether Linux gave this process the tile data)."""
    return {"avx512_bf16": bool(pt_cpu_has(PT_FEAT_AVX512_BF16)),
            "avx512_vnni": bool(pt_cpu_has(PT_FEAT_AVX512_VNNI)),
            "amx_tile": bool(pt_cpu_has(PT_FEAT_AMX_TILE)),
            "amx_bf16": bool(pt_cpu_has(PT_FEAT_AMX_BF16)),
            "amx_int8": bool(pt_cpu_has(PT_FEAT_AMX_INT8)),
            "amx_os_enabled": bool(pt_cpu_has(PT_FEAT_AMX_OS)),
            "amx_granted": bool(pt_cpu_amx_granted())}


def available_bf16_paths():
    """'convert' (every path), 'avx512_bf16' and 'amx_bf16' where this build
    and CPU have them."""
    return ([BF16_CONVERT] + ([BF16_DOT] if _BF16_DOT != NULL else []) +
            ([BF16_AMX] if _BF16_AMX != NULL else []))


def set_bf16_path(name):
    """The bf16 kernel of the avx512 kernel path: 'amx_bf16' (AMX tiles),
    'avx512_bf16' (VDPBF16PS) -- a RuntimeError where the CPU, the OS or the
    build lacks it -- or 'convert' (the conversion kernel, as every path)."""
    global _bf16_wanted
    if name not in (BF16_AMX, BF16_DOT, BF16_CONVERT):
        raise ValueError(f"unknown bf16 path {name!r}; expected {BF16_AMX!r}, {BF16_DOT!r} "
                         f"or {BF16_CONVERT!r}")
    if name not in available_bf16_paths():
        need = ("AMX-BF16 tiles, granted by the OS" if name == BF16_AMX
                else "AVX512_BF16 (VDPBF16PS)")
        raise RuntimeError(f"bf16 path {name!r} needs {need}, which this CPU, OS or build "
                           f"lacks; available: {available_bf16_paths()}")
    _bf16_wanted = _BF16_NAMES.index(name)


def get_bf16_setting():
    """The bf16 kernel asked for on the avx512 path: 'amx_bf16',
    'avx512_bf16' or 'convert' -- the best available unless set_bf16_path
    (or PYTRANSFORMER_BF16) chose another."""
    return _BF16_NAMES[_bf16_wanted]


cdef inline pt_bgemm_packed_fn _bf16_fn(const pt_kernel_table *kt) noexcept:
    if kt.isa == PT_ISA_AVX512:
        if _bf16_wanted == 2:
            return _BF16_AMX
        if _bf16_wanted == 1:
            return _BF16_DOT
    return kt.bgemm_packed


def get_bf16_path():
    """The kernel the bfloat16 GEMM runs now: 'amx_bf16', 'avx512_bf16', or
    the kernel path whose conversion kernel it is ('avx512', 'avx2',
    'scalar')."""
    if KT.isa == PT_ISA_AVX512 and _bf16_wanted != 0:
        return _BF16_NAMES[_bf16_wanted]
    return KT.name.decode()


def _init_bf16():
    forced = os.environ.get("PYTRANSFORMER_BF16", "").strip().lower()
    if forced:
        set_bf16_path(forced)
        if forced != BF16_CONVERT and KT.isa != PT_ISA_AVX512:
            raise RuntimeError(f"PYTRANSFORMER_BF16={forced} needs the avx512 kernel path, "
                               f"not {get_isa()!r}")

_init_bf16()


def bf16_round(x):
    """x (float32, C-contiguous) rounded to the nearest bf16 (ties to even, as
    torch's .to(torch.bfloat16)), as float32; for tests."""
    _check(x, "x")
    out = np.empty_like(x)
    cdef const float *px = _fptr(x)
    cdef unsigned int *po = <unsigned int *>cnp.PyArray_DATA(<cnp.ndarray>out)
    cdef int64_t i, n = x.size
    with nogil:
        for i in range(n):
            po[i] = (<unsigned int>pt_bf16_from_float(px[i])) << 16
    return out


cdef class PackedMatrixBF16:
    """A right-hand GEMM operand packed once as bfloat16 for the current
    kernel path: the compute type "bfloat16".

    PackedMatrixBF16(w, transpose=True) packs op(B) = w.T rounded to bf16 for
    a torch-layout Linear weight w (out_features, in_features); ``matmul``
    rounds its input to bf16 and accumulates in float32.  The same interface
    and thread-safety as PackedMatrix: panels immutable once packed, one set
    per kernel layout (the avx512 set serves AMX, VDPBF16PS and the
    conversion kernel alike), packed under the GIL on first use, freed with the matrix.
    """
    cdef pt_packed_bf16 *packs[PT_PACK_SLOTS]
    cdef readonly object source
    cdef readonly bint transpose
    cdef readonly int64_t K, N

    def __cinit__(self, b, bint transpose=True):
        cdef int i
        for i in range(PT_PACK_SLOTS):
            self.packs[i] = NULL
        _check(b, "weight")
        if b.ndim != 2:
            raise ValueError(f"PackedMatrixBF16: a 2-d matrix is needed, got shape {b.shape}")
        self.source = b
        self.transpose = transpose
        self.K = b.shape[1] if transpose else b.shape[0]
        self.N = b.shape[0] if transpose else b.shape[1]
        self._packed(KT)

    cdef const pt_packed_bf16 *_packed(self, const pt_kernel_table *kt) except NULL:
        if kt.isa < 0 or kt.isa >= PT_PACK_SLOTS:
            raise RuntimeError(f"PackedMatrixBF16: kernel path {kt.isa} has no slot")
        if self.packs[kt.isa] == NULL:
            self.packs[kt.isa] = kt.bgemm_pack_b(_fptr(self.source), self.source.shape[1],
                                                 self.transpose, self.K, self.N)
            if self.packs[kt.isa] == NULL:
                raise MemoryError("PackedMatrixBF16: out of memory while packing")
        return self.packs[kt.isa]

    def __dealloc__(self):
        cdef int i
        for i in range(PT_PACK_SLOTS):
            if self.packs[i] != NULL:
                pt_packed_bf16_free(self.packs[i])

    @property
    def shape(self):
        """Shape of op(B): (K, N) = (in_features, out_features)."""
        return (self.K, self.N)

    @property
    def compute_type(self):
        return "bfloat16"

    def matmul(self, a, bias=None, act=None, bint ref=False):
        """act(bf16(a) @ bf16(op(B)) + bias) for a of shape (M, K), float32
        accumulation; ref: the naive twin (double sums) instead."""
        _check(a, "input")
        if a.ndim != 2 or a.shape[1] != self.K:
            raise ValueError(f"PackedMatrixBF16.matmul: input of shape (M, {self.K}) "
                             f"expected, got {a.shape}")
        cdef const float *pbias = NULL
        if bias is not None:
            _check(bias, "bias", self.N)
            pbias = _fptr(bias)
        # one read of the path (and of the bf16 kernel): a switch by another
        # thread mid-call changes nothing here
        cdef const pt_kernel_table *kt = KT
        cdef pt_bgemm_packed_fn fn = _bf16_fn(kt)
        cdef const pt_packed_bf16 *pb = self._packed(kt)
        cdef int iact = ACT[act]
        cdef int64_t M = a.shape[0]
        out = np.empty((M, self.N), dtype=np.float32)
        cdef int nt = _nthreads, status = PT_OK
        cdef float *pc = _fptr(out)
        cdef const float *pa = _fptr(a)
        cdef const float *ps = _fptr(self.source)
        cdef int64_t lds = self.source.shape[1]
        with nogil:
            if ref:
                pt_bgemm_ref(pc, self.N, pa, self.K, ps, lds, self.transpose, M, self.N,
                             self.K, pbias, iact)
            else:
                status = fn(pc, self.N, pa, self.K, M, pb, pbias, iact, nt)
        if status != PT_OK:
            _raise_status(status, "PackedMatrixBF16.matmul")
        return out


def bf16_dot_peak_gflops(int nthreads=1, int64_t iters=20000000):
    """Measured VDPBF16PS peak (GFLOP/s: 64 flops per instruction) of
    `nthreads` threads; a ValueError where the CPU or build lacks it."""
    if _BF16_DOT == NULL:
        raise ValueError("bf16_dot_peak_gflops: this CPU or build has no AVX512_BF16")
    cdef double g
    with nogil:
        g = pt_bf16_peak(nthreads, iters)
    return g


def amx_bf16_peak_gflops(int nthreads=1, int64_t iters=2000000):
    """Measured TDPBF16PS peak (GFLOP/s: 16384 flops per instruction) of
    `nthreads` threads; a ValueError where the CPU, OS or build lacks AMX."""
    if _BF16_AMX == NULL:
        raise ValueError("amx_bf16_peak_gflops: this CPU, OS or build has no AMX-BF16")
    cdef double g
    with nogil:
        g = pt_amx_peak(nthreads, iters)
    return g
