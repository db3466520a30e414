# Included by _kernels.pyx: fused steps of whole layers (csrc/layers/).  A
# step object holds a layer's weights as the kernels take them; its step()
# checks every buffer the C call will touch -- shapes, strides, indices --
# so that the C side trusts what it is given.

STEP_MATRIX_TYPES = (PackedMatrix, PackedMatrixBF16, PackedMatrixI8, QuantizedMatrix)


cdef struct path_key:
    # what a step's weights were bound for: the kernel path and the bf16 /
    # int8 kernels chosen then (kt NULL: not bound)
    const pt_kernel_table *kt
    int bf16, i8


cdef inline bint _bound_for(const path_key *k, const pt_kernel_table *kt) noexcept:
    """Whether weights bound at k serve path kt and today's bf16 / int8 kernels."""
    return k.kt == kt and k.bf16 == _bf16_wanted and k.i8 == _int8_wanted


cdef inline void _mark_bound(path_key *k, const pt_kernel_table *kt) noexcept:
    k.kt, k.bf16, k.i8 = kt, _bf16_wanted, _int8_wanted


cdef int _fill_step_matrix(pt_step_matrix *m, const pt_kernel_table *kt, object w,
                           object bias, int64_t K, int64_t N, str name) except -1:
    """m <- the packed weight w (K -> N) and its bias, for path kt."""
    if isinstance(w, PackedMatrix):
        m.kind = PT_MAT_F32
        m.packed = (<PackedMatrix>w)._packed(kt)
    elif isinstance(w, PackedMatrixBF16):
        m.kind = PT_MAT_BF16
        m.packed = (<PackedMatrixBF16>w)._packed(kt)
        m.bf16 = _bf16_fn(kt)
    elif isinstance(w, PackedMatrixI8):
        m.kind = PT_MAT_I8
        m.packed = (<PackedMatrixI8>w).pack
        m.i8 = _int8_fn(kt)
    elif isinstance(w, QuantizedMatrix):
        m.kind = PT_MAT_Q
        m.packed = (<QuantizedMatrix>w).packed
    else:
        raise TypeError(f"{name}: a fused step takes float32, bfloat16, int8 or GGUF-block "
                        f"weights, got {type(w).__name__}")
    if w.shape != (K, N):
        raise ValueError(f"{name}: a weight of shape (K, N) = {(K, N)} expected, got {w.shape}")
    m.K, m.N = K, N
    m.bias = NULL
    if bias is not None:
        _check(bias, name + " bias", N)
        m.bias = _fptr(bias)
    return 0


cdef int64_t _check_4d(object a, str name, int64_t rows, int64_t heads, int64_t d) except -1:
    """a: C-contiguous float32 (rows, heads, T, d); returns T."""
    _check(a, name)
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(arr)
    if cnp.PyArray_NDIM(arr) != 4 or dims[0] != rows or dims[1] != heads or dims[3] != d:
        raise ValueError(f"{name}: ({rows}, {heads}, T, {d}) expected, got {a.shape}")
    return dims[2]


cdef int64_t _step_positions(object pos, object keep, int64_t N, int64_t heads, int64_t T,
                             int64_t[::1] rows_pos, pt_mask *m, const pt_mask **pm) except -1:
    """The positions a step writes (rows_pos <- them) and the number S it
    attends to: without keep, pos an int or an (N,) int64 array, every row
    at the same position (S = pos + 1); with keep (N, S) bool, False past
    each row's own position, pos an (N,) int64 array (the mask, for batches
    (N, heads), into m / pm)."""
    cdef int64_t n, S
    cdef const int64_t[:] pp
    pm[0] = NULL
    if isinstance(pos, np.ndarray):
        if pos.dtype != np.int64 or pos.shape != (N,):
            raise ValueError(f"pos: an ({N},) int64 array expected, got {pos.dtype} "
                             f"{pos.shape}")
        pp = pos
        for n in range(N):
            rows_pos[n] = pp[n]
    elif keep is not None:
        raise ValueError(f"pos: an ({N},) int64 array expected with keep, got "
                         f"{type(pos).__name__}")
    else:
        for n in range(N):
            rows_pos[n] = int(pos)
    if keep is None:
        S = rows_pos[0] + 1 if N else int(pos) + 1 if not isinstance(pos, np.ndarray) else 1
    else:
        if not isinstance(keep, np.ndarray) or keep.dtype != np.bool_ or keep.ndim != 2 or \
                keep.shape[0] != N or not keep.flags.c_contiguous:
            raise ValueError(f"keep: a C-contiguous ({N}, S) bool array expected, got "
                             f"{getattr(keep, 'dtype', type(keep))} {np.shape(keep)}")
        S = keep.shape[1]
        if N * S:
            _fill_mask(m, keep.reshape(N, 1, 1, S), (S, 0, 0, 1), (N, heads, 1, S), "keep")
            pm[0] = m
    if S < 1 or S > T:
        raise ValueError(f"{S} positions attended do not fit the cache's {T}")
    for n in range(N):
        if rows_pos[n] < 0 or rows_pos[n] >= S or (keep is None and rows_pos[n] != S - 1):
            raise ValueError(f"pos: row {n} at {rows_pos[n]} is outside the {S} positions "
                             f"attended" + ("" if keep is not None else
                                            " (rows at different positions need keep)"))
    return S


