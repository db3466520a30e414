"""torch.nn-shaped modules of "Attention Is All You Need" on numpy arrays.

Linear, LayerNorm, Embedding, MultiheadAttention, TransformerEncoderLayer,
TransformerDecoderLayer, TransformerEncoder, TransformerDecoder and Transformer
take the constructor arguments, defaults, attribute names, forward signatures,
return values and mask conventions of the torch.nn class of the same name:

- a bool mask is True where a position may NOT attend; a float mask is added
  to the attention scores; ``*_key_padding_mask`` is ``(N, S)``;
- ``batch_first=False`` by default: sequences are ``(L, N, E)``;
- ``state_dict()`` / ``load_state_dict()`` use torch's key names, with numpy
  float32 values; ``from_torch(module)`` copies a torch module's weights.

Inference only: ``dropout`` is accepted and ignored.  The one documented
difference from torch: a query that may attend to no key at all (a fully
padded row) gets an attention output of zeros where torch gives NaN.

The modules only compose :mod:`pytransformer.ops`; the arithmetic lives in
the kernels.  Linear weights are packed once for the GEMM (and repacked
whenever they are loaded).
"""
import copy
import math
import numbers
import operator
from collections import namedtuple

import numpy as np

from . import ops

__all__ = [
    "Module", "Linear", "LayerNorm", "Embedding", "MultiheadAttention",
    "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder",
    "TransformerDecoder", "Transformer", "KVCache",
]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


# ----------------------------------------------------------- initialisation --

class _NoInit:
    """Stands in for a numpy Generator when weights are about to be loaded:
    parameters start as zeros and no random numbers are drawn."""

    def uniform(self, low, high, size):
        return np.zeros(size, dtype=np.float32)

    def standard_normal(self, size, dtype=np.float32):
        return np.zeros(size, dtype=np.float32)


NO_INIT = _NoInit()


def _rng(rng):
    return np.random.default_rng() if rng is None else rng


def _uniform(rng, bound, shape):
    return np.asarray(rng.uniform(-bound, bound, size=shape), dtype=np.float32)


def xavier_uniform(rng, shape):
    """Glorot & Bengio's uniform init, as torch.nn.init.xavier_uniform_."""
    fan_out, fan_in = shape[0], int(np.prod(shape[1:]))
    return _uniform(rng, math.sqrt(6.0 / (fan_in + fan_out)), shape)


# ------------------------------------------------------------------- Module --

