"""GGUF files (the llama.cpp project's model format), read without trusting them.

The format (versions 2 and 3, little-endian): the magic ``b"GGUF"``, a u32
version, a u64 tensor count and a u64 key/value count; the key/value pairs
(a string key, a u32 value type, the value: a scalar, a string -- u64 length
and UTF-8 bytes -- or an array -- u32 element type, u64 count, elements);
the tensor infos (a string name, a u32 dimension count, that many u64
dimensions, a u32 ggml type, a u64 offset); padding to ``general.alignment``
(32 by default); the tensor data, each tensor at its offset from there.

Dimensions: GGUF lists ``ne[0]`` first, and ``ne[0]`` is the fastest-varying
dimension (the length of a row: quantization blocks run along it).  numpy's
(C order) shape lists the fastest dimension last, so the numpy shape is the
GGUF dimensions reversed: a Linear weight stored with ``ne = [in_features,
out_features]`` is a ``(out_features, in_features)`` array, torch's and
Hugging Face's order, and ``token_embd.weight`` with ``ne = [hidden, vocab]``
is ``(vocab, hidden)``.  :attr:`GGUFFile.tensors` gives both (``dims`` in the
file's order, ``shape`` in numpy's).

:func:`read_header` walks the whole header itself before the file is handed
to the gguf package's reader (``gguf.GGUFReader``, which assumes a
well-formed file): magic, version, counts no larger than the file could hold,
every string and array length within the bytes that remain, array nesting
bounded, UTF-8 strings, no duplicate keys or tensor names, a power-of-two
alignment, known ggml types, at most 4 dimensions whose product fits int64,
rows that are whole quantization blocks, and every tensor's bytes aligned,
inside the file and overlapping no other.  Nothing is allocated from what
the header says alone.  Every problem is a ValueError naming the file and
what is wrong, including anything the gguf package raises.  The data is
memory-mapped (read-only); a tensor costs nothing until it is read.

Dequantization (:func:`dequantize`) is vectorised numpy, bit for bit what
``gguf.quants.dequantize`` gives (ggml's block layouts, its arithmetic in
float32); a C kernel, and GEMMs that read the blocks directly, are later work.
"""
import math
import mmap
import os
import struct
from typing import NamedTuple

import numpy as np

from .safetensors import regular_file_size

__all__ = ["GGUFFile", "GGUFTensor", "read_header", "dequantize", "DEQUANTIZED_TYPES",
           "MAGIC", "VERSIONS"]

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_DIMS = 4                # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 4         # arrays of arrays of ...: bounded, so nothing recurses unboundedly
DEFAULT_ALIGNMENT = 32
INT64_MAX = (1 << 63) - 1

# value type -> (struct format, size); 8 = string, 9 = array
_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4),
            5: ("<i", 4), 6: ("<f", 4), 7: ("<B", 1), 10: ("<Q", 8), 11: ("<q", 8),
            12: ("<d", 8)}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
          10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY, _UINT32 = 8, 9, 4
_MIN_SIZE = {8: 8, 9: 12}   # a string is at least its length, an array its type and count
_KV_MIN = 8 + 4 + 1         # key length, value type, the smallest value
_TENSOR_MIN = 8 + 4 + 4 + 8  # name length, dimension count, type, offset


class GGUFTensor(NamedTuple):
    """One tensor of a GGUF file: ``shape`` in numpy/torch order, ``dims`` in
    the file's (``ne[0]`` first), the ggml type's name ('Q4_1', 'F32', ...),
    and its bytes ``[begin, end)`` as absolute offsets into the file."""
    name: str
    shape: tuple
    dims: tuple
    type: str
    begin: int
    end: int

    @property
    def n_elements(self):
        return math.prod(self.shape)

    @property
    def nbytes(self):
        return self.end - self.begin


