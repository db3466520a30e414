"""ops.rope (rotary position embedding) against transformers' Llama rotary
embedding (LlamaRotaryEmbedding's cos/sin with apply_rotary_pos_emb: the
"halves" layout) and against Meta's complex-number form (view_as_complex,
torch.polar: the "pairs" layout of GGUF / llama.cpp), at position offsets
up to 30000, odd head counts, head dims 2..128, on every kernel path."""
import numpy as np
import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from pytransformer import _kernels, ops
from conftest import assert_close, rope_tol

DIMS = [2, 8, 64, 128]
OFFSETS = [0, 7, 1000, 30000]


def hf_rotary(D, base, H=1):
    cfg = LlamaConfig(hidden_size=H * D, num_attention_heads=H, head_dim=D, rope_theta=base,
                      max_position_embeddings=65536)
    return LlamaRotaryEmbedding(cfg)


def hf_rope(x, pos, emb):
    """transformers: x (B, T, H, D) moved to (B, H, T, D), rotated with the
    cos/sin LlamaRotaryEmbedding gives for position_ids pos (B, T)."""
    xt = torch.from_numpy(x).transpose(1, 2)
    with torch.no_grad():
        cos, sin = emb(xt, torch.from_numpy(pos))
        q, _ = apply_rotary_pos_emb(xt, xt, cos, sin)
    return q.transpose(1, 2).numpy()


