"""hub/gguf_llama against transformers reading the same GGUF file
(AutoConfig / LlamaForCausalLM.from_pretrained(dir, gguf_file=name), which
dequantizes to float32 and undoes llama.cpp's q/k permutation): the same
config, the same tensor names and shapes, the same values -- on crafted tiny
Llama files of random weights and on the real SmolLM2."""
import os

import numpy as np
import pytest

from conftest import write_gguf
from pytransformer.hub.gguf_llama import llama_config_and_tensors

CONFIG_KEYS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "head_dim",
               "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
               "bos_token_id", "eos_token_id", "pad_token_id"]


def hf_config(path):
    from transformers import AutoConfig
    return AutoConfig.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def hf_state(path):
    from transformers import LlamaForCausalLM
    m = LlamaForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    return m.config, {k: v.numpy() for k, v in m.state_dict().items()}


def check_config(ours, theirs):
    for k in CONFIG_KEYS:
        assert ours[k] == getattr(theirs, k), k
    assert ours["rope_theta"] == theirs.rope_parameters["rope_theta"]
    assert theirs.rope_parameters["rope_type"] == "default"


def tiny_llama(path, layers=2, hidden=32, heads=4, kv_heads=2, ffn=48, vocab=40, tied=False,
               qtype=None, drop=(), change=(), kv_extra=(), seed=0):
    """A Llama GGUF file of random weights in llama.cpp's names and layout."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize
    rng = np.random.default_rng(seed)
    hd = hidden // heads
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,)}
    if not tied:
        shapes["output.weight"] = (vocab, hidden)
    for n in range(layers):
        shapes.update({f"blk.{n}.attn_norm.weight": (hidden,), f"blk.{n}.ffn_norm.weight": (hidden,),
                       f"blk.{n}.attn_q.weight": (heads * hd, hidden),
                       f"blk.{n}.attn_k.weight": (kv_heads * hd, hidden),
                       f"blk.{n}.attn_v.weight": (kv_heads * hd, hidden),
                       f"blk.{n}.attn_output.weight": (hidden, heads * hd),
                       f"blk.{n}.ffn_gate.weight": (ffn, hidden), f"blk.{n}.ffn_up.weight": (ffn, hidden),
                       f"blk.{n}.ffn_down.weight": (hidden, ffn)})
    shapes.update(dict(change))
    tensors = []
    for name, shape in shapes.items():
        if name in drop:
            continue
        a = rng.standard_normal(shape).astype(np.float32)
        if qtype and len(shape) == 2:
            tensors.append((name, quantize(a, GGMLQuantizationType[qtype]), qtype))
        else:
            tensors.append((name, a, None))
    kv = [("llama.block_count", layers, "UINT32", None),
          ("llama.context_length", 256, "UINT32", None),
          ("llama.embedding_length", hidden, "UINT32", None),
          ("llama.feed_forward_length", ffn, "UINT32", None),
          ("llama.attention.head_count", heads, "UINT32", None),
          ("llama.attention.head_count_kv", kv_heads, "UINT32", None),
          ("llama.rope.freq_base", 50000.0, "FLOAT32", None),
          ("llama.attention.layer_norm_rms_epsilon", 1e-5, "FLOAT32", None),
          ("llama.rope.dimension_count", hd, "UINT32", None),
          ("llama.vocab_size", vocab, "UINT32", None),
          ("tokenizer.ggml.bos_token_id", 1, "UINT32", None),
          ("tokenizer.ggml.eos_token_id", 2, "UINT32", None)] + list(kv_extra)
    keys = {k for k, *_ in kv_extra}
    kv = [e for e in kv if e[0] not in keys or e in kv_extra]
    return write_gguf(path, tensors, kv)


@pytest.mark.parametrize("kw", [dict(), dict(tied=True), dict(heads=4, kv_heads=4),
                                dict(qtype="Q8_0", hidden=64, heads=2, kv_heads=1, ffn=96),
                                dict(qtype="Q4_0", hidden=64, heads=4, kv_heads=1, ffn=64)])
def test_tiny_llama_files_match_transformers(tmp_path, kw):
    p = str(tiny_llama(tmp_path / "tiny.gguf", **kw))
    config, tensors = llama_config_and_tensors(p)
    theirs_config, state = hf_state(p)
    check_config(config, theirs_config)
    names = set(tensors.names())
    assert names == set(state) - ({"lm_head.weight"} if config["tie_word_embeddings"] else set())
    for name in names:
        ours = tensors.float32(name)
        assert ours.shape == tensors.shape(name) == state[name].shape, name
        np.testing.assert_array_equal(ours, state[name], err_msg=name)
    # q/k are un-permuted: a row of HF's q is some row of the file's, as whole blocks
    q = "model.layers.0.self_attn.q_proj.weight"
    raw = tensors.file.raw(tensors.gguf_name(q)).reshape(tensors.shape(q)[0], -1)
    assert not np.array_equal(tensors.raw_rows(q), raw)
    assert sorted(map(bytes, tensors.raw_rows(q))) == sorted(map(bytes, raw))


def test_smollm2_config_and_tensors_match_transformers(smollm_gguf):
    config, tensors = llama_config_and_tensors(smollm_gguf)
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["vocab_size"]) == (30, 576, 9, 3, 49152)
    theirs_config, state = hf_state(smollm_gguf)
    check_config(config, theirs_config)
    assert set(tensors.names()) == set(state) - {"lm_head.weight"}
    for name in tensors.names():
        ours = tensors.float32(name)
        assert ours.shape == state[name].shape, name
        # transformers dequantizes with its own torch kernels: the same bits
        np.testing.assert_array_equal(ours, state[name], err_msg=name)
    assert tensors.type("model.layers.0.self_attn.q_proj.weight") == "Q4_1"


@pytest.mark.parametrize("kw, match", [
    (dict(drop=["blk.1.ffn_up.weight"]), "missing blk.1.ffn_up.weight"),
    (dict(change=[("blk.0.attn_k.weight", (32, 32))]), r"blk.0.attn_k.weight has shape \[32, 32\]"),
    (dict(change=[("blk.2.attn_q.weight", (32, 32))]), "does not have: blk.2.attn_q.weight"),
    (dict(kv_extra=[("general.architecture", "gpt2", "STRING", None)]), "'gpt2' is not supported"),
    (dict(kv_extra=[("llama.attention.head_count", 5, "UINT32", None)]), "do not divide"),
    (dict(kv_extra=[("llama.rope.dimension_count", 4, "UINT32", None)]), "whole-head"),
    (dict(kv_extra=[("llama.rope.scaling.type", "yarn", "STRING", None)]), "RoPE scaling"),
    (dict(kv_extra=[("llama.block_count", 0, "UINT32", None)]), "block_count = 0"),
    (dict(kv_extra=[("llama.block_count", "2", "STRING", None)]), "block_count = '2'"),
    (dict(kv_extra=[("llama.attention.layer_norm_rms_epsilon", -1.0, "FLOAT32", None)]),
     "layer_norm_rms_epsilon"),
])
def test_files_that_do_not_hold_their_model(tmp_path, kw, match):
    p = tiny_llama(tmp_path / "bad.gguf", **kw)
    with pytest.raises(ValueError, match=match) as e:
        llama_config_and_tensors(p)
    assert str(p) in str(e.value)
