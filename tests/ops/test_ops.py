"""pytransformer.ops softmax, masked softmax, layer norm and activations against
torch.nn.functional (and scipy.special as a second, torch-free reference)."""
import os

import numpy as np
import pytest
import scipy.special
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import pytransformer
from pytransformer import _kernels, ops

from conftest import ELEMENTWISE_ATOL, ELEMENTWISE_RTOL, LAYER_NORM_ATOL, assert_close, run_python

SIZES = [1, 2, 3, 7, 16, 33, 127, 257, 1000, 4099]


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def torch_masked_softmax(x, mask, dim=-1):
    """The oracle: torch softmax with a bool keep-mask or an additive float
    mask; rows with nothing kept give zeros (torch gives NaN there)."""
    xt = T(x)
    m = T(np.asarray(mask))
    if m.dtype == torch.bool:
        xt = xt.masked_fill(~m, float("-inf"))
    else:
        xt = xt + m
    return torch.softmax(xt, dim).nan_to_num(0.0).numpy()


# ----------------------------------------------------------------- softmax --

@pytest.mark.parametrize("n", SIZES)
def test_softmax_matches_torch(isa, threads, rng, n):
    x = (rng.standard_normal((5, n)) * 8).astype(np.float32)
    assert_close(ops.softmax(x), torch.softmax(T(x), -1).numpy(),
                 ELEMENTWISE_ATOL, ELEMENTWISE_RTOL, f"{isa} n={n}")


@pytest.mark.parametrize("dim", [0, 1, -2, 2])
def test_softmax_other_dims(isa, rng, dim):
    x = rng.standard_normal((4, 6, 9)).astype(np.float32)
    assert_close(ops.softmax(x, dim), torch.softmax(T(x), dim).numpy(),
                 ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)


def test_softmax_noncontiguous_and_float64(rng):
    x = rng.standard_normal((12, 40))
    view = x[::2, ::3]  # float64, non-contiguous: converted, not misread
    out = ops.softmax(view)
    assert out.dtype == np.float32
    assert_close(out, torch.softmax(T(view.astype(np.float32)), -1).numpy(),
                 ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)


def test_softmax_second_reference_scipy(rng):
    x = (rng.standard_normal((3, 300)) * 5).astype(np.float32)
    assert_close(ops.softmax(x), scipy.special.softmax(x.astype(np.float64), axis=-1),
                 ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)