def _ggml_types():
    """ggml type code -> (name, elements per block, bytes per block), from the
    gguf package's tables."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    return {int(t): (t.name, *GGML_QUANT_SIZES[t]) for t in GGMLQuantizationType
            if t in GGML_QUANT_SIZES}


class _Cursor:
    """Reads the header from the map, every read checked against the file's end."""

    def __init__(self, buf, size, path):
        self.buf, self.size, self.path, self.pos = buf, size, path, 0

    def fail(self, what):
        raise ValueError(f"{self.path}: not a valid GGUF file: {what}")

    def left(self):
        return self.size - self.pos

    def take(self, n, what):
        if n > self.left():
            self.fail(f"{what} at byte {self.pos} needs {n} bytes, only {self.left()} remain "
                      f"(the file is {self.size} bytes)")
        start, self.pos = self.pos, self.pos + n
        return start

    def scalar(self, code, what):
        fmt, n = _SCALARS[code]
        v = struct.unpack_from(fmt, self.buf, self.take(n, what))[0]
        return bool(v) if code == 7 else v

    def string(self, what):
        n = self.scalar(10, f"the length of {what}")
        start = self.take(n, f"{what} ({n} bytes)")
        try:
            return bytes(self.buf[start:start + n]).decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} at byte {start} is not UTF-8")

    def value(self, code, what, depth=0):
        if code in _SCALARS:
            return self.scalar(code, what)
        if code == _STRING:
            return self.string(what)
        if code != _ARRAY:
            self.fail(f"{what}: unknown value type {code}")
        if depth >= MAX_ARRAY_DEPTH:
            self.fail(f"{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}")
        sub = self.scalar(_UINT32, f"the element type of {what}")
        count = self.scalar(10, f"the length of {what}")
        if sub in _SCALARS:
            n = _SCALARS[sub][1]
            if count > self.left() // n:
                self.fail(f"{what}: {count} elements of {n} bytes do not fit the "
                          f"{self.left()} bytes left")
            start = self.take(count * n, what)
            a = np.frombuffer(bytes(self.buf[start:start + count * n]), dtype=_NUMPY[sub])
            return a.astype(bool).tolist() if sub == 7 else a.tolist()
        if sub not in _MIN_SIZE:
            self.fail(f"{what}: unknown element type {sub}")
        if count > self.left() // _MIN_SIZE[sub]:
            self.fail(f"{what}: {count} elements do not fit the {self.left()} bytes left")
        if sub == _STRING:
            return self.strings(count, what)
        return [self.value(sub, f"{what}[{i}]", depth + 1) for i in range(count)]

    def strings(self, count, what):
        """``count`` strings (a vocabulary: the one long loop of a header)."""
        buf, size, pos, out = self.buf, self.size, self.pos, []
        unpack = struct.Struct("<Q").unpack_from
        for i in range(count):
            if size - pos < 8:
                self.pos = pos
                self.string(f"{what}[{i}]")      # fails, saying where
            n = unpack(buf, pos)[0]
            if n > size - pos - 8:
                self.pos = pos
                self.string(f"{what}[{i}]")
            try:
                out.append(buf[pos + 8:pos + 8 + n].decode("utf-8"))
            except UnicodeDecodeError:
                self.fail(f"{what}[{i}] at byte {pos + 8} is not UTF-8")
            pos += 8 + n
        self.pos = pos
        return out


def read_header(path):
    """The checked header of a GGUF file: a dict with ``version``,
    ``metadata`` {key: plain Python value}, ``tensors`` {name: GGUFTensor},
    ``alignment``, ``data_start`` (the absolute offset of the data) and
    ``size`` (the file's).  Reads the header only; ValueError naming the file
    for anything that does not hold up."""
    path = os.fspath(path)
    size = regular_file_size(path)
    if size < 24:
        raise ValueError(f"{path}: not a valid GGUF file: {size} bytes, shorter than the "
                         f"24-byte preamble (magic, version, counts)")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return _parse(_Cursor(buf, size, path))


