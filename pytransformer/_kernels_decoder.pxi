# Included by _kernels.pyx: the row-wise kernels of a Llama-family decoder
# block -- RMS norm, rotary position embedding, the SwiGLU gate.  Buffers are
# checked here, against what each kernel reads and writes; the semantics
# (dtype conversion, broadcasting, torch-style errors) live in ops/.

ROPE_LAYOUTS = {"halves": PT_ROPE_HALVES, "pairs": PT_ROPE_PAIRS}


def rms_norm(x, int64_t n, weight=None, float eps=1e-6, bint ref=False):
    """x / sqrt(mean(x^2) + eps) * weight over each group of the last n
    elements of x (C-contiguous float32); weight: n floats or None."""
    _check(x, "x")
    if n <= 0 or x.size % n:
        raise ValueError(f"rms_norm: {n} does not divide x of shape {x.shape}")
    cdef const float *pw = NULL
    if weight is not None:
        _check(weight, "weight", n)
        pw = _fptr(weight)
    y = np.empty_like(x)
    cdef int64_t rows = x.size // n
    cdef int nt = _nthreads
    cdef float *py = _fptr(y)
    cdef const float *px = _fptr(x)
    with nogil:
        if ref:
            pt_rms_norm_ref(py, px, pw, rows, n, eps)
        else:
            KT.rms_norm(py, px, pw, rows, n, eps, nt)
    return y


cdef int64_t _rope_row_stride(object x) except -1:
    """The elements from one position (b, t) of x (B, T, H, D) to the next,
    checked: each position's H*D floats contiguous, positions evenly spaced
    and not overlapping -- C-contiguous x, or a view of the leading columns of
    a wider (B, T, F) buffer such as a fused projection's output."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"x: a numpy array is needed, got {type(x).__name__}")
    if x.dtype != np.float32 or x.ndim != 4:
        raise ValueError(f"x: rope takes a 4-d float32 array (B, T, H, D), got {x.dtype} "
                         f"{x.shape}")
    cdef Py_ssize_t B = x.shape[0], T = x.shape[1], H = x.shape[2], D = x.shape[3]
    if x.size == 0:
        return H * D
    st = x.strides
    bad = (D > 1 and st[3] != 4) or (H > 1 and st[2] != 4 * D)
    if T > 1:
        ld = st[1]
        bad = bad or (B > 1 and st[0] != T * st[1])
    elif B > 1:
        ld = st[0]
    else:
        ld = 4 * H * D
    if bad or ld % 4 or (B * T > 1 and ld < 4 * H * D):
        raise ValueError(f"x: rope needs each position's heads contiguous and positions "
                         f"evenly spaced, got shape {x.shape} strides {st}")
    return ld // 4


def rope_ready(x):
    """Whether rope can read x (B, T, H, D) float32 where it lies (and, with
    inplace=True, rotate it there)."""
    try:
        _rope_row_stride(x)
    except ValueError:
        return False
    return True


def rope(x, positions, inv_freq, str layout="halves", bint inplace=False, bint ref=False):
    """Rotate every head of every position of x (B, T, H, D) float32 by the
    angles positions[b, t] * inv_freq[i] (D/2 pairs); positions: int64
    C-contiguous, B*T of them; inv_freq: float32 C-contiguous, D/2 of them.
    Returns x itself (inplace=True; it must be writable) or a new C-contiguous
    array."""
    if layout not in ROPE_LAYOUTS:
        raise ValueError(f"rope: layout must be 'halves' or 'pairs', got {layout!r}")
    cdef int64_t ldx = _rope_row_stride(x)
    cdef int64_t B = x.shape[0], T = x.shape[1], H = x.shape[2], D = x.shape[3]
    if D % 2:
        raise ValueError(f"x: rope needs an even head dimension D, got shape {x.shape}")
    if not isinstance(positions, np.ndarray) or positions.dtype != np.int64 or \
            not positions.flags.c_contiguous or positions.size != B * T:
        raise ValueError(f"positions: a C-contiguous int64 array of {B * T} positions is "
                         f"needed for x of shape {x.shape}")
    _check(inv_freq, "inv_freq", D // 2)
    if inplace and not x.flags.writeable:
        raise ValueError("x: rope(inplace=True) needs a writable array")
    y = x if inplace else np.empty((B, T, H, D), dtype=np.float32)
    cdef int64_t ldy = ldx if inplace else H * D
    if B * T * H * D == 0:
        return y
    cdef float *py = <float *>cnp.PyArray_DATA(<cnp.ndarray>y)
    cdef const float *px = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef const int64_t *pp = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>positions)
    cdef const float *pf = _fptr(inv_freq)
    cdef int lay = ROPE_LAYOUTS[layout], nt = _nthreads
    cdef int64_t rows = B * T
    with nogil:
        if ref:
            pt_rope_ref(py, ldy, px, ldx, pp, pf, rows, H, D, lay)
        else:
            KT.rope(py, ldy, px, ldx, pp, pf, rows, H, D, lay, nt)
    return y


def silu_and_mul(x, bint ref=False):
    """x (..., 2F) C-contiguous float32 = [gate | up] -> silu(gate) * up (..., F)."""
    _check(x, "x")
    if x.ndim == 0 or x.shape[x.ndim - 1] % 2:
        raise ValueError(f"x: silu_and_mul needs an even last dimension (gate | up), got "
                         f"shape {x.shape}")
    cdef int64_t F = x.shape[x.ndim - 1] // 2
    y = np.empty(x.shape[:x.ndim - 1] + (F,), dtype=np.float32)
    if y.size == 0:
        return y
    cdef int64_t rows = y.size // F
    cdef int nt = _nthreads
    cdef float *py = _fptr(y)
    cdef const float *px = _fptr(x)
    with nogil:
        if ref:
            pt_silu_and_mul_ref(py, px, rows, F)
        else:
            KT.silu_and_mul(py, px, rows, F, nt)
    return y