cdef class DecoderLayerStep:
    """One decoder layer's decoding step as one C call
    (csrc/layers/decoder_layer.c): self-attention over the KV cache,
    attention over the encoder's keys and values (nn.TransformerDecoderLayer;
    none in a decoder-only stack: GPT-2's blocks), the feed-forward network,
    each inside Add & Norm.  Bit for bit what the layer's Python step
    computes.

    DecoderLayerStep(heads, norm_first, activation, weights, norms): weights
    the six (packed matrix, bias) pairs W^{Q,K,V} (fused), W^O of
    self-attention, W^Q and W^O of the cross attention (both None without
    one), W_1 and W_2; norms the sub-layers' (weight, bias, eps), three or
    two.  The objects are kept, so the weights stay alive while the step
    exists."""
    cdef pt_decoder_layer L, bound
    cdef path_key bound_at
    cdef object weights, norms

    def __cinit__(self, int64_t heads, bint norm_first, activation, weights, norms):
        if len(weights) != 6:
            raise ValueError("DecoderLayerStep: six weights expected")
        cross = weights[2] is not None
        if (weights[3] is not None) != cross or len(norms) != (3 if cross else 2):
            raise ValueError("DecoderLayerStep: a cross attention needs both its weights "
                             "and a third norm")
        E = weights[0][0].shape[0]
        if heads <= 0 or E % heads:
            raise ValueError(f"DecoderLayerStep: {heads} heads do not divide d_model {E}")
        if activation not in ACT:
            raise ValueError(f"DecoderLayerStep: activation {activation!r} has no kernel")
        self.L.E, self.L.heads, self.L.head_dim = E, heads, E // heads
        self.L.ff = weights[4][0].shape[1]
        self.L.norm_first = norm_first
        self.L.cross = cross
        self.L.act = ACT[activation]
        self.weights, self.norms = tuple(weights), tuple(norms)
        self._bind(&self.L, KT)   # checks the weights once
        cdef int i
        for i in range(3):
            self.L.norm_w[i] = NULL
            self.L.norm_b[i] = NULL
            self.L.eps[i] = 0.0
        for i in range(len(norms)):
            w, b, eps = norms[i]
            if w is not None:
                _check(w, "norm weight", E)
                self.L.norm_w[i] = _fptr(w)
            if b is not None:
                _check(b, "norm bias", E)
                self.L.norm_b[i] = _fptr(b)
            self.L.eps[i] = eps

    cdef const pt_decoder_layer *_bound(self, const pt_kernel_table *kt) except NULL:
        """The layer as path kt (and the bf16 / int8 kernels chosen now) take
        it: bound at the first call for them and kept (a weight's pack for a
        path, once made, stays while the weight lives).  A call copies it
        with the GIL held, so calls from several threads never share it."""
        if not _bound_for(&self.bound_at, kt):
            self.bound_at.kt = NULL
            self.bound = self.L
            self._bind(&self.bound, kt)
            _mark_bound(&self.bound_at, kt)
        return &self.bound

    cdef int _bind(self, pt_decoder_layer *L, const pt_kernel_table *kt) except -1:
        """L's weights as path kt takes them (L: the call's own copy, so that
        calls from several threads never share what they read)."""
        cdef int64_t E = L.E, F = L.ff
        w = self.weights
        _fill_step_matrix(&L.qkv, kt, w[0][0], w[0][1], E, 3 * E, "W^QKV")
        _fill_step_matrix(&L.self_out, kt, w[1][0], w[1][1], E, E, "self-attention W^O")
        if L.cross:
            _fill_step_matrix(&L.cross_q, kt, w[2][0], w[2][1], E, E, "cross-attention W^Q")
            _fill_step_matrix(&L.cross_out, kt, w[3][0], w[3][1], E, E, "cross-attention W^O")
        _fill_step_matrix(&L.ff1, kt, w[4][0], w[4][1], E, F, "W_1")
        _fill_step_matrix(&L.ff2, kt, w[5][0], w[5][1], F, E, "W_2")
        return 0

    def step(self, x, self_k, self_v, pos, cross_k=None, cross_v=None, cross_rows=None,
             memory_keep=None, keep=None):
        """The layer's output (N, E) for x (N, E), one new position per
        sequence: its key and value written into self_k, self_v (N, h, T, d)
        at pos -- an int (every row there), or an (N,) int64 array with keep
        (N, S) bool, False past each row's own position.  With a cross
        attention: cross_k, cross_v (N0, h, S_mem, d), the encoder's keys and
        values, sequence r reading row cross_rows[r]; memory_keep (N, 1, 1,
        S_mem) bool, False at padded source positions, or None."""
        cdef int64_t N = _step_rows(x, self.L.E)
        cdef pt_mask m_self, m_cross
        cdef pt_decoder_layer_state st
        cdef int64_t N0 = _decoder_caches(&st, &self.L, N, self_k, self_v, cross_k, cross_v,
                                          -1, "")
        alive = _decoder_shared(&st, &self.L, N, N0, pos, keep, cross_rows, memory_keep,
                                &m_self, &m_cross)
        # one read of the path: a switch by another thread mid-call changes nothing here
        cdef const pt_kernel_table *kt = KT
        cdef pt_decoder_layer L = self._bound(kt)[0]
        out = x.copy()
        cdef float *px = _fptr(out)
        cdef int nt = _nthreads, status
        with nogil:
            status = pt_decoder_layer_step(kt, &L, &st, px, N, nt)
        if status != PT_OK:
            _raise_status(status, "DecoderLayerStep.step")
        return out


