"""Weights in and out: safetensors files and torch state dicts, as numpy.

safetensors is the one file format: a JSON header (names, dtypes, shapes,
offsets, and a free-form string metadata map) followed by raw little-endian
tensor bytes, read here through a memory map.  Nothing in this module imports
torch: torch tensors are recognised by their ``detach``/``numpy`` methods.
"""
import os

import numpy as np

__all__ = ["to_numpy", "torch_state_dict", "save_safetensors", "load_safetensors"]


def to_numpy(value):
    """A numpy view of an array-like or a (CPU) torch tensor."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        t = value.detach()
        if hasattr(t, "cpu"):
            t = t.cpu()
        return t.numpy()
    return np.asarray(value)


def torch_state_dict(module):
    """A torch module's state dict as {key: float32 numpy array} (copies)."""
    return {k: np.array(to_numpy(v), dtype=np.float32, order="C", copy=True)
            for k, v in module.state_dict().items()}


def save_safetensors(path, tensors, metadata=None):
    """Write {name: float32 array} and a {str: str} metadata map to ``path``."""
    from safetensors.numpy import save_file
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    save_file(arrays, os.fspath(path), metadata=dict(metadata or {}))


def load_safetensors(path):
    """Read a safetensors file: ``(tensors, metadata)``.

    The file is memory-mapped by safetensors; each tensor is read out of the
    map once.  A file that is not valid safetensors (corrupted header,
    truncated data, offsets out of range) raises ``ValueError`` naming the
    file and what safetensors found wrong.
    """
    from safetensors import safe_open
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a file")
    size = os.path.getsize(path)
    try:
        with safe_open(path, framework="np") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, MemoryError):
        raise
    except Exception as e:  # safetensors_rust.SafetensorError and friends
        raise ValueError(f"{path}: not a valid safetensors file ({size} bytes): "
                         f"{type(e).__name__}: {e}") from None
    return tensors, metadata