def _parse(c):
    size = c.size
    magic = bytes(c.buf[0:4])
    if magic != MAGIC:
        c.fail(f"magic {magic!r}, expected {MAGIC!r}")
    c.pos = 4
    version = c.scalar(_UINT32, "the version")
    if version not in VERSIONS:
        hint = " (a big-endian file?)" if version & 0xFFFF == 0 else ""
        c.fail(f"version {version}{hint}; versions {', '.join(map(str, VERSIONS))} are read")
    n_tensors = c.scalar(10, "the tensor count")
    n_kv = c.scalar(10, "the key/value count")
    if n_kv > c.left() // _KV_MIN:
        c.fail(f"{n_kv} key/value pairs cannot fit the file's {size} bytes")
    if n_tensors > c.left() // _TENSOR_MIN:
        c.fail(f"{n_tensors} tensors cannot fit the file's {size} bytes")
    metadata, alignment_type = {}, None
    for i in range(n_kv):
        key = c.string(f"key {i}")
        code = c.scalar(_UINT32, f"the value type of {key!r}")
        if key in metadata:
            c.fail(f"key {key!r} appears twice")
        metadata[key] = c.value(code, f"the value of {key!r}")
        if key == "general.alignment":
            alignment_type = code
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if alignment_type is not None and (alignment_type != _UINT32 or alignment == 0 or
                                       alignment & (alignment - 1)):
        c.fail(f"general.alignment {alignment!r} is not a power of two stored as u32")
    if n_tensors > c.left() // _TENSOR_MIN:
        c.fail(f"{n_tensors} tensors cannot fit the {c.left()} bytes after the metadata")
    types = _ggml_types()
    infos = []
    names = set()
    for i in range(n_tensors):
        name = c.string(f"the name of tensor {i}")
        if name in names:
            c.fail(f"tensor name {name!r} appears twice")
        names.add(name)
        n_dims = c.scalar(_UINT32, f"the dimension count of {name!r}")
        if n_dims > MAX_DIMS:
            c.fail(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
        dims = tuple(c.scalar(10, f"dimension {j} of {name!r}") for j in range(n_dims))
        code = c.scalar(_UINT32, f"the type of {name!r}")
        offset = c.scalar(10, f"the data offset of {name!r}")
        if code not in types:
            c.fail(f"tensor {name!r} has unknown ggml type {code}")
        tname, block, type_size = types[code]
        count = 1
        for d in dims:
            if d > INT64_MAX:
                c.fail(f"tensor {name!r} has dimension {d}, beyond int64")
            count *= d
            if count > INT64_MAX:
                c.fail(f"tensor {name!r}: the dimensions {list(dims)} multiply past int64")
        if dims and dims[0] % block:
            c.fail(f"tensor {name!r} ({tname}): rows of {dims[0]} elements are not whole "
                   f"{block}-element blocks")
        infos.append((name, dims, tname, offset, count // block * type_size))
    data_start = -(-c.pos // alignment) * alignment
    tensors, spans = {}, []
    for name, dims, tname, offset, nbytes in infos:
        if offset % alignment:
            c.fail(f"tensor {name!r}: offset {offset} is not a multiple of the alignment "
                   f"{alignment}")
        begin = data_start + offset
        if begin > size or nbytes > size - begin:
            c.fail(f"tensor {name!r} ({tname}, dims {list(dims)}): bytes {begin}..."
                   f"{begin + nbytes} run past the end of the file ({size} bytes)")
        tensors[name] = GGUFTensor(name, tuple(reversed(dims)), dims, tname, begin,
                                   begin + nbytes)
        if nbytes:
            spans.append((begin, begin + nbytes, name))
    spans.sort()
    for (_, e0, a), (b1, _, b) in zip(spans, spans[1:]):
        if b1 < e0:
            c.fail(f"tensors {a!r} and {b!r} overlap")
    return dict(version=version, metadata=metadata, tensors=tensors, alignment=alignment,
                data_start=data_start, size=size)


def _same(a, b):
    """Equal values, NaN equal to NaN (the cross-check of the two readers)."""
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a:
        return b != b
    return type(a) is type(b) and a == b


class GGUFFile:
    """One checked, memory-mapped GGUF file.

    ``metadata``: {key: str | int | float | bool | list}; ``tensors``:
    {name: :class:`GGUFTensor`}; ``version``, ``alignment``,
    ``architecture`` (``general.architecture``).  ``raw(name)`` is a tensor's
    bytes, a read-only uint8 view of the map; ``float32(name)`` the tensor as
    float32 in numpy/torch order (rows = ``ne[1..]``, columns = ``ne[0]``): a
    read-only view of the map for F32, a dequantized copy otherwise.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        header = read_header(self.path)
        self.version = header["version"]
        self.metadata = header["metadata"]
        self.tensors = header["tensors"]
        self.alignment = header["alignment"]
        self.data_start = header["data_start"]
        self._data = self._read_with_gguf()

    def _read_with_gguf(self):
        """Open the checked file with the gguf package's reader, which maps it,
        and check that it reads what :func:`read_header` read."""
        try:
            from gguf import GGUFReader
            reader = GGUFReader(self.path)
            theirs = {t.name: (t.tensor_type.name, tuple(int(d) for d in t.shape),
                               int(t.data_offset), int(t.n_bytes)) for t in reader.tensors}
            fields = {k: f.contents() for k, f in reader.fields.items()
                      if not k.startswith("GGUF.")}
        except Exception as e:   # the gguf package assumes a well-formed file
            raise ValueError(f"{self.path}: not a GGUF file the gguf package can read "
                             f"({type(e).__name__}: {str(e)[:200]})") from None
        ours = {t.name: (t.type, t.dims, t.begin, t.nbytes) for t in self.tensors.values()}
        nested = {k for k, v in self.metadata.items()    # the gguf package flattens these
                  if isinstance(v, list) and v and isinstance(v[0], list)}
        if theirs != ours or fields.keys() != self.metadata.keys() or not all(
                _same(self.metadata[k], fields[k]) for k in fields if k not in nested):
            raise ValueError(f"{self.path}: the gguf package reads this file's header "
                             f"differently from pytransformer's check")
        return reader.data     # the read-only np.memmap of the whole file

    @property
    def architecture(self):
        return self.metadata.get("general.architecture")

    def __contains__(self, name):
        return name in self.tensors

    def _info(self, name):
        if name not in self.tensors:
            raise KeyError(f"{self.path}: no tensor {name!r}")
        return self.tensors[name]

    def raw(self, name):
        """The tensor's bytes: a read-only uint8 view of the memory map."""
        t = self._info(name)
        return self._data[t.begin:t.end]

    def float32(self, name):
        """The tensor as float32, shaped ``t.shape`` (numpy/torch order)."""
        t = self._info(name)
        return dequantize(self.raw(name), t.type, t.shape, f"{self.path}: tensor {name!r}")

    def __repr__(self):
        return (f"GGUFFile({self.path!r}: v{self.version}, {self.architecture}, "
                f"{len(self.tensors)} tensors, {len(self.metadata)} keys)")


# --- dequantization: each is ggml's dequantize_row_* over a (blocks, bytes) view

def _scale(blocks, at):
    """The float16 at byte ``at`` of each block, widened to float32, (n, 1)."""
    return np.ascontiguousarray(blocks[:, at:at + 2]).view("<f2").astype(np.float32)


def _nibbles(qs):
    """16 bytes of 4-bit values -> the 32 values: low nibbles are elements
    0..15, high nibbles 16..31 (ggml's order, not interleaved)."""
    return np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=1)


def _q8_0(blocks):      # f16 d, 32 x int8: x = q * d
    return blocks[:, 2:].view(np.int8).astype(np.float32) * _scale(blocks, 0)


def _q4_0(blocks):      # f16 d, 16 bytes of nibbles: x = (q - 8) * d
    q = _nibbles(blocks[:, 2:]).astype(np.int8) - np.int8(8)
    return _scale(blocks, 0) * q.astype(np.float32)


def _q4_1(blocks):      # f16 d, f16 m, 16 bytes of nibbles: x = q * d + m
    q = _nibbles(blocks[:, 4:]).astype(np.float32)
    return (_scale(blocks, 0) * q) + _scale(blocks, 2)


def _f16(blocks):
    return blocks.reshape(-1).view("<f2").astype(np.float32)


def _bf16(blocks):      # bfloat16 is the top half of a float32
    return (blocks.reshape(-1).view("<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)


# ggml type -> (elements per block, bytes per block, dequantizer)
_DEQUANT = {"F16": (1, 2, _f16), "BF16": (1, 2, _bf16), "Q8_0": (32, 34, _q8_0),
            "Q4_0": (32, 18, _q4_0), "Q4_1": (32, 20, _q4_1)}
DEQUANTIZED_TYPES = ("F32",) + tuple(_DEQUANT)
_CHUNK = 1 << 15            # blocks per step: bounds the temporaries


def dequantize(raw, type_name, shape, what="tensor"):
    """The float32 array of ``shape`` (numpy order) that the bytes ``raw`` (a
    uint8 array) of ggml type ``type_name`` hold.  F32 is a view of ``raw``;
    F16, BF16, Q8_0, Q4_0 and Q4_1 are converted (vectorised numpy, block by
    block, bit for bit as ``gguf.quants.dequantize``); an F32 tensor the
    file does not align to 4 bytes is copied.  Another type, or a
    byte count that does not match the shape: ValueError naming ``what``."""
    raw = np.asarray(raw)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{what}: raw bytes must be a 1-D uint8 array, got {raw.dtype} "
                         f"{raw.shape}")
    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    if type_name == "F32":
        if raw.size != 4 * n:
            raise ValueError(f"{what}: {raw.size} bytes for {n} F32 elements")
        a = raw.view("<f4").reshape(shape)
        return a if a.flags.aligned else a.copy()      # an alignment below 4 in the file
    if type_name not in _DEQUANT:
        raise ValueError(f"{what} has ggml type {type_name}, which pytransformer does not "
                         f"dequantize (it reads {', '.join(DEQUANTIZED_TYPES)})")
    block, type_size, fn = _DEQUANT[type_name]
    if n % block or raw.size != n // block * type_size:
        raise ValueError(f"{what}: {raw.size} bytes do not hold shape {list(shape)} of "
                         f"{type_name} ({block} elements in {type_size} bytes)")
    blocks = raw.reshape(-1, type_size)
    out = np.empty(n, np.float32)
    step = _CHUNK * block
    with np.errstate(all="ignore"):     # inf * 0 in a block is ggml's NaN too
        for i in range(0, blocks.shape[0], _CHUNK):
            out[i * block:i * block + step] = fn(blocks[i:i + _CHUNK]).reshape(-1)
    return out.reshape(shape)
