"""Multi-head attention (section 3.2.2) and torch.nn's mask conventions."""
import numpy as np

from .. import _kernels, ops
from ..ops.attention import look_ahead_mask
from ..ops.checks import check_int, to_numpy
from .layers import Linear
from .module import NO_INIT, Module, _rng, xavier_uniform

__all__ = ["MultiheadAttention", "attention_mask"]


def _check_mask(mask, name):
    if mask is None:
        return None
    m = to_numpy(mask)
    if m.dtype != np.bool_ and m.dtype.kind != "f":
        raise ValueError(f"{name}: only bool and floating-point masks are supported, got "
                         f"dtype {m.dtype} with shape {m.shape}")
    return m if m.dtype == np.bool_ else np.ascontiguousarray(m, dtype=np.float32)


def _additive(m):
    """A keep-mask as an additive one (0 where kept, -inf elsewhere)."""
    return m if m.dtype != np.bool_ else np.where(m, np.float32(0), np.float32(-np.inf))


def attention_mask(attn_mask, key_padding_mask, is_causal, need_weights, N, h, L, S):
    """torch's masks -> (mask for ops.scaled_dot_product_attention, is_causal).

    torch.nn speaks "True = may not attend"; the SDPA op keeps where True.
    attn_mask is (L, S) or (N*h, L, S); key_padding_mask (N, S).  The two
    are merged as torch merges them: both bool -> a position is kept only if
    both keep it; otherwise added as floats (a bool is 0 / -inf).  As in
    torch, a causal hint without key padding (and without weights asked for)
    is passed on as is_causal, and attn_mask then only documents it.
    """
    am = _check_mask(attn_mask, "attn_mask")
    kpm = _check_mask(key_padding_mask, "key_padding_mask")
    if kpm is not None and kpm.shape != (N, S):
        raise ValueError(f"key_padding_mask: expected shape {(N, S)} (batch, source "
                         f"length), got {kpm.shape}")
    if am is not None:
        if am.ndim == 2 and am.shape == (L, S):
            pass
        elif am.ndim == 3 and am.shape == (N * h, L, S):
            am = am.reshape(N, h, L, S)
        else:
            raise ValueError(f"attn_mask: expected shape {(L, S)} or {(N * h, L, S)} "
                             f"(batch * num_heads, target length, source length), got "
                             f"{am.shape}")
    if is_causal and kpm is None and not need_weights:
        return None, True
    if am is None and is_causal:
        # Extension: torch requires the mask beside the hint; we build it.
        am = look_ahead_mask(L, S)
    elif am is not None and am.dtype == np.bool_:
        am = ~am
    if kpm is not None:
        kpm = (~kpm if kpm.dtype == np.bool_ else kpm).reshape(N, 1, 1, S)
    if am is None or kpm is None:
        return (am if kpm is None else kpm), False
    if am.dtype == np.bool_ and kpm.dtype == np.bool_:
        return am & kpm, False
    return _additive(am) + _additive(kpm), False


def _detect_is_causal_mask(mask, is_causal=None, size=None):
    """torch's rule: an explicit hint wins; otherwise a square mask equal to
    the look-ahead mask counts as causal."""
    if is_causal is not None:
        return bool(is_causal)
    if mask is None:
        return False
    m = np.asarray(mask)
    sz = size if size is not None else m.shape[-2]
    if m.shape != (sz, sz):
        return False
    upper = ~look_ahead_mask(sz)  # True = may not attend
    if m.dtype == np.bool_:
        return bool(np.array_equal(m, upper))
    return bool(np.array_equal(m, np.where(upper, -np.inf, 0.0)))


# ---------------------------------------------------- multi-head attention --

