"""Argument checks shared by every public entry point (ops, nn, models,
generation): each kind of argument is checked here, once, with one message
and one exception class wherever it is given.

- arrays of floats: :func:`floating`, :func:`as_float32`;
- integers and counts: :func:`check_int`;
- token ids: :func:`check_token_ids`, :func:`check_token_id`, which raise
  :class:`TokenIdError` -- an ``IndexError`` that is also a ``ValueError``, as
  numpy's ``AxisError`` is, so ``except IndexError`` and ``except ValueError``
  both catch it, from ``forward``, ``encode``, ``generate`` alike.

Below the entry points arrays are trusted: :func:`kernel_ready` tells the ops
that an argument is already what the kernels take, so they skip conversions.
"""
import numbers

import numpy as np

__all__ = ["COMPUTE_TYPES", "check_compute_type", "TokenIdError", "to_numpy", "floating", "as_float32", "kernel_ready", "normalize_dim",
           "check_int", "check_float", "check_token_ids", "check_token_id"]


class TokenIdError(IndexError, ValueError):
    """A token id outside the vocabulary (or not an integer)."""


def to_numpy(value):
    """A numpy view of an array-like or a (CPU) torch tensor; torch is never
    imported: a tensor is recognised by its ``detach``/``numpy`` methods."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        t = value.detach()
        if hasattr(t, "cpu"):
            t = t.cpu()
        return t.numpy()
    return np.asarray(value)


def floating(x, name):
    """x as an array of a floating-point dtype (not converted yet)."""
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise ValueError(f"{name}: a floating-point array is needed, got dtype {a.dtype} "
                         f"with shape {a.shape}")
    return a


def as_float32(x, name):
    """x as a C-contiguous float32 array (a copy only when needed)."""
    return np.asarray(floating(x, name), dtype=np.float32, order="C")  # 0-d stays 0-d


def kernel_ready(x, ndim):
    """x is already what the kernels take: a float32 C-contiguous ndarray of
    rank ndim (the common case, which skips the conversions)."""
    return type(x) is np.ndarray and x.ndim == ndim and x.dtype == np.float32 and \
        x.flags.c_contiguous


def normalize_dim(dim, ndim, name="dim"):
    if not isinstance(dim, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {dim!r}")
    lo = -max(ndim, 1)
    if not lo <= dim < max(ndim, 1):
        raise ValueError(f"{name}={dim} is out of range for an array of rank {ndim}")
    return dim % max(ndim, 1)


def check_int(value, name, lo=None, hi=None):
    """value as a Python int in [lo, hi] (either bound may be None); bools
    and non-integers are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if lo is not None and v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {v}")
    return v


def check_float(value, name, lo=None, hi=None, lo_open=False, allow_inf=False):
    """value as a finite Python float (infinite only with ``allow_inf``) in
    [lo, hi] -- (lo, hi] with ``lo_open``; strings, None and bools are
    refused with a ValueError naming the argument."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if v != v or (not allow_inf and v in (float("inf"), float("-inf"))):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {v!r}")
    return v


def check_token_ids(ids, name, vocab_size):
    """ids as an intp array, every id in [0, vocab_size); TokenIdError names
    the argument, the offending id and the vocabulary size otherwise."""
    a = np.asarray(ids)
    if a.dtype.kind not in "iu":
        raise TokenIdError(f"{name}: an integer array of token ids is needed, got dtype "
                           f"{a.dtype} with shape {a.shape}")
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise TokenIdError(f"{name}: token id {bad} is out of range for a vocabulary of "
                               f"{vocab_size} (shape {a.shape})")
    return a.astype(np.intp, copy=False)


def check_token_id(value, name, vocab_size, optional=False):
    """One token id (a special id such as bos_id) in [0, vocab_size); None
    passes when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TokenIdError(f"{name}: a token id (an integer) is needed, got {value!r}")
    v = int(value)
    if not 0 <= v < vocab_size:
        raise TokenIdError(f"{name}: token id {v} is out of range for a vocabulary of "
                           f"{vocab_size}")
    return v


#: The compute types of the design: float32 (the default), bfloat16 (weights
#: and GEMM inputs rounded to bf16, float32 accumulation and everything else
#: float32), int8 (weights int8 per output channel, GEMM inputs quantized per
#: row, int32 sums; everything else float32).
COMPUTE_TYPES = ("float32", "bfloat16", "int8")


def check_compute_type(compute_type, name="compute_type"):
    """compute_type as given if it is one of COMPUTE_TYPES, else a ValueError."""
    if isinstance(compute_type, str) and compute_type in COMPUTE_TYPES:
        return compute_type
    raise ValueError(f"{name} must be one of {', '.join(map(repr, COMPUTE_TYPES))}, got "
                     f"{compute_type!r}")
