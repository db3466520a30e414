"""Weight-only GGUF blocks (Q8_0, Q4_0, Q4_1): QuantizedMatrix and
Linear.load_blocks against torch's float32 linear on the weights that the
gguf package (llama.cpp's own reader) quantizes and dequantizes, on every
kernel path; batch invariance; refused shapes and types.

Tolerance: the weights are the dequantized ones exactly (tests/c checks the
dequantization element by element against the twin), so what is left is
float32 accumulation in another order: matmul_tol, as for the float32 GEMM.
"""
import copy

import numpy as np
import pytest

from pytransformer import _kernels, nn, ops
from conftest import assert_close, matmul_tol

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

TYPES = ["Q8_0", "Q4_0", "Q4_1"]


def quantized(rng, n, k, qtype):
    """(blocks (n, bytes per row) uint8, the dequantized float32 weight)."""
    w = rng.standard_normal((n, k)).astype(np.float32)
    code = getattr(gguf.GGMLQuantizationType, qtype)
    raw = np.ascontiguousarray(gguf.quants.quantize(w, code))
    return raw, gguf.quants.dequantize(raw, code).astype(np.float32).reshape(n, k)


def torch_linear(x, w, b=None, act=None):
    y = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w),
                                   None if b is None else torch.from_numpy(b))
    if act == "silu":
        y = torch.nn.functional.silu(y)
    elif act == "gelu":
        y = torch.nn.functional.gelu(y)
    elif act == "relu":
        y = torch.relu(y)
    return y.numpy()


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("M,N,K", [(1, 1, 32), (1, 77, 576), (3, 192, 64), (5, 130, 1536),
                                   (9, 33, 96)])
def test_quantized_linear_matches_torch_on_dequantized_weights(isa, rng, qtype, M, N, K):
    raw, w = quantized(rng, N, K, qtype)
    q = ops.QuantizedMatrix(raw, qtype, K)
    assert q.shape == (K, N) and q.compute_type == qtype
    x = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    for bias, act in [(None, None), (b, "silu"), (b, "gelu"), (None, "relu")]:
        want = torch_linear(x, w, bias, act)
        scale = float(np.abs(x).max() * np.abs(w).max() * K ** 0.5)
        assert_close(ops.linear(x, q, bias, activation=act), want, matmul_tol(K, scale),
                     what=f"{isa} {qtype} act={act}")
        assert_close(q.matmul(x, bias, act, ref=True), want, matmul_tol(K, scale),
                     what=f"twin {qtype} act={act}")


@pytest.mark.parametrize("qtype", TYPES)
def test_quantized_rows_are_batch_invariant(isa, rng, qtype):
    """A row's bits alone = inside a batch of any size, at 1 or 2 threads."""
    raw, _ = quantized(rng, 300, 320, qtype)
    q = ops.QuantizedMatrix(raw, qtype, 320)
    x = rng.standard_normal((11, 320)).astype(np.float32)
    before = _kernels.get_num_threads()
    try:
        _kernels.set_num_threads(1)
        alone = np.concatenate([q.matmul(x[i:i + 1]) for i in range(11)])
        for nt in (1, 2):
            _kernels.set_num_threads(nt)
            for lo, hi in [(0, 11), (2, 5), (7, 8)]:
                assert np.array_equal(q.matmul(np.ascontiguousarray(x[lo:hi])), alone[lo:hi])
    finally:
        _kernels.set_num_threads(before)


def test_linear_load_blocks_and_back(rng):
    raw, w = quantized(rng, 40, 64, "Q4_1")
    lin = nn.Linear(64, 40, bias=True)
    lin.weight = w
    x = rng.standard_normal((3, 64)).astype(np.float32)
    y32 = lin(x)
    assert lin.load_blocks(raw, "Q4_1") is lin and lin.compute_type == "Q4_1"
    yq = lin(x)
    scale = float(np.abs(x).max() * np.abs(w).max() * 8)
    assert_close(yq, y32, matmul_tol(64, scale))
    assert np.array_equal(lin.step(x), yq)
    twin = copy.deepcopy(lin)                       # shares the (immutable) blocks
    assert twin.compute_type == "Q4_1" and np.array_equal(twin(x), yq)
    lin.to("float32")                               # back to the dequantized weight
    assert lin.compute_type == "float32" and np.array_equal(lin(x), y32)
    lin.to("bfloat16")
    assert lin.compute_type == "bfloat16"
    lin.load_blocks(raw, "Q4_1")
    lin.weight = np.zeros_like(w)                   # a new weight: the blocks are stale
    assert lin.compute_type == "float32" and np.array_equal(lin(x), np.broadcast_to(lin.bias, (3, 40)))


def test_quantized_matrix_refuses_what_does_not_fit(rng):
    raw, _ = quantized(rng, 4, 64, "Q8_0")
    with pytest.raises(ValueError, match="has no kernel"):
        ops.QuantizedMatrix(raw, "Q5_K", 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        ops.QuantizedMatrix(raw, "Q8_0", 48)
    with pytest.raises(ValueError, match="take 68 bytes"):
        ops.QuantizedMatrix(raw[:, :60].copy(), "Q8_0", 64)
    with pytest.raises(ValueError, match="uint8"):
        ops.QuantizedMatrix(raw.view(np.int8), "Q8_0", 64)
    q = ops.QuantizedMatrix(raw, "Q8_0", 64)
    with pytest.raises(ValueError, match=r"input of shape \(M, 64\) expected"):
        q.matmul(np.ones((2, 32), np.float32))
    with pytest.raises(ValueError, match="out_features=5"):
        nn.Linear(64, 5).load_blocks(raw, "Q8_0")


def test_quantized_matrix_reads_a_memory_map_in_place(rng, tmp_path):
    raw, w = quantized(rng, 16, 96, "Q4_0")
    path = tmp_path / "blocks.bin"
    raw.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=raw.shape)
    q = ops.QuantizedMatrix(np.asarray(mm), "Q4_0", 96)
    x = rng.standard_normal((2, 96)).astype(np.float32)
    assert np.array_equal(q.matmul(x), ops.QuantizedMatrix(raw, "Q4_0", 96).matmul(x))
    assert _kernels.QUANTIZED_TYPES.keys() == set(TYPES)
