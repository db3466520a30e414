"""ops.matmul and ops.linear (plain, packed, with a fused activation) against
torch.matmul / torch.nn.functional.linear on the same inputs, on every kernel
path and at 1 and 2 threads; and bit-identity of rows whatever M or the thread
count."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from pytransformer import _kernels, cpu_info, ops
from conftest import assert_close, matmul_tol

DIMS = [1, 2, 3, 7, 16, 33, 127, 257]


def _tol(a, b, K):
    """matmul_tol with scale = largest row norm of a times largest column
    norm of b (bounds every |output|)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return matmul_tol(K, 1.0)
    ra = np.sqrt((a * a).sum(-1)).max()
    cb = np.sqrt((b * b).sum(-2)).max()
    return matmul_tol(K, float(ra * cb))


def _torch_matmul(a, b):
    return torch.matmul(torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))).numpy()


def _check_matmul(a, b, what=""):
    out = ops.matmul(a, b)
    ref = _torch_matmul(a, b)
    assert out.dtype == np.float32
    K = np.shape(a)[-1]
    assert_close(out, ref.astype(np.float32), _tol(a, np.atleast_2d(b) if np.ndim(b) > 1
                                                   else np.asarray(b)[:, None], K), what=what)


# ------------------------------------------------------------------ shapes --

@pytest.mark.parametrize("K", [1, 3, 16, 127, 257])
def test_matmul_shapes(isa, threads, rng, K):
    for M in DIMS:
        for N in DIMS:
            a = rng.standard_normal((M, K), dtype=np.float32)
            b = rng.standard_normal((K, N), dtype=np.float32)
            _check_matmul(a, b, f"{isa} M={M} N={N} K={K}")


def test_matmul_large(isa, threads, rng):
    # 1000+ in every dimension once (kept few: each costs 2 GFLOP on the
    # scalar path), spanning several K and M cache blocks.
    a = rng.standard_normal((1031, 1000), dtype=np.float32)
    b = rng.standard_normal((1000, 1030), dtype=np.float32)
    _check_matmul(a, b, isa)


def test_matmul_tall_and_wide(isa, threads, rng):
    for M, K, N in [(1000, 33, 7), (3, 1200, 5), (2, 17, 4100)]:
        a = rng.standard_normal((M, K), dtype=np.float32)
        b = rng.standard_normal((K, N), dtype=np.float32)
        _check_matmul(a, b, f"{isa} {M}x{K}x{N}")


def test_matmul_batched_and_broadcast(isa, threads, rng):
    cases = [((4, 7, 33), (4, 33, 16)), ((2, 3, 5, 17), (3, 17, 9)), ((5, 1, 8, 3), (1, 6, 3, 2)),
             ((7, 33), (3, 33, 2)), ((2, 1, 127, 16), (16, 33))]
    for sa, sb in cases:
        a = rng.standard_normal(sa, dtype=np.float32)
        b = rng.standard_normal(sb, dtype=np.float32)
        _check_matmul(a, b, f"{isa} {sa} @ {sb}")


def test_matmul_vectors(isa, threads, rng):
    for sa, sb in [((33,), (33,)), ((33,), (33, 7)), ((7, 33), (33,)), ((33,), (4, 33, 7)),
                   ((2, 5, 33), (33,)), ((1,), (1, 1))]:
        a = rng.standard_normal(sa, dtype=np.float32)
        b = rng.standard_normal(sb, dtype=np.float32)
        out = ops.matmul(a, b)
        ref = _torch_matmul(a, b)
        assert out.shape == ref.shape, (sa, sb)
        assert_close(out, ref, matmul_tol(sa[-1], 10.0 * np.sqrt(sa[-1])), what=f"{sa} @ {sb}")


def test_matmul_transposed_and_noncontiguous(isa, threads, rng):
    base_a = rng.standard_normal((257, 33), dtype=np.float32)
    base_b = rng.standard_normal((127, 257), dtype=np.float32)
    # a.T views (read transposed by the kernel, no copy)
    _check_matmul(base_a.T, base_b.T, "a.T @ b.T")
    _check_matmul(base_a.T, rng.standard_normal((257, 5), dtype=np.float32), "a.T @ b")
    _check_matmul(rng.standard_normal((5, 33), dtype=np.float32), base_a.T, "a @ b.T")
    # batched transposed views
    ba = rng.standard_normal((3, 16, 7), dtype=np.float32)
    bb = rng.standard_normal((3, 9, 16), dtype=np.float32)
    _check_matmul(np.swapaxes(ba, -1, -2), np.swapaxes(bb, -1, -2), "batched .mT")
    # strided (non-contiguous, not a transpose) views and negative strides
    _check_matmul(base_b[::2, ::3], base_a[::3][:, ::2], "strided")
    _check_matmul(base_a[::-1, :], base_a.T[:, ::-1], "reversed")