class Module:
    """A tree of parameters (numpy float32 arrays) and sub-modules.

    Attribute assignment registers parameters and sub-modules as torch.nn
    does, so ``state_dict`` keys are the attribute paths (``layers.0.linear1
    .weight``).  Parameters are stored read-only: change them through
    attribute assignment or :meth:`load_state_dict`, which keep the packed
    GEMM operands in step.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})

    # -- registration --
    def register_parameter(self, name, value):
        self._parameters[name] = None if value is None else _as_parameter(value, name)

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if params is None:
            raise AttributeError("Module.__init__() must be called before assigning "
                                 "attributes")
        if isinstance(value, Module):
            # registered, and kept as a plain attribute too: reading it then
            # costs no __getattr__ call (decoding reads a few hundred a step)
            self._modules[name] = value
            params.pop(name, None)
            object.__setattr__(self, name, value)
        elif name in params:
            params[name] = None if value is None else _as_parameter(value, name)
            self._parameters_changed()
        elif name in self._modules and value is None:
            self._modules[name] = None
            object.__setattr__(self, name, None)
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        if name in d.get("_parameters", ()):
            return d["_parameters"][name]
        if name in d.get("_modules", ()):
            return d["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _parameters_changed(self):
        """Hook: a parameter of this module was replaced (repack here)."""

    # -- traversal --
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(prefix + name + ".")

    def named_parameters(self, prefix=""):
        for mprefix, m in self.named_modules(prefix):
            for name, p in m._parameters.items():
                if p is not None:
                    yield mprefix + name, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def children(self):
        return [m for m in self._modules.values() if m is not None]

    def state_dict(self):
        """{torch key: numpy float32 array}.  The arrays are the module's own
        (read-only), not copies."""
        return dict(self.named_parameters())

    def load_state_dict(self, state_dict, strict=True):
        """Load parameters by torch key name.

        Every missing, unexpected (with ``strict``) or mis-shaped key, and
        every value that is not a floating-point array, is named in a single
        ``ValueError``; nothing is loaded unless everything fits.  Returns
        ``(missing_keys, unexpected_keys)`` as torch does.
        """
        return self._load(state_dict, strict=strict, copy=True)

    def _load(self, state_dict, strict=True, copy=True):
        from .io import to_numpy
        owners = {}
        for mprefix, m in self.named_modules():
            for name, p in m._parameters.items():
                if p is not None:
                    owners[mprefix + name] = (m, name, p.shape)
        given = dict(state_dict)
        missing = [k for k in owners if k not in given]
        unexpected = [k for k in given if k not in owners]
        problems = []
        values = {}
        for k, (m, name, shape) in owners.items():
            if k not in given:
                continue
            try:
                v = to_numpy(given[k])
            except Exception as e:  # noqa: BLE001 - reported with the key
                problems.append(f"{k}: cannot be read as an array ({e})")
                continue
            if v.dtype.kind != "f":
                problems.append(f"{k}: a floating-point array is needed, got dtype {v.dtype}")
            elif v.shape != shape:
                problems.append(f"{k}: shape {v.shape} in the state dict, {shape} in the "
                                f"{type(self).__name__}")
            else:
                values[k] = v
        if strict and missing:
            problems.insert(0, "missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.insert(1 if strict and missing else 0,
                            "unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise ValueError(f"load_state_dict for {type(self).__name__}: "
                             + "; ".join(problems))
        changed = {}
        for k, v in values.items():
            m, name, _ = owners[k]
            m._parameters[name] = _as_parameter(v, k, copy=copy)
            changed[id(m)] = m
        for m in changed.values():
            m._parameters_changed()
        return IncompatibleKeys(missing, unexpected)

    @classmethod
    def from_torch(cls, module):
        """The pytransformer twin of a torch.nn module, with its weights."""
        from .io import torch_state_dict
        m = cls._from_torch_config(module)
        m._load(torch_state_dict(module), strict=True, copy=False)
        return m

    @classmethod
    def _from_torch_config(cls, module):  # pragma: no cover - every class overrides
        raise NotImplementedError

    # -- torch.nn compatibility --
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def eval(self):
        return self

    def train(self, mode=True):
        if mode:
            raise NotImplementedError("pytransformer modules are inference-only")
        return self

    @property
    def training(self):
        return False

    def __deepcopy__(self, memo):
        # Packed GEMM operands are C objects: copy the parameters and repack.
        new = type(self).__new__(type(self))
        for k, v in self.__dict__.items():
            if k == "_packs":
                continue
            object.__setattr__(new, k, copy.deepcopy(v, memo))
        for p in new._parameters.values():
            if p is not None:
                p.flags.writeable = False
        new._parameters_changed()
        return new

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ")
                 for name, m in self._modules.items() if m is not None]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _as_parameter(value, name, copy=None):
    """value as a read-only float32 C array.  copy=None copies unless value is
    already one (assigning one module's parameter to another shares it, as
    tying weights in torch does)."""
    from .io import to_numpy
    a = to_numpy(value)
    if a.dtype.kind != "f":
        raise ValueError(f"{name}: a floating-point array is needed, got dtype {a.dtype} "
                         f"with shape {a.shape}")
    if copy is None:
        copy = a.flags.writeable
    if copy or a.dtype != np.float32 or not a.flags.c_contiguous:
        a = np.array(a, dtype=np.float32, order="C", copy=True)
    a.flags.writeable = False
    return a


# ------------------------------------------------------------ basic layers --

class Linear(Module):
    """y = x W^T + b, as torch.nn.Linear; W is held packed for the GEMM."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *,
                 rng=None):
        super().__init__()
        self._packs = {}
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        rng = _rng(rng)
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
        self.register_parameter("weight", _uniform(rng, bound, (self.out_features,
                                                                self.in_features)))
        self.register_parameter("bias", _uniform(rng, bound, (self.out_features,))
                                if bias else None)
        self._parameters_changed()

    def _parameters_changed(self):
        self._packs = {"weight": ops.pack_weight(self.weight)}

    def forward(self, input, activation=None):
        """``activation`` ('relu', 'gelu', a pytransformer extension) is fused
        into the GEMM's store."""
        return ops.linear(input, self._packs["weight"], self.bias, activation=activation)

    @classmethod
    def _from_torch_config(cls, m):
        return cls(m.in_features, m.out_features, bias=m.bias is not None, rng=NO_INIT)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class LayerNorm(Module):
    """Layer normalisation (Ba et al. 2016), as torch.nn.LayerNorm: biased
    variance, eps inside the square root."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        affine = self.elementwise_affine
        self.register_parameter("weight", np.ones(self.normalized_shape, np.float32)
                                if affine else None)
        self.register_parameter("bias", np.zeros(self.normalized_shape, np.float32)
                                if affine and bias else None)

    def forward(self, input):
        return ops.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    @classmethod
    def _from_torch_config(cls, m):
        return cls(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine,
                   bias=getattr(m, "bias", None) is not None)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class Embedding(Module):
    """A lookup table of ``num_embeddings`` vectors, as torch.nn.Embedding."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, device=None,
                 dtype=None, *, rng=None):
        super().__init__()
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        if padding_idx is not None:
            padding_idx = operator.index(padding_idx)
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx={padding_idx} is outside "
                                 f"num_embeddings={self.num_embeddings}")
            padding_idx %= self.num_embeddings  # as torch: -1 is the last row
        self.padding_idx = padding_idx
        w = np.asarray(_rng(rng).standard_normal((self.num_embeddings, self.embedding_dim),
                                                 dtype=np.float32), dtype=np.float32)
        if padding_idx is not None:
            w[padding_idx] = 0.0
        self.register_parameter("weight", w)

    def forward(self, input, name="input"):
        ids = check_token_ids(input, name, self.num_embeddings)
        return self.weight[ids]

    @classmethod
    def _from_torch_config(cls, m):
        return cls(m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx,
                   rng=NO_INIT)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


