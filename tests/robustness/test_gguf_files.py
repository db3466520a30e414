"""Crafted and corrupted GGUF files: each open (and reading every tensor) is a
ValueError naming the file -- or, for damage that leaves a valid file, a clean
load -- found from the header before anything is allocated: never another
exception, a crash or a runaway allocation.  Run in a subprocess under a
memory limit, as test_files.py does for safetensors.  The base files are
written by gguf's own GGUFWriter (and one is the real SmolLM2 header); the
damage is placed with the offsets gguf's reader reports, and is seeded."""
import json
import struct

import gguf
import numpy as np
from gguf import GGUFReader
from gguf.quants import quantize

from conftest import run_python, write_gguf
from pytransformer.hub.gguf import read_header

LOADER = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
from pytransformer.hub.gguf import GGUFFile
from pytransformer.hub.gguf_llama import llama_config_and_tensors
from pytransformer.hub.gguf_tokenizer import chat_template_from_gguf, tokenizer_from_gguf
out = {}
for name, path in json.load(open(sys.argv[1])):
    try:
        f = GGUFFile(path)
        for t in f.tensors:
            try:
                f.float32(t)
            except ValueError as e:     # a type pytransformer does not dequantize
                if path not in str(e):
                    raise
        for build in (tokenizer_from_gguf, chat_template_from_gguf, llama_config_and_tensors):
            try:                        # what the metadata describes, damaged or not
                build(f)
            except ValueError as e:
                if path not in str(e):
                    raise
        out[name] = "loaded"
    except ValueError as e:
        out[name] = "ok" if path in str(e) else "no path: " + str(e)[:200]
    except BaseException as e:
        out[name] = f"{type(e).__name__}: {str(e)[:200]}"
