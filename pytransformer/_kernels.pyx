# Thin Cython layer over csrc/: check that buffers are what the kernels will
# read (float32, C-contiguous, sizes that agree), allocate outputs, release the
# GIL, call C.  Argument semantics (broadcasting, dtype conversion, torch-style
# errors) live in pytransformer/ops.py; no maths lives here.
import math
import os

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t

cnp.import_array()

cdef extern from *:
    """
    #if PT_HAVE_OPENMP
    #include <omp.h>
    static int pt_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int pt_omp_max_threads(void) { return 1; }
    #endif
    """
    int PT_HAVE_OPENMP
    int pt_omp_max_threads()

ISA_NAMES = {PT_ISA_SCALAR: "scalar", PT_ISA_AVX2: "avx2", PT_ISA_AVX512: "avx512"}
_ISA_IDS = {v: k for k, v in ISA_NAMES.items()}

# the kernel table of the path in use (K, as in sgemm, is an inner dimension)
cdef const pt_kernel_table *KT = NULL
cdef int _nthreads = 1

ACT = {None: PT_ACT_NONE, "none": PT_ACT_NONE, "relu": PT_ACT_RELU,
       "gelu": PT_ACT_GELU, "gelu_tanh": PT_ACT_GELU_TANH, "silu": PT_ACT_SILU}


# ---------------------------------------------------------------- run time --

def available_isas():
    """Kernel paths this build has and this CPU can run, best last."""
    return [n for i, n in sorted(ISA_NAMES.items()) if pt_cpu_supports(i)]


def set_isa(name):
    """Switch every kernel to path `name` ('scalar', 'avx2' or 'avx512')."""
    global KT
    if name not in _ISA_IDS:
        raise ValueError(f"unknown kernel path {name!r}; expected one of "
                         f"{sorted(_ISA_IDS)}")
    cdef int isa = _ISA_IDS[name]
    if not pt_cpu_supports(isa):
        raise RuntimeError(f"kernel path {name!r} is not available on this CPU or build; "
                           f"available: {available_isas()}")
    KT = pt_kernels_for(isa)


def get_isa():
    return KT.name.decode()


def has_openmp():
    return bool(PT_HAVE_OPENMP)


# The most threads a call may use: a small multiple of the CPUs present.
# libgomp fails (or crashes) creating tens of thousands of threads, and more
# threads than this only time-slice the same cores.
MAX_THREADS = 4 * (os.cpu_count() or 1)


def set_num_threads(n):
    global _nthreads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"set_num_threads: n must be an integer >= 1, got {n!r}")
    if n < 1 or n > MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be in [1, {MAX_THREADS}] (4 x the "
                         f"{os.cpu_count()} CPUs present), got {n}")
    _nthreads = int(n) if PT_HAVE_OPENMP else 1


def get_num_threads():
    return _nthreads


def _threads_at_start():
    """OpenMP's default thread count (OMP_NUM_THREADS, else the CPUs), clamped
    to [1, MAX_THREADS] with a warning when the environment asks for more."""
    n = max(1, pt_omp_max_threads())
    if n > MAX_THREADS:
        import warnings
        warnings.warn(f"pytransformer: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')!r} "
                      f"asks for {n} threads; using {MAX_THREADS} (4 x the "
                      f"{os.cpu_count()} CPUs present)", RuntimeWarning, stacklevel=2)
        n = MAX_THREADS
    return n


def _init():
    global _nthreads
    forced = os.environ.get("PYTRANSFORMER_ISA", "").strip().lower()
    if forced:
        set_isa(forced)
    else:
        set_isa(ISA_NAMES[pt_cpu_best_isa()])
    _nthreads = _threads_at_start()

_init()


def _fail_allocations_after(long long n):
    """Tests only: the kernels' next n allocations succeed and every later one
    fails (n < 0: none fails, the default)."""
    pt_mem_fail_after(n)


# ----------------------------------------------------------------- helpers --