def check_token_ids(ids, name, vocab_size):
    """ids as an integer array, every id in [0, vocab_size); IndexError names
    the argument and the offending id otherwise."""
    a = np.asarray(ids)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name}: an integer array of token ids is needed, got dtype "
                         f"{a.dtype} with shape {a.shape}")
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise IndexError(f"{name}: token id {bad} is out of range for a vocabulary of "
                             f"{vocab_size} (shape {a.shape})")
    return a.astype(np.intp, copy=False)


# ------------------------------------------------------------ masks (torch) --

def _causal_keep(L, S):
    """Keep-mask (SDPA convention) of the look-ahead mask: i attends j <= i."""
    return np.tri(L, S, dtype=bool)


def _check_mask(mask, name):
    if mask is None:
        return None
    from .io import to_numpy
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
        am = _causal_keep(L, S)
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
    upper = np.triu(np.ones((sz, sz), dtype=bool), 1)
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
        self.embed_dim = E = int(embed_dim)
        self.num_heads = int(num_heads)
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
            p = self._packs[part] = (ops.pack_weight(w), b)
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
        y = ops.linear(x, w, b)
        return y.reshape(x.shape[0], -1, self.num_heads, self.head_dim).transpose(1, 0, 2, 3)

    def _attend_one(self, q, k, v, keep):
        """Scaled dot-product attention of one query per sequence and head, q
        (N, h, d_k), over keys and values (N, h, S, d_k) read where they lie;
        keep (N, S) bool, False at positions not to attend, or None.
        Returns Concat(head_1..head_h) (N, E)."""
        N, h, d = q.shape
        q = np.ascontiguousarray(q)[:, :, None]
        mask = None if keep is None else keep.reshape(N, 1, 1, keep.shape[-1])
        o = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask)
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
        """
        if self._qkv_same_embed_dim:
            q, k, v = self._project_one(x, "qkv")
        else:
            (q,), (k,), (v,) = (self._project_one(x, p) for p in "qkv")
        cache_k[:, :, pos] = k
        cache_v[:, :, pos] = v
        o = self._attend_one(q, cache_k[:, :, :pos + 1], cache_v[:, :, :pos + 1], keep)
        return self.out_proj(o)

    def memory_keys_values(self, memory):
        """Cross-attention keys and values of the encoder output, computed once
        per source: memory laid out as this module's inputs -> K, V
        (N, h, S, d_k)."""
        memory = ops.as_float32(memory, "memory")
        return self.project_key_value(memory, memory)

    def step_cross_attention(self, x, mem_k, mem_v, memory_keep=None):
        """Attention of one new position per sequence (x (N, E)) over the
        encoder output's keys and values (N, h, S, d_k); memory_keep
        (N, 1, 1, S) bool is False at padded source positions (None: no
        padding).  Returns (N, E)."""
        (q,) = self._project_one(x, "q")
        keep = None if memory_keep is None else memory_keep.reshape(x.shape[0], -1)
        return self.out_proj(self._attend_one(q, mem_k, mem_v, keep))

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


# ------------------------------------------------------------------ layers --

def gelu_tanh(x):
    """GELU in its tanh approximation, as torch.nn.GELU(approximate='tanh'):
    pass it as a layer's ``activation`` (it is fused into the GEMM)."""
    return ops.gelu(x, approximate="tanh")