def test_matmul_float64_converted(isa, rng):
    a = rng.standard_normal((17, 33))
    b = rng.standard_normal((33, 7))
    out = ops.matmul(a, b)
    assert out.dtype == np.float32
    assert_close(out, a @ b, _tol(a, b, 33) + 1e-6 * np.abs(a @ b).max(), what="float64")
    # float16 too
    out16 = ops.matmul(a.astype(np.float16), b.astype(np.float16))
    ref16 = _torch_matmul(a.astype(np.float16).astype(np.float32),
                          b.astype(np.float16).astype(np.float32))
    assert_close(out16, ref16, _tol(a, b, 33), what="float16")


@pytest.mark.parametrize("bad", [np.arange(12).reshape(3, 4), np.ones((3, 4), dtype=bool),
                                 np.ones((3, 4), dtype=np.complex64),
                                 np.array([[object()] * 4] * 3, dtype=object)])
def test_matmul_rejects_non_float(bad):
    good = np.ones((4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        ops.matmul(bad, good)
    with pytest.raises(ValueError):
        ops.matmul(good.T, bad.T)
    with pytest.raises(ValueError):
        ops.linear(bad, np.ones((2, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        ops.linear(np.ones((2, 4), dtype=np.float32), bad)


def test_matmul_shape_errors():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 6\)"):
        ops.matmul(np.ones((3, 4)), np.ones((5, 6)))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(5, 4, 6\)"):
        ops.matmul(np.ones((2, 3, 4)), np.ones((5, 4, 6)))
    with pytest.raises(ValueError):
        ops.matmul(np.float32(1.0), np.ones(3))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(2, 5\)"):
        ops.linear(np.ones((3, 4)), np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(2, 5\)"):
        ops.linear(np.ones((3, 4)), ops.pack_weight(np.ones((2, 5))))
    with pytest.raises(ValueError, match=r"bias"):
        ops.linear(np.ones((3, 4)), np.ones((2, 4)), np.ones(3))
    with pytest.raises(ValueError):
        ops.linear(np.ones((3, 4)), np.ones(4))
    with pytest.raises(ValueError):
        ops.linear(np.ones((3, 4)), np.ones((2, 4)), activation="tanh")


@pytest.mark.parametrize("sa,sb", [((0, 3), (3, 4)), ((3, 0), (0, 4)), ((3, 4), (4, 0)),
                                   ((0, 2, 3), (3, 4)), ((2, 0, 3), (2, 3, 5)),
                                   ((0,), (0,)), ((0,), (0, 3))])
def test_matmul_zero_size(isa, sa, sb):
    a = np.ones(sa, dtype=np.float32)
    b = np.ones(sb, dtype=np.float32)
    out = ops.matmul(a, b)
    ref = _torch_matmul(a, b)
    assert out.shape == ref.shape
    assert_close(out, ref, 0.0)


def test_linear_zero_size(isa):
    w = np.ones((3, 0), dtype=np.float32)
    bias = np.arange(3, dtype=np.float32)
    x = np.ones((2, 0), dtype=np.float32)
    ref = F.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias)).numpy()
    assert_close(ops.linear(x, w, bias), ref, 0.0)
    assert_close(ops.linear(x, ops.pack_weight(w), bias), ref, 0.0)
    x0 = np.ones((0, 5), dtype=np.float32)
    assert ops.linear(x0, np.ones((3, 5), dtype=np.float32)).shape == (0, 3)


def test_matmul_nan_inf(isa, threads, rng):
    a = rng.standard_normal((9, 20), dtype=np.float32)
    b = rng.standard_normal((20, 40), dtype=np.float32)
    a[2, 5] = np.nan
    a[6, 1] = np.inf
    b[3, 33] = -np.inf
    out = ops.matmul(a, b)
    ref = _torch_matmul(a, b)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(ref))
    fin = np.isfinite(ref)
    assert_close(out[fin], ref[fin], _tol(np.nan_to_num(a, posinf=0), np.nan_to_num(b, neginf=0), 20))
    # and through the fused epilogue
    w = np.ascontiguousarray(b.T)
    y = ops.linear(a, ops.pack_weight(w), np.zeros(40, np.float32), activation="relu")
    yr = F.relu(F.linear(torch.from_numpy(a), torch.from_numpy(w))).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(yr))


# ------------------------------------------------------------------ linear --

ACTS = {None: lambda t: t, "relu": F.relu, "gelu": F.gelu,
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "silu": F.silu}


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("packed", [False, True])
def test_linear(isa, threads, rng, act, packed):
    for lead, in_f, out_f in [((1,), 1, 1), ((3,), 7, 2), ((2, 7), 33, 16), ((16,), 257, 127),
                              ((127,), 16, 257), ((1,), 512, 2048), ((2, 5, 3), 17, 33)]:
        x = rng.standard_normal(lead + (in_f,), dtype=np.float32)
        w = rng.standard_normal((out_f, in_f), dtype=np.float32) / np.float32(np.sqrt(in_f))
        bias = rng.standard_normal(out_f, dtype=np.float32)
        for b in (None, bias):
            ref = ACTS[act](F.linear(torch.from_numpy(x), torch.from_numpy(w),
                                     None if b is None else torch.from_numpy(b))).numpy()
            ww = ops.pack_weight(w) if packed else w
            out = ops.linear(x, ww, b, activation=act)
            assert_close(out, ref, _tol(x.reshape(-1, in_f), w.T, in_f) + 1e-6,
                         what=f"{isa} {lead} {in_f}->{out_f} act={act} packed={packed}")


def test_linear_noncontiguous_and_float64(isa, rng):
    x = rng.standard_normal((40, 66))[:, ::2]
    w = rng.standard_normal((33, 66)).T
    bias = rng.standard_normal(66)
    ref = F.linear(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(w)),
                   torch.from_numpy(bias)).numpy()
    out = ops.linear(x, w, bias)
    assert out.dtype == np.float32
    assert_close(out, ref, _tol(x, w.T, 33) + 1e-6 * np.abs(ref).max())


