"""ops.rms_norm against torch.nn.functional.rms_norm and transformers'
LlamaRMSNorm, and ops.silu_and_mul (SwiGLU's gate) against
F.silu(gate) * up, on every kernel path and thread count."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from pytransformer import _kernels, ops
from conftest import ELEMENTWISE_ATOL, ELEMENTWISE_RTOL, RMS_NORM_RTOL, assert_close

SIZES = [1, 2, 3, 7, 16, 33, 127, 257, 576, 1000, 4099]


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def rms_close(actual, expected, what=""):
    scale = max(float(np.abs(expected).max()), 1.0) if expected.size else 1.0
    assert_close(actual, expected, ELEMENTWISE_ATOL * scale, RMS_NORM_RTOL, what)


# ---------------------------------------------------------------- RMS norm --

@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("affine", [False, True])
def test_rms_norm_matches_torch(isa, threads, rng, n, affine):
    x = (rng.standard_normal((5, n)) * 3 + 0.5).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32) if affine else None
    ref = F.rms_norm(T(x), (n,), None if w is None else T(w)).numpy()
    rms_close(ops.rms_norm(x, (n,), w), ref, f"{isa} n={n}")
    rms_close(ops.rms_norm(x, n, w, eps=1e-5),
              F.rms_norm(T(x), (n,), None if w is None else T(w), eps=1e-5).numpy())


@pytest.mark.parametrize("eps", [1e-6, 1e-5])
@pytest.mark.parametrize("n", [64, 576, 2048])
def test_rms_norm_matches_llama_rms_norm(isa, rng, eps, n):
    """transformers' LlamaRMSNorm: float32, variance = mean(x^2), x *
    rsqrt(variance + eps), times the weight."""
    m = LlamaRMSNorm(n, eps=eps)
    with torch.no_grad():
        m.weight.normal_()
    x = (rng.standard_normal((2, 7, n)) * 4).astype(np.float32)
    with torch.no_grad():
        ref = m(T(x)).numpy()
    rms_close(ops.rms_norm(x, n, m.weight.detach().numpy(), eps), ref, f"{isa} n={n}")


def test_rms_norm_default_eps_is_float32s():
    x = np.full((1, 4), 1e-4, np.float32)   # mean(x^2) = 1e-8: eps matters
    ref = F.rms_norm(T(x), (4,)).numpy()
    rms_close(ops.rms_norm(x, 4), ref)
    assert not np.allclose(ops.rms_norm(x, 4, eps=1e-6), ref, rtol=1e-3)


def test_rms_norm_multi_dim_shape_float64_and_strided(rng):
    x = rng.standard_normal((3, 4, 5, 6))
    w = rng.standard_normal((5, 6))
    ref = F.rms_norm(T(x.astype(np.float32)), (5, 6), T(w.astype(np.float32))).numpy()
    out = ops.rms_norm(x, (5, 6), w)
    assert out.dtype == np.float32
    rms_close(out, ref)
    view = x[:, ::2].astype(np.float32)[..., ::-1]
    rms_close(ops.rms_norm(view, 6), F.rms_norm(T(view.copy()), (6,)).numpy())


def test_rms_norm_long_rows_and_large_values(isa, rng):
    x = (rng.standard_normal((2, 100_003)) * 1e3 + 5e3).astype(np.float32)
    ref = F.rms_norm(T(x.astype(np.float64)), (100_003,)).numpy()
    rms_close(ops.rms_norm(x, 100_003), ref, f"{isa} long rows (float64 reference)")


def test_rms_norm_zero_row_and_nan(isa):
    x = np.array([[0.0, 0.0, 0.0], [1.0, np.nan, 2.0]], np.float32)
    out = ops.rms_norm(x, 3)
    ref = F.rms_norm(T(x), (3,)).numpy()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(out[0], [0.0, 0.0, 0.0])


def test_rms_norm_rows_bit_identical_across_batch_and_threads(isa, rng):
    x = rng.standard_normal((300, 576)).astype(np.float32)
    w = rng.standard_normal(576).astype(np.float32)
    before = _kernels.get_num_threads()
    try:
        _kernels.set_num_threads(1)
        one = ops.rms_norm(x[123:124], 576, w)
        _kernels.set_num_threads(2)
        np.testing.assert_array_equal(ops.rms_norm(x, 576, w)[123:124], one)
    finally:
        _kernels.set_num_threads(before)


def test_rms_norm_naive_twin(isa, rng):
    x = rng.standard_normal((4, 1025)).astype(np.float32)
    w = rng.standard_normal(1025).astype(np.float32)
    rms_close(_kernels.rms_norm(x, 1025, w, 1e-6), _kernels.rms_norm(x, 1025, w, 1e-6, ref=True))


@pytest.mark.parametrize("args, kwargs, words", [
    ((np.zeros((2, 4), np.float32), 5), {}, "normalized_shape"),
    ((np.zeros((2, 4), np.float32), (2, 4, 1)), {}, "normalized_shape"),
    ((np.zeros((2, 4), np.float32), "4"), {}, "normalized_shape"),
    ((np.zeros((2, 4), np.float32), 4, np.ones(3)), {}, "weight"),
    ((np.zeros((2, 4), np.float32), 4, np.ones(4, int)), {}, "weight"),
    ((np.zeros((2, 4), np.float32), 4), {"eps": -1.0}, "eps"),
    ((np.zeros((2, 4), np.float32), 4), {"eps": "small"}, "eps"),
    ((np.zeros((2, 4), np.int64), 4), {}, "input"),
])
def test_rms_norm_bad_arguments(args, kwargs, words):
    with pytest.raises(ValueError, match=words):
        ops.rms_norm(*args, **kwargs)


def test_rms_norm_kernel_boundary():
    with pytest.raises(ValueError, match="weight"):
        _kernels.rms_norm(np.zeros((2, 4), np.float32), 4, np.ones(5, np.float32))
    with pytest.raises(ValueError, match="divide"):
        _kernels.rms_norm(np.zeros((2, 4), np.float32), 3)


def test_rms_norm_empty():
    assert ops.rms_norm(np.zeros((0, 4), np.float32), 4).shape == (0, 4)


# ----------------------------------------------------------- SwiGLU's gate --

def torch_silu_and_mul(x):
    t = T(x)
    F_ = t.shape[-1] // 2
    return (F.silu(t[..., :F_]) * t[..., F_:]).numpy()


@pytest.mark.parametrize("n", SIZES)
def test_silu_and_mul_matches_torch(isa, threads, rng, n):
    x = (rng.standard_normal((6, 2 * n)) * 6).astype(np.float32)
    ref = torch_silu_and_mul(x)
    out = ops.silu_and_mul(x)
    assert out.shape == (6, n)
    assert_close(out, ref, ELEMENTWISE_ATOL * max(1.0, float(np.abs(ref).max())),
                 ELEMENTWISE_RTOL, f"{isa} F={n}")


def test_silu_and_mul_extremes(isa):
    g = np.array([-1e4, -100.0, -88.0, -20.0, -1e-30, 0.0, 1e-30, 20.0, 100.0, 1e4,
                  np.inf, -np.inf, np.nan, 3.0], np.float32)
    u = np.array([1.0, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0, 8.0, -9.0, 1e-3, 2.0, 2.0, 1.0, np.nan],
                 np.float32)
    x = np.concatenate([g, u])[None]
    out, ref = ops.silu_and_mul(x), torch_silu_and_mul(x)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    assert_close(np.nan_to_num(out, nan=7.0), np.nan_to_num(ref, nan=7.0),
                 ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)


def test_silu_and_mul_shapes_and_dtypes(rng):
    x = rng.standard_normal((2, 3, 5, 8))
    ref = torch_silu_and_mul(x.astype(np.float32))
    out = ops.silu_and_mul(x)
    assert out.shape == (2, 3, 5, 4) and out.dtype == np.float32
    assert_close(out, ref, ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)
    view = x.astype(np.float32)[:, ::2]
    assert_close(ops.silu_and_mul(view), torch_silu_and_mul(view), ELEMENTWISE_ATOL,
                 ELEMENTWISE_RTOL)
    assert ops.silu_and_mul(np.zeros((0, 6), np.float32)).shape == (0, 3)
    assert ops.silu_and_mul(np.zeros((2, 0), np.float32)).shape == (2, 0)


def test_silu_and_mul_rows_bit_identical_and_naive_twin(isa, rng):
    x = (rng.standard_normal((40, 2 * 1536)) * 4).astype(np.float32)
    before = _kernels.get_num_threads()
    try:
        _kernels.set_num_threads(1)
        one = ops.silu_and_mul(x[17:18])
        _kernels.set_num_threads(2)
        full = ops.silu_and_mul(x)
    finally:
        _kernels.set_num_threads(before)
    np.testing.assert_array_equal(full[17:18], one)
    ref = _kernels.silu_and_mul(x, ref=True)
    assert_close(full, ref, ELEMENTWISE_ATOL * float(np.abs(ref).max()), ELEMENTWISE_RTOL)


@pytest.mark.parametrize("bad", [np.zeros((2, 5), np.float32), np.float32(1.0),
                                 np.zeros((2, 4), np.int32), np.zeros((2, 4), complex)])
def test_silu_and_mul_bad_input(bad):
    with pytest.raises(ValueError, match="x"):
        ops.silu_and_mul(bad)
