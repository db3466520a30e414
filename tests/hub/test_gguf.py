"""hub/gguf: the header read and checked by pytransformer agrees with the gguf
package's reader, and every block format dequantizes bit for bit as
gguf.quants.dequantize does -- on the real SmolLM2 file's own tensors and on
crafted blocks and files (random bytes, NaN and infinite scales)."""
import numpy as np
import pytest

import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from conftest import write_gguf
from pytransformer.hub.gguf import DEQUANTIZED_TYPES, GGUFFile, dequantize, read_header


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.fixture(scope="module")
def smollm(smollm_gguf):
    return GGUFFile(smollm_gguf), GGUFReader(smollm_gguf)


def test_header_matches_the_gguf_package(smollm):
    f, r = smollm
    assert f.version == 3 and f.architecture == "llama" and f.alignment == r.alignment
    fields = {k: v.contents() for k, v in r.fields.items() if not k.startswith("GGUF.")}
    assert f.metadata == fields
    assert all(type(v) in (str, int, float, bool, list) for v in f.metadata.values())
    assert len(f.tensors) == len(r.tensors) == 272
    for t in r.tensors:
        ours = f.tensors[t.name]
        assert ours.type == t.tensor_type.name
        assert ours.dims == tuple(int(d) for d in t.shape)
        assert ours.shape == tuple(reversed(ours.dims))       # numpy order: ne[0] last
        assert (ours.begin, ours.nbytes) == (t.data_offset, t.n_bytes)
        assert np.array_equal(np.asarray(f.raw(t.name)), t.data.reshape(-1).view(np.uint8))
    assert f.tensors["token_embd.weight"].shape == (49152, 576)           # (vocab, hidden)
    assert f.tensors["blk.0.attn_k.weight"].shape == (192, 576)           # (out, in)
    assert f.tensors["blk.0.ffn_down.weight"].shape == (576, 1536)
    assert not f.raw("blk.0.attn_q.weight").flags.writeable


def _check_tensor(f, t, rows=None):
    ours = f.float32(t.name)
    theirs = gguf_dequantize(t.data if rows is None else t.data[rows], t.tensor_type)
    if rows is not None:
        ours = ours[rows]
    assert ours.dtype == np.float32 and ours.shape == theirs.shape, t.name
    assert np.array_equal(bits(ours), bits(theirs)), t.name


def test_every_q8_0_and_f32_tensor_of_smollm2_bit_for_bit(smollm):
    f, r = smollm
    checked = [t for t in r.tensors if t.tensor_type in (T.Q8_0, T.F32)]
    assert {t.tensor_type for t in checked} == {T.Q8_0, T.F32}
    for t in checked:
        _check_tensor(f, t)