cdef int _raise_status(int status, str what) except -1:
    """Raise for a kernel's nonzero status (runtime/status.h)."""
    if status == PT_ERR_NOMEM:
        raise MemoryError(f"{what}: out of memory for the kernel's working buffers")
    if status == PT_ERR_PATH:
        raise RuntimeError(f"{what}: operand packed for another kernel path")
    if status == PT_ERR_ARG:
        raise ValueError(f"{what}: the kernel refused its arguments")
    raise RuntimeError(f"{what}: kernel failed with status {status}")


cdef inline float *_fptr(object a):
    return <float *>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int64_t _rows_operand(object a, str name) except -1:
    """Check a 3-d float32 operand whose rows are contiguous; return the
    elements from one batch to the next (any stride >= 0: the first rows of
    a longer buffer, such as a KV cache, pass without a copy)."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name}: a numpy array is needed, got {type(a).__name__}")
    if a.dtype != np.float32 or a.ndim != 3:
        raise ValueError(f"{name}: kernels take 3-d float32 arrays, got {a.dtype} {a.shape}")
    cdef Py_ssize_t n = a.shape[0], rows = a.shape[1], cols = a.shape[2]
    st = a.strides
    if a.size == 0:
        return rows * cols
    if (cols > 1 and st[2] != 4) or (rows > 1 and st[1] != 4 * cols) or \
            (n > 1 and (st[0] < 0 or st[0] % 4)):
        raise ValueError(f"{name}: rows must be contiguous float32 with batches a whole "
                         f"number of floats apart, got shape {a.shape} strides {st}")
    return st[0] // 4 if n > 1 else rows * cols


cdef _check(object a, str name, Py_ssize_t size=-1):
    """a: a C-contiguous float32 array in the machine's byte order (of size
    elements, when size >= 0).  Read through numpy's C API: a decoding step
    checks a few dozen buffers."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name}: a numpy array is needed, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT32 or not cnp.PyArray_ISNOTSWAPPED(arr) or \
            not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name}: kernels take C-contiguous float32 arrays, "
                         f"got {a.dtype} with strides {a.strides}")
    if size >= 0 and cnp.PyArray_SIZE(arr) != size:
        raise ValueError(f"{name}: expected {size} elements, got shape {a.shape}")


# ------------------------------------------------------------- activations --

def activation(x, str kind, bint ref=False):
    """y = relu(x) | gelu(x) | gelu_tanh(x) | silu(x), elementwise, new array."""
    _check(x, "x")
    y = np.empty_like(x)
    cdef float *py = _fptr(y)
    cdef const float *px = _fptr(x)
    cdef int64_t n = x.size
    cdef int nt = _nthreads
    cdef void (*f)(float *, const float *, int64_t, int) noexcept nogil
    cdef void (*fr)(float *, const float *, int64_t) noexcept nogil
    if kind == "relu":
        f, fr = KT.relu, pt_relu_ref
    elif kind == "gelu":
        f, fr = KT.gelu, pt_gelu_ref
    elif kind == "gelu_tanh":
        f, fr = KT.gelu_tanh, pt_gelu_tanh_ref
    elif kind == "silu":
        f, fr = KT.silu, pt_silu_ref
    else:
        raise ValueError(f"unknown activation {kind!r}")
    with nogil:
        if ref:
            fr(py, px, n)
        else:
            f(py, px, n, nt)
    return y


cdef const int64_t *_index_ptr(object idx, str name, Py_ssize_t B, Py_ssize_t n) except? NULL:
    """idx's data, checked to index an operand of n batches for each of the B
    batches of a result; NULL (batch b reads batch b) for None."""
    if idx is None:
        if n != B:
            raise ValueError(f"{name} omitted but the operand has {n} batches, not {B}")
        return NULL
    if not isinstance(idx, np.ndarray) or idx.dtype != np.int64 or idx.ndim != 1 or \
            idx.shape[0] != B or not idx.flags.c_contiguous:
        raise ValueError(f"{name} must be a contiguous int64 vector of length {B}")
    cdef const int64_t *p = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>idx)
    cdef Py_ssize_t i
    for i in range(B):
        if p[i] < 0 or p[i] >= n:
            raise ValueError(f"{name}[{i}] = {p[i]} out of range for {n} batches")
    return p


