"""safetensors files: an 8-byte little-endian header length, a JSON header
(names, dtypes, shapes, byte offsets, and a free-form string metadata map),
then raw little-endian tensor bytes.

:func:`save_safetensors` / :func:`load_safetensors` write and read this
package's own files (float32, through the ``safetensors`` package).
:class:`SafetensorsFile` reads other people's checkpoints through one memory
map: the header is checked against the file before anything is mapped (so a
file's say-so never makes us allocate or read out of bounds), and each tensor
is a view of the map until it is converted to float32.
"""
import json
import mmap
import os
import struct

import numpy as np

__all__ = ["save_safetensors", "load_safetensors", "SafetensorsFile"]


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


# ---------------------------------------------------- memory-mapped reader --

# safetensors dtype -> numpy dtype (little-endian).  BF16 has no numpy dtype:
# it is read as uint16 and widened to float32 by a 16-bit shift.
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
           "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
_MAX_HEADER = 100 * 2 ** 20  # the format's own limit (100 MB)


class SafetensorsFile:
    """One safetensors file, memory-mapped: ``names()``, ``shape(name)``,
    ``dtype(name)`` (the file's code: 'F32', 'BF16', ...) and
    ``float32(name)``, the tensor as a C-contiguous float32 array (a view of
    the map when it is stored as float32, a converted copy otherwise).

    Every way a file can be malformed -- a short file, a header that is not
    JSON, an unknown dtype, offsets outside the data or disagreeing with the
    shape -- is a ``ValueError`` naming the file.
    """

    def __init__(self, path):
        self.path = path = os.fspath(path)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                self._bad(f"{size} bytes, too short for a header")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                self._bad(f"header length {n} does not fit in a file of {size} bytes")
            try:
                header = json.loads(f.read(n).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                self._bad(f"the header is not JSON ({e})")
        if not isinstance(header, dict):
            self._bad("the header is not a JSON object")
        self.metadata = header.pop("__metadata__", None) or {}
        self._start, data_size = 8 + n, size - 8 - n
        self._entries = {}
        for name, e in header.items():
            self._entries[name] = self._check_entry(name, e, data_size)
        self._map = None
        if data_size:
            with open(path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def _bad(self, what):
        raise ValueError(f"{self.path}: not a valid safetensors file: {what}")

    def _check_entry(self, name, e, data_size):
        try:
            dtype, shape, (begin, end) = e["dtype"], e["shape"], e["data_offsets"]
        except (TypeError, KeyError, ValueError):
            self._bad(f"tensor {name!r} has no dtype, shape and data_offsets")
        if dtype not in _DTYPES:
            self._bad(f"tensor {name!r} has dtype {dtype!r}, which is not supported "
                      f"({', '.join(_DTYPES)})")
        if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
            self._bad(f"tensor {name!r} has shape {shape!r}")
        if not (type(begin) is int and type(end) is int and 0 <= begin <= end <= data_size):
            self._bad(f"tensor {name!r} lies at bytes [{begin}, {end}) of a data section "
                      f"of {data_size} bytes")
        itemsize = np.dtype(_DTYPES[dtype]).itemsize
        if end - begin != itemsize * int(np.prod(shape, dtype=object)):
            self._bad(f"tensor {name!r} of dtype {dtype} and shape {shape} needs "
                      f"{itemsize * int(np.prod(shape, dtype=object))} bytes, the file gives "
                      f"it {end - begin}")
        return dtype, tuple(shape), begin, end

    def names(self):
        return list(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def shape(self, name):
        return self._entries[name][1]

    def dtype(self, name):
        return self._entries[name][0]

    def array(self, name):
        """The tensor as stored (read-only view of the map; BF16 as uint16)."""
        dtype, shape, begin, end = self._entries[name]
        if begin == end:
            return np.zeros(shape, _DTYPES[dtype])
        a = np.frombuffer(self._map, dtype=_DTYPES[dtype], count=(end - begin) //
                          np.dtype(_DTYPES[dtype]).itemsize, offset=self._start + begin)
        return a.reshape(shape)

    def float32(self, name):
        """The tensor as C-contiguous float32 (floating-point dtypes only)."""
        dtype = self._entries[name][0]
        a = self.array(name)
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            return (a.astype(np.uint32) << 16).view(np.float32)
        if dtype not in ("F64", "F32", "F16"):
            raise ValueError(f"{self.path}: tensor {name!r} has dtype {dtype}; a "
                             f"floating-point weight is needed")
        return np.ascontiguousarray(a, dtype=np.float32)