def test_every_q4_1_tensor_of_smollm2_bit_for_bit(smollm):
    """All 210 Q4_1 tensors: the first two layers whole, every other one on a
    seeded quarter of its rows (gguf.quants is slow; ours is read whole)."""
    f, r = smollm
    rng = np.random.default_rng(0)
    q41 = [t for t in r.tensors if t.tensor_type == T.Q4_1]
    assert len(q41) == 210
    for t in q41:
        whole = t.name.startswith(("blk.0.", "blk.1."))
        n = t.data.shape[0]
        _check_tensor(f, t, None if whole else np.sort(rng.choice(n, n // 4, replace=False)))


SPECIAL_HALVES = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE00, 0x0001, 0x03FF,
                  0x7BFF, 0x3C00]


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1", "F16", "BF16"])
def test_crafted_blocks_bit_for_bit(qtype):
    """Random bytes (any scale, NaN and inf included) and scales set to every
    special half: the same bits as gguf.quants.dequantize."""
    rng = np.random.default_rng(7)
    block, size = gguf.GGML_QUANT_SIZES[T[qtype]]
    rows, cols = 37, 4 * 32
    raw = rng.integers(0, 256, (rows, cols // block * size), dtype=np.uint8)
    if block > 1:                    # every special value as d (and m) of some blocks
        halves = np.array(SPECIAL_HALVES, "<u2").view(np.uint8)
        for i, (lo, hi) in enumerate(halves.reshape(-1, 2)):
            raw[i % rows, (i % 4) * size + 0:(i % 4) * size + 2] = (lo, hi)
            raw[(i + 5) % rows, (i % 4) * size + 2:(i % 4) * size + 4] = (lo, hi)
    with np.errstate(all="ignore"):            # inf * 0 gives NaN, as in ggml
        theirs = gguf_dequantize(raw, T[qtype])
    ours = dequantize(raw.reshape(-1), qtype, (rows, cols))
    assert ours.shape == theirs.shape == (rows, cols)
    assert np.isnan(theirs).any() or block == 1
    assert np.array_equal(bits(ours), bits(theirs))


def test_nibble_order_and_offsets():
    """ggml's layouts written by hand: low nibbles are elements 0..15, high
    nibbles 16..31; Q4_0 subtracts 8, Q4_1 adds m, Q8_0 is signed."""
    qs = np.arange(16, dtype=np.uint8) | (np.arange(15, -1, -1, dtype=np.uint8) << 4)
    d, m = np.array([0.5], "<f2").view(np.uint8), np.array([-1.0], "<f2").view(np.uint8)
    q = np.concatenate([np.arange(16), np.arange(15, -1, -1)]).astype(np.float32)
    np.testing.assert_array_equal(dequantize(np.concatenate([d, qs]), "Q4_0", (32,)),
                                  (q - 8) * 0.5)
    np.testing.assert_array_equal(dequantize(np.concatenate([d, m, qs]), "Q4_1", (32,)),
                                  q * 0.5 - 1)
    q8 = np.arange(-16, 16, dtype=np.int8)
    np.testing.assert_array_equal(dequantize(np.concatenate([d, q8.view(np.uint8)]), "Q8_0",
                                             (32,)), q8 * np.float32(0.5))


def test_crafted_file_of_every_type(tmp_path):
    """A file written by gguf's own writer with F32, F16, BF16, Q8_0, Q4_0 and
    Q4_1 tensors of 1, 2 and 3 dimensions: shapes in numpy order, values as
    gguf.quants gives them (F32 and F16 exactly the arrays written)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 64)).astype(np.float32)
    w = rng.standard_normal((6, 96)).astype(np.float32)
    v = rng.standard_normal(32).astype(np.float32)
    tensors = [("x.f32", x, None), ("w.f16", w.astype(np.float16), None), ("v.f32", v, None)]
    for q in ("BF16", "Q8_0", "Q4_0", "Q4_1"):
        tensors += [(f"w.{q}", gguf_quantize(w, T[q]), q), (f"x.{q}", gguf_quantize(x, T[q]), q)]
    p = write_gguf(tmp_path / "m.gguf", tensors, alignment=64)
    f = GGUFFile(p)
    assert f.alignment == 64 and f.data_start % 64 == 0
    assert all(t.begin % 64 == 0 for t in f.tensors.values())
    assert np.array_equal(f.float32("x.f32"), x) and f.tensors["x.f32"].dims == (64, 5, 3)
    assert np.array_equal(f.float32("w.f16"), w.astype(np.float16).astype(np.float32))
    assert np.array_equal(f.float32("v.f32"), v)
    for q in ("BF16", "Q8_0", "Q4_0", "Q4_1"):
        for name, a in ((f"w.{q}", w), (f"x.{q}", x)):
            got = f.float32(name)
            assert got.shape == a.shape and f.tensors[name].type == q
            assert np.array_equal(bits(got), bits(gguf_dequantize(gguf_quantize(a, T[q]), T[q])))
            assert np.abs(got - a).max() < 0.3 * np.abs(a).max()    # it is the array written
    assert set(DEQUANTIZED_TYPES) == {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"}


def test_metadata_values_and_version_2(tmp_path):
    kv = [("u8", 200, "UINT8", None), ("i8", -3, "INT8", None), ("u16", 60000, "UINT16", None),
          ("i16", -30000, "INT16", None), ("u32", 4_000_000_000, "UINT32", None),
          ("i32", -2_000_000_000, "INT32", None), ("f32", 0.1, "FLOAT32", None),
          ("u64", 1 << 63, "UINT64", None), ("i64", -(1 << 62), "INT64", None),
          ("f64", 0.1, "FLOAT64", None), ("b", True, "BOOL", None), ("s", "héllo ✓", "STRING", None),
          ("ai", [1, -2, 3], "ARRAY", "INT32"), ("as", ["a", "", "ü"], "ARRAY", "STRING"),
          ("af", [0.5, 1.5], "ARRAY", "FLOAT32"), ("ab", [True, False], "ARRAY", "BOOL")]
    p = write_gguf(tmp_path / "kv.gguf", kv=kv)
    m = GGUFFile(p).metadata
    assert m["general.architecture"] == "llama"
    for key, value, vtype, _ in kv:
        expected = float(np.float32(value)) if vtype == "FLOAT32" else value
        assert m[key] == expected and type(m[key]) is type(expected), key
    assert m["af"] == [0.5, 1.5] and GGUFFile(p).tensors == {}
    data = bytearray(p.read_bytes())
    data[4:8] = (2).to_bytes(4, "little")          # version 2 has the same layout
    q = tmp_path / "v2.gguf"
    q.write_bytes(bytes(data))
    f = GGUFFile(q)
    assert f.version == 2 and f.metadata == m


def test_unknown_type_and_bad_arguments(tmp_path):
    raw = gguf_quantize(np.ones((2, 256), np.float32), T.Q8_0)
    p = write_gguf(tmp_path / "k.gguf", [("w", np.zeros((2, 210), np.uint8), "Q6_K"),
                                        ("q", raw, "Q8_0")])
    f = GGUFFile(p)
    assert f.tensors["w"].shape == (2, 256) and f.tensors["w"].type == "Q6_K"
    with pytest.raises(ValueError, match=r"'w'.*Q6_K"):
        f.float32("w")
    with pytest.raises(KeyError, match="nope"):
        f.float32("nope")
    with pytest.raises(ValueError, match="do not hold shape"):
        dequantize(f.raw("q"), "Q8_0", (2, 255))
    with pytest.raises(ValueError, match="1-D uint8"):
        dequantize(np.zeros(4, np.float32), "F32", (1,))
    assert read_header(p)["tensors"]["q"].shape == (2, 256)


def test_alignment_of_one(tmp_path):
    """general.alignment 1: tensors back to back, an F32 one at an offset
    that is not a multiple of 4 -- read as an aligned copy."""
    h = np.arange(3, dtype=np.float16)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    p = write_gguf(tmp_path / "a1.gguf", [("h", h, None), ("x", x, None)], alignment=1)
    f = GGUFFile(p)
    assert f.alignment == 1 and f.tensors["x"].begin % 4 != 0
    got = f.float32("x")
    assert got.flags.aligned and np.array_equal(got, x)
    assert np.array_equal(f.float32("h"), h.astype(np.float32))
