"""torch.nn.functional-shaped operations on numpy arrays, computed by the C kernels.

Every function takes and returns numpy arrays; compute is float32.  Inputs of
another float dtype, or not C-contiguous, are converted (a copy), never
misread.  Integer, bool (where floats are needed), complex and object arrays,
and shapes that do not fit, raise ``ValueError`` naming the argument and the
shapes.  Names, argument order and semantics follow ``torch.nn.functional``.
"""
import math
import numbers
import operator

import numpy as np

from . import _kernels
from ._kernels import PackedMatrix

__all__ = [
    "matmul", "linear", "pack_weight", "PackedMatrix", "softmax", "masked_softmax",
    "layer_norm", "relu", "gelu", "scaled_dot_product_attention", "attention_with_weights",
]


# --------------------------------------------------------------- arguments --

def _floating(x, name):
    """x as an array of a floating-point dtype (not converted yet)."""
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise ValueError(f"{name}: a floating-point array is needed, got dtype {a.dtype} "
                         f"with shape {a.shape}")
    return a


def as_float32(x, name):
    """x as a C-contiguous float32 array (a copy only when needed)."""
    return np.asarray(_floating(x, name), dtype=np.float32, order="C")  # 0-d stays 0-d


def _kernel_ready(x, ndim):
    """x is already what the kernels take: a float32 C-contiguous ndarray of
    rank ndim (the common case, which skips the conversions)."""
    return type(x) is np.ndarray and x.ndim == ndim and x.dtype == np.float32 and \
        x.flags.c_contiguous