cdef int64_t _step_rows(object x, int64_t E) except -1:
    """N, the rows of a step's input x: C-contiguous float32 (N, E)."""
    _check(x, "x")
    if x.ndim != 2 or x.shape[1] != E:
        raise ValueError(f"x: (N, {E}) expected, got {x.shape}")
    return x.shape[0]


cdef int64_t _decoder_caches(pt_decoder_layer_state *st, const pt_decoder_layer *L, int64_t N,
                             self_k, self_v, cross_k, cross_v, int64_t N0,
                             str where) except -2:
    """st's cache buffers for one layer, checked: self_k, self_v (N, h, T,
    d); with a cross attention cross_k, cross_v (N0, h, S_mem, d) (N0 = -1:
    as many rows as cross_k has).  Returns N0."""
    cdef int64_t h = L.heads, d = L.head_dim, T, S
    T = _check_4d(self_k, where + "self_k", N, h, d)
    if _check_4d(self_v, where + "self_v", N, h, d) != T:
        raise ValueError(f"{where}self_v: {self_v.shape} differs from self_k {self_k.shape}")
    st.self_k, st.self_v, st.t_max = _fptr(self_k), _fptr(self_v), T
    st.cross_k = st.cross_v = NULL
    st.S_mem = 0
    if not L.cross:
        return N0
    if N0 < 0:
        N0 = cross_k.shape[0] if isinstance(cross_k, np.ndarray) and cross_k.ndim == 4 else -1
    S = _check_4d(cross_k, where + "cross_k", N0, h, d)
    if _check_4d(cross_v, where + "cross_v", N0, h, d) != S:
        raise ValueError(f"{where}cross_v: {cross_v.shape} differs from cross_k "
                         f"{cross_k.shape}")
    st.cross_k, st.cross_v, st.S_mem = _fptr(cross_k), _fptr(cross_v), S
    return N0