def _result_batches(indices, Py_ssize_t default):
    """How many batches a result has: the length of the first index vector
    given, else `default`."""
    for idx in indices:
        if idx is not None:
            return len(idx)
    return default


def _collapse_leading(tuple shape, tuple strides):
    """The same rows with fewer leading dims: drop dims of size 1 and merge
    neighbours whose strides chain (d's stride = d+1's stride x d+1's size,
    which covers two broadcast dims).  The kernels find a row's mask by its
    flat index (mask.h), so any leading shape with the same row order serves;
    the last axis is kept as it is."""
    # (this module is compiled with wraparound=False: no negative indices)
    cdef Py_ssize_t last = len(shape) - 1
    merged = []
    for n, st in zip(shape[:last], strides[:last]):
        if n == 1:
            continue
        if merged and merged[len(merged) - 1][1] == st * n:
            merged[len(merged) - 1] = (merged[len(merged) - 1][0] * n, st)
        else:
            merged.append((n, st))
    if not merged:
        merged = [(1, 0)]
    return (tuple(n for n, _ in merged) + (shape[last],),
            tuple(st for _, st in merged) + (strides[last],))


cdef int _fill_mask(pt_mask *m, object mask, tuple strides, tuple shape,
                    str name) except -1:
    """Describe `mask` to the kernels as broadcast to `shape` (non-empty).

    mask: a C-contiguous bool/float32 base; strides: its element strides for
    each axis of `shape`, from numpy broadcasting.  Checks that every offset
    they produce lies inside the mask: the kernels trust this.
    """
    cdef int d, nd = len(shape)
    if strides is not None and len(strides) == nd:
        given = shape
        shape, strides = _collapse_leading(shape, strides)
        nd = len(shape)
        if nd - 1 > PT_MAX_DIMS:
            raise ValueError(f"{name}: broadcasting it over shape {given} needs {nd - 1} "
                             f"separate leading strides; at most {PT_MAX_DIMS} are supported")
    if mask.dtype == np.bool_:
        m.is_bool = 1
    elif mask.dtype == np.float32:
        m.is_bool = 0
    else:
        raise ValueError(f"{name}: bool or float32 expected, got {mask.dtype}")
    if mask.size == 0:
        raise ValueError(f"{name}: an empty mask cannot cover shape {shape}")
    if not mask.flags.c_contiguous or strides is None or len(strides) != nd:
        raise ValueError(f"{name}: expected a C-contiguous base and one stride per axis")
    span = sum((shape[d] - 1) * strides[d] for d in range(nd))
    if any(st < 0 for st in strides) or span >= max(mask.size, 1):
        raise ValueError(f"{name}: broadcast strides reach outside the mask")
    if strides[nd - 1] not in (0, 1):
        raise ValueError(f"{name}: last-axis stride must be 0 or 1")
    m.data = cnp.PyArray_DATA(<cnp.ndarray>mask)
    m.ndim = nd - 1
    for d in range(nd - 1):
        m.shape[d] = shape[d]
        m.stride[d] = strides[d]
    m.stride_last = strides[nd - 1]
    return 0


# ----------------------------------------------------------------- softmax --

def softmax(x, mask=None, tuple mask_strides=None,
            bint ref=False):
    """Softmax over the last axis of x (any rank >= 1).

    mask: None, or a bool/float32 array whose memory the broadcast strides
    `mask_strides` (elements, one per axis of x, from numpy broadcasting) index;
    the caller guarantees every offset they produce lies inside `mask`.
    """
    _check(x, "x")
    y = np.empty_like(x)
    cdef int64_t n = x.shape[x.ndim - 1] if x.ndim else 1
    cdef int64_t rows = x.size // n if n else 0
    cdef pt_mask m
    cdef pt_mask *pm = NULL
    cdef int d
    cdef int nt = _nthreads
    if rows == 0 or n == 0:
        return y
    if mask is not None:
        _fill_mask(&m, mask, mask_strides, x.shape, "mask")
        pm = &m
    cdef float *py = _fptr(y)
    cdef const float *px = _fptr(x)
    with nogil:
        if ref:
            pt_softmax_ref(py, px, rows, n, pm)
        else:
            KT.softmax(py, px, rows, n, pm, nt)
    return y


