"""The bfloat16 GEMM (ops.pack_weight(w, "bfloat16"), ops.linear) against
torch on every kernel path and bf16 kernel this CPU has: bit-exact rounding
against torch's .to(torch.bfloat16); within float32 accumulation of torch's
float64 product of the bf16-rounded operands; within the rounding bound of
the float32 oracle; rows bit-identical alone and in batches of 1, 7, 64 at 1
and 2 threads; the compute-type checks.  Bounds: tests/conftest.py."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import bf16_matmul_tol, matmul_tol, run_python  # noqa: E402
from pytransformer import _kernels, nn, ops  # noqa: E402

TORCH_ACT = {None: lambda y: y, "relu": torch.relu,
             "gelu": torch.nn.functional.gelu,
             "gelu_tanh": lambda y: torch.nn.functional.gelu(y, approximate="tanh")}


def test_rounding_matches_torch_bit_for_bit(rng):
    x = np.concatenate([
        rng.standard_normal(100000).astype(np.float32) * np.float32(10.0) **
        rng.integers(-30, 30, 100000).astype(np.float32),
        np.array([0.0, -0.0, np.inf, -np.inf, 3.4028235e38, -3.4028235e38, 1e-40, -1e-45,
                  1.00390625, 1.01171875, 1.0039065], np.float32),
        # every tie pattern in the low 16 bits around a few exponents
        (np.arange(0x3f800000, 0x3f800000 + 0x30000, 0x4000, dtype=np.uint32)[:, None]
         + np.array([0x7fff, 0x8000, 0x8001, 0x18000], np.uint32)).ravel().view(np.float32),
    ]).astype(np.float32)
    x = x[np.isfinite(x) | np.isinf(x)]
    ours = _kernels.bf16_round(x)
    theirs = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))
    nan = _kernels.bf16_round(np.array([np.nan, -np.nan], np.float32))
    assert np.isnan(nan).all()


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 7, 5), (13, 64, 33), (64, 257, 130),
                                   (200, 1029, 97), (7, 0, 9)])
@pytest.mark.parametrize("act", [None, "relu", "gelu", "gelu_tanh"])
def test_linear_bf16_against_torch(isa, bf16_path, threads, M, K, N, act, rng):
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    pw = ops.pack_weight(w, compute_type="bfloat16")
    assert isinstance(pw, ops.PackedMatrixBF16) and pw.compute_type == "bfloat16"
    y = ops.linear(x, pw, b, activation=act)
    xt, wt, bt = (torch.from_numpy(v) for v in (x, w, b))
    # the bf16-rounded operands in float64: only float32 accumulation is left
    ref = TORCH_ACT[act](xt.bfloat16().double() @ wt.bfloat16().double().T + bt.double())
    scale = float((xt.bfloat16().double().abs() @ wt.bfloat16().double().abs().T).max()) \
        if K else 1.0
    np.testing.assert_allclose(y, ref.numpy(), rtol=0, atol=matmul_tol(K, scale) + 1e-6)
    # the float32 oracle on the unrounded operands: the rounding bound
    ref32 = TORCH_ACT[act](torch.nn.functional.linear(xt, wt, bt)).double().numpy()
    ab = (xt.double().abs() @ wt.double().abs().T).numpy()
    # the activations are 1-Lipschitz up to gelu's 1.13
    err = np.abs(y - ref32)
    assert (err <= 1.13 * bf16_matmul_tol(ab, K, max(scale, 1.0)) + 1e-6).all(), err.max()
    # the naive twin agrees within the same accumulation bound
    np.testing.assert_allclose(pw.matmul(x, b, act), pw.matmul(x, b, act, ref=True), rtol=0,
                               atol=matmul_tol(K, scale) + 1e-6)


def test_rows_are_batch_invariant(isa, bf16_path, rng):
    """A row's bits alone, and in batches of 1, 7 and 64 rows, at 1 and 2
    threads: the K reduction order depends on K alone."""
    K, N = 777, 300
    x = rng.standard_normal((200, K)).astype(np.float32)
    pw = ops.pack_weight(rng.standard_normal((N, K)).astype(np.float32), "bfloat16")
    b = rng.standard_normal(N).astype(np.float32)
    before = _kernels.get_num_threads()
    try:
        _kernels.set_num_threads(1)
        alone = np.stack([pw.matmul(x[i:i + 1], b, "gelu")[0] for i in range(len(x))])
        for nt in (1, 2):
            _kernels.set_num_threads(nt)
            for size in (1, 7, 64):
                for r0 in range(0, len(x) - size + 1, size + 11):
                    got = pw.matmul(np.ascontiguousarray(x[r0:r0 + size]), b, "gelu")
                    assert np.array_equal(got.view(np.uint32),
                                          alone[r0:r0 + size].view(np.uint32)), (nt, size, r0)
            assert np.array_equal(pw.matmul(x, b, "gelu"), alone)
    finally:
        _kernels.set_num_threads(before)


def test_every_bf16_kernel_of_this_machine_is_exercised():
    """The fixtures reach VDPBF16PS where CPUID reports AVX512_BF16, and AMX
    tiles where CPUID reports AMX-BF16 and the OS saves the tile state (Linux
    then grants it on request)."""
    feats = _kernels.cpu_features()
    avx512 = "avx512" in _kernels.available_isas()
    assert ("avx512_bf16" in _kernels.available_bf16_paths()) == (feats["avx512_bf16"] and avx512)
    amx = feats["amx_bf16"] and feats["amx_os_enabled"] and avx512
    assert feats["amx_granted"] == (feats["amx_tile"] and feats["amx_os_enabled"])
    assert ("amx_bf16" in _kernels.available_bf16_paths()) == (amx and feats["amx_granted"])


def test_compute_type_checks(rng):
    w = rng.standard_normal((4, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="compute_type must be one of"):
        ops.pack_weight(w, compute_type="float16")
    pw = ops.pack_weight(w, "bfloat16")
    with pytest.raises(ValueError, match=r"input of shape \(M, 3\) expected"):
        ops.linear(np.ones((2, 5), np.float32), pw)
    with pytest.raises(ValueError, match="unknown bf16 path"):
        _kernels.set_bf16_path("amx")
    for name in ("avx512_bf16", "amx_bf16"):
        if name not in _kernels.available_bf16_paths():
            with pytest.raises(RuntimeError, match="lacks"):
                _kernels.set_bf16_path(name)


def test_forcing_a_bf16_kernel_the_path_lacks_is_an_error():
    env = dict(os.environ, PYTRANSFORMER_BF16="avx512_bf16", PYTRANSFORMER_ISA="avx2")
    r = run_python(["-c", "import pytransformer"], env=env, timeout=120)
    assert r.returncode != 0
    assert "RuntimeError" in r.stderr and "avx512_bf16" in r.stderr
    env = dict(os.environ, PYTRANSFORMER_BF16="convert")
    r = run_python(["-c", "import pytransformer; "
                        "print(pytransformer.cpu_info()['compute_paths']['bfloat16'])"],
                   env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() in _kernels.available_isas(), r.stderr


def test_module_to_converts_in_place_and_back(rng):
    """Linear and attention projections switch packing; the parameters keep
    their values, so .to('float32') restores float32 results bit for bit."""
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    x = rng.standard_normal((2, 5, 32)).astype(np.float32)
    y32 = layer(x)
    assert layer.to("bfloat16") is layer
    assert layer.linear1.compute_type == "bfloat16" and layer.self_attn.compute_type == "bfloat16"
    y16 = layer(x)
    assert not np.array_equal(y16, y32)
    assert np.array_equal(layer.to("float32")(x), y32)


def test_cpu_info_reports_the_bf16_kernel_and_features():
    import pytransformer
    info = pytransformer.cpu_info()
    assert set(info["features"]) == {"avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16",
                                     "amx_int8", "amx_os_enabled", "amx_granted"}
    assert info["compute_paths"]["float32"] == info["isa"]
    setting = _kernels.get_bf16_setting()
    expected = setting if info["isa"] == "avx512" and setting != "convert" else info["isa"]
    # by default (no PYTRANSFORMER_BF16) the best kernel there is: AMX, then VDPBF16PS
    if not os.environ.get("PYTRANSFORMER_BF16"):
        assert setting == _kernels.available_bf16_paths()[-1]
    assert info["compute_paths"]["bfloat16"] == expected
    before = _kernels.get_bf16_setting()
    try:
        _kernels.set_bf16_path("convert")
        assert pytransformer.cpu_info()["compute_paths"]["bfloat16"] == info["isa"]
    finally:
        _kernels.set_bf16_path(before)