cdef object _decoder_shared(pt_decoder_layer_state *st, const pt_decoder_layer *L, int64_t N,
                            int64_t N0, pos, keep, cross_rows, memory_keep, pt_mask *m_self,
                            pt_mask *m_cross):
    """The fields of st every layer of a step shares, checked against st's
    caches (_decoder_caches first): the positions written and attended, the
    self-attention mask, the cross attention's batch index and mask (into
    m_self, m_cross); N0 the rows of the encoder's keys and values.
    Returns the arrays st points into, to be kept alive for the call."""
    cdef int64_t h = L.heads, S, r, j, row
    positions = np.empty(N, np.int64)
    st.S = _step_positions(pos, keep, N, h, st.t_max, positions, m_self, &st.self_keep)
    st.pos = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>positions)
    st.cross_index = NULL
    st.cross_mask = NULL
    if not L.cross:
        return positions
    cdef int64_t[::1] pkv
    cdef const int64_t[:] prows
    S = st.S_mem
    if not isinstance(cross_rows, np.ndarray) or cross_rows.dtype != np.int64 or \
            cross_rows.shape != (N,):
        raise ValueError(f"cross_rows: an ({N},) int64 array expected, got "
                         f"{getattr(cross_rows, 'dtype', type(cross_rows))} "
                         f"{np.shape(cross_rows)}")
    # batch r*h + j of the cross attention: head j of row cross_rows[r]
    kv = np.empty(N * h, np.int64)
    pkv = kv
    prows = cross_rows
    for r in range(N):
        row = prows[r]
        if row < 0 or row >= N0:
            raise ValueError(f"cross_rows: {row} is not a row of the encoder output "
                             f"(0..{N0 - 1})")
        for j in range(h):
            pkv[r * h + j] = row * h + j
    if memory_keep is not None:
        if not isinstance(memory_keep, np.ndarray) or memory_keep.shape != (N, 1, 1, S):
            raise ValueError(f"memory_keep: ({N}, 1, 1, {S}) expected, got "
                             f"{np.shape(memory_keep)}")
        if N * S:
            _fill_mask(m_cross, memory_keep, (S, 0, 0, 1), (N, h, 1, S), "memory_keep")
            st.cross_mask = m_cross
    st.cross_index = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>kv)
    return positions, kv


