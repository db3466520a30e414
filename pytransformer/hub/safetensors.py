"""safetensors files, read without trusting them.

The format: 8 bytes (little-endian u64) giving the header's length, the
header (JSON: for each tensor its dtype, shape and [begin, end) byte offsets
into the data that follows; a "__metadata__" map of strings), then the data.
This reader checks the header against the file before anything is read or
allocated -- lengths, offsets inside the file, sizes that match the shapes,
no overlaps, known dtypes, JSON of bounded depth -- then memory-maps the file
and hands out read-only views of it, so a tensor costs nothing until it is
read and nothing is ever read past the file.  Every problem is a ValueError
naming the file and what is wrong.

Files written by :func:`save_safetensors` carry an integrity record: the
SHA-256 of the metadata and of every tensor's name, dtype, shape and bytes,
stored in the metadata under ``"sha256"``.  :func:`load_safetensors` checks it
(unless ``verify=False``), so a flipped byte is an error, not a different
model; files without the record (other people's) load as before.

:class:`SafetensorsFile` is the same checked header and map, tensor by tensor:
how other people's checkpoints (possibly sharded, F16/BF16) are read.
"""
import hashlib
import json
import math
import mmap
import os

import numpy as np

__all__ = ["save_safetensors", "load_safetensors", "read_header", "SafetensorsFile",
           "DIGEST_KEY"]

DIGEST_KEY = "sha256"
MAX_HEADER = 100 << 20          # the reference implementation's own bound
MAX_DEPTH = 64                  # JSON nesting a header or a config may have
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
          "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
          "BF16": np.uint16}    # bfloat16: its bits, widened to float32 by load


def _fail(path, what):
    raise ValueError(f"{path}: not a valid safetensors file: {what}")


def json_depth(text):
    """How deeply the JSON text nests (a bound checked before json.loads,
    which would recurse once per level)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(text, where):
    """json.loads with the nesting bounded: a ValueError naming ``where``
    for text that is not JSON or nests deeper than MAX_DEPTH."""
    if json_depth(text) > MAX_DEPTH:
        raise ValueError(f"{where}: JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None


def regular_file_size(path):
    """The size of the regular file at ``path``: FileNotFoundError if there is
    none, ValueError if it is something else (a folder, say)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a file")
    return os.path.getsize(path)


def read_header(path):
    """The checked header of a safetensors file: ``(entries, metadata,
    data_start, file_size)`` with entries {name: (dtype, shape, begin, end)},
    begin and end absolute file offsets.  Reads the header only."""
    path = os.fspath(path)
    size = regular_file_size(path)
    if size < 8:
        _fail(path, f"{size} bytes, shorter than the 8-byte header length")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > size - 8 or n > MAX_HEADER:
            _fail(path, f"header length {n} does not fit the file's {size} bytes")
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        _fail(path, "the header is not UTF-8")
    header = parse_json(text, f"{path}: not a valid safetensors file: the header")
    if not isinstance(header, dict):
        _fail(path, "the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        _fail(path, "__metadata__ is not a map of strings")
    start = 8 + n
    entries, spans = {}, []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            _fail(path, f"tensor {name!r}: expected dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            _fail(path, f"tensor {name!r}: unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
                type(d) is int and 0 <= d < 1 << 62 for d in shape) or len(shape) > 32:
            _fail(path, f"tensor {name!r}: bad shape {shape!r}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(
                type(o) is int and 0 <= o for o in offsets) or offsets[0] > offsets[1]:
            _fail(path, f"tensor {name!r}: bad data_offsets {offsets!r}")
        nbytes = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
        begin, end = start + offsets[0], start + offsets[1]
        if end > size:
            _fail(path, f"tensor {name!r}: bytes {begin}..{end} run past the end of the "
                        f"file ({size} bytes)")
        if end - begin != nbytes:
            _fail(path, f"tensor {name!r}: {end - begin} bytes of data for shape {shape} "
                        f"of {dtype} ({nbytes} bytes)")
        entries[name] = (dtype, tuple(shape), begin, end)
        if end > begin:
            spans.append((begin, end, name))
    spans.sort()
    for (_, e0, a), (b1, _, b) in zip(spans, spans[1:]):
        if b1 < e0:
            _fail(path, f"tensors {a!r} and {b!r} overlap")
    return entries, metadata, start, size


def digest(tensors, metadata):
    """SHA-256 (hex) of the metadata (without the record itself) and of each
    tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    meta = {k: v for k, v in metadata.items() if k != DIGEST_KEY}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        a = tensors[name]
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return h.hexdigest()


def save_safetensors(path, tensors, metadata=None):
    """Write {name: float32 array} and a {str: str} metadata map to ``path``,
    with the integrity record."""
    from safetensors.numpy import save_file
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    meta = dict(metadata or {})
    meta[DIGEST_KEY] = digest(arrays, meta)
    save_file(arrays, os.fspath(path), metadata=meta)


def load_safetensors(path, verify=True):
    """Read a safetensors file: ``(tensors, metadata)``.

    The header is checked against the file first (:func:`read_header`); the
    tensors are then read-only views of a memory map of the file (BF16 ones
    widened to float32 copies), so nothing is read until it is used.  With
    ``verify`` and an integrity record in the metadata, the record is
    checked (one pass over the data).  A file that does not hold up raises
    ValueError naming it.
    """
    path = os.fspath(path)
    entries, metadata, _, size = read_header(path)
    buf = None
    if size:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    tensors = {}
    for name, (dtype, shape, begin, end) in entries.items():
        dt = np.dtype(DTYPES[dtype]).newbyteorder("<")
        count = math.prod(shape)
        a = np.frombuffer(buf, dtype=dt, count=count, offset=begin) if count else \
            np.zeros(0, dt)
        a = a.reshape(shape)
        if dtype == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        elif not a.dtype.isnative or begin % a.dtype.itemsize:
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))   # aligned copy
        tensors[name] = a
    if verify and DIGEST_KEY in metadata:
        if digest(tensors, metadata) != metadata[DIGEST_KEY]:
            raise ValueError(f"{path}: the integrity record does not match the contents "
                             f"(the file was changed or damaged after it was written); "
                             f"verify=False loads it anyway")
    return tensors, metadata


class SafetensorsFile:
    """One checked, memory-mapped safetensors file, read tensor by tensor:
    ``names()``, ``shape(name)``, ``dtype(name)`` (the file's code: 'F32',
    'BF16', ...), ``array(name)`` (as stored: a read-only view of the map,
    BF16 as its uint16 bits) and ``float32(name)`` (C-contiguous float32: a
    view when stored as float32, a converted copy otherwise); ``metadata``.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._entries, self.metadata, _, size = read_header(self.path)
        self._map = None
        if size:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def names(self):
        return list(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def shape(self, name):
        return self._entries[name][1]

    def dtype(self, name):
        return self._entries[name][0]

    def array(self, name):
        dtype, shape, begin, end = self._entries[name]
        dt = np.dtype(DTYPES[dtype]).newbyteorder("<")
        if begin == end:
            return np.zeros(shape, dt)
        return np.frombuffer(self._map, dtype=dt, count=math.prod(shape),
                             offset=begin).reshape(shape)

    def float32(self, name):
        dtype = self._entries[name][0]
        a = self.array(name)
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            return (a.astype(np.uint32) << 16).view(np.float32)
        if dtype not in ("F64", "F32", "F16"):
            raise ValueError(f"{self.path}: tensor {name!r} has dtype {dtype}; a "
                             f"floating-point weight is needed")
        return np.ascontiguousarray(a, dtype=np.float32)
