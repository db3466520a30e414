# The int8 compute type (csrc/gemm/gemm_i8.h): weights int8 with a scale per
# output channel, activations quantized per row in the GEMM, int32 sums,
# dequantization and epilogue in float32.  Included by _kernels.pyx.
#
# Which kernel multiplies, on the avx512 path: AMX tiles (TDPBSSD) where the
# CPU has AMX-INT8 and Linux grants the tile state (cpu.c's
# pt_igemm_packed_amx_fn; fewer than 16 rows go to VPDPBUSD), else VPDPBUSD
# where the CPU has AVX512_VNNI, else the path's own kernel (PMADDUBSW on
# avx512 and avx2, plain C on scalar); on the other paths their own kernel.
# Every kernel gives the same integer sums.
# PYTRANSFORMER_INT8=amx_int8 | avx512_vnni | generic forces one
# (set_int8_path for tests).

cdef extern from *:
    """
    #include "runtime/peak.h"
    #if PT_HAVE_VNNI
    static double pt_vnni_peak(int n, int64_t iters) { return pt_vnni_peak_gops(n, iters); }
    #else
    static double pt_vnni_peak(int n, int64_t iters) { (void)n; (void)iters; return 0.0; }
    #endif
    #if PT_HAVE_AMX
    static double pt_amx_i8_peak(int n, int64_t iters) { return pt_amx_int8_peak_gops(n, iters); }
    #else
    static double pt_amx_i8_peak(int n, int64_t iters) { (void)n; (void)iters; return 0.0; }
    #endif
    """
    double pt_vnni_peak(int n, int64_t iters) nogil
    double pt_amx_i8_peak(int n, int64_t iters) nogil

cdef pt_igemm_packed_fn _INT8_VNNI = pt_igemm_packed_vnni_fn()
cdef pt_igemm_packed_fn _INT8_AMX = pt_igemm_packed_amx_fn()

INT8_AMX = "amx_int8"
INT8_VNNI = "avx512_vnni"
INT8_GENERIC = "generic"
_INT8_NAMES = (INT8_GENERIC, INT8_VNNI, INT8_AMX)
# the kernel asked for on the avx512 path (0: the path's own, 1: VPDPBUSD, 2: AMX)
cdef int _int8_wanted = 2 if _INT8_AMX != NULL else 1 if _INT8_VNNI != NULL else 0
INT8_MAX_K = PT_I8_MAX_K
INT8_OUTLIERS = PT_I8_OUTLIERS


def available_int8_paths():
    """'generic' (every path), 'avx512_vnni' and 'amx_int8' where this build
    and CPU have them."""
    return ([INT8_GENERIC] + ([INT8_VNNI] if _INT8_VNNI != NULL else []) +
            ([INT8_AMX] if _INT8_AMX != NULL else []))


def set_int8_path(name):
    """The int8 kernel of the avx512 kernel path: 'amx_int8' (AMX tiles),
    'avx512_vnni' (VPDPBUSD) -- a RuntimeError where the CPU, the OS or the
    build lacks it -- or 'generic' (the kernel path's own, which every path has)."""
    global _int8_wanted
    if name not in _INT8_NAMES:
        raise ValueError(f"unknown int8 path {name!r}; expected one of "
                         f"{', '.join(map(repr, _INT8_NAMES))}")
    if name not in available_int8_paths():
        need = ("AMX-INT8 tiles, granted by the OS, and AVX512_VNNI" if name == INT8_AMX
                else "AVX512_VNNI (VPDPBUSD)")
        raise RuntimeError(f"int8 path {name!r} needs {need}, which this CPU, OS or build "
                           f"lacks; available: {available_int8_paths()}")
    _int8_wanted = _INT8_NAMES.index(name)


def get_int8_setting():
    """The int8 kernel asked for on the avx512 path: 'amx_int8', 'avx512_vnni'
    or 'generic' -- the best available unless set_int8_path (or
    PYTRANSFORMER_INT8) chose another."""
    return _INT8_NAMES[_int8_wanted]


cdef inline pt_igemm_packed_fn _int8_fn(const pt_kernel_table *kt) noexcept:
    if kt.isa == PT_ISA_AVX512:
        if _int8_wanted == 2:
            return _INT8_AMX
        if _int8_wanted == 1:
            return _INT8_VNNI
    return kt.igemm_packed


def get_int8_path():
    """The kernel the int8 GEMM runs now: 'amx_int8', 'avx512_vnni', or the
    kernel path whose own kernel it is ('avx512', 'avx2', 'scalar')."""
    if KT.isa == PT_ISA_AVX512 and _int8_wanted != 0:
        return _INT8_NAMES[_int8_wanted]
    return KT.name.decode()


def _init_int8():
    forced = os.environ.get("PYTRANSFORMER_INT8", "").strip().lower()
    if forced:
        set_int8_path(forced)
        if forced != INT8_GENERIC and KT.isa != PT_ISA_AVX512:
            raise RuntimeError(f"PYTRANSFORMER_INT8={forced} needs the avx512 kernel path, "
                               f"not {get_isa()!r}")

_init_int8()