def _activation(activation):
    """(name fused into the GEMM, or a callable applied after it)."""
    if isinstance(activation, str):
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation should be relu/gelu, not {activation}")
        return activation, None
    if activation is ops.relu:
        return "relu", None
    if activation is ops.gelu:
        return "gelu", None
    if activation is gelu_tanh:
        return "gelu_tanh", None
    if callable(activation):  # applied to the numpy output of the first GEMM
        return None, activation
    raise ValueError(f"activation should be 'relu', 'gelu' or a callable, got {activation!r}")


def _torch_activation(layer):
    """'relu', 'gelu' or gelu_tanh for a torch Transformer layer's activation."""
    act = layer.activation
    name = getattr(act, "__name__", type(act).__name__).lower()
    approximate = getattr(act, "approximate", "none")
    # checked before torch's relu-or-gelu code, which is 2 for either GELU form
    if name == "gelu" and approximate == "tanh":
        return gelu_tanh
    code = getattr(layer, "activation_relu_or_gelu", 0)
    if code == 1:
        return "relu"
    if code == 2:
        return "gelu"
    if name == "relu":
        return "relu"
    if name == "gelu" and approximate == "none":
        return "gelu"
    raise ValueError(f"from_torch: activation {act!r} is not supported (relu or gelu only)")