def test_softmax_nan_inf_like_torch(isa):
    x = np.array([[0.0, np.nan, 1.0], [np.inf, 1.0, 2.0], [-np.inf] * 3,
                  [-np.inf, 0.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(np.isnan(ops.softmax(x)), torch.softmax(T(x), -1).isnan().numpy())
    assert_close(np.nan_to_num(ops.softmax(x), nan=7.0),
                 torch.softmax(T(x), -1).nan_to_num(7.0).numpy(), ELEMENTWISE_ATOL)


def test_softmax_large_values_are_stable(isa):
    x = np.array([[1e30, 1e30 - 1e24, -1e30], [88.0, 89.0, 90.0]], dtype=np.float32)
    assert_close(ops.softmax(x), torch.softmax(T(x), -1).numpy(), ELEMENTWISE_ATOL)


def test_softmax_zero_size_and_scalar():
    assert ops.softmax(np.zeros((0, 5), np.float32)).shape == (0, 5)
    assert ops.softmax(np.zeros((3, 0), np.float32)).shape == (3, 0)
    assert ops.softmax(np.float32(3.0)) == torch.softmax(torch.tensor(3.0), 0).item()


# ---------------------------------------------------------- masked softmax --

MASK_SHAPES = [(2, 3, 5, 7), (2, 1, 1, 7), (1, 3, 5, 1), (5, 7), (7,), (2, 3, 1, 7), ()]


@pytest.mark.parametrize("mshape", MASK_SHAPES)
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_masked_softmax_broadcast(isa, threads, rng, mshape, kind):
    x = (rng.standard_normal((2, 3, 5, 7)) * 4).astype(np.float32)
    if kind == "bool":
        mask = rng.random(mshape) > 0.4
    else:
        mask = np.where(rng.random(mshape) > 0.3, rng.standard_normal(mshape),
                        -np.inf).astype(np.float32)
    assert_close(ops.masked_softmax(x, mask), torch_masked_softmax(x, mask),
                 ELEMENTWISE_ATOL, ELEMENTWISE_RTOL, f"{kind} {mshape}")


@pytest.mark.parametrize("n", SIZES)
def test_masked_softmax_sizes(isa, rng, n):
    x = rng.standard_normal((4, n)).astype(np.float32)
    mask = rng.random((4, n)) > 0.5
    mask[:, 0] = True
    assert_close(ops.masked_softmax(x, mask), torch_masked_softmax(x, mask),
                 ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)


def test_masked_softmax_fully_masked_rows_are_zero(isa):
    x = np.ones((3, 9), np.float32)
    mask = np.ones((3, 9), bool)
    mask[1] = False
    out = ops.masked_softmax(x, mask)
    assert not np.isnan(out).any()
    np.testing.assert_array_equal(out[1], 0.0)
    fmask = np.zeros((3, 9), np.float32)
    fmask[2] = -np.inf
    out = ops.masked_softmax(x, fmask)
    np.testing.assert_array_equal(out[2], 0.0)
    assert_close(out[0], np.full(9, 1 / 9, np.float32), ELEMENTWISE_ATOL)


def test_masked_softmax_other_dim(rng):
    x = rng.standard_normal((4, 6, 5)).astype(np.float32)
    mask = rng.random((4, 6, 1)) > 0.3
    assert_close(ops.masked_softmax(x, mask, dim=1), torch_masked_softmax(x, np.broadcast_to(mask, x.shape), 1),
                 ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)


def test_masked_softmax_bad_masks():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(4,\).*\(2, 3\)"):
        ops.masked_softmax(x, np.ones(4, bool))
    with pytest.raises(ValueError, match="mask.*int64"):
        ops.masked_softmax(x, np.ones((2, 3), np.int64))


# -------------------------------------------------------------- layer norm --

@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm_matches_torch(isa, threads, rng, n, affine):
    x = (rng.standard_normal((6, n)) * 3 + 2).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32) if affine else None
    b = rng.standard_normal(n).astype(np.float32) if affine else None
    expected = F.layer_norm(T(x), (n,), None if w is None else T(w), None if b is None else T(b))
    assert_close(ops.layer_norm(x, (n,), w, b), expected.numpy(), LAYER_NORM_ATOL,
                 what=f"{isa} n={n}")


def test_layer_norm_multi_dim_shape_and_eps(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    expected = F.layer_norm(T(x), (4, 5), T(w), None, eps=1e-3).numpy()
    assert_close(ops.layer_norm(x, (4, 5), w, None, eps=1e-3), expected, LAYER_NORM_ATOL)


def test_layer_norm_large_mean_long_rows(isa, rng):
    # |mean| >> std and rows far longer than L1: the two-pass variance must hold
    x = (1000.0 + rng.standard_normal((2, 70000))).astype(np.float32)
    expected = F.layer_norm(T(x).double(), (70000,)).float().numpy()
    assert_close(ops.layer_norm(x, 70000), expected, 2e-3)


@pytest.mark.parametrize("offset", [10.0, 1e3, 1e4, 1e5, 1e6])
@pytest.mark.parametrize("n", [7, 64, 1000, 4099])
def test_layer_norm_rows_far_from_zero(isa, threads, offset, n):
    """Unit-variance rows at offsets up to 1e6: the mean is summed as
    deviations and kept in two floats, so the result is within 1e-5 of the
    float64 layer norm of the same float32 inputs (torch float32 is 1e-1 off
    at 1e6: its mean, rounded to one float, is ulp(1e6)/2 off), and each row's
    bits do not depend on its batch."""
    rng = np.random.default_rng(int(offset) + n)
    x = (rng.standard_normal((33, n)) + offset).astype(np.float32)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    got = ops.layer_norm(x, (n,))
    assert np.abs(got - ref).max() < 1e-5
    assert np.array_equal(ops.layer_norm(x[5:6], (n,)), got[5:6])


def test_layer_norm_constant_row():
    x = np.full((2, 8), 3.0, np.float32)
    assert_close(ops.layer_norm(x, 8), F.layer_norm(T(x), (8,)).numpy(), 0.0)


def test_layer_norm_bad_shapes():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(4,\).*\(2, 3\)"):
        ops.layer_norm(x, 4)
    with pytest.raises(ValueError, match="weight"):
        ops.layer_norm(x, 3, np.ones(4, np.float32))


# ------------------------------------------------------------- activations --

@pytest.mark.parametrize("n", SIZES)
def test_relu_and_gelu_match_torch(isa, threads, rng, n):
    x = (rng.standard_normal(n) * 6).astype(np.float32)
    assert_close(ops.relu(x), F.relu(T(x)).numpy(), 0.0)
    assert_close(ops.gelu(x), F.gelu(T(x)).numpy(), ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)
    assert_close(ops.gelu(x, approximate="tanh"), F.gelu(T(x), approximate="tanh").numpy(),
                 ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)


@pytest.mark.parametrize("n", SIZES)
def test_silu_matches_torch(isa, threads, rng, n):
    x = (rng.standard_normal(n) * 6).astype(np.float32)
    assert_close(ops.silu(x), F.silu(T(x)).numpy(), ELEMENTWISE_ATOL, ELEMENTWISE_RTOL,
                 f"{isa} n={n}")


def test_silu_range_nan_inf_and_scipy(isa):
    """Far tails (exp saturates both ways), the special values as torch, and
    x * expit(x) in float64 as a torch-free second reference."""
    x = np.concatenate([np.linspace(-120, 120, 4001),
                        [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    ours, theirs = ops.silu(x), F.silu(T(x)).numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    fin = ~np.isnan(theirs)
    assert_close(ours[fin], theirs[fin], ELEMENTWISE_ATOL, ELEMENTWISE_RTOL, isa)
    x64 = x[:4001].astype(np.float64)
    assert_close(ops.silu(x[:4001]), x64 * scipy.special.expit(x64), ELEMENTWISE_ATOL,
                 ELEMENTWISE_RTOL, isa)
    assert ops.silu(np.ones((2, 0, 3))).shape == (2, 0, 3)


def test_silu_ref_twin_matches_torch(rng):
    x = (rng.standard_normal(1037) * 12).astype(np.float32)
    assert_close(_kernels.activation(x, "silu", ref=True), F.silu(T(x)).numpy(),
                 ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)


def test_gelu_second_reference_scipy(rng):
    x = np.linspace(-12, 12, 2001).astype(np.float32)
    x64 = x.astype(np.float64)
    exact = 0.5 * x64 * scipy.special.erfc(-x64 / np.sqrt(2))
    assert_close(ops.gelu(x), exact, ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)


def test_activations_nan_inf(isa):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30], np.float32)
    for ours, theirs in [(ops.relu, F.relu),
                         (lambda a: ops.gelu(a, "tanh"), lambda t: F.gelu(t, approximate="tanh"))]:
        np.testing.assert_array_equal(ours(x), theirs(T(x)).numpy())
    # exact GELU: NaN and -inf give NaN as in torch; at +inf we return the
    # limit, +inf, as scipy's erfc form does (torch 2.13's CPU kernel gives NaN)
    with np.errstate(invalid="ignore"):
        expected = 0.5 * x.astype(np.float64) * scipy.special.erfc(-x.astype(np.float64) / np.sqrt(2))
    np.testing.assert_array_equal(ops.gelu(x), expected.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(ops.gelu(x))[[0, 2]], F.gelu(T(x)).isnan().numpy()[[0, 2]])


def test_activation_shapes_preserved():
    x = np.zeros((2, 0, 3), np.float32)
    assert ops.relu(x).shape == (2, 0, 3)
    assert ops.gelu(np.ones((2, 3, 4))).shape == (2, 3, 4)


@pytest.mark.parametrize("bad", [np.arange(4), np.ones(3, complex), np.array(["a"], object),
                                 np.ones(2, bool)])
def test_non_float_inputs_rejected(bad):
    for f in (ops.relu, ops.gelu, ops.softmax, lambda a: ops.layer_norm(a, a.shape[-1])):
        with pytest.raises(ValueError, match=str(bad.dtype)):
            f(bad)


def test_gelu_bad_approximate():
    with pytest.raises(ValueError, match="approximate"):
        ops.gelu(np.ones(2, np.float32), approximate="fast")


# ------------------------------------------------------------ bit identity --

@pytest.mark.parametrize("op", ["softmax", "masked_softmax", "layer_norm", "gelu"])
def test_rows_bit_identical_across_batch_and_threads(isa, rng, op):
    n = 515
    x = rng.standard_normal((1000, n)).astype(np.float32)
    mask = rng.random((1000, n)) > 0.2
    f = {"softmax": lambda a, m: ops.softmax(a),
         "masked_softmax": lambda a, m: ops.masked_softmax(a, m),
         "layer_norm": lambda a, m: ops.layer_norm(a, n),
         "gelu": lambda a, m: ops.gelu(a)}[op]
    results = []
    for nt in (1, 2):
        pytransformer.set_num_threads(nt)
        try:
            results.append(f(x, mask)[7])
            results.append(f(x[7:8], mask[7:8])[0])
        finally:
            pytransformer.set_num_threads(2)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


# -------------------------------------------------------------- hypothesis --

@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 9), n=st.integers(1, 300), scale=st.floats(0.01, 30),
       seed=st.integers(0, 2**31 - 1))
def test_property_softmax_layer_norm(rows, n, scale, seed):
    r = np.random.default_rng(seed)
    x = (r.standard_normal((rows, n)) * scale).astype(np.float32)
    mask = r.random((rows, n)) > 0.5
    assert_close(ops.softmax(x), torch.softmax(T(x), -1).numpy(), ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)
    assert_close(ops.masked_softmax(x, mask), torch_masked_softmax(x, mask),
                 ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)
    assert_close(ops.layer_norm(x, n), F.layer_norm(T(x), (n,)).numpy(), LAYER_NORM_ATOL)
    assert_close(ops.gelu(x), F.gelu(T(x)).numpy(), ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)


# --------------------------------------------------------------- run time --

def test_cpu_info_and_threads():
    info = pytransformer.cpu_info()
    assert info["isa"] in ("scalar", "avx2", "avx512")
    assert info["isa"] in info["available"]
    assert info["threads"] == pytransformer.get_num_threads()
    before = pytransformer.get_num_threads()
    pytransformer.set_num_threads(1)
    assert pytransformer.get_num_threads() == 1
    pytransformer.set_num_threads(before)
    with pytest.raises(ValueError):
        pytransformer.set_num_threads(0)


def _run_with_isa(value):
    env = dict(os.environ, PYTRANSFORMER_ISA=value)
    return run_python(["-c", "import pytransformer; print(pytransformer.cpu_info()['isa'])"], env)


@pytest.mark.parametrize("path", _kernels.available_isas())
def test_env_var_forces_path(path):
    res = _run_with_isa(path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == path


def test_env_var_unknown_path_is_a_clear_error():
    res = _run_with_isa("sse9")
    assert res.returncode != 0
    assert "unknown kernel path 'sse9'" in res.stderr


def test_default_path_is_the_best_available():
    env = {k: v for k, v in os.environ.items() if k != "PYTRANSFORMER_ISA"}
    res = run_python(["-c", "import pytransformer as p; i = p.cpu_info();"
                      "print(i['isa'] == i['available'][-1])"], env)
    assert res.stdout.strip() == "True", res.stderr


def test_zero_d_inputs_stay_zero_d():
    for ours, theirs in [(ops.softmax, lambda t: torch.softmax(t, 0)), (ops.relu, F.relu),
                         (ops.gelu, F.gelu)]:
        out = ours(np.float32(-1.5))
        assert out.shape == ()
        assert_close(out, theirs(torch.tensor(-1.5)).numpy(), ELEMENTWISE_ATOL, ELEMENTWISE_RTOL)


def test_kernel_boundary_refuses_an_empty_mask():
    # the public ops cannot produce this; the Cython boundary must still refuse
    # it rather than let the kernel read element 0 of an empty buffer
    with pytest.raises(ValueError, match="empty mask"):
        _kernels.softmax(np.ones((2, 3), np.float32), np.zeros(0, bool), (0, 0))


def test_bad_argument_types():
    with pytest.raises(ValueError, match="normalized_shape"):
        ops.layer_norm(np.ones((2, 3), np.float32), 3.0)
    with pytest.raises(ValueError, match="integer"):
        pytransformer.set_num_threads(1.5)
    with pytest.raises(ValueError, match=r"mask of shape \(3, 6\)"):
        ops.masked_softmax(np.ones((4, 5, 6), np.float32), np.ones((3, 6), bool), dim=0)