# -------------------------------------------------------------- layer norm --

def layer_norm(x, int64_t n, weight=None, bias=None,
               float eps=1e-5, bint ref=False):
    """Normalise each group of the last n elements of x."""
    _check(x, "x")
    if n <= 0 or x.size % n:
        raise ValueError(f"layer_norm: {n} does not divide x of shape {x.shape}")
    cdef const float *pw = NULL
    cdef const float *pb = NULL
    if weight is not None:
        _check(weight, "weight", n)
        pw = _fptr(weight)
    if bias is not None:
        _check(bias, "bias", n)
        pb = _fptr(bias)
    y = np.empty_like(x)
    cdef int64_t rows = x.size // n
    cdef int nt = _nthreads
    cdef float *py = _fptr(y)
    cdef const float *px = _fptr(x)
    with nogil:
        if ref:
            pt_layer_norm_ref(py, px, pw, pb, rows, n, eps)
        else:
            KT.layer_norm(py, px, pw, pb, rows, n, eps, nt)
    return y


# -------------------------------------------------------------------- GEMM --

include "_kernels_gemm.pxi"


# --------------------------------------------------------------- attention --

def attention(q, k, v, q_index, k_index, v_index, float scale, mask=None,
              tuple mask_strides=None, tuple batch_shape=None, bint causal=False,
              Py_ssize_t batches=-1, bint ref=False):
    """out[b] = softmax(q[q_index[b]] k[k_index[b]]^T * scale + mask) v[v_index[b]].

    q (Bq, L, E) C-contiguous, k (Bk, S, E), v (Bv, S, Ev) with contiguous
    rows (their batches may lie further apart); the index vectors (length B)
    say which batch of each operand batch b of the (B, L, Ev) result reads;
    None means b itself.  B is the length of the index vectors given, or
    `batches`, or Bq when every index is None.
    mask: None, or a bool/float32 array whose memory the element strides
    `mask_strides` (one per axis of batch_shape + (L, S), from numpy
    broadcasting) index; batch_shape multiplies out to B.
    """
    _check(q, "query")
    if q.ndim != 3:
        raise ValueError("attention: query, key and value must be 3-d (batch, rows, cols)")
    cdef int64_t k_bs = _rows_operand(k, "key"), v_bs = _rows_operand(v, "value")
    cdef int64_t L = q.shape[1], E = q.shape[2], S = k.shape[1], Ev = v.shape[2]
    if k.shape[2] != E or v.shape[1] != S:
        raise ValueError(f"attention: query {q.shape}, key {k.shape} and value {v.shape} "
                         f"do not fit (B, L, E), (B, S, E), (B, S, Ev)")
    cdef Py_ssize_t B = batches if batches >= 0 else \
        _result_batches((q_index, k_index, v_index), q.shape[0])
    cdef const int64_t *qi = _index_ptr(q_index, "attention: q_index", B, q.shape[0])
    cdef const int64_t *ki = _index_ptr(k_index, "attention: k_index", B, k.shape[0])
    cdef const int64_t *vi = _index_ptr(v_index, "attention: v_index", B, v.shape[0])
    out = np.empty((B, L, Ev), dtype=np.float32)
    cdef pt_mask m
    cdef pt_mask *pm = NULL
    cdef int d, nd
    if mask is not None:
        if batch_shape is None or math.prod(batch_shape) != B:
            raise ValueError(f"attention: batch_shape {batch_shape} does not give {B} batches")
        if B * L * S:
            _fill_mask(&m, mask, mask_strides, tuple(batch_shape) + (L, S), "attn_mask")
            pm = &m
    if B == 0 or L == 0 or Ev == 0:
        return out
    cdef float *po = _fptr(out)
    cdef const float *pq = _fptr(q)
    cdef const float *pk = _fptr(k)
    cdef const float *pv = _fptr(v)
    cdef int nt = _nthreads
    cdef int ic = causal, status = 0
    with nogil:
        if ref:
            pt_attention_ref(po, pq, qi, pk, ki, k_bs, pv, vi, v_bs, B, L, S, E, Ev, scale, pm,
                             ic)
        else:
            status = KT.attention(po, pq, qi, pk, ki, k_bs, pv, vi, v_bs, B, L, S, E, Ev, scale,
                                 pm, ic, nt)
    if status != PT_OK:
        _raise_status(status, "attention")
    return out