class _TransformerLayer(Module):
    """What the encoder and decoder layers share: their attention
    sub-layers, the position-wise feed-forward network (section 3.3),
    FFN(x) = act(x W_1 + b_1) W_2 + b_2 with the activation fused into the
    first GEMM, and one LayerNorm per sub-layer for "Add & Norm"."""

    def _build(self, d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
               batch_first, norm_first, bias, rng, cross_attention):
        rng = _rng(rng)
        attention = lambda: MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                               batch_first=batch_first, rng=rng)
        self.self_attn = attention()
        if cross_attention:
            self.multihead_attn = attention()
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, rng=rng)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, rng=rng)
        self.norm_first = bool(norm_first)
        for i in range(3 if cross_attention else 2):
            setattr(self, f"norm{i + 1}", LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        self.dropout = float(dropout)
        self._set_activation(activation)

    def _set_activation(self, activation):
        self.activation = activation
        self._act_name, self._act_fn = _activation(activation)

    def _ff_block(self, x):
        if self._act_fn is None:
            return self.linear2(self.linear1(x, activation=self._act_name))
        return self.linear2(ops.as_float32(self._act_fn(self.linear1(x)), "activation"))

    @classmethod
    def _from_torch_config(cls, m):
        return cls(m.self_attn.embed_dim, m.self_attn.num_heads, m.linear1.out_features,
                   dropout=m.dropout.p, activation=_torch_activation(m),
                   layer_norm_eps=m.norm1.eps, batch_first=m.self_attn.batch_first,
                   norm_first=m.norm_first, bias=m.linear1.bias is not None, rng=NO_INIT)


def _residual(x, y):
    """x + y, "Add" of the paper's "Add & Norm" (section 3.1), into y's buffer."""
    return np.add(y, x, out=y)


class TransformerEncoderLayer(_TransformerLayer):
    """One encoder layer (section 3.1): multi-head self-attention, then the
    position-wise feed-forward network, each wrapped in a residual connection
    and layer normalisation ("Add & Norm"): LayerNorm(x + Sublayer(x)), or
    x + Sublayer(LayerNorm(x)) with ``norm_first`` (pre-LN)."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None, *, rng=None):
        super().__init__()
        self._build(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                    batch_first, norm_first, bias, rng, cross_attention=False)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = ops.as_float32(src, "src")
        if self.norm_first:
            x = _residual(x, self._sa_block(self.norm1(x), src_mask, src_key_padding_mask,
                                            is_causal))
            return _residual(x, self._ff_block(self.norm2(x)))
        x = self.norm1(_residual(x, self._sa_block(x, src_mask, src_key_padding_mask,
                                                   is_causal)))
        return self.norm2(_residual(x, self._ff_block(x)))

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal=False):
        return self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                              need_weights=False, is_causal=is_causal)[0]


class TransformerDecoderLayer(_TransformerLayer):
    """One decoder layer (section 3.1): masked multi-head self-attention,
    multi-head attention over the encoder output (keys and values from the
    memory, queries from the decoder, section 3.2.3), then the position-wise
    feed-forward network; each sub-layer with "Add & Norm"."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None, *, rng=None):
        super().__init__()
        self._build(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                    batch_first, norm_first, bias, rng, cross_attention=True)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = ops.as_float32(tgt, "tgt")
        memory = ops.as_float32(memory, "memory")
        if self.norm_first:
            x = _residual(x, self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask,
                                            tgt_is_causal))
            x = _residual(x, self._mha_block(self.norm2(x), memory, memory_mask,
                                             memory_key_padding_mask, memory_is_causal))
            return _residual(x, self._ff_block(self.norm3(x)))
        x = self.norm1(_residual(x, self._sa_block(x, tgt_mask, tgt_key_padding_mask,
                                                   tgt_is_causal)))
        x = self.norm2(_residual(x, self._mha_block(x, memory, memory_mask,
                                                    memory_key_padding_mask,
                                                    memory_is_causal)))
        return self.norm3(_residual(x, self._ff_block(x)))

    def forward_step(self, x, cache, i):
        """One new target position per sequence through this layer (layer ``i``
        of the decoder whose :class:`KVCache` is ``cache``): x (N, E) -> (N, E).
        Equal, row for row, to :meth:`forward` at that position with the
        look-ahead mask."""
        pos = cache.length
        sa = self.self_attn.step_self_attention
        ca = self.multihead_attn.step_cross_attention
        k, v, mk, mv = cache.layer(i)
        keep = cache.self_keep[:, :pos + 1] if cache.target_padded else None
        mkeep = cache.memory_keep
        if self.norm_first:
            x = _residual(x, sa(self.norm1(x), k, v, pos, keep))
            x = _residual(x, ca(self.norm2(x), mk, mv, mkeep))
            return _residual(x, self._ff_block(self.norm3(x)))
        x = self.norm1(_residual(x, sa(x, k, v, pos, keep)))
        x = self.norm2(_residual(x, ca(x, mk, mv, mkeep)))
        return self.norm3(_residual(x, self._ff_block(x)))

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal=False):
        """Masked self-attention over the target prefix."""
        return self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                              need_weights=False, is_causal=is_causal)[0]

    def _mha_block(self, x, mem, attn_mask, key_padding_mask, is_causal=False):
        """Encoder-decoder ("cross") attention: queries x, keys and values mem."""
        return self.multihead_attn(x, mem, mem, attn_mask=attn_mask,
                                   key_padding_mask=key_padding_mask, need_weights=False,
                                   is_causal=is_causal)[0]


class ModuleList(Module):
    """Numbered sub-modules (``layers.0``, ``layers.1``, ...)."""

    def __init__(self, modules=()):
        super().__init__()
        for i, m in enumerate(modules):
            self._modules[str(i)] = m

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))


def _clones(layer, n, layer_cls, where):
    """N identical layers (independent copies of ``layer``) for a stack."""
    if not isinstance(layer, layer_cls):
        raise ValueError(f"{where} must be a pytransformer.nn.{layer_cls.__name__}")
    return ModuleList([copy.deepcopy(layer) for _ in range(n)])


