"""Row-wise ops: softmax (plain and masked), layer normalisation and RMS norm,
the element-wise activations of the position-wise feed-forward network, and
the SwiGLU gate of Llama-family feed-forward networks (csrc/rowwise/)."""
import math
import numbers
import operator

import numpy as np

from .. import _kernels
from .checks import as_float32, check_float, kernel_ready, normalize_dim

__all__ = ["softmax", "masked_softmax", "mask_operand", "layer_norm", "rms_norm", "relu", "gelu",
           "silu_and_mul"]
__all__ += ["silu"]


def softmax(input, dim=-1):
    """softmax(input) along ``dim``, as ``torch.softmax`` (a row of -inf gives NaN)."""
    x = as_float32(input, "input")
    if x.ndim == 0:
        return _kernels.softmax(x.reshape(1)).reshape(())
    d = normalize_dim(dim, x.ndim)
    if d == x.ndim - 1:
        return _kernels.softmax(x)
    xt = np.ascontiguousarray(np.moveaxis(x, d, -1))
    return np.moveaxis(_kernels.softmax(xt), -1, d)


def mask_operand(mask, shape, name="mask", target="input"):
    """A mask as (contiguous base, element strides broadcasting it to shape):
    how a broadcast mask reaches the kernels without being materialised."""
    m = np.asarray(mask)
    if m.dtype == np.bool_:
        m = np.ascontiguousarray(m)
    elif m.dtype.kind == "f":
        m = np.ascontiguousarray(m, dtype=np.float32)
    else:
        raise ValueError(f"{name}: a bool or floating-point array is needed, got dtype "
                         f"{m.dtype} with shape {m.shape}")
    try:
        view = np.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {m.shape} does not broadcast to {target} of "
                         f"shape {tuple(shape)}") from None
    return m, tuple(s // m.itemsize for s in view.strides)


def masked_softmax(input, mask, dim=-1):
    """softmax of input with a mask, along ``dim``.

    mask broadcasts to input.  A bool mask keeps positions where it is True
    (the scaled_dot_product_attention convention); a float mask is added to
    the input.  A row with nothing kept gives zeros, never NaN.
    """
    x = as_float32(input, "input")
    if x.ndim == 0:
        x = x.reshape(1)
    d = normalize_dim(dim, x.ndim)
    base, strides = mask_operand(mask, x.shape)
    if d != x.ndim - 1:  # the softmax axis made the last one, mask with it
        xt = np.ascontiguousarray(np.moveaxis(x, d, -1))
        mt = np.ascontiguousarray(np.moveaxis(np.broadcast_to(base, x.shape), d, -1))
        return np.moveaxis(masked_softmax(xt, mt, -1), -1, d)
    out = _kernels.softmax(x, base, strides)
    return out.reshape(np.shape(input)) if np.ndim(input) == 0 else out


# -------------------------------------------------------------- layer norm --

def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalisation over the trailing ``normalized_shape`` dimensions,
    as ``torch.nn.functional.layer_norm`` (biased variance, eps inside the
    square root)."""
    n = normalized_shape[0] if type(normalized_shape) is tuple and \
        len(normalized_shape) == 1 else normalized_shape
    if type(n) is int and type(input) is np.ndarray and input.ndim and input.size and \
            kernel_ready(input, input.ndim) and input.shape[-1] == n and \
            (weight is None or kernel_ready(weight, 1)) and \
            (bias is None or kernel_ready(bias, 1)):
        # the kernel boundary checks the parameters' sizes
        return _kernels.layer_norm(input, n, weight, bias, check_float(eps, "eps", 0.0))
    x = as_float32(input, "input")
    ns = _normalized_shape(normalized_shape, x, "layer_norm")
    n = math.prod(ns)
    params = []
    for arr, name in ((weight, "weight"), (bias, "bias")):
        if arr is None:
            params.append(None)
            continue
        p = as_float32(arr, name)
        if p.shape != ns:
            raise ValueError(f"layer_norm: {name} must have shape {ns}, got {p.shape}")
        params.append(p.reshape(-1))
    if x.size == 0:
        return np.empty_like(x)
    if n == 0:
        return np.empty_like(x)
    return _kernels.layer_norm(x, n, params[0], params[1], check_float(eps, "eps", 0.0))


# ------------------------------------------------------------- activations --

def relu(input):
    """max(input, 0) element-wise (NaN propagates)."""
    return _kernels.activation(as_float32(input, "input"), "relu")


def gelu(input, approximate="none"):
    """GELU, as ``torch.nn.functional.gelu``: approximate='none' is the exact
    x/2 (1 + erf(x / sqrt 2)); 'tanh' the tanh approximation."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    kind = "gelu" if approximate == "none" else "gelu_tanh"
    return _kernels.activation(as_float32(input, "input"), kind)



# ---------------------------------------------------------------- RMS norm --

_FLOAT32_EPS = float(np.finfo(np.float32).eps)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """Root-mean-square layer normalisation (Zhang & Sennrich 2019) over the
    trailing ``normalized_shape`` dimensions, as
    ``torch.nn.functional.rms_norm``: ``x / sqrt(mean(x^2) + eps) * weight``
    (no mean subtracted, no bias).  eps=None is float32's machine epsilon
    (torch's ``finfo(dtype).eps`` for the float32 the kernels compute in).

    Each row's mean of squares is accumulated in an order set by the row
    length alone: a row's result is bit-identical whatever else is in the
    batch and whatever the thread count.
    """
    eps = _FLOAT32_EPS if eps is None else check_float(eps, "eps", 0.0)
    n = normalized_shape[0] if type(normalized_shape) is tuple and \
        len(normalized_shape) == 1 else normalized_shape
    if type(n) is int and type(input) is np.ndarray and input.ndim and input.size and \
            kernel_ready(input, input.ndim) and input.shape[-1] == n and \
            (weight is None or kernel_ready(weight, 1)):
        return _kernels.rms_norm(input, n, weight, eps)   # the kernel checks weight's size
    x = as_float32(input, "input")
    ns = _normalized_shape(normalized_shape, x, "rms_norm")
    w = None
    if weight is not None:
        w = as_float32(weight, "weight")
        if w.shape != ns:
            raise ValueError(f"rms_norm: weight must have shape {ns}, got {w.shape}")
        w = w.reshape(-1)
    if x.size == 0 or math.prod(ns) == 0:
        return np.empty_like(x)
    return _kernels.rms_norm(x, math.prod(ns), w, eps)


def _normalized_shape(normalized_shape, x, what):
    """normalized_shape as a tuple of ints, checked against x's trailing dims."""
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (normalized_shape,)
    try:
        ns = tuple(operator.index(s) for s in normalized_shape)
    except TypeError:
        raise ValueError(f"{what}: normalized_shape must be an int or a sequence of "
                         f"ints, got {normalized_shape!r}") from None
    if len(ns) == 0 or len(ns) > x.ndim or x.shape[x.ndim - len(ns):] != ns:
        raise ValueError(f"{what}: normalized_shape {ns} does not match the trailing "
                         f"dimensions of input of shape {x.shape}")
    return ns


# ----------------------------------------------------------- SwiGLU's gate --

def silu_and_mul(x):
    """SiLU(gate) * up, the gate of a SwiGLU feed-forward network (Shazeer
    2020): ``x`` (..., 2F) is ``[gate | up]``, the output of one GEMM of the
    gate and up projections stacked; returns (..., F) =
    ``F.silu(x[..., :F]) * x[..., F:]``, computed in one pass."""
    a = as_float32(x, "x")
    if a.ndim == 0 or a.shape[-1] % 2:
        raise ValueError(f"silu_and_mul: x must have an even last dimension [gate | up], "
                         f"got shape {a.shape}")
    return _kernels.silu_and_mul(a)


def silu(input, inplace=False):
    """SiLU (swish), x * sigmoid(x) element-wise, as ``torch.nn.functional.silu``
    (``inplace`` is accepted for torch's signature; a new array is returned)."""
    return _kernels.activation(as_float32(input, "input"), "silu")
