"""Hugging Face model directories (hub/hf.py) and the memory-mapped
safetensors reader (hub/safetensors.py): what loads, and the ValueError each
broken directory or file gives (naming the file and what is wrong)."""
import json
import os
import shutil
import struct

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import save_file  # noqa: E402
from safetensors.torch import save_file as save_torch  # noqa: E402

import pytransformer  # noqa: E402
from pytransformer.hub import SafetensorsFile, load_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A small BertModel (with pooler) saved by save_pretrained."""
    path = tmp_path_factory.mktemp("bert")
    config = transformers.BertConfig(vocab_size=40, hidden_size=12, num_attention_heads=3,
                                     num_hidden_layers=2, intermediate_size=20,
                                     max_position_embeddings=16)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(str(path))
    return str(path)


def copy_dir(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def rewrite(path, change):
    """Rewrite path/model.safetensors with change(tensors) applied."""
    f = os.path.join(path, "model.safetensors")
    st = SafetensorsFile(f)
    tensors = {n: np.array(st.array(n)) for n in st.names()}
    del st
    change(tensors)
    save_file(tensors, f)


def test_loads_and_runs(bert_dir):
    m = pytransformer.from_pretrained(bert_dir)
    out = m(np.array([[1, 2, 3]]))
    assert out.last_hidden_state.shape == (1, 3, 12) and out.pooler_output.shape == (1, 12)


def test_missing_directory_or_config(tmp_path, bert_dir):
    with pytest.raises(ValueError, match="no such directory"):
        pytransformer.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match="no config.json"):
        pytransformer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        pytransformer.from_pretrained(os.path.join(bert_dir, "config.json"))
    d = copy_dir(bert_dir, tmp_path / "badjson")
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="config.json: the model config is not valid JSON"):
        pytransformer.from_pretrained(d)


def test_unsupported_model_type_lists_the_supported(tmp_path, bert_dir):
    d = copy_dir(bert_dir, tmp_path / "t5")
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "t5"}, f)
    with pytest.raises(ValueError, match="config.json: model_type 't5' is not supported "
                                         r"\(supported: bert, distilbert, gpt2, .*roberta, "
                                         r"xlm-roberta\)"):
        pytransformer.from_pretrained(d)


def test_only_pytorch_model_bin_says_how_to_convert(tmp_path, bert_dir):
    d = copy_dir(bert_dir, tmp_path / "bin")
    os.remove(os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "pytorch_model.bin"), "wb") as f:
        f.write(b"not read")
    with pytest.raises(ValueError, match="pytorch_model.bin.*no model.safetensors.*"
                                         "safe_serialization=True"):
        pytransformer.from_pretrained(d)
    os.remove(os.path.join(d, "pytorch_model.bin"))
    with pytest.raises(ValueError, match="no model.safetensors"):
        pytransformer.from_pretrained(d)


def test_missing_and_misshaped_tensors_are_named(tmp_path, bert_dir):
    d = copy_dir(bert_dir, tmp_path / "missing")
    rewrite(d, lambda t: t.pop("encoder.layer.1.attention.self.key.weight"))
    with pytest.raises(ValueError, match=r"model.safetensors: does not fit .*config.json: "
                                         r"missing tensors: encoder.layer.1.attention.self.key"):
        pytransformer.from_pretrained(d)
    d = copy_dir(bert_dir, tmp_path / "shape")

    def misshape(t):
        t["encoder.layer.0.intermediate.dense.weight"] = np.zeros((21, 12), np.float32)
    rewrite(d, misshape)
    with pytest.raises(ValueError, match=r"encoder.layer.0.intermediate.dense.weight has shape "
                                         r"\[21, 12\], the config says \[20, 12\]"):
        pytransformer.from_pretrained(d)
    d = copy_dir(bert_dir, tmp_path / "extra")
    rewrite(d, lambda t: t.update({"encoder.layer.0.attention.self.rel.weight":
                                   np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match="does not have: encoder.layer.0.attention.self.rel"):
        pytransformer.from_pretrained(d)
    d = copy_dir(bert_dir, tmp_path / "int")
    rewrite(d, lambda t: t.update({"pooler.dense.bias": np.zeros(12, np.int32)}))
    with pytest.raises(ValueError, match="pooler.dense.bias.*has dtype I32"):
        pytransformer.from_pretrained(d)


def test_buffers_and_old_names_are_read(tmp_path, bert_dir, rng):
    """position_ids / token_type_ids buffers are ignored; TF-era LayerNorm
    gamma/beta names are read as weight/bias."""
    ids = np.array([[1, 5, 7, 2]])
    ref = pytransformer.from_pretrained(bert_dir)(ids).last_hidden_state
    d = copy_dir(bert_dir, tmp_path / "old")

    def old(t):
        t["embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None]
        t["embeddings.token_type_ids"] = np.zeros((1, 16), np.int64)
        for n in [n for n in t if n.endswith("LayerNorm.weight")]:
            t[n[:-len("weight")] + "gamma"] = t.pop(n)
        for n in [n for n in t if n.endswith("LayerNorm.bias")]:
            t[n[:-len("bias")] + "beta"] = t.pop(n)
    rewrite(d, old)
    np.testing.assert_array_equal(pytransformer.from_pretrained(d)(ids).last_hidden_state, ref)


def test_compute_types(bert_dir):
    for ct in ("bfloat16", "int8"):
        m = pytransformer.from_pretrained(bert_dir, compute_type=ct)
        assert {l.compute_type for _, l in m.named_modules() if hasattr(l, "compute_type")} == \
            {ct}
    with pytest.raises(ValueError, match="compute_type must be one of"):
        pytransformer.from_pretrained(bert_dir, compute_type="fp64")


def test_tokenizer_json(tmp_path, minilm_path):
    tok = load_tokenizer(minilm_path)
    assert tok.encode("Hello world").ids == [101, 7592, 2088, 102] + [0] * 124  # as shipped
    with pytest.raises(ValueError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"}}')
    with pytest.raises(ValueError, match="tokenizer.json: not a tokenizer.json that tokenizers "
                                         "can read"):
        load_tokenizer(tmp_path)


# --------------------------------------------------------- safetensors --

def test_reader_dtypes_match_torch(tmp_path):
    g = torch.Generator().manual_seed(0)
    t = {"f32": torch.randn(3, 5, generator=g), "f16": torch.randn(4, generator=g).half(),
         "bf16": torch.randn(2, 7, generator=g).bfloat16(),
         "f64": torch.randn(2, generator=g).double(), "empty": torch.zeros(0, 3),
         "ids": torch.arange(6)}
    path = str(tmp_path / "t.safetensors")
    save_torch(t, path, metadata={"k": "v"})
    f = SafetensorsFile(path)
    assert sorted(f.names()) == sorted(t) and f.metadata == {"k": "v"}
    for name in ("f32", "f16", "bf16", "f64", "empty"):
        a = f.float32(name)
        assert a.dtype == np.float32 and a.flags.c_contiguous and f.shape(name) == a.shape
        np.testing.assert_array_equal(a, t[name].float().numpy(), err_msg=name)
    np.testing.assert_array_equal(f.array("ids"), np.arange(6))
    assert f.dtype("bf16") == "BF16"


def _raw(tmp_path, header, data=b"", n=None):
    h = json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(h) if n is None else n) + h + data)
    return str(path)


@pytest.mark.parametrize("header,data,n,msg", [
    ({}, b"", 1 << 40, "header length"),
    (None, b"", None, "not valid JSON"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, None,
     "run past the end of the file"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None,
     "8 bytes of data for shape"),
    ({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, None,
     "dtype 'C64'"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", None, "shape"),
    ({"a": {"shape": [1]}}, b"", None, "expected dtype, shape and data_offsets"),
], ids=["huge-header", "not-json", "out-of-range", "size", "dtype", "neg-shape", "fields"])
def test_reader_refuses_bad_files(tmp_path, header, data, n, msg):
    if header is None:
        path = tmp_path / "bad.safetensors"
        path.write_bytes(struct.pack("<Q", 5) + b"{oops")
        path = str(path)
    else:
        path = _raw(tmp_path, header, data, n)
    with pytest.raises(ValueError, match="bad.safetensors: not a valid safetensors file: .*" + msg):
        SafetensorsFile(path)


def test_truncated_checkpoint(tmp_path, bert_dir):
    d = copy_dir(bert_dir, tmp_path / "cut")
    f = os.path.join(d, "model.safetensors")
    with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) // 2)
    with pytest.raises(ValueError, match="model.safetensors: not a valid safetensors file"):
        pytransformer.from_pretrained(d)