def _stack_config(m, layer_cls):
    """(layer, num_layers, norm) of a torch TransformerEncoder/Decoder m."""
    norm = None if m.norm is None else LayerNorm._from_torch_config(m.norm)
    return layer_cls._from_torch_config(m.layers[0]), len(m.layers), norm


def _seq_len(x, batch_first):
    x = np.asarray(x)
    if x.ndim == 2:  # unbatched (L, E)
        return x.shape[0]
    return x.shape[1 if batch_first else 0]


class TransformerEncoder(Module):
    """The encoder (section 3.1): a stack of N identical layers, then the
    optional final LayerNorm."""

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True,
                 mask_check=True):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers, TransformerEncoderLayer,
                              "TransformerEncoder: encoder_layer")
        self.num_layers = int(num_layers)
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        x = ops.as_float32(src, "src")
        first = self.layers[0] if len(self.layers) else None
        batch_first = first.self_attn.batch_first if first is not None else False
        is_causal = _detect_is_causal_mask(mask, is_causal, _seq_len(x, batch_first))
        for layer in self.layers:
            x = layer(x, src_mask=mask, is_causal=is_causal,
                      src_key_padding_mask=src_key_padding_mask)
        return x if self.norm is None else self.norm(x)

    @classmethod
    def _from_torch_config(cls, m):
        return cls(*_stack_config(m, TransformerEncoderLayer))


class TransformerDecoder(Module):
    """The decoder (section 3.1): a stack of N identical layers, then the
    optional final LayerNorm."""

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers, TransformerDecoderLayer,
                              "TransformerDecoder: decoder_layer")
        self.num_layers = int(num_layers)
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
        x = ops.as_float32(tgt, "tgt")
        memory = ops.as_float32(memory, "memory")
        first = self.layers[0] if len(self.layers) else None
        batch_first = first.self_attn.batch_first if first is not None else False
        tgt_is_causal = _detect_is_causal_mask(tgt_mask, tgt_is_causal,
                                               _seq_len(x, batch_first))
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        return x if self.norm is None else self.norm(x)

    # -- incremental decoding --
    def init_cache(self, memory, memory_key_padding_mask=None, max_len=1):
        """A :class:`KVCache` for decoding up to ``max_len`` target positions
        against ``memory`` (laid out as this decoder's inputs: (N, S, E) when
        batch_first, else (S, N, E)); memory_key_padding_mask (N, S), True at
        padded source positions.  The cross-attention keys and values are
        computed here, once."""
        memory = ops.as_float32(memory, "memory")
        first = self.layers[0] if len(self.layers) else None
        if memory.ndim != 3:
            raise ValueError(f"memory: expected a 3-d (batched) array, got {memory.shape}")
        batch_first = first is None or first.self_attn.batch_first
        N, S = memory.shape[:2] if batch_first else memory.shape[1::-1]
        keep = None
        if memory_key_padding_mask is not None:
            kpm = np.asarray(memory_key_padding_mask)
            if kpm.shape != (N, S) or kpm.dtype != np.bool_:
                raise ValueError(f"memory_key_padding_mask: expected a bool array of shape "
                                 f"{(N, S)}, got {kpm.dtype} {kpm.shape}")
            if kpm.any():  # (no padding: no mask to apply)
                keep = np.ascontiguousarray(~kpm).reshape(N, 1, 1, S)
        cross = [layer.multihead_attn.memory_keys_values(memory) for layer in self.layers]
        heads = [(layer.self_attn.num_heads, layer.self_attn.head_dim) for layer in self.layers]
        return KVCache(N, int(max_len), heads, cross, keep)

    def forward_step(self, x, cache, tgt_key_padding_mask=None):
        """One new target position per sequence: x (N, E), the embedded tokens
        at position ``cache.length``, -> (N, E) decoder output (after the final
        norm); the cache then holds one more position.  tgt_key_padding_mask
        (N,) bool: True where this position is padding (later positions will
        not attend to it, as in :meth:`forward`)."""
        x = ops.as_float32(x, "x")
        if x.ndim != 2 or x.shape[0] != cache.batch_size:
            raise ValueError(f"x: expected shape ({cache.batch_size}, E), got {x.shape}")
        if cache.length >= cache.max_len:
            raise ValueError(f"the cache is full: {cache.max_len} positions decoded")
        pad = np.zeros(x.shape[0], bool) if tgt_key_padding_mask is None else \
            np.asarray(tgt_key_padding_mask, dtype=bool).reshape(-1)
        if pad.shape != (x.shape[0],):
            raise ValueError(f"tgt_key_padding_mask: expected shape ({x.shape[0]},), got "
                             f"{np.shape(tgt_key_padding_mask)}")
        cache.self_keep[:, cache.length] = ~pad
        cache.target_padded = cache.target_padded or bool(pad.any())
        for i, layer in enumerate(self.layers):
            x = layer.forward_step(x, cache, i)
        cache.length += 1
        return x if self.norm is None else self.norm(x)

    @classmethod
    def _from_torch_config(cls, m):
        return cls(*_stack_config(m, TransformerDecoderLayer))