# ------------------------------------------- RMS norm, RoPE, SwiGLU's gate --

include "_kernels_decoder.pxi"


# --------------------------------------------- bfloat16 and int8 compute --

include "_kernels_bf16.pxi"
include "_kernels_int8.pxi"
include "_kernels_quant.pxi"


# ----------------------------------------------- fused steps of whole layers --

include "_kernels_layers.pxi"
include "_kernels_stack.pxi"


# ---------------------------------------------------------- cache blocking --

def cache_sizes():
    """{'L1d', 'L2', 'L3'}: each data cache's bytes as one core has it (its
    size over the logical processors sharing it), from CPUID; 0 where the
    CPU does not say.  The float32 GEMM's M and N blocks follow them."""
    return {"L1d": pt_cpu_cache_bytes(1), "L2": pt_cpu_cache_bytes(2),
            "L3": pt_cpu_cache_bytes(3)}


def set_gemm_blocking(int64_t mc=0, int64_t nc=0):
    """Force the float32 GEMM's cache blocks: mc rows of A per packed block,
    nc columns of B per slab (rounded down to whole tiles; 0: from the
    caches again).  For tests and tuning: results never depend on them (the
    K blocks are fixed per path).  Not while a GEMM runs in another thread."""
    if mc < 0 or nc < 0:
        raise ValueError(f"set_gemm_blocking: sizes must be >= 0, got mc={mc} nc={nc}")
    pt_gemm_set_blocking(mc, nc)


def get_gemm_blocking():
    """(mc, nc) forced by set_gemm_blocking; (0, 0) when they follow the caches."""
    cdef int64_t mc, nc
    pt_gemm_forced_blocking(&mc, &nc)
    return mc, nc


# ------------------------------------------------------------- calibration --

def fma_peak_gflops(int nthreads=1, int64_t iters=20000000, isa=None):
    """Measured fp32 FMA peak (GFLOP/s) of `nthreads` threads on path `isa`
    (default: the path in use, get_isa(); a loop of independent FMAs; 0.0
    for the scalar path)."""
    if isa is None:
        isa = get_isa()
    if isa not in _ISA_IDS or not pt_cpu_supports(_ISA_IDS[isa]):
        raise ValueError(f"fma_peak_gflops: kernel path {isa!r} not available; "
                         f"available: {available_isas()}")
    cdef const pt_kernel_table *kt = pt_kernels_for(_ISA_IDS[isa])
    cdef double g
    with nogil:
        g = kt.fma_peak_gflops(nthreads, iters)
    return g


def stream_read_gbs(int nthreads=1, int64_t nbytes=1 << 28, int64_t passes=3, buffer=None):
    """Measured streaming-read bandwidth (GB/s) of `nthreads` threads, each
    summing its contiguous share of a float32 buffer `passes` times: the bound
    of a decoding step that reads each weight once.  The buffer (nbytes, which
    should be well beyond the last-level cache; or `buffer`, a C-contiguous
    float32 array, to reuse one between samples) is read on the best path."""
    if buffer is None:
        if nbytes < 4:
            raise ValueError(f"stream_read_gbs: nbytes must be at least 4, got {nbytes}")
        buffer = np.ones(nbytes // 4, dtype=np.float32)
    _check(buffer, "buffer")
    cdef const float *px = _fptr(buffer)
    cdef int64_t n = buffer.size
    cdef double g
    with nogil:
        g = KT.stream_read_gbs(px, n, passes, nthreads)
    return g
