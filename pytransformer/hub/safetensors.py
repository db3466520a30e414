"""safetensors files: a JSON header (names, dtypes, shapes, offsets, and a
free-form string metadata map) followed by raw little-endian tensor bytes,
read through a memory map."""
import os

import numpy as np

__all__ = ["save_safetensors", "load_safetensors"]


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