def test_packed_weight_follows_kernel_path(rng):
    """A weight packed under one path still gives the right answer after a
    switch of path (it is repacked)."""
    w = rng.standard_normal((33, 17), dtype=np.float32)
    x = rng.standard_normal((5, 17), dtype=np.float32)
    ref = F.linear(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    before = _kernels.get_isa()
    try:
        pw = None
        for name in _kernels.available_isas() + _kernels.available_isas()[::-1]:
            _kernels.set_isa(name)
            pw = pw or ops.pack_weight(w)
            assert_close(ops.linear(x, pw), ref, _tol(x, w.T, 17), what=name)
    finally:
        _kernels.set_isa(before)


# ------------------------------------------------------------ bit identity --

def test_rows_bit_identical_whatever_m_and_threads(isa, rng):
    """A row's result has the same bits alone (M=1, decoding) as inside a
    1000-row call, at 1 and 2 threads, packed or not, with any activation."""
    K, N = 600, 257
    x = rng.standard_normal((1000, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32) / np.float32(np.sqrt(K))
    bias = rng.standard_normal(N, dtype=np.float32)
    pw = ops.pack_weight(w)
    before = _kernels.get_num_threads()
    try:
        results = []
        for nt in (1, 2):
            _kernels.set_num_threads(nt)
            results.append(ops.linear(x, w, bias, activation="gelu"))
            results.append(ops.linear(x, pw, bias, activation="gelu"))
        for r in results[1:]:
            assert np.array_equal(r, results[0])
        big = results[0]
        for nt in (1, 2):
            _kernels.set_num_threads(nt)
            for i in [0, 1, 11, 12, 13, 500, 998, 999]:
                one = ops.linear(x[i], pw, bias, activation="gelu")
                assert one.tobytes() == big[i].tobytes(), (isa, nt, i)
                one = ops.linear(x[i:i + 1], w, bias, activation="gelu")
                assert one.tobytes() == big[i].tobytes(), (isa, nt, i)
                few = ops.linear(x[i:i + 7], pw, bias, activation="gelu")
                assert few.tobytes() == big[i:i + 7].tobytes(), (isa, nt, i)
            # matmul, with B transposed or not, and a transposed left operand
            mm = ops.matmul(x, w.T)
            assert ops.matmul(x[5], w.T).tobytes() == mm[5].tobytes()
            wt = np.ascontiguousarray(w.T)
            assert ops.matmul(x, wt).tobytes() == mm.tobytes()
            for m in (1, 2, 7, 13):
                assert ops.matmul(x[40:40 + m], wt).tobytes() == mm[40:40 + m].tobytes()
            xt = np.ascontiguousarray(x.T)
            assert ops.matmul(xt.T, w.T).tobytes() == mm.tobytes()
    finally:
        _kernels.set_num_threads(before)


# --------------------------------------------------------------- property --

@settings(max_examples=40, deadline=None)
@given(M=st.integers(1, 70), N=st.integers(1, 70), K=st.integers(0, 70),
       batch=st.sampled_from([(), (1,), (3,), (2, 2)]), ta=st.booleans(), tb=st.booleans(),
       isa_name=st.sampled_from(_kernels.available_isas()), nt=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**31 - 1))
def test_matmul_property(M, N, K, batch, ta, tb, isa_name, nt, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(batch + ((K, M) if ta else (M, K)), dtype=np.float32)
    b = rng.standard_normal(batch + ((N, K) if tb else (K, N)), dtype=np.float32)
    if ta:
        a = np.swapaxes(a, -1, -2)
    if tb:
        b = np.swapaxes(b, -1, -2)
    before = (_kernels.get_isa(), _kernels.get_num_threads())
    try:
        _kernels.set_isa(isa_name)
        _kernels.set_num_threads(nt)
        out = ops.matmul(a, b)
    finally:
        _kernels.set_isa(before[0])
        _kernels.set_num_threads(before[1])
    ref = _torch_matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))
    assert_close(out, ref, _tol(a, b, K))


