"""Grouped-query attention: ops.scaled_dot_product_attention(enable_gqa=True)
against torch's SDPA with enable_gqa=True -- masks, causal, padded keys,
multi-query (one kv head), on every kernel path and thread count -- and a
decoding step over the first positions of a (N, Hkv, max_len, D) cache, read
where it lies."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pytransformer import _kernels, ops
from conftest import assert_close, attention_tol


def torch_gqa(q, k, v, attn_mask=None, is_causal=False, scale=None):
    m = None if attn_mask is None else torch.from_numpy(np.ascontiguousarray(attn_mask))
    with torch.no_grad():
        out = F.scaled_dot_product_attention(
            *(torch.from_numpy(np.ascontiguousarray(a)) for a in (q, k, v)), attn_mask=m,
            is_causal=is_causal, scale=scale, enable_gqa=True).numpy()
    return np.nan_to_num(out, nan=0.0)   # a query with nothing to attend to: zeros


def check(q, k, v, attn_mask=None, is_causal=False, scale=None, what=""):
    out = ops.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                           scale=scale, enable_gqa=True)
    ref = torch_gqa(q, k, v, attn_mask, is_causal, scale)
    s = 1.0 / np.sqrt(q.shape[-1]) if scale is None else abs(scale)
    score_max = float(np.linalg.norm(q, axis=-1).max() * np.linalg.norm(k, axis=-1).max() * s)
    assert_close(out, ref, attention_tol(q.shape[-1], k.shape[-2], score_max,
                                         float(np.abs(v).max())), what=what)
    return out


SHAPES = [  # N, Hq, Hkv, L, S, E
    (2, 4, 2, 5, 9, 16),
    (1, 9, 3, 17, 33, 64),     # SmolLM2-135M's heads
    (2, 6, 1, 8, 130, 32),     # multi-query: one kv head
    (2, 3, 3, 7, 7, 8),        # groups of one
    (1, 4, 2, 70, 70, 80),
]
MASKS = ["none", "causal", "bool-LS", "bool-N1LS", "float-NH1S", "padding"]


def make_mask(rng, kind, N, Hq, L, S):
    if kind in ("none", "causal"):
        return None
    if kind == "padding":       # (N, 1, 1, S) key padding; the last sequence fully padded
        keep = np.ones((N, 1, 1, S), bool)
        keep[0, ..., S - S // 3:] = False
        keep[-1] = False
        return keep
    dtype, form = kind.split("-")
    shape = {"LS": (L, S), "N1LS": (N, 1, L, S), "NH1S": (N, Hq, 1, S)}[form]
    if dtype == "bool":
        return rng.random(shape) > 0.3
    m = rng.standard_normal(shape).astype(np.float32)
    m[rng.random(shape) < 0.2] = -np.inf
    return m


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", MASKS)
def test_gqa_matches_torch(isa, threads, rng, shape, kind):
    N, Hq, Hkv, L, S, E = shape
    q = rng.standard_normal((N, Hq, L, E), dtype=np.float32) * 1.5
    k = rng.standard_normal((N, Hkv, S, E), dtype=np.float32) * 1.5
    v = rng.standard_normal((N, Hkv, S, E), dtype=np.float32)
    check(q, k, v, make_mask(rng, kind, N, Hq, L, S), kind == "causal",
          what=f"{isa} {shape} {kind}")


@pytest.mark.parametrize("qs, ks, vs", [
    ((2, 4, 5, 8), (2, 2, 7, 8), (2, 1, 7, 6)),    # key and value grouped differently
    ((2, 4, 5, 8), (2, 4, 7, 8), (2, 2, 7, 8)),
    ((4, 5, 8), (2, 7, 8), (2, 7, 8)),              # no batch dim: heads first
    ((2, 4, 5, 8), (1, 2, 7, 8), (1, 2, 7, 8)),     # batch broadcast as well
    ((3, 2, 4, 5, 8), (3, 2, 2, 7, 8), (3, 2, 2, 7, 8)),
])
def test_gqa_shapes(isa, rng, qs, ks, vs):
    q, k, v = (rng.standard_normal(s, dtype=np.float32) for s in (qs, ks, vs))
    check(q, k, v, scale=0.4, what=f"{qs} {ks} {vs}")


def test_gqa_is_attention_over_repeated_heads(rng):
    """Bit for bit what repeating the kv heads (torch's repeat_interleave on
    dim -3) and attending head by head gives: the kernel only reads them by
    index."""
    q = rng.standard_normal((2, 6, 9, 32), dtype=np.float32)
    k = rng.standard_normal((2, 2, 11, 32), dtype=np.float32)
    v = rng.standard_normal((2, 2, 11, 32), dtype=np.float32)
    keep = rng.random((2, 1, 9, 11)) > 0.2
    out = ops.scaled_dot_product_attention(q, k, v, keep, enable_gqa=True)
    rep = ops.scaled_dot_product_attention(q, np.repeat(k, 3, 1), np.repeat(v, 3, 1), keep)
    np.testing.assert_array_equal(out, rep)


def test_gqa_decoding_step_reads_the_cache_in_place(isa, rng, monkeypatch):
    """A decode step of a grouped-query model: keys and values are the first
    t positions of a (N, Hkv, max_len, D) cache, passed as views; the kernel
    gets them without a copy and the result is torch's."""
    N, Hq, Hkv, max_len, D = 3, 9, 3, 64, 64
    k_cache = rng.standard_normal((N, Hkv, max_len, D), dtype=np.float32)
    v_cache = rng.standard_normal((N, Hkv, max_len, D), dtype=np.float32)
    seen = []
    kernel = _kernels.attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((k, v))
        return kernel(q, k, v, *args, **kwargs)

    monkeypatch.setattr(_kernels, "attention", spy)
    for t in (1, 2, 37, 64):
        q = rng.standard_normal((N, Hq, 1, D), dtype=np.float32)
        keep = np.ones((N, 1, 1, t), bool)
        keep[1, ..., :t // 2] = False            # a left-padded prompt
        for mask in (None, keep):
            seen.clear()
            check(q, k_cache[:, :, :t], v_cache[:, :, :t], mask, what=f"t={t}")
            k, v = seen[0]
            assert np.shares_memory(k, k_cache) and np.shares_memory(v, v_cache), t


def test_gqa_off_needs_broadcastable_heads(rng):
    q = rng.standard_normal((2, 4, 5, 8), dtype=np.float32)
    k = rng.standard_normal((2, 2, 7, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="broadcast"):
        ops.scaled_dot_product_attention(q, k, k)


@pytest.mark.parametrize("qs, ks, vs, words", [
    ((2, 4, 5, 8), (2, 3, 7, 8), (2, 3, 7, 8), ["3 heads of key", "4 heads of query"]),
    ((2, 4, 5, 8), (2, 8, 7, 8), (2, 8, 7, 8), ["8 heads of key"]),
    ((2, 4, 5, 8), (2, 2, 7, 8), (2, 3, 7, 8), ["3 heads of value"]),
    ((5, 8), (7, 8), (7, 8), ["head dimension", "(5, 8)"]),
])
def test_gqa_bad_heads(rng, qs, ks, vs, words):
    q, k, v = (rng.standard_normal(s, dtype=np.float32) for s in (qs, ks, vs))
    with pytest.raises(ValueError) as e:
        ops.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
