# Included by _kernels.pyx after _kernels_layers.pxi: a whole decoder
# stack's decoding step as one C call (csrc/layers/stack.c).  StackStep.step
# checks every layer's caches and the shared inputs once, then runs the
# layers, the final norm and the output projection without coming back to
# Python.

NORM_KINDS = {"layer": PT_NORM_LAYER, "rms": PT_NORM_RMS}


cdef class StackStep:
    """A decoder stack's decoding step in one C call: each layer's fused
    step (DecoderLayerStep, or LlamaLayerStep for a Llama stack) in order,
    then the stack's final norm and its output projection to the
    vocabulary.  Bit for bit the model's decode_step composed in Python.

    StackStep(layers, norm=None, head=None): layers a sequence of layer
    steps of one kind and one shape (d_model, heads, head size; kv heads);
    norm None, ("layer", weight, bias, eps) or ("rms", weight, eps); head
    None or (packed matrix, bias), d_model -> vocabulary.  The objects are
    kept alive with the step."""
    cdef object layers, norm, head
    cdef pt_stack S
    cdef int64_t n
    cdef pt_step_matrix head_bound          # the head as head_at's path takes it
    cdef path_key head_at

    def __cinit__(self, layers, norm=None, head=None):
        layers = tuple(layers)
        if not layers:
            raise ValueError("StackStep: at least one layer expected")
        self.n = len(layers)
        if all(isinstance(l, DecoderLayerStep) for l in layers):
            self.S.kind = PT_STACK_DECODER
        elif all(isinstance(l, LlamaLayerStep) for l in layers):
            self.S.kind = PT_STACK_LLAMA
        else:
            raise TypeError("StackStep: the layers must all be DecoderLayerStep or all "
                            "LlamaLayerStep")
        shapes = {_layer_shape(l) for l in layers}
        if len(shapes) != 1:
            raise ValueError(f"StackStep: the layers differ in shape (d_model, heads, ...): "
                             f"{sorted(shapes)}")
        self.S.E = next(iter(shapes))[0]
        self.S.n_layers = self.n
        self.layers, self.norm, self.head = layers, norm, head
        self.S.norm = PT_NORM_NONE
        self.S.norm_w = self.S.norm_b = NULL
        self.S.eps = 0.0
        if norm is not None:
            kind = norm[0]
            if kind not in NORM_KINDS or len(norm) != (4 if kind == "layer" else 3):
                raise ValueError(f"StackStep: norm ('layer', weight, bias, eps) or ('rms', "
                                 f"weight, eps) expected, got {norm!r}")
            self.S.norm = NORM_KINDS[kind]
            if norm[1] is not None:
                _check(norm[1], "norm weight", self.S.E)
                self.S.norm_w = _fptr(norm[1])
            if kind == "layer" and norm[2] is not None:
                _check(norm[2], "norm bias", self.S.E)
                self.S.norm_b = _fptr(norm[2])
            self.S.eps = norm[len(norm) - 1]   # (wraparound is off)
        self.S.has_head = head is not None
        if head is not None:   # checks the head once
            _fill_step_matrix(&self.S.head, KT, head[0], head[1], self.S.E, head[0].shape[1],
                              "head")

    @property
    def vocab_size(self):
        """The output projection's width (None without one)."""
        return self.head[0].shape[1] if self.head is not None else None

    def step(self, x, self_k, self_v, pos, keep=None, cross_k=None, cross_v=None,
             cross_rows=None, memory_keep=None):
        """The logits (N, vocab) of the next token for x (N, E), the embedded
        tokens at one new position per sequence (without a head: the
        stack's output after its norm, (N, E)).  self_k, self_v: each
        layer's cache, a sequence of (N, h, T, d) arrays; pos and keep as
        DecoderLayerStep.step / LlamaLayerStep.step take them, shared by
        every layer; for decoder layers with a cross attention cross_k,
        cross_v (a sequence of (N0, h, S_mem, d), one per layer), cross_rows
        and memory_keep as DecoderLayerStep.step takes them."""
        cdef int64_t n = self.n, i, N = _step_rows(x, self.S.E), N0 = -1
        if len(self_k) != n or len(self_v) != n:
            raise ValueError(f"self_k, self_v: one cache per layer ({n}) expected, got "
                             f"{len(self_k)} and {len(self_v)}")
        cdef bint llama = self.S.kind == PT_STACK_LLAMA
        cdef bint cross = not llama and (<DecoderLayerStep>self.layers[0]).L.cross
        if cross and (cross_k is None or cross_v is None or len(cross_k) != n or
                      len(cross_v) != n):
            raise ValueError(f"cross_k, cross_v: the encoder's keys and values for each of "
                             f"the {n} layers expected")
        # the call's own copies of the layers (bound to the path read once) and states
        nbytes = n * (sizeof(pt_llama_layer) + sizeof(pt_llama_layer_state) if llama else
                      sizeof(pt_decoder_layer) + sizeof(pt_decoder_layer_state))
        scratch = np.empty(nbytes, np.uint8)
        cdef char *mem = <char *>cnp.PyArray_DATA(<cnp.ndarray>scratch)
        cdef pt_stack S = self.S
        cdef pt_mask m_self, m_cross
        cdef const pt_kernel_table *kt = KT
        cdef pt_decoder_layer *dec = <pt_decoder_layer *>mem
        cdef pt_decoder_layer_state *dst = <pt_decoder_layer_state *>(dec + n)
        cdef pt_llama_layer *lla = <pt_llama_layer *>mem
        cdef pt_llama_layer_state *lst = <pt_llama_layer_state *>(lla + n)
        cdef DecoderLayerStep d
        cdef LlamaLayerStep l
        alive = None
        for i in range(n):
            where = f"layer {i}: "
            if llama:
                l = <LlamaLayerStep>self.layers[i]
                lla[i] = l._bound(kt)[0]
                _llama_cache(&lst[i], &lla[i], N, self_k[i], self_v[i], where)
                if i == 0:
                    alive = _llama_shared(&lst[0], &lla[0], N, pos, keep, &m_self)
                else:
                    _share(lst[i].t_max, lst[0].S, where)
                    lst[i].pos, lst[i].S, lst[i].keep = lst[0].pos, lst[0].S, lst[0].keep
            else:
                d = <DecoderLayerStep>self.layers[i]
                dec[i] = d._bound(kt)[0]
                N0 = _decoder_caches(&dst[i], &dec[i], N, self_k[i], self_v[i],
                                     cross_k[i] if cross else None,
                                     cross_v[i] if cross else None, N0, where)
                if i == 0:
                    alive = _decoder_shared(&dst[0], &dec[0], N, N0, pos, keep, cross_rows,
                                            memory_keep, &m_self, &m_cross)
                else:
                    _share(dst[i].t_max, dst[0].S, where)
                    if dst[i].S_mem != dst[0].S_mem:
                        raise ValueError(f"{where}cross_k: {dst[i].S_mem} source positions, "
                                         f"layer 0 {dst[0].S_mem}")
                    dst[i].pos, dst[i].S, dst[i].self_keep = dst[0].pos, dst[0].S, \
                        dst[0].self_keep
                    dst[i].cross_index, dst[i].cross_mask = dst[0].cross_index, \
                        dst[0].cross_mask
        S.dec, S.dec_st, S.llama, S.llama_st = dec, dst, lla, lst
        if S.has_head:   # bound once per path, as the layers are (DecoderLayerStep._bound)
            if not _bound_for(&self.head_at, kt):
                self.head_at.kt = NULL
                self.head_bound = S.head
                _fill_step_matrix(&self.head_bound, kt, self.head[0], self.head[1], S.E,
                                  S.head.N, "head")
                _mark_bound(&self.head_at, kt)
            S.head = self.head_bound
            out = np.empty((N, S.head.N), np.float32)
        hidden = x.copy()
        cdef float *px = _fptr(hidden)
        cdef float *po = _fptr(out) if S.has_head else NULL
        cdef int nt = _nthreads, status
        with nogil:
            status = pt_stack_step(kt, &S, px, N, po, nt)
        if status != PT_OK:
            _raise_status(status, "StackStep.step")
        return out if S.has_head else hidden


cdef tuple _layer_shape(object layer):
    cdef DecoderLayerStep d
    cdef LlamaLayerStep l
    if isinstance(layer, LlamaLayerStep):
        l = <LlamaLayerStep>layer
        return (l.L.E, l.L.heads, l.L.kv_heads, l.L.head_dim)
    d = <DecoderLayerStep>layer
    return (d.L.E, d.L.heads, d.L.head_dim, bool(d.L.cross))


cdef int _share(int64_t T, int64_t S, str where) except -1:
    """A layer's cache of T positions holds the S every layer attends to."""
    if S > T:
        raise ValueError(f"{where}{S} positions attended do not fit the cache's {T}")
    return 0