cdef class LlamaLayerStep:
    """One models.llama.LlamaDecoderLayer's decoding step as one C call
    (csrc/layers/llama_layer.c): RMSNorm, the fused Q/K/V projection, RoPE,
    the KV cache write, grouped-query attention over the cache, W^O, then
    RMSNorm and the SwiGLU feed-forward, each inside the residual sum.  Bit
    for bit what the layer's Python step computes.

    LlamaLayerStep(heads, kv_heads, rope_layout, inv_freq, weights, norms):
    weights the four (packed matrix, bias) pairs qkv_proj, o_proj,
    gate_up_proj, down_proj; norms two (weight, eps)."""
    cdef pt_llama_layer L, bound
    cdef path_key bound_at
    cdef object weights, norms, inv_freq

    def __cinit__(self, int64_t heads, int64_t kv_heads, str rope_layout, inv_freq, weights,
                  norms):
        if len(weights) != 4 or len(norms) != 2:
            raise ValueError("LlamaLayerStep: four weights and two norms expected")
        if heads <= 0 or kv_heads <= 0 or heads % kv_heads:
            raise ValueError(f"LlamaLayerStep: {kv_heads} kv heads must divide {heads} heads")
        if rope_layout not in ROPE_LAYOUTS:
            raise ValueError(f"LlamaLayerStep: rope layout {rope_layout!r}")
        E = weights[0][0].shape[0]
        qkv_n = weights[0][0].shape[1]
        if qkv_n % (heads + 2 * kv_heads):
            raise ValueError(f"LlamaLayerStep: qkv_proj's {qkv_n} outputs are not "
                             f"{heads} + 2 x {kv_heads} heads")
        D = qkv_n // (heads + 2 * kv_heads)
        if D % 2:
            raise ValueError(f"LlamaLayerStep: head_dim {D} is odd")
        _check(inv_freq, "inv_freq", D // 2)
        self.L.E, self.L.heads, self.L.kv_heads, self.L.head_dim = E, heads, kv_heads, D
        self.L.ff = weights[3][0].shape[0]
        self.L.rope_layout = ROPE_LAYOUTS[rope_layout]
        self.inv_freq = inv_freq
        self.L.inv_freq = _fptr(inv_freq)
        self.weights, self.norms = tuple(weights), tuple(norms)
        self._bind(&self.L, KT)   # checks the weights once
        cdef int i
        for i in range(2):
            w, eps = norms[i]
            _check(w, "norm weight", E)
            self.L.norm_w[i] = _fptr(w)
            self.L.eps[i] = eps

    cdef const pt_llama_layer *_bound(self, const pt_kernel_table *kt) except NULL:
        """The layer as path kt takes it, kept (see DecoderLayerStep._bound)."""
        if not _bound_for(&self.bound_at, kt):
            self.bound_at.kt = NULL
            self.bound = self.L
            self._bind(&self.bound, kt)
            _mark_bound(&self.bound_at, kt)
        return &self.bound

    cdef int _bind(self, pt_llama_layer *L, const pt_kernel_table *kt) except -1:
        """L's weights as path kt takes them (L: the call's own copy)."""
        cdef int64_t E = L.E, F = L.ff, D = L.head_dim, Hq = L.heads, Hkv = L.kv_heads
        w = self.weights
        _fill_step_matrix(&L.qkv, kt, w[0][0], w[0][1], E, (Hq + 2 * Hkv) * D, "qkv_proj")
        _fill_step_matrix(&L.o, kt, w[1][0], w[1][1], Hq * D, E, "o_proj")
        _fill_step_matrix(&L.gate_up, kt, w[2][0], w[2][1], E, 2 * F, "gate_up_proj")
        _fill_step_matrix(&L.down, kt, w[3][0], w[3][1], F, E, "down_proj")
        return 0

    def step(self, x, cache_k, cache_v, pos, keep=None):
        """The layer's output (N, E) for x (N, E) at positions pos ((N,)
        int64): each row's key and value written into cache_k, cache_v (N,
        Hkv, T, D) at its position, attention over positions 0..S-1 -- S =
        pos + 1 with every row at the same position and keep None, else
        keep (N, S) bool, False past each row's own position."""
        cdef int64_t N = _step_rows(x, self.L.E)
        cdef pt_mask m
        cdef pt_llama_layer_state st
        _llama_cache(&st, &self.L, N, cache_k, cache_v, "")
        alive = _llama_shared(&st, &self.L, N, pos, keep, &m)
        # one read of the path: a switch by another thread mid-call changes nothing here
        cdef const pt_kernel_table *kt = KT
        cdef pt_llama_layer L = self._bound(kt)[0]
        out = x.copy()
        cdef float *px = _fptr(out)
        cdef int nt = _nthreads, status
        with nogil:
            status = pt_llama_layer_step(kt, &L, &st, px, N, nt)
        if status != PT_OK:
            _raise_status(status, "LlamaLayerStep.step")
        return out


cdef int _llama_cache(pt_llama_layer_state *st, const pt_llama_layer *L, int64_t N, cache_k,
                      cache_v, str where) except -1:
    """st's cache buffers for one layer, checked: (N, Hkv, T, D) each."""
    cdef int64_t T = _check_4d(cache_k, where + "cache_k", N, L.kv_heads, L.head_dim)
    if _check_4d(cache_v, where + "cache_v", N, L.kv_heads, L.head_dim) != T:
        raise ValueError(f"{where}cache_v: {cache_v.shape} differs from cache_k "
                         f"{cache_k.shape}")
    st.k, st.v, st.t_max = _fptr(cache_k), _fptr(cache_v), T
    return 0


cdef object _llama_shared(pt_llama_layer_state *st, const pt_llama_layer *L, int64_t N, pos,
                          keep, pt_mask *m):
    """The fields of st every layer of a step shares, checked against st's
    cache (_llama_cache first): positions and mask (score row n*Hq + j:
    query head j of sequence n).  Returns the array st points into."""
    positions = np.empty(N, np.int64)
    st.S = _step_positions(pos, keep, N, L.heads, st.t_max, positions, m, &st.keep)
    st.pos = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>positions)
    return positions
