"""ops.scaled_dot_product_attention (the fused kernel) against
torch.nn.functional.scaled_dot_product_attention: every mask kind and
broadcast shape, L != S, head dims 32..128 and odd ones, long sequences,
broadcast batch and head dims, every kernel path and thread count; fully
masked rows give zeros; a query row is bit-identical whatever L and the
thread count; bad arguments raise ValueError."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pytransformer import _kernels, ops
from conftest import ISAS, assert_close, attention_tol


def torch_sdpa(q, k, v, attn_mask=None, is_causal=False, scale=None):
    """The oracle; broadcast batch dims are expanded first, and rows torch
    leaves NaN (nothing to attend to) compared as zeros."""
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    t = [torch.from_numpy(np.ascontiguousarray(x)).expand(batch + x.shape[-2:])
         for x in (q, k, v)]
    m = None if attn_mask is None else torch.from_numpy(np.ascontiguousarray(attn_mask))
    with torch.no_grad():
        out = F.scaled_dot_product_attention(*t, attn_mask=m, is_causal=is_causal,
                                             scale=scale).numpy()
    return np.nan_to_num(out, nan=0.0)


def check(q, k, v, attn_mask=None, is_causal=False, scale=None, what=""):
    out = ops.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           is_causal=is_causal, scale=scale)
    ref = torch_sdpa(q, k, v, attn_mask, is_causal, scale)
    E, S = q.shape[-1], k.shape[-2]
    s = 1.0 / np.sqrt(E) if scale is None else abs(scale)
    # largest |score|: max |q_i| |k_j| * scale bounds it without forming L x S
    score_max = float(np.linalg.norm(q, axis=-1).max() * np.linalg.norm(k, axis=-1).max() * s)
    tol = attention_tol(E, S, score_max, float(np.abs(v).max()))
    assert_close(out, ref, atol=tol, what=what)
    return out


def qkv(rng, qshape, kshape, vshape, spread=1.0):
    return (rng.standard_normal(qshape, dtype=np.float32) * spread,
            rng.standard_normal(kshape, dtype=np.float32) * spread,
            rng.standard_normal(vshape, dtype=np.float32))


def make_mask(rng, kind, shape):
    if kind == "bool":
        return rng.random(shape) > 0.3
    m = rng.standard_normal(shape).astype(np.float32)
    m[rng.random(shape) < 0.2] = -np.inf
    return m


SHAPES = [  # N, H, L, S, E, Ev
    (2, 3, 17, 33, 32, 32),
    (1, 2, 70, 130, 64, 64),
    (2, 2, 129, 64, 80, 80),
    (1, 1, 5, 300, 128, 128),
    (2, 1, 9, 20, 7, 5),
]
MASKS = [
    ("none", None), ("causal", None),
    ("bool", "LS"), ("bool", "N1LS"), ("bool", "NH1S"),
    ("float", "LS"), ("float", "N1LS"), ("float", "NH1S"),
]


def mask_shape(form, N, H, L, S):
    return {"LS": (L, S), "N1LS": (N, 1, L, S), "NH1S": (N, H, 1, S)}[form]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind,form", MASKS, ids=[f"{k}-{f}" for k, f in MASKS])
def test_sdpa_matches_torch(isa, threads, rng, shape, kind, form):
    N, H, L, S, E, Ev = shape
    q, k, v = qkv(rng, (N, H, L, E), (N, H, S, E), (N, H, S, Ev), spread=1.5)
    mask = None if form is None else make_mask(rng, kind, mask_shape(form, N, H, L, S))
    check(q, k, v, attn_mask=mask, is_causal=kind == "causal", what=f"{isa} {shape} {kind}")


LONG = [(1024, 1024, 64, "none"), (2048, 2048, 64, "causal"), (1500, 2048, 128, "bool"),
        (1024, 1024, 80, "float")]
# the scalar path is checked up to 1024 x 1024; beyond that it is only slow
LONG_CASES = [(isa, *case) for isa in ISAS for case in LONG
              if isa != "scalar" or case[0] * case[1] <= 1024 * 1024]


@pytest.mark.parametrize("path,L,S,E,kind", LONG_CASES)
def test_sdpa_long_sequences(rng, path, L, S, E, kind):
    before = _kernels.get_isa()
    _kernels.set_isa(path)
    try:
        _check_long(rng, path, L, S, E, kind)
    finally:
        _kernels.set_isa(before)


def _check_long(rng, isa, L, S, E, kind):
    q, k, v = qkv(rng, (1, 2, L, E), (1, 2, S, E), (1, 2, S, E))
    mask = make_mask(rng, kind, (L, S)) if kind in ("bool", "float") else None
    check(q, k, v, attn_mask=mask, is_causal=kind == "causal", what=f"{isa} long {kind}")


@pytest.mark.parametrize("qs,ks,vs", [
    ((2, 4, 10, 32), (1, 4, 12, 32), (2, 1, 12, 16)),   # heads and batch broadcast
    ((3, 10, 32), (12, 32), (12, 32)),                    # shared keys and values
    ((10, 64), (2, 3, 12, 64), (3, 12, 64)),              # query broadcast over batch
])
def test_sdpa_broadcast_batch(isa, threads, rng, qs, ks, vs):
    q, k, v = qkv(rng, qs, ks, vs)
    L, S = qs[-2], ks[-2]
    check(q, k, v, what="broadcast")
    check(q, k, v, attn_mask=make_mask(rng, "bool", (L, S)), what="broadcast bool")
    check(q, k, v, is_causal=True, what="broadcast causal")


def test_sdpa_scale_and_dtypes(rng):
    q, k, v = qkv(rng, (2, 6, 32), (2, 9, 32), (2, 9, 8))
    check(q, k, v, scale=0.3, what="scale")
    check(q, k, v, scale=-0.05, what="negative scale")
    out = ops.scaled_dot_product_attention(q.astype(np.float64), k, v,
                                           attn_mask=np.zeros((6, 9)))
    assert out.dtype == np.float32
    assert_close(out, torch_sdpa(q, k, v), atol=1e-5, what="float64 input")
    # non-contiguous inputs are copied, not misread
    qt = np.ascontiguousarray(np.swapaxes(q, -1, -2)).swapaxes(-1, -2)
    assert_close(ops.scaled_dot_product_attention(qt, k, v), torch_sdpa(q, k, v),
                 atol=1e-5, what="strided query")


def test_sdpa_fully_masked_rows_are_zero(isa, threads, rng):
    N, H, L, S, E = 2, 2, 40, 150, 64
    q, k, v = qkv(rng, (N, H, L, E), (N, H, S, E), (N, H, S, E))
    bm = rng.random((N, 1, L, S)) > 0.5
    bm[:, :, 3] = False
    bm[1, :, 20:25] = False
    fm = np.where(rng.random((L, S)) > 0.5, 0.0, -np.inf).astype(np.float32)
    fm[7] = -np.inf
    for mask in (bm, fm):
        out = check(q, k, v, attn_mask=mask, what="fully masked")
        assert not np.isnan(out).any()
        if mask is bm:
            assert (out[:, :, 3] == 0).all() and (out[1, :, 20:25] == 0).all()
        else:
            assert (out[:, :, 7] == 0).all()


def test_sdpa_row_invariance(isa, rng):
    """A query row's output does not depend on how many other queries are
    computed with it, nor on the thread count: bit-identical."""
    L, S, E = 300, 700, 64
    q, k, v = qkv(rng, (2, L, E), (2, S, E), (2, S, E))
    mask = make_mask(rng, "float", (2, L, S))
    before = _kernels.get_num_threads()
    try:
        _kernels.set_num_threads(1)
        one = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        one_causal = ops.scaled_dot_product_attention(q, k, v, is_causal=True)
        _kernels.set_num_threads(2)
        two = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        two_causal = ops.scaled_dot_product_attention(q, k, v, is_causal=True)
        assert np.array_equal(one, two)
        assert np.array_equal(one_causal, two_causal)
        for r in (0, 1, 63, 64, 65, 150, 299):
            row = ops.scaled_dot_product_attention(q[:, r:r + 1], k, v,
                                                   attn_mask=mask[:, r:r + 1])
            assert np.array_equal(row, one[:, r:r + 1]), f"row {r} differs at L=1"
        # causal: the first rows of a long problem are the rows of a short one
        short = ops.scaled_dot_product_attention(q[:, :100], k, v, is_causal=True)
        assert np.array_equal(short, one_causal[:, :100])
    finally:
        _kernels.set_num_threads(before)


def test_sdpa_over_the_first_positions_of_a_cache(isa, rng):
    """Keys and values given as the first t positions of longer buffers (a KV
    cache, batches strided) are read in place: torch's result, and the bits
    of the same keys copied out contiguously."""
    N, H, T, E = 2, 3, 40, 64
    q, kc, vc = qkv(rng, (N, H, 2, E), (N, H, T, E), (N, H, T, E))
    for t in (1, 17, 40):
        k, v = kc[:, :, :t], vc[:, :, :t]
        out = check(q, k, v, what=f"t={t}")
        same = ops.scaled_dot_product_attention(q, k.copy(), v.copy())
        assert np.array_equal(out, same)
    # rows that are not contiguous (a transposed view) are copied, not misread
    kt = np.swapaxes(np.swapaxes(kc, -1, -2).copy(), -1, -2)
    assert np.array_equal(check(q, kt, vc, what="transposed keys"),
                          ops.scaled_dot_product_attention(q, kc, vc))


def test_attention_kernel_rejects_strided_rows(rng):
    k = rng.standard_normal((2, 8, 16), dtype=np.float32)
    q = np.ones((2, 1, 16), np.float32)
    for bad in (k[:, :, ::2], k[:, ::2], k[::-1], np.swapaxes(k, 1, 2)):
        with pytest.raises(ValueError, match="contiguous"):
            _kernels.attention(q[:, :, :bad.shape[2]], bad, bad, None, None, None, 0.25)


def test_sdpa_empty(rng):
    q, k, v = qkv(rng, (2, 0, 8), (2, 5, 8), (2, 5, 4))
    assert ops.scaled_dot_product_attention(q, k, v).shape == (2, 0, 4)
    q, k, v = qkv(rng, (2, 3, 8), (2, 0, 8), (2, 0, 4))
    out = ops.scaled_dot_product_attention(q, k, v)
    assert out.shape == (2, 3, 4) and (out == 0).all()


def test_attention_with_weights_matches_torch(rng):
    q, k, v = qkv(rng, (2, 3, 11, 32), (2, 3, 13, 32), (2, 3, 13, 32))
    mask = make_mask(rng, "bool", (11, 13))
    out, w = ops.attention_with_weights(q, k, v, attn_mask=mask)
    assert_close(out, torch_sdpa(q, k, v, mask), atol=1e-5, what="need_weights output")
    s = torch.from_numpy(q) @ torch.from_numpy(k).transpose(-1, -2) / np.sqrt(32)
    s = s.masked_fill(~torch.from_numpy(mask), float("-inf"))
    assert_close(w, np.nan_to_num(torch.softmax(s, -1).numpy()), atol=1e-6, what="weights")


@pytest.mark.parametrize("args,kwargs,words", [
    (((2, 5, 8), (2, 6, 7), (2, 6, 4)), {}, ["key", "(2, 6, 7)"]),
    (((2, 5, 8), (2, 6, 8), (2, 7, 4)), {}, ["value", "(2, 7, 4)"]),
    (((8,), (6, 8), (6, 4)), {}, ["2 dimensions", "(8,)"]),
    (((2, 5, 8), (3, 6, 8), (3, 6, 4)), {}, ["broadcast", "(2, 5, 8)", "(3, 6, 8)"]),
    (((2, 5, 0), (2, 6, 0), (2, 6, 4)), {}, ["E"]),
    (((2, 5, 8), (2, 6, 8), (2, 6, 4)), {"attn_mask": np.ones((5, 7), bool)},
     ["attn_mask", "(5, 7)"]),
    (((2, 5, 8), (2, 6, 8), (2, 6, 4)), {"attn_mask": np.ones((3, 2, 5, 6), bool)},
     ["attn_mask", "(3, 2, 5, 6)"]),
    (((2, 5, 8), (2, 6, 8), (2, 6, 4)), {"attn_mask": np.ones((5, 6), np.int32)},
     ["attn_mask", "int32"]),
    (((2, 5, 8), (2, 6, 8), (2, 6, 4)),
     {"attn_mask": np.ones((5, 6), bool), "is_causal": True}, ["is_causal"]),
])
def test_sdpa_bad_input(rng, args, kwargs, words):
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in args)
    with pytest.raises(ValueError) as e:
        ops.scaled_dot_product_attention(q, k, v, **kwargs)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_sdpa_rejects_integer_arrays():
    q = np.ones((2, 5, 8), dtype=np.int64)
    k = np.ones((2, 6, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="query"):
        ops.scaled_dot_product_attention(q, k, k)


def test_sdpa_takes_torchs_argument_order(rng):
    q, k, v = qkv(rng, (2, 3, 6, 16), (2, 3, 9, 16), (2, 3, 9, 8))
    # (query, key, value, attn_mask, dropout_p, is_causal, scale), as torch
    ours = ops.scaled_dot_product_attention(q, k, v, None, 0.0, True, 0.3)
    theirs = F.scaled_dot_product_attention(torch.from_numpy(q), torch.from_numpy(k),
                                            torch.from_numpy(v), None, 0.0, True, scale=0.3)
    score_max = np.linalg.norm(q, axis=-1).max() * np.linalg.norm(k, axis=-1).max() * 0.3
    assert_close(ours, theirs.numpy(), attention_tol(16, 9, score_max, np.abs(v).max()))
    with pytest.raises(ValueError, match="dropout_p"):
        ops.scaled_dot_product_attention(q, k, v, dropout_p=0.1)
    with pytest.raises(ValueError, match="dropout_p"):
        ops.attention_with_weights(q, k, v, None, 0.5)


def test_masks_over_many_leading_dims_match_torch():
    """torch has no limit on the batch dims of a mask: ours merges the
    leading dims the mask broadcasts alike, so 19 batch dims run."""
    rng = np.random.default_rng(0)
    batch = (1, 2) * 9 + (3,)
    q = rng.standard_normal(batch + (4, 8), dtype=np.float32)
    k = rng.standard_normal(batch + (5, 8), dtype=np.float32)
    m = rng.random((1, 2) + (1,) * 17 + (4, 5)) > 0.3
    out = ops.scaled_dot_product_attention(q, k, k, attn_mask=m)
    ref = torch.nn.functional.scaled_dot_product_attention(
        *map(torch.from_numpy, (q, k, k)), attn_mask=torch.from_numpy(m))
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5, rtol=1e-5)
    x = rng.standard_normal((1, 2) * 9 + (6,), dtype=np.float32)
    mm = rng.random((1, 2) + (1,) * 16 + (6,)) > 0.3
    got = ops.masked_softmax(x, mm)
    want = torch.softmax(torch.from_numpy(x).masked_fill(~torch.from_numpy(mm), -np.inf), -1)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6)


def test_a_mask_that_needs_too_many_strides_says_so():
    """Only a broadcast that alternates over more than 16 dims is refused,
    and the message counts what it needs."""
    rng = np.random.default_rng(1)
    batch = (2, 2) * 9 + (3,)
    q = rng.standard_normal(batch + (4, 8), dtype=np.float32)
    m = rng.random((2, 1) * 9 + (3, 4, 5)) > 0.3
    k = rng.standard_normal(batch + (5, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"attn_mask: broadcasting it over shape .* needs 19 "
                                         r"separate leading strides; at most 16"):
        ops.scaled_dot_product_attention(q, k, k, attn_mask=m)