json.dump(out, sys.stdout)
"""

HUGE = [1 << 60, (1 << 64) - 1, 1 << 63, 10 ** 9]


def base_file(path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    kv = [("general.name", "tiny", "STRING", None), ("dup.a", 1, "UINT32", None),
          ("dup.b", 2, "UINT32", None), ("x.f32", 0.5, "FLOAT32", None),
          ("x.tokens", ["a", "bb", "ccc"], "ARRAY", "STRING"),
          ("x.ids", [1, 2, 3, 4], "ARRAY", "INT32"), ("x.flag", True, "BOOL", None)]
    tensors = [("t.a", w, None), ("t.b", quantize(w, gguf.GGMLQuantizationType.Q8_0), "Q8_0"),
               ("t.c", quantize(w, gguf.GGMLQuantizationType.Q4_1), "Q4_1"),
               ("t.d", w[0].astype(np.float16), None)]
    return write_gguf(path, tensors, kv)


def layout(path):
    """{(kind, name): [(offset, nbytes) of each part]} from gguf's reader: kv
    parts are key length, key, value type, then the value's parts; tensor
    parts name length, name, n_dims, dims, type, offset."""
    r = GGUFReader(path)
    out = {}
    for kind, fields in (("kv", r.fields.values()), ("tensor", [t.field for t in r.tensors])):
        for f in fields:
            if f.name.startswith("GGUF."):
                continue
            pos, parts = f.offset, []
            for p in f.parts:
                parts.append((pos, int(p.nbytes)))
                pos += int(p.nbytes)
            out[kind, f.name] = parts
    return out, max(t.data_offset + t.n_bytes for t in r.tensors)


def corpus(tmp_path, smollm_gguf):
    good = base_file(tmp_path / "good.gguf")
    data = good.read_bytes()
    parts, last_end = layout(good)
    files, may_load = [], {"good", "version_2", "tensor_count_0", "preamble_only",
                           "alignment_64", "real_header_no_tensors"}

    def add(name, content):
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(bytes(content))
        files.append((name, p))

    def patched(name, at, fmt, value, base=data):
        b = bytearray(base)
        struct.pack_into(fmt, b, at, value)
        if b != base:       # a patch that changes nothing is no test
            add(name, b)

    add("good", data)
    for m in (b"GGUG", b"\0\0\0\0", b"FUGG", b"ggml"):
        add(f"magic_{m.hex()}", m + data[4:])
    for v in (0, 1, 2, 4, 5, 0x03000000, 0xFFFFFFFF):
        patched(f"version_{v}", 4, "<I", v)
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    for n in HUGE + [n_tensors + 1, n_tensors - 1, 0]:
        patched(f"tensor_count_{n}", 8, "<Q", n)
    may_load.add(f"tensor_count_{n_tensors - 1}")     # a valid file of fewer tensors
    for n in HUGE + [n_kv + 1, n_kv - 1, 0]:
        patched(f"kv_count_{n}", 16, "<Q", n)
    add("empty", b"")
    add("three_bytes", b"GGU")
    add("preamble_23", data[:23])
    add("preamble_only", data[:8] + struct.pack("<QQ", 0, 0))
    # every key: its length, its type, a string's length, an array's type and count
    for (kind, name), ps in parts.items():
        tag = name.replace(".", "_")
        if kind == "kv":
            (klen, _), (key, _), (vtype, _) = ps[:3]
            for n in HUGE[:2] + [len(name) + 1]:
                patched(f"key_len_{tag}_{n}", klen, "<Q", n)
            for t in (13, 99, 0xFFFFFFFF, 9, 8):
                patched(f"value_type_{tag}_{t}", vtype, "<I", t)
            b = bytearray(data)
            b[key] = 0xFF
            add(f"key_not_utf8_{tag}", b)
            vt = struct.unpack_from("<I", data, vtype)[0]
            if vt == 8:         # a string: its length
                for n in HUGE[:3]:
                    patched(f"string_len_{tag}_{n}", ps[3][0], "<Q", n)
            if vt == 9:         # an array: element type and count
                for t in (9, 13, 12, 8):
                    patched(f"array_type_{tag}_{t}", ps[3][0], "<I", t)
                for n in HUGE + [1 << 62]:
                    patched(f"array_len_{tag}_{n}", ps[4][0], "<Q", n)
                if len(ps) > 5 and struct.unpack_from("<I", data, ps[3][0])[0] == 8:
                    for n in HUGE[:2]:
                        patched(f"array_string_len_{tag}_{n}", ps[5][0], "<Q", n)
        else:
            (nlen, _), (nm, _), (ndims, _), (dims, dsize), (ttype, _), (toff, _) = ps
            for n in HUGE[:2]:
                patched(f"name_len_{tag}_{n}", nlen, "<Q", n)
            for n in (5, 1 << 31, 0xFFFFFFFF):
                patched(f"n_dims_{tag}_{n}", ndims, "<I", n)
            for n in (1 << 40, 1 << 62, 1 << 63, (1 << 64) - 1, 65, 0):
                patched(f"dim0_{tag}_{n}", dims, "<Q", n)
            may_load.add(f"dim0_{tag}_0")                # a tensor of no elements
            if dsize >= 16:
                b = bytearray(data)
                struct.pack_into("<QQ", b, dims, 1 << 40, 1 << 40)   # 2**80 elements
                add(f"dims_overflow_int64_{tag}", b)
                struct.pack_into("<QQ", b, dims, 1 << 32, 1 << 31)   # exactly 2**63
                add(f"dims_2_63_{tag}", b)
            for t in (4, 5, 99, 0xFFFFFFFF, 14, 28):
                patched(f"ggml_type_{tag}_{t}", ttype, "<I", t)
            for n in HUGE + [len(data), 1, 32 * 1000]:
                patched(f"offset_{tag}_{n}", toff, "<Q", n)
            b = bytearray(data)
            b[nm] = 0x80
            add(f"name_not_utf8_{tag}", b)
    # overlapping tensors and duplicate names (same length: "t.b" -> "t.a")
    ta, tb = parts["tensor", "t.a"], parts["tensor", "t.b"]
    patched("overlap", tb[5][0], "<Q", struct.unpack_from("<Q", data, ta[5][0])[0])
    b = bytearray(data)
    b[tb[1][0]:tb[1][0] + 3] = b"t.a"
    add("duplicate_tensor", b)
    b = bytearray(data)
    ka = parts["kv", "dup.b"][1][0]
    b[ka:ka + 5] = b"dup.a"
    add("duplicate_key", b)
    # alignment: not a power of two, zero, huge, the wrong type
    al = write_gguf(tmp_path / "aligned.gguf", [("w", np.ones((2, 32), np.float32), None)],
                    alignment=64).read_bytes()
    add("alignment_64", al)
    at = layout(tmp_path / "aligned.gguf")[0]["kv", "general.alignment"]
    for n in (0, 3, 48, 1 << 31, 0xFFFFFFFF):
        patched(f"alignment_{n}", at[3][0], "<I", n, base=al)
    patched("alignment_int32", at[2][0], "<I", 5, base=al)
    # arrays nested deeper than allowed, and 10**5 deep
    for depth in (5, 100_000):
        kv = struct.pack("<Q", 1) + b"n" + struct.pack("<I", 9)
        kv += struct.pack("<IQ", 9, 1) * (depth - 1) + struct.pack("<IQ", 0, 1) + b"\0"
        add(f"nested_arrays_{depth}", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv)
    # truncated at every header byte and across the data
    rng = np.random.default_rng(0)
    header_end = min(p[0] for p in parts["tensor", "t.a"]) + 200
    cuts = list(range(0, header_end)) + [int(c) for c in rng.integers(header_end, len(data), 60)]
    for cut in sorted(set(cuts)):
        add(f"truncated_{cut}", data[:cut])
        if cut >= last_end:
            may_load.add(f"truncated_{cut}")
    # seeded bit flips in the header
    for i in range(200):
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(0, header_end))] ^= 1 << int(rng.integers(0, 8))
        add(f"flip_{i}", b)
        may_load.add(f"flip_{i}")
    # the real SmolLM2 header, without its data: truncated, flipped, counts changed
    start = read_header(smollm_gguf)["data_start"]
    with open(smollm_gguf, "rb") as f:
        real = f.read(start)
    add("real_header", real)
    patched("real_header_no_tensors", 8, "<Q", 0, base=real)
    for cut in sorted({int(c) for c in rng.integers(0, start, 40)}):
        add(f"real_truncated_{cut}", real[:cut])
    for i in range(40):
        b = bytearray(real)
        b[int(rng.integers(0, start))] ^= 1 << int(rng.integers(0, 8))
        add(f"real_flip_{i}", b)
    # ... and with no tensors, so that it opens and its damaged tokenizer is built
    no_tensors = real[:8] + struct.pack("<Q", 0) + real[16:]
    for i in range(10):      # low bits: ASCII stays ASCII, so most still open
        b = bytearray(no_tensors)
        b[int(rng.integers(24, start))] ^= 1 << int(rng.integers(0, 6))
        add(f"real_tokenizer_flip_{i}", b)
        may_load.add(f"real_tokenizer_flip_{i}")
    return files, may_load


def test_every_crafted_or_damaged_gguf_file_is_a_value_error(tmp_path, smollm_gguf):
    files, may_load = corpus(tmp_path, smollm_gguf)
    assert len(files) > 900
    listing = tmp_path / "files.json"
    listing.write_text(json.dumps([(n, str(p)) for n, p in files]))
    res = run_python(["-c", LOADER, str(listing)], timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert len(out) == len(files)
    bad = {n: r for n, r in out.items() if r != "ok" and not (r == "loaded" and n in may_load)}
    assert not bad, bad
    assert out["good"] == out["version_2"] == out["alignment_64"] == "loaded"
    assert out["real_header"] == "ok"
    assert sum(r == "ok" for n, r in out.items() if n.startswith("flip_")) > 20
