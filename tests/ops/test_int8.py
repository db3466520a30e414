"""The int8 GEMM (ops.pack_weight(w, "int8"), ops.linear) against torch on
every kernel path and int8 kernel this CPU has: the quantization of a row
bit for bit against torch's (amax / 127, torch.round); the product bit for
bit against torch doing the same quantization, integer sums and float32
dequantization; within the quantization bound of the float32 oracle; rows
bit-identical alone and in batches of 1, 7 and 64 at 1 and 2 threads, and
across the int8 kernels; the module conversion and the path checks.  Bounds:
tests/conftest.py."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import int8_matmul_tol, run_python  # noqa: E402
from pytransformer import _kernels, nn, ops  # noqa: E402

TORCH_ACT = {None: lambda y: y, "relu": torch.relu,
             "gelu": torch.nn.functional.gelu,
             "gelu_tanh": lambda y: torch.nn.functional.gelu(y, approximate="tanh"),
             "silu": torch.nn.functional.silu}


def torch_quantize(x):
    """Per-row symmetric int8 of a float32 tensor (rows, K) as a weight is
    quantized (gemm_i8.h): (q, scale); rows holding inf/NaN get scale NaN
    and q 0."""
    amax = x.abs().amax(dim=1) if x.shape[1] else torch.zeros(x.shape[0])
    bad = ~torch.isfinite(x).all(dim=1)
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    inv = torch.tensor(127.0, dtype=torch.float32) / safe
    q = torch.round(x * inv[:, None]).clamp(-127, 127)
    q = torch.where((amax > 0)[:, None] & ~bad[:, None], q, torch.zeros_like(q))
    scale = torch.where(bad, torch.full_like(amax, float("nan")), amax / 127.0)
    return q.to(torch.int8), scale


def outlier_mask(x):
    """The outliers of a float32 row (gemm_i8.h): x^2 > 64 mean(x^2), mean(x^2)
    summed as the kernels sum it (16 lanes, then the lanes in order), the bar
    quadrupled until at most OUTLIERS remain; none where that bar is not
    below amax^2."""
    x = x.numpy()
    n = x.size
    with np.errstate(over="ignore"):
        return _outlier_mask(x, n)


def _outlier_mask(x, n):
    if n == 0 or not np.isfinite(x).all():
        return np.zeros(n, bool)
    part = np.zeros(16, np.float32)
    full = n // 16 * 16
    for k0 in range(0, full, 16):
        part += x[k0:k0 + 16] * x[k0:k0 + 16]
    part[:n - full] += x[full:] * x[full:]
    s = np.float32(0)
    for v in part:
        s = np.float32(s + v)
    t = np.float32(64) * np.float32(s / np.float32(n))
    sq = x * x
    while (sq > t).sum() > _kernels.INT8_OUTLIERS:
        t = np.float32(t * np.float32(4))
    amax = np.abs(x).max()
    return sq > t if t < np.float32(amax * amax) else np.zeros(n, bool)


def torch_quantize_activations(x):
    """Rows of activations: (q, scale, outlier mask), the outliers taken out
    and the rest quantized on its own amax."""
    mask = torch.from_numpy(np.stack([outlier_mask(r) for r in x])) if x.shape[0] else \
        torch.zeros(x.shape, dtype=torch.bool)
    q, scale = torch_quantize(torch.where(mask, torch.zeros_like(x), x))
    return q, scale, mask


def torch_int8_linear(x, w, b, act):
    qa, sa, mask = torch_quantize_activations(x)
    qw, sw = torch_quantize(w)
    acc = (qa.double() @ qw.double().T).to(torch.int32)        # exact sums
    y = acc.float() * (sa[:, None] * sw[None, :])
    for i in range(x.shape[0]):                                # the outliers, in order of k
        ks = torch.nonzero(mask[i]).flatten().tolist()
        if ks:
            o = torch.zeros(w.shape[0])
            for k in ks:
                o = o + x[i, k] * qw[:, k].float()
            y[i] = y[i] + o * sw
    if b is not None:
        y = y + b
    return TORCH_ACT[act](y)


def test_quantize_matches_torch(rng):
    rows = [rng.standard_normal(300).astype(np.float32) * np.float32(10.0) ** e
            for e in range(-20, 20, 3)]
    rows += [np.array([2.5, -1.5, 0.5], np.float32), np.array([127.0, 0.5, -0.5, 1.5], np.float32),
             np.zeros(5, np.float32), np.array([1.0, np.inf], np.float32),
             np.array([np.nan, 2.0], np.float32), np.array([3e38, -3e38, 1e-40], np.float32)]
    spiky = rng.standard_normal(384).astype(np.float32)
    spiky[[3, 99]] = [28.0, -31.0]           # BERT's [CLS] rows look like this
    many = rng.standard_normal(2000).astype(np.float32)
    many[::150] = 60.0 + np.arange(14)         # more than OUTLIERS past 8 rms
    rows += [spiky, many]
    seen = 0
    for x in rows:
        q, s = _kernels.int8_quantize(x)
        tq, ts = torch_quantize(torch.from_numpy(x)[None, :])
        np.testing.assert_array_equal(q, tq[0].numpy())
        assert (np.isnan(s) and np.isnan(float(ts[0]))) or np.float32(s) == ts[0].numpy()
        q, s, ks, vs = _kernels.int8_quantize(x, outliers=True)
        tq, ts, mask = torch_quantize_activations(torch.from_numpy(x)[None, :])
        np.testing.assert_array_equal(q, tq[0].numpy())
        np.testing.assert_array_equal(ks, np.nonzero(mask[0].numpy())[0])
        np.testing.assert_array_equal(vs, x[ks])
        assert (np.isnan(s) and np.isnan(float(ts[0]))) or np.float32(s) == ts[0].numpy()
        assert len(ks) <= _kernels.INT8_OUTLIERS
        seen += len(ks)
    assert seen >= 2


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 7, 5), (13, 64, 33), (17, 65, 32),
                                   (64, 257, 130), (200, 1029, 97), (7, 0, 9)])
@pytest.mark.parametrize("act", [None, "relu", "gelu", "silu"])
def test_linear_int8_against_torch(isa, int8_path, threads, M, K, N, act, rng):
    x = rng.standard_normal((M, K)).astype(np.float32)
    if K >= 200:        # outliers (|x| > 8 rms) in every third row
        x[::3, 5] = 40.0
        x[::3, K - 2] = -33.0
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    pw = ops.pack_weight(w, compute_type="int8")
    assert isinstance(pw, ops.PackedMatrixI8) and pw.compute_type == "int8"
    y = ops.linear(x, pw, b, activation=act)
    xt, wt, bt = (torch.from_numpy(v) for v in (x, w, b))
    ref = torch_int8_linear(xt, wt, bt, act).numpy()
    if act in (None, "relu"):
        np.testing.assert_array_equal(y, ref)
    else:
        np.testing.assert_allclose(y, ref, rtol=4e-6, atol=4e-6)
    # the float32 oracle on the unquantized operands: the quantization bound
    ref32 = TORCH_ACT[act](torch.nn.functional.linear(xt, wt, bt)).double().numpy()
    tol = int8_matmul_tol(x.astype(np.float64), w.astype(np.float64)) * 1.13  # gelu's slope
    assert np.all(np.abs(y - ref32) <= tol + 1e-6)


def test_int8_is_close_to_float32_not_equal(rng):
    """What int8 costs: a 1024-term product errs ~1% of its scale, not 0."""
    x = rng.standard_normal((8, 1024)).astype(np.float32)
    w = rng.standard_normal((64, 1024)).astype(np.float32)
    y = ops.linear(x, ops.pack_weight(w, "int8"))
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    rel = np.abs(y - ref).max() / np.abs(ref).max()
    assert 1e-5 < rel < 2e-2


def test_rows_are_batch_invariant_on_every_kernel(isa, rng):
    K, N = 300, 70
    x = rng.standard_normal((64, K)).astype(np.float32)
    pw = ops.pack_weight(rng.standard_normal((N, K)).astype(np.float32), "int8")
    before, nt = _kernels.get_int8_setting(), _kernels.get_num_threads()
    try:
        alone = None
        for path in _kernels.available_int8_paths():
            _kernels.set_int8_path(path)
            for t in (1, 2):
                _kernels.set_num_threads(t)
                for m in (1, 7, 64):
                    y = pw.matmul(x[:m])
                    if alone is None:
                        alone = y[:1].copy()
                    assert np.array_equal(y[:1], alone), (path, t, m)
                    assert np.array_equal(y, pw.matmul(x[:m], ref=True))
    finally:
        _kernels.set_int8_path(before)
        _kernels.set_num_threads(nt)


def test_module_to_int8_and_back(rng):
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    x = rng.standard_normal((2, 5, 32)).astype(np.float32)
    y32 = layer(x)
    assert layer.to("int8") is layer
    assert layer.linear1.compute_type == "int8" and layer.self_attn.compute_type == "int8"
    y8 = layer(x)
    assert not np.array_equal(y8, y32)
    assert np.abs(y8 - y32).max() < 0.1 * np.abs(y32).max()
    assert np.array_equal(layer.to("float32")(x), y32)


def test_int8_checks(rng):
    w = rng.standard_normal((4, 3)).astype(np.float32)
    pw = ops.pack_weight(w, "int8")
    with pytest.raises(ValueError, match=r"input of shape \(M, 3\) expected"):
        ops.linear(np.ones((2, 5), np.float32), pw)
    with pytest.raises(ValueError, match="past the int8 GEMM's limit"):
        ops.PackedMatrixI8(np.zeros((1, _kernels.INT8_MAX_K + 1), np.float32))
    with pytest.raises(ValueError, match="unknown int8 path"):
        _kernels.set_int8_path("vnni")
    for name in ("avx512_vnni", "amx_int8"):
        if name not in _kernels.available_int8_paths():
            with pytest.raises(RuntimeError, match="lacks"):
                _kernels.set_int8_path(name)


def test_int8_paths_follow_the_cpu():
    feats = _kernels.cpu_features()
    avx512 = "avx512" in _kernels.available_isas()
    paths = _kernels.available_int8_paths()
    assert ("avx512_vnni" in paths) == (feats["avx512_vnni"] and avx512)
    assert ("amx_int8" in paths) == (feats["amx_int8"] and feats["amx_granted"] and
                                     "avx512_vnni" in paths)
    import pytransformer
    info = pytransformer.cpu_info()
    setting = _kernels.get_int8_setting()
    if not os.environ.get("PYTRANSFORMER_INT8"):
        assert setting == paths[-1]       # the best there is by default
    expected = setting if info["isa"] == "avx512" and setting != "generic" else info["isa"]
    assert info["compute_paths"]["int8"] == expected


def test_forcing_an_int8_kernel_the_path_lacks_is_an_error():
    env = dict(os.environ, PYTRANSFORMER_INT8="avx512_vnni", PYTRANSFORMER_ISA="avx2")
    r = run_python(["-c", "import pytransformer"], env=env, timeout=120)
    assert r.returncode != 0
    assert "RuntimeError" in r.stderr and "avx512_vnni" in r.stderr
    env = dict(os.environ, PYTRANSFORMER_INT8="generic")
    r = run_python(["-c", "import pytransformer; "
                        "print(pytransformer.cpu_info()['compute_paths']['int8'])"],
                   env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() in _kernels.available_isas(), r.stderr
