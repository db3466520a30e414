"""Rotary position embedding (Su et al. 2021, "RoFormer", section 3.4), the
position encoding of Llama-family decoders (csrc/rowwise/rope.c).

Where the paper's sinusoidal encoding (Vaswani et al. 2017, section 3.5) is
added to the embeddings once, RoPE rotates the queries and keys of every
attention layer: pair i of a head vector at position p turns by the angle
p * theta_i, theta_i = base^(-2i/D), so that the score q_m . k_n depends on
the positions only through m - n.
"""
import functools

import numpy as np

from .. import _kernels
from .checks import as_float32, check_float, check_int

__all__ = ["rope", "rope_inv_freq"]

LAYOUTS = ("halves", "pairs")
_FREQS = {}   # (D, base) -> inv_freq, for the calls of a decoding step


@functools.lru_cache(maxsize=64)
def _inv_freq(D, base):
    # transformers: 1.0 / (base ** (torch.arange(0, D, 2).float() / D)) in
    # float32; the power is taken in double and rounded (correctly rounded,
    # where torch's vectorised powf is within ~1 ulp), the rest in float32.
    e = np.arange(0, D, 2, dtype=np.float32) / np.float32(D)
    p = (np.float64(base) ** e.astype(np.float64)).astype(np.float32)
    f = np.float32(1.0) / p
    f.flags.writeable = False
    return f


def rope_inv_freq(head_dim, base=10000.0):
    """The D/2 inverse frequencies theta_i = base^(-2i/D) (float32, read-only),
    as transformers' default rope initialisation computes them."""
    D = check_int(head_dim, "head_dim", 1)
    if D % 2:
        raise ValueError(f"rope: head_dim must be even, got {D}")
    return _inv_freq(D, check_float(base, "base", 0.0, lo_open=True))


def _positions(positions, B, T):
    p = np.asarray(positions)
    if p.dtype.kind not in "iu" or p.ndim > 2:
        raise ValueError(f"positions: an integer array of shape (B, T) or (T,) is needed, "
                         f"got dtype {p.dtype} with shape {p.shape}")
    try:
        p = np.broadcast_to(p, (B, T))
    except ValueError:
        raise ValueError(f"positions of shape {p.shape} do not fit x's (B, T) = "
                         f"{(B, T)}") from None
    return np.ascontiguousarray(p, dtype=np.int64)


def rope(x, positions, base=10000.0, layout="halves", inplace=False, *, inv_freq=None,
         rope_scaling=None):
    """Rotate every head of every position of x by its position.

    x: (B, T, H, D) float32, D even -- the layout straight out of a query or
    key projection, before the heads are moved to the front.  positions:
    (B, T) or (T,) integers, absolute (any offset: a decoding step passes t).
    Pair i of each head, at position p, turns by the angle p * inv_freq[i],
    inv_freq[i] = base^(-2i/D) (:func:`rope_inv_freq`):

    - ``layout="halves"``: pairs (i, i + D/2), Hugging Face's ``rotate_half``
      (``x*cos + rotate_half(x)*sin`` of ``apply_rotary_pos_emb``);
    - ``layout="pairs"``: pairs (2i, 2i + 1), the original Meta layout and
      GGUF / llama.cpp's (``view_as_complex(x) * polar(1, angle)``).

    The angle is taken in float32 as transformers takes it
    (``position_ids.float() * inv_freq``), then cos and sin.  ``inplace=True``
    rotates x where it lies and returns it: x must be a writable float32
    array whose heads of a position are contiguous -- C-contiguous, or the
    leading columns of a wider buffer (a view of a fused QKV projection);
    anything else is a ValueError, never a silent copy.  Otherwise a new
    C-contiguous array is returned (inputs of another dtype or layout are
    converted).

    ``inv_freq`` (D/2 floats) replaces the default frequencies (the hook for
    scaled variants); ``rope_scaling`` is not supported (ValueError).
    """
    if rope_scaling is not None:
        raise ValueError(f"rope: rope_scaling={rope_scaling!r} is not supported; only the "
                         f"default rotary embedding is (pass inv_freq for another one)")
    if layout not in LAYOUTS:
        raise ValueError(f"rope: layout must be 'halves' or 'pairs', got {layout!r}")
    ready = type(x) is np.ndarray and x.dtype == np.float32 and _kernels.rope_ready(x)
    if inplace:
        if not ready:
            raise ValueError(f"x: rope(inplace=True) needs a float32 array of shape (B, T, H, D) "
                             f"with each position's heads contiguous, got "
                             f"{getattr(x, 'dtype', type(x).__name__)} "
                             f"{getattr(x, 'shape', '')} strides {getattr(x, 'strides', '')}")
        a = x
    else:
        a = x if ready else as_float32(x, "x")
    if a.ndim != 4 or a.shape[-1] % 2:
        raise ValueError(f"x: rope needs shape (B, T, H, D) with D even, got {a.shape}")
    B, T, _, D = a.shape
    if inv_freq is None:
        freqs = _FREQS.get((D, base)) if type(base) is float else None
        if freqs is None:   # checked once per (D, base)
            freqs = rope_inv_freq(D, base) if D else np.empty(0, np.float32)
            if type(base) is float:
                _FREQS[(D, base)] = freqs
    else:
        freqs = as_float32(inv_freq, "inv_freq")
        if freqs.shape != (D // 2,):
            raise ValueError(f"inv_freq: shape ({D // 2},) is needed for head dimension {D}, "
                             f"got {freqs.shape}")
    p = positions
    if not (type(p) is np.ndarray and p.dtype == np.int64 and p.flags.c_contiguous and
            (p.shape == (B, T) or (B == 1 and p.shape == (T,)))):
        p = _positions(positions, B, T)
    return _kernels.rope(a, p, freqs, layout, bool(inplace))