def int8_quantize(x, bint outliers=False):
    """(q, scale) of a float32 row x quantized as the int8 GEMM quantizes a
    weight's row: scale = max|x| / 127, q = rint(x * 127 / max|x|) (int8, ties
    to even); a zero row has scale 0, a row with inf or NaN scale NaN and
    q = 0.  outliers: as a row of activations, (q, scale, indices, values)
    with its outliers taken out first (csrc/gemm/gemm_i8.h).  For tests."""
    _check(x, "x")
    if x.ndim != 1:
        raise ValueError(f"int8_quantize: a 1-d row is needed, got shape {x.shape}")
    q = np.empty(x.shape, dtype=np.int8)
    cdef float s
    cdef int ok[64]       # >= PT_I8_OUTLIERS
    cdef float ox[64]
    cdef int no = 0
    cdef const float *px = _fptr(x)
    cdef signed char *pq = <signed char *>cnp.PyArray_DATA(<cnp.ndarray>q)
    cdef int64_t n = x.size
    with nogil:
        if outliers:
            s = pt_i8_quantize(px, n, pq, ok, ox, &no)
        else:
            s = pt_i8_quantize(px, n, pq, NULL, NULL, NULL)
    if not outliers:
        return q, s
    return (q, s, np.array([ok[i] for i in range(no)], np.int64),
            np.array([ox[i] for i in range(no)], np.float32))


cdef class PackedMatrixI8:
    """A right-hand GEMM operand quantized to int8 and packed once: the
    compute type "int8".

    PackedMatrixI8(w, transpose=True) quantizes op(B) = w.T for a
    torch-layout Linear weight w (out_features, in_features): one scale per
    output channel (max |w[j]| / 127).  ``matmul`` quantizes each input row
    the same way, sums the int8 products exactly in int32 and dequantizes in
    float32.  One packing serves every int8 kernel; immutable once made.
    """
    cdef pt_packed_i8 *pack
    cdef readonly object source
    cdef readonly bint transpose
    cdef readonly int64_t K, N

    def __cinit__(self, b, bint transpose=True):
        self.pack = NULL
        _check(b, "weight")
        if b.ndim != 2:
            raise ValueError(f"PackedMatrixI8: a 2-d matrix is needed, got shape {b.shape}")
        self.source = b
        self.transpose = transpose
        self.K = b.shape[1] if transpose else b.shape[0]
        self.N = b.shape[0] if transpose else b.shape[1]
        if self.K > PT_I8_MAX_K:
            raise ValueError(f"PackedMatrixI8: in_features {self.K} is past the int8 GEMM's "
                             f"limit of {PT_I8_MAX_K} (its int32 sums would overflow)")
        cdef const float *pb = _fptr(b)
        cdef int64_t ldb = b.shape[1], K = self.K, N = self.N
        with nogil:
            self.pack = pt_igemm_pack_b(pb, ldb, transpose, K, N)
        if self.pack == NULL:
            raise MemoryError("PackedMatrixI8: out of memory while packing")

    def __dealloc__(self):
        if self.pack != NULL:
            pt_packed_i8_free(self.pack)

    @property
    def shape(self):
        """Shape of op(B): (K, N) = (in_features, out_features)."""
        return (self.K, self.N)

    @property
    def compute_type(self):
        return "int8"

    def matmul(self, a, bias=None, act=None, bint ref=False):
        """act(dequant(q(a) @ q(op(B))) + bias) for a of shape (M, K); ref:
        the naive twin (int64 sums) instead."""
        _check(a, "input")
        if a.ndim != 2 or a.shape[1] != self.K:
            raise ValueError(f"PackedMatrixI8.matmul: input of shape (M, {self.K}) "
                             f"expected, got {a.shape}")
        cdef const float *pbias = NULL
        if bias is not None:
            _check(bias, "bias", self.N)
            pbias = _fptr(bias)
        cdef pt_igemm_packed_fn fn = _int8_fn(KT)   # one read of the path
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
                pt_igemm_ref(pc, self.N, pa, self.K, ps, lds, self.transpose, M, self.N,
                             self.K, pbias, iact)
            else:
                status = fn(pc, self.N, pa, self.K, M, self.pack, pbias, iact, nt)
        if status != PT_OK:
            _raise_status(status, "PackedMatrixI8.matmul")
        return out


def vnni_peak_gops(int nthreads=1, int64_t iters=20000000):
    """Measured VPDPBUSD peak (GOP/s: 128 int8 operations per instruction) of
    `nthreads` threads; a ValueError where the CPU or build lacks it."""
    if _INT8_VNNI == NULL:
        raise ValueError("vnni_peak_gops: this CPU or build has no AVX512_VNNI")
    cdef double g
    with nogil:
        g = pt_vnni_peak(nthreads, iters)
    return g


def amx_int8_peak_gops(int nthreads=1, int64_t iters=2000000):
    """Measured TDPBSSD peak (GOP/s: 32768 int8 operations per instruction)
    of `nthreads` threads; a ValueError where the CPU, OS or build lacks it."""
    if _INT8_AMX == NULL:
        raise ValueError("amx_int8_peak_gops: this CPU, OS or build has no AMX-INT8")
    cdef double g
    with nogil:
        g = pt_amx_i8_peak(nthreads, iters)
    return g