def _normalize_dim(dim, ndim, name="dim"):
    if not isinstance(dim, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {dim!r}")
    lo = -max(ndim, 1)
    if not lo <= dim < max(ndim, 1):
        raise ValueError(f"{name}={dim} is out of range for an array of rank {ndim}")
    return dim % max(ndim, 1)


def _batch_index(shape, batch):
    """For each batch of the broadcast result, the batch of an operand of
    leading shape `shape` it reads (numpy broadcasting by index, no copies);
    None when that is the batch itself."""
    if tuple(shape) == tuple(batch):
        return None
    n = math.prod(shape)
    return np.ascontiguousarray(
        np.broadcast_to(np.arange(n, dtype=np.int64).reshape(shape), batch).ravel())


_ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh")


# ------------------------------------------------------------------ matmul --

def _gemm_operand(x, name):
    """(array3d, transposed): a C-contiguous batch, or the transpose of one."""
    a = _floating(x, name)
    # A transposed view of a C-contiguous float32 matrix is passed as-is, with
    # the kernel told to read it transposed: no copy.
    if a.dtype == np.float32 and a.ndim >= 2 and not a.flags.c_contiguous:
        t = np.swapaxes(a, -1, -2)
        if t.flags.c_contiguous:
            return t.reshape((math.prod(t.shape[:-2]),) + t.shape[-2:]), True
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.reshape((math.prod(a.shape[:-2]),) + a.shape[-2:]), False


def matmul(a, b):
    """Matrix product with numpy/torch.matmul semantics (1-d promotion, batch
    broadcasting)."""
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.ndim == 0 or b_arr.ndim == 0:
        raise ValueError(f"matmul: both arguments need at least one dimension, got shapes "
                         f"{a_arr.shape} and {b_arr.shape}")
    a_vec, b_vec = a_arr.ndim == 1, b_arr.ndim == 1
    if a_vec:
        a_arr = a_arr[None, :]
    if b_vec:
        b_arr = b_arr[:, None]
    if a_arr.shape[-1] != b_arr.shape[-2]:
        raise ValueError(f"matmul: shapes {np.shape(a)} and {np.shape(b)} do not align "
                         f"({a_arr.shape[-1]} != {b_arr.shape[-2]})")
    try:
        batch = np.broadcast_shapes(a_arr.shape[:-2], b_arr.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of {np.shape(a)} and {np.shape(b)} "
                         f"do not broadcast") from None
    M, N = a_arr.shape[-2], b_arr.shape[-1]
    out_shape = batch + (M, N)
    a3, ta = _gemm_operand(a_arr, "a")
    b3, tb = _gemm_operand(b_arr, "b")
    nbatch = math.prod(batch)
    if nbatch == 0 or M == 0 or N == 0:
        out = np.zeros(out_shape, dtype=np.float32)   # torch's empty (or K = 0: zero) result
    else:
        out = _kernels.sgemm(a3, b3, ta, tb, a_index=_batch_index(a_arr.shape[:-2], batch),
                             b_index=_batch_index(b_arr.shape[:-2], batch),
                             ).reshape(out_shape)
    if a_vec:
        out = out[..., 0, :]
    if b_vec:
        out = out[..., 0]
    return out


def pack_weight(weight):
    """Pack a Linear weight ``(out_features, in_features)`` once for reuse.

    The result can stand for ``weight`` in :func:`linear`: model weights never
    change at inference, so the GEMM's packing of them is paid once.
    """
    w = as_float32(weight, "weight")
    if w.ndim != 2:
        raise ValueError(f"pack_weight: weight must be 2-d (out_features, in_features), "
                         f"got shape {w.shape}")
    return PackedMatrix(w, True)


def linear(input, weight, bias=None, *, activation=None):
    """y = input @ weight.T + bias, as ``torch.nn.functional.linear``.

    weight: ``(out_features, in_features)`` array, or a :func:`pack_weight`
    result.  ``activation`` (a pytransformer extension: None, 'relu', 'gelu',
    'gelu_tanh') is fused into the GEMM's store.
    """
    if _kernel_ready(input, 2) and type(weight) is PackedMatrix and \
            activation in _ACTIVATIONS and (bias is None or _kernel_ready(bias, 1)):
        return weight.matmul(input, bias, activation)   # which checks the shapes
    x = as_float32(input, "input")
    packed = isinstance(weight, PackedMatrix)
    if packed:
        in_f, out_f = weight.shape
    else:
        w = as_float32(weight, "weight")
        if w.ndim != 2:
            raise ValueError(f"linear: weight must be 2-d (out_features, in_features), "
                             f"got shape {w.shape}")
        out_f, in_f = w.shape
    if x.ndim == 0 or x.shape[-1] != in_f:
        raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape "
                         f"{(out_f, in_f)} (in_features={in_f})")
    b = None
    if bias is not None:
        b = as_float32(bias, "bias")
        if b.shape != (out_f,):
            raise ValueError(f"linear: bias must have shape ({out_f},), got {b.shape}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"linear: unknown activation {activation!r}")
    lead = x.shape[:-1]
    x2 = x.reshape(math.prod(lead), in_f)
    if x2.shape[0] == 0 or out_f == 0:
        return np.zeros(lead + (out_f,), dtype=np.float32)
    if packed:
        y = weight.matmul(x2, b, activation)
    else:
        y = _kernels.sgemm(x2[None], w[None], False, True, b, activation)[0]
    return y.reshape(lead + (out_f,))


# ----------------------------------------------------------------- softmax --

def softmax(input, dim=-1):
    """softmax(input) along ``dim``, as ``torch.softmax`` (a row of -inf gives NaN)."""
    x = as_float32(input, "input")
    if x.ndim == 0:
        return _kernels.softmax(x.reshape(1)).reshape(())
    d = _normalize_dim(dim, x.ndim)
    if d == x.ndim - 1:
        return _kernels.softmax(x)
    xt = np.ascontiguousarray(np.moveaxis(x, d, -1))
    return np.moveaxis(_kernels.softmax(xt), -1, d)


def _mask_operand(mask, shape, name="mask", target="input"):
    """A mask as (contiguous base, element strides broadcasting it to shape):
    how a broadcast mask reaches the kernels without being materialised."""
    m = np.asarray(mask)
    if m.dtype == np.bool_:
        m = np.ascontiguousarray(m)
    elif m.dtype.kind == "f":
        m = np.ascontiguousarray(m, dtype=np.float32)
    else:
        raise ValueError(f"{name}: a bool or floating-point array is needed, got dtype "
                         f"{m.dtype} with shape {m.shape}")
    try:
        view = np.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {m.shape} does not broadcast to {target} of "
                         f"shape {tuple(shape)}") from None
    return m, tuple(s // m.itemsize for s in view.strides)


def masked_softmax(input, mask, dim=-1):
    """softmax of input with a mask, along ``dim``.

    mask broadcasts to input.  A bool mask keeps positions where it is True
    (the scaled_dot_product_attention convention); a float mask is added to
    the input.  A row with nothing kept gives zeros, never NaN.
    """
    x = as_float32(input, "input")
    if x.ndim == 0:
        x = x.reshape(1)
    d = _normalize_dim(dim, x.ndim)
    base, strides = _mask_operand(mask, x.shape)
    if d != x.ndim - 1:  # the softmax axis made the last one, mask with it
        xt = np.ascontiguousarray(np.moveaxis(x, d, -1))
        mt = np.ascontiguousarray(np.moveaxis(np.broadcast_to(base, x.shape), d, -1))
        return np.moveaxis(masked_softmax(xt, mt, -1), -1, d)
    out = _kernels.softmax(x, base, strides)
    return out.reshape(np.shape(input)) if np.ndim(input) == 0 else out


# -------------------------------------------------------------- layer norm --

def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalisation over the trailing ``normalized_shape`` dimensions,
    as ``torch.nn.functional.layer_norm`` (biased variance, eps inside the
    square root)."""
    n = normalized_shape[0] if type(normalized_shape) is tuple and \
        len(normalized_shape) == 1 else normalized_shape
    if type(n) is int and type(input) is np.ndarray and input.ndim and input.size and \
            _kernel_ready(input, input.ndim) and input.shape[-1] == n and \
            (weight is None or _kernel_ready(weight, 1)) and \
            (bias is None or _kernel_ready(bias, 1)):
        return _kernels.layer_norm(input, n, weight, bias, float(eps))  # checks their sizes
    x = as_float32(input, "input")
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (normalized_shape,)
    try:
        ns = tuple(operator.index(s) for s in normalized_shape)
    except TypeError:
        raise ValueError(f"layer_norm: normalized_shape must be an int or a sequence of "
                         f"ints, got {normalized_shape!r}") from None
    if len(ns) == 0 or len(ns) > x.ndim or x.shape[x.ndim - len(ns):] != ns:
        raise ValueError(f"layer_norm: normalized_shape {ns} does not match the trailing "
                         f"dimensions of input of shape {x.shape}")
    n = math.prod(ns)
    params = []
    for arr, name in ((weight, "weight"), (bias, "bias")):
        if arr is None:
            params.append(None)
            continue
        p = as_float32(arr, name)
        if p.shape != ns:
            raise ValueError(f"layer_norm: {name} must have shape {ns}, got {p.shape}")
        params.append(p.reshape(-1))
    if x.size == 0:
        return np.empty_like(x)
    if n == 0:
        return np.empty_like(x)
    return _kernels.layer_norm(x, n, params[0], params[1], float(eps))


# ------------------------------------------------------------- activations --

def relu(input):
    """max(input, 0) element-wise (NaN propagates)."""
    return _kernels.activation(as_float32(input, "input"), "relu")


def gelu(input, approximate="none"):
    """GELU, as ``torch.nn.functional.gelu``: approximate='none' is the exact
    x/2 (1 + erf(x / sqrt 2)); 'tanh' the tanh approximation."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    kind = "gelu" if approximate == "none" else "gelu_tanh"
    return _kernels.activation(as_float32(input, "input"), kind)


# ------------------------------------------------- scaled dot-product attention --

def _attention_mask(attn_mask, is_causal, L, S):
    """The SDPA mask as one bool-or-float array (None for no mask)."""
    if is_causal:
        if attn_mask is not None:
            raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal, "
                             "not both")
        return np.tril(np.ones((L, S), dtype=bool))
    if attn_mask is None:
        return None
    m = np.asarray(attn_mask)
    if m.dtype != np.bool_ and m.dtype.kind != "f":
        raise ValueError(f"attn_mask: a bool or floating-point array is needed, got dtype "
                         f"{m.dtype} with shape {m.shape}")
    return m


