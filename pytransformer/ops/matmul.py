"""Matrix products: ``matmul`` (numpy/torch broadcasting), ``linear`` (a torch
Linear's ``x W^T + b``, with the activation of a feed-forward network fused
into the GEMM's store) and ``pack_weight`` (a weight packed once for the GEMM,
csrc/gemm/)."""
import math

import numpy as np

from .. import _kernels
from .._kernels import PackedMatrix, PackedMatrixBF16, PackedMatrixI8, QuantizedMatrix
from .checks import as_float32, check_compute_type, floating, kernel_ready

__all__ = ["matmul", "linear", "pack_weight", "PackedMatrix", "PackedMatrixBF16",
           "PackedMatrixI8", "QuantizedMatrix", "batch_index"]

_PACKED = (PackedMatrix, PackedMatrixBF16, PackedMatrixI8, QuantizedMatrix)

ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh", "silu")


def batch_index(shape, batch):
    """For each batch of the broadcast result, the batch of an operand of
    leading shape `shape` it reads (numpy broadcasting by index, no copies);
    None when that is the batch itself."""
    if tuple(shape) == tuple(batch):
        return None
    n = math.prod(shape)
    return np.ascontiguousarray(
        np.broadcast_to(np.arange(n, dtype=np.int64).reshape(shape), batch).ravel())



def _gemm_operand(x, name):
    """(array3d, transposed): a C-contiguous batch, or the transpose of one."""
    a = floating(x, name)
    # A transposed view of a C-contiguous float32 matrix is passed as-is, with
    # the kernel told to read it transposed: no copy.
    if a.dtype == np.float32 and a.ndim >= 2 and not a.flags.c_contiguous:
        t = np.swapaxes(a, -1, -2)
        if t.flags.c_contiguous:
            return t.reshape((math.prod(t.shape[:-2]),) + t.shape[-2:]), True
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.reshape((math.prod(a.shape[:-2]),) + a.shape[-2:]), False


def matmul(a, b):
    """Matrix product with numpy/torch.matmul semantics (1-d promotion, batch
    broadcasting)."""
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.ndim == 0 or b_arr.ndim == 0:
        raise ValueError(f"matmul: both arguments need at least one dimension, got shapes "
                         f"{a_arr.shape} and {b_arr.shape}")
    a_vec, b_vec = a_arr.ndim == 1, b_arr.ndim == 1
    if a_vec:
        a_arr = a_arr[None, :]
    if b_vec:
        b_arr = b_arr[:, None]
    if a_arr.shape[-1] != b_arr.shape[-2]:
        raise ValueError(f"matmul: shapes {np.shape(a)} and {np.shape(b)} do not align "
                         f"({a_arr.shape[-1]} != {b_arr.shape[-2]})")
    try:
        batch = np.broadcast_shapes(a_arr.shape[:-2], b_arr.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of {np.shape(a)} and {np.shape(b)} "
                         f"do not broadcast") from None
    M, N = a_arr.shape[-2], b_arr.shape[-1]
    out_shape = batch + (M, N)
    a3, ta = _gemm_operand(a_arr, "a")
    b3, tb = _gemm_operand(b_arr, "b")
    nbatch = math.prod(batch)
    if nbatch == 0 or M == 0 or N == 0:
        out = np.zeros(out_shape, dtype=np.float32)   # torch's empty (or K = 0: zero) result
    else:
        out = _kernels.sgemm(a3, b3, ta, tb, a_index=batch_index(a_arr.shape[:-2], batch),
                             b_index=batch_index(b_arr.shape[:-2], batch),
                             ).reshape(out_shape)
    if a_vec:
        out = out[..., 0, :]
    if b_vec:
        out = out[..., 0]
    return out


def pack_weight(weight, compute_type="float32"):
    """Pack a Linear weight ``(out_features, in_features)`` once for reuse.

    The result can stand for ``weight`` in :func:`linear`: model weights never
    change at inference, so the GEMM's packing of them is paid once.
    compute_type: "float32" (a :class:`PackedMatrix`) or "bfloat16" (a
    :class:`PackedMatrixBF16`: the weight rounded to bf16, the input rounded
    to bf16 in each product, float32 accumulation and epilogue) or "int8" (a
    :class:`PackedMatrixI8`: the weight quantized to int8 with a scale per
    output channel, each input row quantized the same way in each product,
    exact int32 sums, float32 dequantization and epilogue).
    """
    check_compute_type(compute_type)
    w = as_float32(weight, "weight")
    if w.ndim != 2:
        raise ValueError(f"pack_weight: weight must be 2-d (out_features, in_features), "
                         f"got shape {w.shape}")
    if compute_type == "bfloat16":
        return PackedMatrixBF16(w, True)
    if compute_type == "int8":
        return PackedMatrixI8(w, True)
    return PackedMatrix(w, True)


def linear(input, weight, bias=None, *, activation=None):
    """y = input @ weight.T + bias, as ``torch.nn.functional.linear``.

    weight: ``(out_features, in_features)`` array, a :func:`pack_weight`
    result, or a :class:`QuantizedMatrix` (GGUF blocks).  ``activation`` (a pytransformer extension: None, 'relu', 'gelu',
    'gelu_tanh', 'silu') is fused into the GEMM's store.
    """
    if kernel_ready(input, 2) and type(weight) in _PACKED and \
            activation in ACTIVATIONS and (bias is None or kernel_ready(bias, 1)):
        return weight.matmul(input, bias, activation)   # which checks the shapes
    x = as_float32(input, "input")
    packed = isinstance(weight, _PACKED)
    if packed:
        in_f, out_f = weight.shape
    else:
        w = as_float32(weight, "weight")
        if w.ndim != 2:
            raise ValueError(f"linear: weight must be 2-d (out_features, in_features), "
                             f"got shape {w.shape}")
        out_f, in_f = w.shape
    if x.ndim == 0 or x.shape[-1] != in_f:
        raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape "
                         f"{(out_f, in_f)} (in_features={in_f})")
    b = None
    if bias is not None:
        b = as_float32(bias, "bias")
        if b.shape != (out_f,):
            raise ValueError(f"linear: bias must have shape ({out_f},), got {b.shape}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"linear: unknown activation {activation!r}")
    lead = x.shape[:-1]
    x2 = x.reshape(math.prod(lead), in_f)
    if x2.shape[0] == 0 or out_f == 0:
        return np.zeros(lead + (out_f,), dtype=np.float32)
    if packed:
        y = weight.matmul(x2, b, activation)
    else:
        y = _kernels.sgemm(x2[None], w[None], False, True, b, activation)[0]
    return y.reshape(lead + (out_f,))

