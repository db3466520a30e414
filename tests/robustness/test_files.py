"""Crafted and corrupted model files: each load is a ValueError naming the file
(or an OSError), found from the header before anything is allocated -- run in
a subprocess under a memory limit, so a crash or a runaway allocation shows
as what it is.  The corpus is generated here from a seeded generator."""
import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pytransformer.models import Seq2SeqTransformer

SMALL = dict(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
             dim_feedforward=32, max_len=16, seed=0)


def header_file(path, header, data=b"", length=None):
    raw = json.dumps(header).encode()
    n = len(raw) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


def corpus(tmp_path, n_random=150):
    """(name, path) of crafted and damaged files."""
    m = Seq2SeqTransformer(20, 30, **SMALL)
    good = tmp_path / "good.safetensors"
    m.save(good)
    data = good.read_bytes()
    hlen = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + hlen])
    meta = header["__metadata__"]
    config = json.loads(meta["config"])
    files = []

    def add(name, content=None, hdr=None, **kw):
        p = tmp_path / f"{name}.safetensors"
        if hdr is not None:
            header_file(p, hdr, **kw)
        else:
            p.write_bytes(content)
        files.append((name, p))

    def with_config(name, **change):
        h = json.loads(json.dumps(header))
        h["__metadata__"]["config"] = json.dumps(dict(config, **change))
        add(name, hdr=h, data=data[8 + hlen:])

    # a sparse file whose header declares a 40 GiB tensor
    p = tmp_path / "sparse.safetensors"
    header_file(p, {"x": {"dtype": "F32", "shape": [10 << 30], "data_offsets": [0, 40 << 30]}})
    with open(p, "r+b") as f:
        f.truncate(32 << 10)
    files.append(("sparse_40GiB", p))
    # a config asking for 1e5 (or 1e9) layers in a file with no tensors
    add("no_tensors_1e5_layers", hdr={"__metadata__": dict(meta, config=json.dumps(
        dict(config, num_encoder_layers=100000)))})
    add("no_tensors_1e9_layers", hdr={"__metadata__": dict(meta, config=json.dumps(
        dict(config, num_encoder_layers=10 ** 9)))})
    with_config("layers_past_the_file", num_decoder_layers=5000)
    with_config("huge_vocab", tgt_vocab_size=10 ** 12)
    with_config("float_size", d_model=16.0)
    with_config("bool_size", nhead=True)
    with_config("string_flag", norm_first="yes")
    # deep nesting, in the config and in the header itself
    add("deep_config", hdr={"__metadata__": dict(meta, config="[" * 100000 + "]" * 100000)})
    deep = "{\"a\":" * 100000 + "1" + "}" * 100000
    raw = deep.encode()
    add("deep_header", struct.pack("<Q", len(raw)) + raw)
    # offsets past the end, overlapping, overflowing shapes, unknown dtypes
    add("offsets_past_end", hdr={"x": {"dtype": "F32", "shape": [4],
                                       "data_offsets": [0, 16]}}, data=b"\0" * 8)
    add("overlap", hdr={"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
        data=b"\0" * 12)
    add("shape_overflow", hdr={"x": {"dtype": "F64", "shape": [1 << 40, 1 << 40],
                                     "data_offsets": [0, 8]}}, data=b"\0" * 8)
    add("negative_dim", hdr={"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
        data=b"\0" * 4)
    add("unknown_dtype", hdr={"x": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}},
        data=b"\0")
    add("header_longer_than_file", hdr={}, length=1 << 40)
    add("empty", b"")
    add("seven_bytes", b"\x01" * 7)
    add("not_utf8", struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc")
    add("json_list", hdr=[1, 2, 3])
    # damage the real file: truncations and byte flips in header and data
    rng = np.random.default_rng(0)
    for i in range(n_random):
        kind = i % 3
        if kind == 0:
            cut = int(rng.integers(0, len(data)))
            add(f"truncated_{cut}", data[:cut])
        else:
            b = bytearray(data)
            lo, hi = (8, 8 + hlen) if kind == 1 else (8 + hlen, len(data))
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(lo, hi))] ^= 1 << int(rng.integers(0, 8))
            add(f"flip_{'header' if kind == 1 else 'data'}_{i}", bytes(b))
    return files


LOADER = textwrap.dedent("""
    import resource, sys, json
    resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
    from pytransformer.models import Seq2SeqTransformer
    out = {}
    for name, path in json.load(open(sys.argv[1])):
        try:
            Seq2SeqTransformer.load(path)
            out[name] = "loaded"
        except (ValueError, OSError) as e:
            out[name] = "ok" if path in str(e) else "no path: " + str(e)[:200]
        except BaseException as e:
            out[name] = f"{type(e).__name__}: {str(e)[:200]}"
    json.dump(out, sys.stdout)
""")


def _same_model(path, good):
    a, b = Seq2SeqTransformer.load(path), Seq2SeqTransformer.load(good)
    sa, sb = a.state_dict(), b.state_dict()
    return a.config == b.config and sa.keys() == sb.keys() and all(
        np.array_equal(sa[k], sb[k]) for k in sa)


def test_every_crafted_or_damaged_file_is_a_value_error(tmp_path):
    files = corpus(tmp_path)
    good = tmp_path / "good.safetensors"
    listing = tmp_path / "files.json"
    listing.write_text(json.dumps([(n, str(p)) for n, p in files]))
    res = subprocess.run([sys.executable, "-c", LOADER, str(listing)], capture_output=True,
                         cwd=tmp_path,   # not a source tree that may shadow the package
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert len(out) == len(files)
    # a flipped data bit may land in a float's low bits and still be finite:
    # the integrity record catches those too, so nothing damaged loads
    # a flipped header bit that leaves the header meaning the same (JSON
    # whitespace, say) may load: what loads must then be the very model
    bad = {n: r for n, r in out.items() if r != "ok" and not (
        r == "loaded" and n.startswith("flip_header") and _same_model(dict(files)[n], good))}
    assert not bad, bad


def test_flipped_metadata_is_caught_and_verify_false_skips_the_check(tmp_path):
    m = Seq2SeqTransformer(20, 30, **SMALL)
    p = tmp_path / "m.safetensors"
    m.save(p)
    data = p.read_bytes()
    flipped = data.replace(b'\\"norm_first\\": false', b'\\"norm_first\\": true ')
    assert flipped != data and len(flipped) == len(data)
    q = tmp_path / "flipped.safetensors"
    q.write_bytes(flipped)
    with pytest.raises(ValueError, match="integrity record") as e:
        Seq2SeqTransformer.load(q)
    assert str(q) in str(e.value)
    assert Seq2SeqTransformer.load(q, verify=False).norm_first is True
    # a finite but changed weight is caught the same way
    b = bytearray(data)
    b[-5] ^= 0x01
    q.write_bytes(bytes(b))
    with pytest.raises(ValueError, match="integrity record"):
        Seq2SeqTransformer.load(q)
    Seq2SeqTransformer.load(q, verify=False)