def _rows_float32(x, name):
    """x as float32 with C-contiguous rows (last two axes); the leading axes
    may be strided -- the first positions of a KV cache pass without a copy."""
    a = _floating(x, name)
    return a if _rows_contiguous(a) else as_float32(a, name)


def _rows_contiguous(a):
    return a.dtype == np.float32 and a.ndim >= 2 and a.strides[-1] == 4 and \
        a.strides[-2] == 4 * a.shape[-1] and min(a.strides[:-2], default=0) >= 0


def _same_batches(q, k, v):
    """q, k, v are kernel-ready as they are: float32, q C-contiguous, k and v
    with contiguous rows, equal leading (batch) shapes, E > 0."""
    return type(q) is np.ndarray and q.ndim >= 2 and _kernel_ready(q, q.ndim) and \
        type(k) is np.ndarray and type(v) is np.ndarray and k.ndim == v.ndim == q.ndim and \
        k.dtype == v.dtype == np.float32 and q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and \
        q.shape[-1] == k.shape[-1] > 0 and k.shape[-2] == v.shape[-2] and \
        _rows_contiguous(k) and _rows_contiguous(v)


def _check_qkv(query, key, value):
    q = as_float32(query, "query")
    k = _rows_float32(key, "key")
    v = _rows_float32(value, "value")
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ValueError(f"scaled_dot_product_attention: query, key and value need at least "
                         f"2 dimensions, got {q.shape}, {k.shape}, {v.shape}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: query {q.shape}, key {k.shape} and "
                         f"value {v.shape} do not fit (..., L, E), (..., S, E), (..., S, Ev)")
    return q, k, v