def meta_inv_freq(D, base):
    """Meta's llama precompute_freqs_cis: 1 / theta^(arange(0, D, 2)[:D/2] / D)."""
    return 1.0 / (base ** (torch.arange(0, D, 2)[: D // 2].float() / D))


def meta_rope(x, pos, inv_freq):
    """Meta's llama apply_rotary_emb: pairs (2i, 2i+1) as complex numbers times
    polar(1, pos * inv_freq), in float32."""
    t = torch.from_numpy(x)
    B, T, H, D = t.shape
    freqs = torch.from_numpy(pos).float()[..., None] * inv_freq          # (B, T, D/2)
    cis = torch.polar(torch.ones_like(freqs), freqs)[:, :, None, :]     # (B, T, 1, D/2)
    xc = torch.view_as_complex(t.reshape(B, T, H, D // 2, 2))
    return torch.view_as_real(xc * cis).reshape(B, T, H, D).numpy()


def positions(offset, B, T, rng):
    """Absolute positions from `offset`, each sequence of the batch shifted."""
    return offset + np.arange(T)[None, :] + rng.integers(0, 5, (B, 1))


def ulp_diff(a, b):
    return int(np.max(np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32))))


@pytest.mark.parametrize("base", [10000.0, 100000.0, 500000.0])
@pytest.mark.parametrize("D", DIMS + [6, 18, 96, 256])
def test_inv_freq_is_transformers(D, base):
    """Within 2 ulp of transformers' default rope init (1 / base^(arange/D) in
    float32): ours takes the power correctly rounded, torch's vectorised powf
    is within an ulp of it."""
    theirs = hf_rotary(D, base).inv_freq.numpy()
    ours = ops.rope_inv_freq(D, base)
    assert ours.dtype == np.float32 and ours.shape == (D // 2,)
    assert ulp_diff(ours, theirs) <= 2


@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("H", [1, 3, 5])
def test_halves_match_transformers(isa, rng, D, offset, H):
    B, T, base = 2, 9, 10000.0
    emb = hf_rotary(D, base, H)
    x = rng.standard_normal((B, T, H, D), dtype=np.float32)
    pos = positions(offset, B, T, rng)
    ref = hf_rope(x, pos, emb)
    xm, pmax = float(np.abs(x).max()), int(pos.max())
    # with transformers' own frequencies: only cos/sin and rounding differ
    same = ops.rope(x, pos, inv_freq=emb.inv_freq.numpy())
    assert_close(same, ref, rope_tol(xm), what=f"{isa} D={D} H={H} +{offset} same freqs")
    # with ours: plus what their few-ulp difference does to the angle
    diff = float(np.abs(ops.rope_inv_freq(D, base) - emb.inv_freq.numpy()).max())
    assert_close(ops.rope(x, pos, base), ref, rope_tol(xm, diff, pmax),
                 what=f"{isa} D={D} H={H} +{offset}")


@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("H", [1, 3])
def test_pairs_match_metas_complex_form(isa, rng, D, offset, H):
    B, T, base = 2, 6, 10000.0
    x = rng.standard_normal((B, T, H, D), dtype=np.float32)
    pos = positions(offset, B, T, rng)
    inv = meta_inv_freq(D, base)
    ref = meta_rope(x, pos, inv)
    xm, pmax = float(np.abs(x).max()), int(pos.max())
    assert_close(ops.rope(x, pos, layout="pairs", inv_freq=inv.numpy()), ref, rope_tol(xm),
                 what=f"{isa} pairs D={D} +{offset} same freqs")
    diff = float(np.abs(ops.rope_inv_freq(D, base) - inv.numpy()).max())
    assert_close(ops.rope(x, pos, base, layout="pairs"), ref, rope_tol(xm, diff, pmax),
                 what=f"{isa} pairs D={D} +{offset}")


def test_pairs_is_halves_on_permuted_heads(rng):
    """The two layouts are the same rotation on differently ordered heads:
    permuting (2i, 2i+1) -> (i, i + D/2) maps one onto the other exactly."""
    x = rng.standard_normal((2, 5, 3, 16), dtype=np.float32)
    pos = np.arange(100, 105)
    perm = np.concatenate([np.arange(0, 16, 2), np.arange(1, 16, 2)])
    halves = ops.rope(np.ascontiguousarray(x[..., perm]), pos, layout="halves")
    np.testing.assert_array_equal(halves, ops.rope(x, pos, layout="pairs")[..., perm])


@pytest.mark.parametrize("layout", ["halves", "pairs"])
def test_rope_base_and_long_heads(isa, rng, layout):
    """SmolLM2's base 100000 and a head dim longer than a cos/sin chunk."""
    D, base = 258, 100000.0
    x = rng.standard_normal((1, 4, 2, D), dtype=np.float32)
    pos = np.array([0, 1, 4095, 20000])
    inv = meta_inv_freq(D, base)
    ref = hf_rope(x, pos[None], hf_rotary(D, base, 2)) if layout == "halves" else \
        meta_rope(x, pos[None], inv)
    assert_close(ops.rope(x, pos, layout=layout, inv_freq=inv.numpy()), ref,
                 rope_tol(float(np.abs(x).max())), what=f"{isa} {layout} D={D}")


def test_positions_forms_and_dtypes(rng):
    x = rng.standard_normal((3, 4, 2, 8), dtype=np.float32)
    pos = np.arange(10, 14)
    full = ops.rope(x, np.broadcast_to(pos, (3, 4)).astype(np.int32))
    np.testing.assert_array_equal(ops.rope(x, pos), full)            # (T,)
    np.testing.assert_array_equal(ops.rope(x, pos[None]), full)      # (1, T)
    np.testing.assert_array_equal(ops.rope(x.astype(np.float64), pos), full)  # converted
    view = np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(ops.rope(view, pos), full)         # copied, not misread
    # a decoding step: one position per sequence, each at its own t
    steps = np.array([[3], [17], [30000]])
    one = ops.rope(x[:, :1], steps)
    for b in range(3):
        np.testing.assert_array_equal(one[b], ops.rope(x[b:b + 1, :1], steps[b:b + 1])[0])


@pytest.mark.parametrize("layout", ["halves", "pairs"])
def test_inplace(isa, rng, layout):
    x = rng.standard_normal((2, 5, 3, 16), dtype=np.float32)
    pos = np.arange(7, 12)
    expected = ops.rope(x, pos, layout=layout)
    y = x.copy()
    assert ops.rope(y, pos, layout=layout, inplace=True) is y
    np.testing.assert_array_equal(y, expected)
    # the query and key columns of a fused projection, rotated where they lie
    Hq, Hkv, D = 3, 1, 16
    qkv = rng.standard_normal((2, 5, (Hq + 2 * Hkv) * D), dtype=np.float32)
    before = qkv.copy()
    q = qkv[..., :Hq * D].reshape(2, 5, Hq, D)
    k = qkv[..., Hq * D:(Hq + Hkv) * D].reshape(2, 5, Hkv, D)
    assert np.shares_memory(q, qkv) and np.shares_memory(k, qkv)
    q_ref = ops.rope(np.ascontiguousarray(q), pos, layout=layout)
    k_ref = ops.rope(np.ascontiguousarray(k), pos, layout=layout)
    np.testing.assert_array_equal(ops.rope(q, pos, layout=layout), q_ref)   # read in place
    ops.rope(q, pos, layout=layout, inplace=True)
    ops.rope(k, pos, layout=layout, inplace=True)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(k, k_ref)
    np.testing.assert_array_equal(qkv[..., (Hq + Hkv) * D:], before[..., (Hq + Hkv) * D:])


@pytest.mark.parametrize("bad", [
    lambda x: x.astype(np.float64),                        # would need a copy
    lambda x: x.transpose(0, 2, 1, 3),                     # heads of a position apart
    lambda x: x[..., ::2],                                 # strided head vectors
    lambda x: x[::-1],                                     # negative strides
    lambda x: np.broadcast_to(x[:1], x.shape),             # overlapping rows, read-only
])
def test_inplace_refuses_what_it_cannot_rotate_in_place(rng, bad):
    x = bad(rng.standard_normal((2, 4, 2, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="x"):
        ops.rope(x, np.arange(x.shape[1]), inplace=True)
    out = ops.rope(x, np.arange(x.shape[1]))               # converted instead
    np.testing.assert_array_equal(out, ops.rope(np.ascontiguousarray(x, np.float32),
                                                np.arange(x.shape[1])))


def test_read_only_input_refused_in_place(rng):
    x = rng.standard_normal((1, 2, 1, 4), dtype=np.float32)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        ops.rope(x, np.arange(2), inplace=True)


def test_rows_bit_identical_across_batch_and_threads(isa, rng):
    x = rng.standard_normal((4, 33, 9, 64), dtype=np.float32)
    pos = rng.integers(0, 4000, (4, 33))
    before = _kernels.get_num_threads()
    try:
        _kernels.set_num_threads(1)
        one = ops.rope(x[2:3, 5:6], pos[2:3, 5:6])
        _kernels.set_num_threads(2)
        np.testing.assert_array_equal(ops.rope(x, pos)[2:3, 5:6], one)
    finally:
        _kernels.set_num_threads(before)


def test_naive_twin_agrees(isa, rng):
    x = rng.standard_normal((2, 3, 3, 34), dtype=np.float32)
    pos = np.arange(6, dtype=np.int64) * 997
    inv = ops.rope_inv_freq(34)
    for layout in ("halves", "pairs"):
        fast = _kernels.rope(x, pos, inv, layout)
        ref = _kernels.rope(x, pos, inv, layout, ref=True)
        assert_close(fast, ref, rope_tol(float(np.abs(x).max())), what=f"{isa} {layout}")


@pytest.mark.parametrize("args, kwargs, words", [
    ((np.zeros((2, 3, 2, 7), np.float32), np.arange(3)), {}, "even"),
    ((np.zeros((3, 2, 8), np.float32), np.arange(3)), {}, "(B, T, H, D)"),
    ((np.zeros((2, 3, 2, 8), np.float32), np.arange(4)), {}, "positions"),
    ((np.zeros((2, 3, 2, 8), np.float32), np.arange(3.0)), {}, "positions"),
    ((np.zeros((2, 3, 2, 8), np.float32), np.zeros((2, 3, 1), int)), {}, "positions"),
    ((np.zeros((2, 3, 2, 8), np.int32), np.arange(3)), {}, "x"),
    ((np.zeros((2, 3, 2, 8), np.float32), np.arange(3)), {"layout": "gptj"}, "layout"),
    ((np.zeros((2, 3, 2, 8), np.float32), np.arange(3)), {"base": 0.0}, "base"),
    ((np.zeros((2, 3, 2, 8), np.float32), np.arange(3)), {"base": "1e4"}, "base"),
    ((np.zeros((2, 3, 2, 8), np.float32), np.arange(3)), {"inv_freq": np.ones(3)}, "inv_freq"),
    ((np.zeros((2, 3, 2, 8), np.float32), np.arange(3)),
     {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
])
def test_bad_arguments(args, kwargs, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ops.rope(*args, **kwargs)


def test_kernel_boundary_checks_buffers():
    x = np.zeros((2, 3, 2, 8), np.float32)
    inv = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="positions"):
        _kernels.rope(x, np.arange(5, dtype=np.int64), inv)
    with pytest.raises(ValueError, match="positions"):
        _kernels.rope(x, np.arange(6, dtype=np.int32), inv)
    with pytest.raises(ValueError, match="inv_freq"):
        _kernels.rope(x, np.arange(6, dtype=np.int64), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="x"):
        _kernels.rope(x[:, :, :, ::2], np.arange(6, dtype=np.int64), np.ones(2, np.float32))


def test_empty_shapes():
    for shape in [(0, 3, 2, 8), (2, 0, 2, 8), (2, 3, 0, 8), (2, 3, 2, 0)]:
        x = np.zeros(shape, np.float32)
        assert ops.rope(x, np.zeros(shape[:2], int)).shape == shape