class KVCache:
    """What a decoder keeps between steps of incremental decoding.

    At step t the decoder sees one new target position per sequence; its
    self-attention needs the keys and values of positions 0..t-1, which do
    not change once computed, and its cross-attention needs the keys and
    values of the encoder output, which do not change at all.  Both are kept
    here, allocated once for ``max_len`` positions:

    - ``layer(i)`` gives decoder layer i's ``(self_k, self_v, cross_k,
      cross_v)``: self-attention keys and values (N, h, max_len, d_k), filled
      for positions < ``length``, and the encoder output projected by the
      layer's W^K, W^V (N, h, S, d_k);
    - ``self_keep``: (N, max_len) bool, False at padded target positions;
      ``target_padded``: whether any such position was decoded (if not, the
      self-attention needs no mask);
    - ``memory_keep``: (N, 1, 1, S) bool, False at padded source positions
      (None: no padding).

    :meth:`select` keeps, reorders or repeats sequences (rows) in place: beam
    search reorders hypotheses, and a sequence that has ended leaves the batch.
    """

    def __init__(self, batch_size, max_len, heads, cross, memory_keep=None):
        self.batch_size = self.capacity = int(batch_size)
        self.max_len = int(max_len)
        self.length = 0
        n = self.batch_size
        self._self_k = [np.zeros((n, h, self.max_len, d), np.float32) for h, d in heads]
        self._self_v = [np.zeros((n, h, self.max_len, d), np.float32) for h, d in heads]
        self._self_keep = np.ones((n, self.max_len), dtype=bool)
        self.target_padded = False
        self._cross_k = [k for k, _ in cross]
        self._cross_v = [v for _, v in cross]
        self._keep = memory_keep

    # Views of the rows in use: buffers are only ever shrunk in place.
    def layer(self, i):
        """Decoder layer i's (self_k, self_v, cross_k, cross_v) for the rows in use."""
        n = self.batch_size
        return (self._self_k[i][:n], self._self_v[i][:n], self._cross_k[i][:n],
                self._cross_v[i][:n])

    @property
    def self_keep(self):
        return self._self_keep[:self.batch_size]

    @property
    def memory_keep(self):
        return None if self._keep is None else self._keep[:self.batch_size]

    def select(self, rows):
        """Keep rows ``rows`` (indices into the current batch, in their new
        order; repeats allowed up to the allocated batch size)."""
        rows = np.asarray(rows, dtype=np.intp).reshape(-1)
        n = rows.size
        if n and (rows.min() < 0 or rows.max() >= self.batch_size):
            raise ValueError(f"select: rows must be in [0, {self.batch_size}), got "
                             f"{rows.min()}..{rows.max()}")
        if n > self.capacity:
            raise ValueError(f"select: {n} rows exceed the {self.capacity} allocated")
        t = self.length
        for bufs in (self._self_k, self._self_v):
            for a in bufs:
                a[:n, :, :t] = a[rows, :, :t]
        self._self_keep[:n, :t] = self._self_keep[rows, :t]
        self.target_padded = not self._self_keep[:n, :t].all()
        for bufs in (self._cross_k, self._cross_v):
            for a in bufs:
                a[:n] = a[rows]
        if self._keep is not None:
            self._keep[:n] = self._keep[rows]
        self.batch_size = n
        return self