def _no_dropout(dropout_p):
    if dropout_p != 0.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p={dropout_p!r}; "
                         f"pytransformer is for inference, dropout_p must be 0")


def attention_with_weights(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                           scale=None):
    """Scaled dot-product attention that also returns the attention weights.

    softmax(Q K^T * scale + mask) V with the probabilities materialised
    (L x S per head): the path for callers that ask for the weights
    (``need_weights``).  Returns ``(output, weights)``.  Same semantics as
    :func:`scaled_dot_product_attention`; fully masked rows give zeros.
    """
    _no_dropout(dropout_p)
    q, k, v = _check_qkv(query, key, value)
    L, S, E = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / np.sqrt(E) if scale is None else float(scale)
    scores = matmul(q, np.swapaxes(k, -1, -2))
    scores *= np.float32(scale)
    mask = _attention_mask(attn_mask, is_causal, L, S)
    if mask is None:
        weights = softmax(scores, -1)
    else:
        weights = masked_softmax(scores, mask, -1)
    return matmul(weights, v), weights


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None):
    """softmax(Q K^T / sqrt(d_k) + mask) V -- "Scaled Dot-Product Attention"
    (Vaswani et al. 2017, section 3.2.1), as
    ``torch.nn.functional.scaled_dot_product_attention``.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev); the
    leading dims broadcast against each other.  attn_mask broadcasts to
    (..., L, S): bool True = may attend, float added.  is_causal: query i
    attends keys j <= i (top-left aligned); not together with attn_mask.
    scale defaults to 1/sqrt(E).  Rows with nothing to attend to give zeros.
    dropout_p is accepted for torch's argument order; inference only, it must
    be 0.

    Computed by the fused kernel (csrc/attention.c): keys visited block by
    block with an online softmax, so memory grows linearly with the sequence
    length and the L x S weights are never formed.  key and value whose rows
    are contiguous are read where they lie, however far apart their batches
    (the first positions of a KV cache: no copy).  Use
    :func:`attention_with_weights` to get them.
    """
    _no_dropout(dropout_p)
    if attn_mask is None and not is_causal and _same_batches(query, key, value):
        # the common case (a decoding step): no broadcasting, no mask
        lead, (L, E), (S, Ev) = query.shape[:-2], query.shape[-2:], value.shape[-2:]
        B = math.prod(lead)
        out = _kernels.attention(query.reshape(B, L, E), key.reshape(B, S, E),
                                 value.reshape(B, S, Ev), None, None, None,
                                 1.0 / np.sqrt(E) if scale is None else float(scale))
        return out.reshape(lead + (L, Ev))
    q, k, v = _check_qkv(query, key, value)
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal, "
                         "not both")
    L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    if E == 0:
        raise ValueError(f"scaled_dot_product_attention: query {q.shape} and key {k.shape} "
                         f"have an empty embedding dimension E")
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: the batch dimensions of query "
                         f"{q.shape}, key {k.shape} and value {v.shape} do not "
                         f"broadcast") from None
    scale = 1.0 / np.sqrt(E) if scale is None else float(scale)
    mask = strides = None
    if attn_mask is not None:
        mask, strides = _mask_operand(
            attn_mask, batch + (L, S), "attn_mask",
            f"the attention scores (query {q.shape}, key {k.shape})")

    def batches(a):
        return a.reshape((math.prod(a.shape[:-2]),) + a.shape[-2:])

    out = _kernels.attention(
        batches(q), batches(k), batches(v),
        _batch_index(q.shape[:-2], batch), _batch_index(k.shape[:-2], batch),
        _batch_index(v.shape[:-2], batch), scale, mask, strides, batch, bool(is_causal),
        math.prod(batch))
    return out.reshape(batch + (L, Ev))