class MultiheadAttention(Module):
    """Multi-head attention (Vaswani et al. 2017, section 3.2.2), as
    torch.nn.MultiheadAttention.

    MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i =
    Attention(Q W_i^Q, K W_i^K, V W_i^V), each head of size d_k = d_model/h.
    With ``in_proj_weight`` (kdim == vdim == embed_dim) the h projections of
    Q, K and V are one GEMM in self-attention, and K, V one GEMM in
    cross-attention.  ``add_bias_kv`` and ``add_zero_attn`` are not supported.

    forward = project_self (or project_query + project_key_value), then
    ops.scaled_dot_product_attention over the heads, then output_projection:
    the pieces an incremental decoder with a key/value cache calls directly.
    Unlike torch, ``is_causal=True`` without ``attn_mask`` is accepted (the
    look-ahead mask is implied).
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None,
                 dtype=None, *, rng=None):
        super().__init__()
        if add_bias_kv:
            raise ValueError("MultiheadAttention: add_bias_kv=True is not supported")
        if add_zero_attn:
            raise ValueError("MultiheadAttention: add_zero_attn=True is not supported")
        self._packs = {}
        self.compute_type = "float32"   # of the projections; attention itself is float32
        self.embed_dim = E = check_int(embed_dim, "embed_dim", 1)
        self.num_heads = check_int(num_heads, "num_heads", 1)
        if self.num_heads <= 0 or E % self.num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim={E} must be divisible by "
                             f"num_heads={num_heads}")
        self.head_dim = E // self.num_heads
        self.kdim = int(kdim) if kdim is not None else E
        self.vdim = int(vdim) if vdim is not None else E
        self._qkv_same_embed_dim = self.kdim == E and self.vdim == E
        self.dropout = float(dropout)
        self.batch_first = bool(batch_first)
        self.add_zero_attn = False
        self.bias_k = self.bias_v = None
        rng = _rng(rng)
        if self._qkv_same_embed_dim:
            self.register_parameter("in_proj_weight", xavier_uniform(rng, (3 * E, E)))
        else:
            self.register_parameter("q_proj_weight", xavier_uniform(rng, (E, E)))
            self.register_parameter("k_proj_weight", xavier_uniform(rng, (E, self.kdim)))
            self.register_parameter("v_proj_weight", xavier_uniform(rng, (E, self.vdim)))
        self.register_parameter("in_proj_bias", np.zeros(3 * E, np.float32) if bias else None)
        self.out_proj = Linear(E, E, bias=bias, rng=rng)
        if bias:
            self.out_proj.bias = np.zeros(E, np.float32)
        self._parameters_changed()

    # -- projections: seams for incremental decoding --
    def _parameters_changed(self):
        self._packs = {}  # packed lazily: self-attention and cross-attention need
        #                   different slices of in_proj_weight

    def _packed(self, part):
        """The packed projection ``part`` in 'qkv', 'q', 'k', 'v', 'kv', with its bias."""
        p = self._packs.get(part)
        if p is None:
            E = self.embed_dim
            rows = {"qkv": (0, 3), "q": (0, 1), "k": (1, 2), "v": (2, 3), "kv": (1, 3)}[part]
            if self._qkv_same_embed_dim:
                w = self.in_proj_weight[rows[0] * E:rows[1] * E]
            else:
                w = {"q": self.q_proj_weight, "k": self.k_proj_weight,
                     "v": self.v_proj_weight}[part]
            b = self.in_proj_bias
            b = None if b is None else np.ascontiguousarray(b[rows[0] * E:rows[1] * E])
            p = self._packs[part] = (ops.pack_weight(w, self.compute_type), b)
        return p

    def _project(self, x, part):
        """x (..., E_in) through projection ``part``, split into heads:
        (n, N, h, L, d_k) with n the number of projections in ``part``."""
        w, b = self._packed(part)
        y = ops.linear(x, w, b)
        return self._split_heads(y, len(part) if part != "qkv" else 3)

    def _split_heads(self, y, n):
        h, d = self.num_heads, self.head_dim
        if self.batch_first:  # (N, L, n*E) -> (n, N, h, L, d)
            N, L = y.shape[0], y.shape[1]
            return np.ascontiguousarray(y.reshape(N, L, n, h, d).transpose(2, 0, 3, 1, 4))
        L, N = y.shape[0], y.shape[1]  # (L, N, n*E) -> (n, N, h, L, d)
        return np.ascontiguousarray(y.reshape(L, N, n, h, d).transpose(2, 1, 3, 0, 4))

    def _merge_heads(self, o):
        """(N, h, L, d) -> Concat(head_1..head_h) laid out as the input."""
        N, h, L, d = o.shape
        if self.batch_first:
            return o.transpose(0, 2, 1, 3).reshape(N, L, h * d)
        return o.transpose(2, 0, 1, 3).reshape(L, N, h * d)

    def project_self(self, x):
        """Self-attention's Q, K, V of x: heads (N, h, L, d_k) each, one GEMM
        when in_proj_weight holds the three projections."""
        if self._qkv_same_embed_dim:
            q, k, v = self._project(x, "qkv")
            return q, k, v
        return self.project_query(x), *self.project_key_value(x, x)

    def project_query(self, query):
        """Q W^Q as heads (N, h, L, d_k)."""
        return self._project(query, "q")[0]

    def project_key_value(self, key, value):
        """K W^K and V W^V as heads (N, h, S, d_k); one GEMM when key is value
        (cross-attention over the encoder memory)."""
        if key is value and self._qkv_same_embed_dim:
            k, v = self._project(key, "kv")
            return k, v
        return self._project(key, "k")[0], self._project(value, "v")[0]

    def output_projection(self, o):
        """Concat(head_1..head_h) W^O for attention outputs o (N, h, L, d_k)."""
        return self.out_proj(self._merge_heads(o))

    # -- forward --
    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        """Returns ``(attn_output, attn_output_weights or None)`` as torch."""
        self_attention = query is key and key is value
        cross_kv = key is value
        query, key, value, key_padding_mask, batched = self._check_inputs(
            query, key, value, key_padding_mask)
        if self_attention:
            key = value = query
        elif cross_kv:
            value = key
        seq = 1 if self.batch_first else 0
        N, L, S = query.shape[1 - seq], query.shape[seq], key.shape[seq]
        if self_attention:
            q, k, v = self.project_self(query)
        else:
            q = self.project_query(query)
            k, v = self.project_key_value(key, value)
        mask, causal = attention_mask(attn_mask, key_padding_mask, is_causal, need_weights,
                                      N, self.num_heads, L, S)
        weights = None
        if need_weights:
            o, weights = ops.attention_with_weights(q, k, v, attn_mask=mask, is_causal=causal)
            if average_attn_weights:
                weights = weights.mean(axis=1)
            if not batched:
                weights = weights[0]
        else:
            o = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        out = self.output_projection(o)
        if not batched:
            out = out[0] if self.batch_first else out[:, 0]
        return out, weights

    # -- incremental decoding: one new position per sequence (see KVCache) --
    def _project_one(self, x, part):
        """x (N, E_in), one position per sequence, through projection ``part``:
        heads (n, N, h, d_k), views of the one GEMM's output."""
        w, b = self._packed(part)
        y = w.matmul(x, b)
        return y.reshape(x.shape[0], -1, self.num_heads, self.head_dim).transpose(1, 0, 2, 3)

    def _attend_one(self, q, k, v, keep):
        """Scaled dot-product attention of one query per sequence and head, q
        (N, h, d_k), over keys and values (N, h, S, d_k) read where they lie;
        keep (N, S) bool, False at positions not to attend, or None.
        Returns Concat(head_1..head_h) (N, E)."""
        N, h, d = q.shape
        S = k.shape[2]
        q = np.ascontiguousarray(q).reshape(N * h, 1, d)
        mask = None if keep is None else keep.reshape(N, 1, 1, S)
        if mask is None:   # the cache's rows are read where they lie
            o = _kernels.attention(q, k.reshape(N * h, S, d), v.reshape(N * h, S, d),
                                   None, None, None, 1.0 / np.sqrt(d))
        else:
            o = ops.scaled_dot_product_attention(q.reshape(N, h, 1, d), k, v, attn_mask=mask)
        return o.reshape(N, h * d)

    def step_self_attention(self, x, cache_k, cache_v, pos, keep=None):
        """Masked self-attention of one new position per sequence over its
        cached prefix.

        x (N, E): the new position of each sequence; cache_k, cache_v
        (N, h, T_max, d_k): keys and values of positions < pos, to which this
        position's key and value are written (at pos).  The look-ahead mask is
        implicit: only positions <= pos exist yet.  keep (N, pos + 1) bool is
        False at padded target positions (the key padding mask); None: no
        padding.  Returns (N, E).

        pos may also be an (N,) array, each sequence at its own position (a
        decoder-only batch of prompts of different lengths): each key and
        value is written at its row's position and keys up to the largest
        are read; keep must then be False past each row's own position
        (where the rows differ).
        """
        if self._qkv_same_embed_dim:
            q, k, v = self._project_one(x, "qkv")
        else:
            (q,), (k,), (v,) = (self._project_one(x, p) for p in "qkv")
        if isinstance(pos, np.ndarray):
            rows = np.arange(x.shape[0])
            cache_k[rows, :, pos] = k
            cache_v[rows, :, pos] = v
            pos = int(pos.max()) if pos.size else 0
        else:
            cache_k[:, :, pos] = k
            cache_v[:, :, pos] = v
        o = self._attend_one(q, cache_k[:, :, :pos + 1], cache_v[:, :, :pos + 1], keep)
        return self.out_proj.step(o)

    def memory_keys_values(self, memory):
        """Cross-attention keys and values of the encoder output, computed once
        per source: memory laid out as this module's inputs -> K, V
        (N, h, S, d_k)."""
        memory = ops.as_float32(memory, "memory")
        return self.project_key_value(memory, memory)

    def step_cross_attention(self, x, mem_k, mem_v, memory_keep=None, memory_rows=None):
        """Attention of one new position per sequence (x (N, E)) over the
        encoder output's keys and values (N0, h, S, d_k), C-contiguous:
        sequence r attends to row ``memory_rows[r]`` ((N,) int64; None: row
        r itself, N0 = N).  memory_keep (N, 1, 1, S) bool is False at padded
        source positions (None: no padding).  Returns (N, E)."""
        (q,) = self._project_one(x, "q")
        N, h, d = q.shape
        N0, _, S, _ = mem_k.shape
        rows = np.arange(N, dtype=np.int64) if memory_rows is None else \
            np.asarray(memory_rows, np.int64)
        # batch r * h + j of the kernel: head j of sequence r, over row
        # rows[r] of the keys and values, read where it lies
        kv = (rows[:, None] * h + np.arange(h)).reshape(-1)
        mask = strides = shape = None
        if memory_keep is not None:   # (N, 1, 1, S) -> batches (N, h), one query
            mask, strides, shape = memory_keep, (S, 0, 0, 1), (N, h)
        o = _kernels.attention(np.ascontiguousarray(q).reshape(N * h, 1, d),
                               mem_k.reshape(N0 * h, S, d), mem_v.reshape(N0 * h, S, d),
                               None, kv, kv, 1.0 / np.sqrt(d), mask=mask,
                               mask_strides=strides, batch_shape=shape)
        return self.out_proj.step(o.reshape(N, h * d))

    def _check_inputs(self, query, key, value, key_padding_mask):
        q = ops.as_float32(query, "query")
        k = q if key is query else ops.as_float32(key, "key")
        v = q if value is query else (k if value is key else ops.as_float32(value, "value"))
        if q.ndim not in (2, 3) or k.ndim != q.ndim or v.ndim != q.ndim:
            raise ValueError(f"MultiheadAttention: query, key and value must all be 3-d "
                             f"(batched) or 2-d (unbatched), got {q.shape}, {k.shape}, "
                             f"{v.shape}")
        batched = q.ndim == 3
        if not batched:
            b = 0 if self.batch_first else 1
            q, k, v = (x if x is None else np.expand_dims(x, b) for x in (q, k, v))
            if key_padding_mask is not None:
                kpm = np.asarray(key_padding_mask)
                if kpm.ndim != 1:
                    raise ValueError(f"key_padding_mask: expected shape (S,) for unbatched "
                                     f"inputs, got {kpm.shape}")
                key_padding_mask = kpm[None]
        seq = 1 if self.batch_first else 0
        if (q.shape[-1] != self.embed_dim or k.shape[-1] != self.kdim
                or v.shape[-1] != self.vdim):
            raise ValueError(f"MultiheadAttention: feature sizes of query {q.shape}, key "
                             f"{k.shape}, value {v.shape} do not match embed_dim="
                             f"{self.embed_dim}, kdim={self.kdim}, vdim={self.vdim}")
        if (q.shape[1 - seq] != k.shape[1 - seq] or k.shape[:2] != v.shape[:2]):
            raise ValueError(f"MultiheadAttention: batch or source sizes of query "
                             f"{q.shape}, key {k.shape}, value {v.shape} disagree")
        return q, k, v, key_padding_mask, batched

    @classmethod
    def _from_torch_config(cls, m):
        return cls(m.embed_dim, m.num_heads, dropout=m.dropout,
                   bias=m.in_proj_bias is not None, add_bias_kv=m.bias_k is not None,
                   add_zero_attn=m.add_zero_attn, kdim=m.kdim, vdim=m.vdim,
                   batch_first=m.batch_first, rng=NO_INIT)

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"batch_first={self.batch_first}")