class Transformer(Module):
    """The encoder-decoder Transformer (section 3, Figure 1), as
    torch.nn.Transformer: encoder and decoder stacks, each ending with the
    final LayerNorm torch always adds.  Matrices are initialised with
    Xavier-uniform, as torch does."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, activation="relu", custom_encoder=None,
                 custom_decoder=None, layer_norm_eps=1e-5, batch_first=False,
                 norm_first=False, bias=True, device=None, dtype=None, *, rng=None):
        super().__init__()
        for name, custom, kind in (("custom_encoder", custom_encoder, TransformerEncoder),
                                   ("custom_decoder", custom_decoder, TransformerDecoder)):
            if custom is not None and not isinstance(custom, kind):
                raise ValueError(f"Transformer: {name} must be a pytransformer.nn."
                                 f"{kind.__name__} (other modules are not supported)")
        rng = _rng(rng)

        def stack(layer_cls, stack_cls, num_layers):  # N layers and the final norm
            layer = layer_cls(d_model, nhead, dim_feedforward, dropout, activation,
                              layer_norm_eps, batch_first, norm_first, bias, rng=NO_INIT)
            return stack_cls(layer, num_layers, LayerNorm(d_model, eps=layer_norm_eps, bias=bias))

        self.encoder = custom_encoder if custom_encoder is not None else \
            stack(TransformerEncoderLayer, TransformerEncoder, num_encoder_layers)
        self.decoder = custom_decoder if custom_decoder is not None else \
            stack(TransformerDecoderLayer, TransformerDecoder, num_decoder_layers)
        self.d_model = int(d_model)
        self.nhead = int(nhead)
        self.batch_first = bool(batch_first)
        if not isinstance(rng, _NoInit):
            self._reset_parameters(rng)

    def _reset_parameters(self, rng):
        """Xavier-uniform for every matrix; torch's own Transformer does this,
        leaving biases as their modules set them."""
        fresh = {k: xavier_uniform(rng, p.shape)
                 for k, p in self.state_dict().items() if p.ndim > 1}
        self._load(fresh, strict=False, copy=False)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
        src = ops.as_float32(src, "src")
        tgt = ops.as_float32(tgt, "tgt")
        batch = 0 if self.batch_first else 1
        if src.ndim != tgt.ndim or src.ndim not in (2, 3):
            raise ValueError(f"Transformer: src and tgt must both be 3-d (batched) or 2-d, "
                             f"got {src.shape} and {tgt.shape}")
        if src.ndim == 3 and src.shape[batch] != tgt.shape[batch]:
            raise ValueError(f"Transformer: the batch number of src {src.shape} and tgt "
                             f"{tgt.shape} must be equal")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ValueError(f"Transformer: the feature number of src {src.shape} and tgt "
                             f"{tgt.shape} must be equal to d_model={self.d_model}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz, device=None, dtype=None):
        """The look-ahead mask (section 3.2.3): -inf above the diagonal, 0 elsewhere."""
        return np.triu(np.full((sz, sz), -np.inf, dtype=np.float32), 1)

    @classmethod
    def _from_torch_config(cls, m):
        enc, dec = m.encoder, m.decoder
        if enc.norm is None or dec.norm is None or not len(enc.layers) or not len(dec.layers):
            raise ValueError("from_torch: a Transformer with a custom encoder or decoder "
                             "(no final norm, or no layers) is not supported")
        layer = enc.layers[0]
        # each stack from its own layers: torch's decoder may compute another
        # activation than its encoder (nn.Transformer gives its decoder ReLU
        # when the activation is a GELU module)
        return cls(layer.self_attn.embed_dim, layer.self_attn.num_heads, len(enc.layers),
                   len(dec.layers), layer.linear1.out_features, dropout=layer.dropout.p,
                   activation=_torch_activation(layer), layer_norm_eps=layer.norm1.eps,
                   batch_first=layer.self_attn.batch_first, norm_first=layer.norm_first,
                   bias=layer.linear1.bias is not None,
                   custom_encoder=TransformerEncoder._from_torch_config(enc),
                   custom_decoder=TransformerDecoder._from_torch_config(dec), rng=NO_INIT)
