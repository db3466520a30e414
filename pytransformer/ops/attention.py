"""Scaled dot-product attention (Vaswani et al. 2017, section 3.2.1) and the
look-ahead mask (section 3.2.3), on the fused kernel (csrc/attention/)."""
import functools
import math

import numpy as np

from .. import _kernels
from .checks import as_float32, check_float, floating, kernel_ready
from .matmul import batch_index, matmul
from .rowwise import mask_operand, masked_softmax, softmax

__all__ = ["scaled_dot_product_attention", "attention_with_weights", "look_ahead_mask"]


def look_ahead_mask(L, S=None):
    """The look-ahead (causal) mask of section 3.2.3 as a keep-mask, SDPA's
    convention: (L, S) bool, True where query i may attend key j, i.e. j <= i
    (top-left aligned, as torch's is_causal).  ``~look_ahead_mask(L)`` is
    torch.nn's "True = may not attend" form."""
    return np.tri(L, L if S is None else S, dtype=bool)


def _attention_mask(attn_mask, is_causal, L, S):
    """The SDPA mask as one bool-or-float array (None for no mask)."""
    if is_causal:
        if attn_mask is not None:
            raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal, "
                             "not both")
        return look_ahead_mask(L, S)
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
    a = floating(x, name)
    return a if _rows_contiguous(a) else as_float32(a, name)


def _rows_contiguous(a):
    return a.dtype == np.float32 and a.ndim >= 2 and a.strides[-1] == 4 and \
        a.strides[-2] == 4 * a.shape[-1] and min(a.strides[:-2], default=0) >= 0


def _same_batches(q, k, v):
    """q, k, v are kernel-ready as they are: float32, q C-contiguous, k and v
    with contiguous rows, equal leading (batch) shapes, E > 0."""
    return type(q) is np.ndarray and q.ndim >= 2 and kernel_ready(q, q.ndim) and \
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


def _gqa_heads(q, a, name):
    """(a's leading shape with its heads counted as query heads, the group
    size): grouped-query attention's view of key or value `a`."""
    if q.ndim < 3 or a.ndim < 3:
        raise ValueError(f"scaled_dot_product_attention: enable_gqa needs a head dimension "
                         f"(..., H, L, E): query {q.shape}, {name} {a.shape}")
    hq, h = q.shape[-3], a.shape[-3]
    if h == 0 or hq % h:
        raise ValueError(f"scaled_dot_product_attention: enable_gqa: the {h} heads of {name} "
                         f"{a.shape} must divide the {hq} heads of query {q.shape}")
    return a.shape[:-3] + (hq,), hq // h


@functools.lru_cache(maxsize=256)
def _group_index(lead, group, batch):
    """batch_index for an operand whose heads (the last leading dim) are each
    shared by `group` query heads: head h of the result reads head h // group."""
    if group == 1:
        out = batch_index(lead, batch)
    else:
        idx = np.repeat(np.arange(math.prod(lead), dtype=np.int64).reshape(lead), group, -1)
        out = np.ascontiguousarray(np.broadcast_to(idx, batch).ravel())
    if out is not None:
        out.flags.writeable = False   # shared by every call of this shape
    return out


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
    scale = 1.0 / np.sqrt(E) if scale is None else check_float(scale, "scale")
    scores = matmul(q, np.swapaxes(k, -1, -2))
    scores *= np.float32(scale)
    mask = _attention_mask(attn_mask, is_causal, L, S)
    if mask is None:
        weights = softmax(scores, -1)
    else:
        weights = masked_softmax(scores, mask, -1)
    return matmul(weights, v), weights


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
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

    ``enable_gqa=True``: grouped-query attention (Ainslie et al. 2023), as
    torch's: query (..., Hq, L, E) with key (..., Hk, S, E) and value
    (..., Hv, S, Ev), Hq a multiple of Hk and of Hv; query head h reads key
    head h // (Hq / Hk) (torch's ``repeat_interleave`` on dim -3) -- by index,
    the shared heads are never copied.  Without it the head dims must
    broadcast as any other batch dim.

    Computed by the fused kernel (csrc/attention.c): keys visited block by
    block with an online softmax, so memory grows linearly with the sequence
    length and the L x S weights are never formed.  key and value whose rows
    are contiguous are read where they lie, however far apart their batches
    (the first positions of a KV cache: no copy).  Use
    :func:`attention_with_weights` to get them.

    A decoding step of a grouped-query model: with a cache ``k_cache``,
    ``v_cache`` of shape (N, Hkv, max_len, D) filled for positions < t + 1,
    ``scaled_dot_product_attention(q, k_cache[:, :, :t + 1], v_cache[:, :, :t +
    1], attn_mask=keep, enable_gqa=True)`` with q (N, Hq, 1, D) and keep None
    or bool (N, 1, 1, t + 1) (False at padded positions) reads the cache
    where it lies: the views' rows are contiguous and their (N, Hkv) batches
    evenly spaced, so nothing is copied, and each of the Hq // Hkv query
    heads of a group reads its kv head by index.  (is_causal is top-left
    aligned, as torch's: a step with L < S passes its mask explicitly.)
    """
    _no_dropout(dropout_p)
    if attn_mask is None and not is_causal and _same_batches(query, key, value) and \
            (not enable_gqa or query.ndim >= 3):
        # the common case (a decoding step): no broadcasting, no mask
        lead, (L, E), (S, Ev) = query.shape[:-2], query.shape[-2:], value.shape[-2:]
        B = math.prod(lead)
        scale = 1.0 / np.sqrt(E) if scale is None else check_float(scale, "scale")
        out = _kernels.attention(query.reshape(B, L, E), key.reshape(B, S, E),
                                 value.reshape(B, S, Ev), None, None, None, scale)
        return out.reshape(lead + (L, Ev))
    q, k, v = _check_qkv(query, key, value)
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal, "
                         "not both")
    L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    if E == 0:
        raise ValueError(f"scaled_dot_product_attention: query {q.shape} and key {k.shape} "
                         f"have an empty embedding dimension E")
    k_lead, v_lead = k.shape[:-2], v.shape[:-2]
    k_group = v_group = 1
    if enable_gqa:
        k_lead, k_group = _gqa_heads(q, k, "key")
        v_lead, v_group = _gqa_heads(q, v, "value")
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k_lead, v_lead)
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: the batch dimensions of query "
                         f"{q.shape}, key {k.shape} and value {v.shape} do not "
                         f"broadcast") from None
    scale = 1.0 / np.sqrt(E) if scale is None else check_float(scale, "scale")
    mask = strides = None
    if attn_mask is not None:
        mask, strides = mask_operand(
            attn_mask, batch + (L, S), "attn_mask",
            f"the attention scores (query {q.shape}, key {k.shape})")

    def batches(a):
        return a.reshape((math.prod(a.shape[:-2]),) + a.shape[-2:])

    out = _kernels.attention(
        batches(q), batches(k), batches(v),
        batch_index(q.shape[:-2], batch), _group_index(k.shape[:-2], k_group, batch),
        _group_index(v.shape[:-2], v_group, batch), scale, mask, strides, batch, bool(is_causal),
        math.prod(batch))
    return out.reshape(batch + (L, Ev))