def test_out_of_memory_is_a_memory_error_never_a_slower_route():
    """The kernels' working buffers failing to allocate is a MemoryError from
    every op that allocates, and the call after it gives the usual bits."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 70), dtype=np.float32)
    b = rng.standard_normal((70, 40), dtype=np.float32)
    w = ops.pack_weight(rng.standard_normal((40, 70), dtype=np.float32))
    q = rng.standard_normal((1, 2, 30, 16), dtype=np.float32)
    calls = [lambda: ops.matmul(a, b), lambda: ops.linear(a, w),
             lambda: ops.scaled_dot_product_attention(q, q, q)]
    for call in calls:
        want = call()
        _kernels._fail_allocations_after(0)
        try:
            with pytest.raises(MemoryError, match="out of memory"):
                call()
        finally:
            _kernels._fail_allocations_after(-1)
        np.testing.assert_array_equal(call(), want)


@pytest.mark.parametrize("nt", [1, 2])
def test_rows_bit_identical_whatever_the_cache_blocking(isa, nt, rng):
    """The M and N cache blocks follow the CPU's caches; forcing others
    (the smallest, odd ones, the largest) changes no bit: a row's result is
    the same on every machine with the same kernel path."""
    a = rng.standard_normal((300, 700), dtype=np.float32)
    w = rng.standard_normal((530, 700), dtype=np.float32)
    b = rng.standard_normal(530).astype(np.float32)
    pw = ops.pack_weight(w)
    before = _kernels.get_num_threads()
    _kernels.set_num_threads(nt)
    try:
        want = ops.matmul(a, w.T), ops.linear(a, pw, b, activation="gelu")
        for mc, nc in [(1, 1), (50, 70), (24, 96), (100000, 100000)]:
            _kernels.set_gemm_blocking(mc, nc)
            assert _kernels.get_gemm_blocking() == (mc, nc)
            got = ops.matmul(a, w.T), ops.linear(a, pw, b, activation="gelu")
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), (mc, nc)
    finally:
        _kernels.set_gemm_blocking(0, 0)
        _kernels.set_num_threads(before)
    assert _kernels.get_gemm_blocking() == (0, 0)
    with pytest.raises(ValueError):
        _kernels.set_gemm_blocking(-1, 0)


def test_cache_sizes_reported():
    caches = cpu_info()["caches"]
    assert set(caches) == {"L1d", "L2", "L3"}
    assert all(isinstance(v, int) and v >= 0 for v in caches.values())
    if caches["L2"]:   # a CPU that reports its caches reports sane ones
        assert 16 << 10 <= caches["L1d"] <= caches["L2"] <= 64 << 20
