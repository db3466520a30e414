"""Llama (models/llama.py) against transformers' LlamaForCausalLM on the same
weights: random configurations (grouped-query and multi-query attention,
hidden sizes not a multiple of 64, a head_dim of its own, tied and untied
heads, rope_theta) saved with save_pretrained and read back by
pytransformer.from_pretrained; the same weights written as a GGUF file in
llama.cpp's layout and read in both rotary layouts.  Logits on padded
batches; the KV-cached decoding protocol against the full forward; greedy
and beam search against transformers' generate; padded batches of prompts
bit for bit like each prompt alone; configurations we refuse."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pytransformer  # noqa: E402
from pytransformer.hub.gguf_llama import llama_from_gguf  # noqa: E402
from pytransformer.models.llama import LlamaDecoderLayer, LlamaForCausalLM  # noqa: E402
from conftest import assert_model_close, write_gguf  # noqa: E402

V = 61
EOS = V - 1

CONFIGS = [
    # grouped-query attention, hidden 40 (not a multiple of 64), head_dim 10
    dict(hidden_size=40, num_attention_heads=4, num_key_value_heads=2, intermediate_size=56,
         num_hidden_layers=2),
    # multi-query attention, tied head, another base and eps
    dict(hidden_size=36, num_attention_heads=6, num_key_value_heads=1, intermediate_size=44,
         num_hidden_layers=3, tie_word_embeddings=True, rope_theta=500000.0, rms_norm_eps=1e-5),
    # every head its own kv head; a head_dim that is not hidden / heads
    dict(hidden_size=48, num_attention_heads=3, num_key_value_heads=3, head_dim=20,
         intermediate_size=64, num_hidden_layers=2, rope_theta=100000.0),
]


def randomize(model, seed):
    """Weights far from the initialisation (std 0.02: nearly uniform
    next-token distributions), so every tensor matters and searches branch."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("embed_tokens.weight") or name.endswith("lm_head.weight"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
                p[EOS] *= 2   # an end token likely enough that rows end at many lengths
            else:
                p.copy_(1.5 / p.shape[1] ** 0.5 * torch.randn(p.shape, generator=g))
    return model.eval()


def make(tmp_path, i, max_positions=64):
    cfg = transformers.LlamaConfig(vocab_size=V, max_position_embeddings=max_positions,
                                   bos_token_id=1, eos_token_id=EOS, pad_token_id=0,
                                   **CONFIGS[i])
    theirs = randomize(transformers.LlamaForCausalLM(cfg), 100 + i)
    path = tmp_path / f"llama-{i}"
    theirs.save_pretrained(path)
    return theirs, pytransformer.from_pretrained(path), path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("llama")
    return [make(base, i) for i in range(len(CONFIGS))]


def prompts(rng, lengths):
    return [rng.integers(0, V - 1, size=n).tolist() for n in lengths]


def padded(rows, side, pad=0):
    T = max(map(len, rows))
    ids = np.full((len(rows), T), pad, np.int64)
    mask = np.zeros((len(rows), T), np.int64)
    for r, p in enumerate(rows):
        sl = slice(T - len(p), T) if side == "left" else slice(0, len(p))
        ids[r, sl] = p
        mask[r, sl] = 1
    return ids, mask


def hf_logits(theirs, ids, mask=None, pos=None):
    t = lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731
    with torch.no_grad():
        return theirs(t(ids), attention_mask=t(mask), position_ids=t(pos)).logits.numpy()


def hf_generate(theirs, prompt, **kw):
    kw.setdefault("pad_token_id", 0)
    with torch.no_grad():
        out = theirs.generate(torch.tensor([prompt]), attention_mask=torch.ones(
            1, len(prompt), dtype=torch.long), return_dict_in_generate=True, **kw)
    return out.sequences[0, len(prompt):].numpy(), getattr(out, "sequences_scores", None)


def cut(row, stop=EOS):
    row = list(row)
    return row[:row.index(stop) + 1] if stop in row else row


# ----------------------------------------------------------------- loading --

def test_loads_the_family(models):
    theirs, ours, _ = models[0]
    assert isinstance(ours, LlamaForCausalLM) and ours.decoder_only
    assert ours.vocab_size == V and ours.max_length == 64 and ours.pad_id == 0
    c = ours.config
    assert (c.num_key_value_heads, c.head_dim, c.rope_layout) == (2, 10, "halves")
    # q | k | v fused into one GEMM, gate | up into another
    q, k, v = (getattr(theirs.model.layers[1].self_attn, n).weight.detach().numpy()
               for n in ("q_proj", "k_proj", "v_proj"))
    np.testing.assert_array_equal(ours.layers[1].self_attn.qkv_proj.weight,
                                  np.concatenate([q, k, v]))
    assert ours.layers[1].self_attn.qkv_proj.weight.shape == ((4 + 2 * 2) * 10, 40)
    mlp = theirs.model.layers[0].mlp
    np.testing.assert_array_equal(ours.layers[0].mlp.gate_up_proj.weight, np.concatenate(
        [mlp.gate_proj.weight.detach().numpy(), mlp.up_proj.weight.detach().numpy()]))
    tied = models[1][1]
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert models[1][1].config.rope_theta == 500000.0
    assert models[2][1].config.head_dim == 20


# ----------------------------------------------------------------- forward --

@pytest.mark.parametrize("i", range(len(CONFIGS)))
@pytest.mark.parametrize("side", ["right", "left"])
def test_logits_equal_transformers_on_padded_batches(models, i, side):
    theirs, ours, _ = models[i]
    rows = prompts(np.random.default_rng(i), [9, 4, 13, 1])
    ids, mask = padded(rows, side)
    ref = hf_logits(theirs, ids, mask)
    got = ours(ids, mask)
    assert got.shape == (4, ids.shape[1], V) and got.dtype == np.float32
    keep = mask.astype(bool)
    assert_model_close(got[keep], ref[keep], what=f"config {i}, {side} padding")
    # positions counted from each row's first token, as generate passes them
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
    assert_model_close(ours(ids, mask, position_ids=pos)[keep],
                       hf_logits(theirs, ids, mask, pos)[keep], what="position_ids")
    full = np.random.default_rng(5).integers(0, V, size=(2, 40))
    assert_model_close(ours(full), hf_logits(theirs, full), what="40 positions, no mask")


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_cached_decoding_equals_the_full_forward(models, i):
    _, ours, _ = models[i]
    seq = np.random.default_rng(10 + i).integers(0, V, size=(3, 14))
    full = ours(seq)
    state, logits = ours.start_decoding(seq[:, :5], 9)
    assert state.layer(0)[0].shape == (3, ours.config.num_key_value_heads, 14,
                                       ours.config.head_dim)   # the kv heads only
    assert_model_close(logits, full[:, 4], what="prefill")
    for t in range(5, 14):
        assert_model_close(ours.decode_step(seq[:, t], state), full[:, t], what=f"step {t}")
    assert list(state.lengths) == [14, 14, 14]


# ------------------------------------------------------------------ search --

@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_greedy_equals_transformers_generate(models, i):
    theirs, ours, _ = models[i]
    for p in prompts(np.random.default_rng(20 + i), [5, 1, 9]):
        for eos in (EOS, None):
            ref, _ = hf_generate(theirs, p, max_new_tokens=12, do_sample=False, num_beams=1,
                                 eos_token_id=eos)
            got = ours.generate(np.array([p]), 12, eos_id=eos)
            assert cut(got[0]) == cut(ref), (i, p, eos)


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_beam_search_equals_transformers_generate(models, i):
    theirs, ours, _ = models[i]
    for p in prompts(np.random.default_rng(30 + i), [6, 2]):
        ref, ref_scores = hf_generate(theirs, p, max_new_tokens=8, do_sample=False, num_beams=3,
                                      early_stopping=True, eos_token_id=EOS,
                                      output_scores=True)
        got, scores = ours.generate(np.array([p]), 8, method="beam", beam_size=3,
                                    return_scores=True)
        assert cut(got[0]) == cut(ref), (i, p)
        np.testing.assert_allclose(scores[0], ref_scores.numpy()[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches_decode_bit_for_bit_as_alone(models, side):
    _, ours, _ = models[0]
    rows = prompts(np.random.default_rng(40), [7, 2, 11, 4])
    alone = [ours.generate(np.array([p]), 10, eos_id=None, return_scores=True) for p in rows]
    ids, mask = padded(rows, side, pad=5)
    tokens, scores = ours.generate(ids, 10, attention_mask=mask, eos_id=None,
                                   return_scores=True)
    for r, (t, s) in enumerate(alone):
        np.testing.assert_array_equal(tokens[r], t[0])
        assert scores[r] == s[0]     # the same bits: nothing depends on the batch


# ------------------------------------------------------- the C layer step --

@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_the_c_layer_step_is_the_python_step_bit_for_bit(models, python_step, threads, i):
    """LlamaLayerStep (csrc/layers/llama_layer.c) against the layer's Python
    step: padded prompts of different lengths (the keep mask), then rows at
    one position, greedy and beam search, GQA, MQA and one kv head each."""
    _, ours, _ = models[i]
    ids, mask = padded(prompts(np.random.default_rng(50 + i), [5, 1, 9]), "left", pad=3)
    for kw in (dict(), dict(method="beam", beam_size=3)):
        ref, fused = python_step(LlamaDecoderLayer, lambda: ours.generate(
            ids, 8, attention_mask=mask, eos_id=None, return_scores=True, **kw))
        np.testing.assert_array_equal(ref[0], fused[0])
        assert np.array_equal(ref[1], fused[1])
    assert all(layer.__dict__["_fused"][1] is not None for layer in ours.layers)
    assert ours.__dict__["_stack"][1] is not None   # the whole stack as one C call


@pytest.mark.parametrize("compute_type", ["bfloat16", "int8"])
def test_the_c_layer_step_in_each_compute_type(tmp_path, python_step, compute_type):
    _, ours, _ = make(tmp_path, 0)
    ours.to(compute_type)
    ids = np.array(prompts(np.random.default_rng(60), [6, 6]))
    ref, fused = python_step(LlamaDecoderLayer,
                             lambda: ours.generate(ids, 8, eos_id=None, return_scores=True))
    np.testing.assert_array_equal(ref[0], fused[0])
    assert np.array_equal(ref[1], fused[1])


# ------------------------------------------------------------ GGUF layouts --

def _gguf_of(theirs, path):
    """The transformers model's weights as a Llama GGUF file, in llama.cpp's
    names and layout: q and k rows permuted within each head so that
    adjacent pairs turn together (its converter's ``permute``)."""
    c = theirs.config
    sd = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    hd = c.head_dim

    def permute(w, heads):
        return w.reshape(heads, 2, hd // 2, -1).swapaxes(1, 2).reshape(w.shape)

    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    tensors = [("token_embd.weight", sd["model.embed_tokens.weight"], None),
               ("output_norm.weight", sd["model.norm.weight"], None)]
    if not c.tie_word_embeddings:
        tensors.append(("output.weight", sd["lm_head.weight"], None))
    for n in range(c.num_hidden_layers):
        for hf, g in names.items():
            w = sd[f"model.layers.{n}.{hf}.weight"]
            if g in ("attn_q", "attn_k"):
                w = permute(w, c.num_attention_heads if g == "attn_q" else
                            c.num_key_value_heads)
            tensors.append((f"blk.{n}.{g}.weight", np.ascontiguousarray(w), None))
    u32 = lambda k, v: (f"llama.{k}", v, "UINT32", None)  # noqa: E731
    kv = [u32("block_count", c.num_hidden_layers), u32("context_length", 64),
          u32("embedding_length", c.hidden_size), u32("feed_forward_length", c.intermediate_size),
          u32("attention.head_count", c.num_attention_heads),
          u32("attention.head_count_kv", c.num_key_value_heads),
          u32("attention.key_length", hd), u32("attention.value_length", hd),
          u32("rope.dimension_count", hd), u32("vocab_size", V),
          ("llama.rope.freq_base", c.rope_parameters["rope_theta"], "FLOAT32", None),
          ("llama.attention.layer_norm_rms_epsilon", c.rms_norm_eps, "FLOAT32", None),
          ("tokenizer.ggml.eos_token_id", EOS, "UINT32", None)]
    return write_gguf(path, tensors, kv)


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_a_gguf_file_in_either_rotary_layout_equals_transformers(models, tmp_path, i):
    theirs, _, _ = models[i]
    path = str(_gguf_of(theirs, tmp_path / "m.gguf"))
    halves = pytransformer.from_pretrained(path)
    pairs = llama_from_gguf(path, rope_layout="pairs")
    assert (halves.config.rope_layout, pairs.config.rope_layout) == ("halves", "pairs")
    # the file's own rows are not Hugging Face's: "pairs" turns them as they lie
    assert not np.array_equal(halves.layers[0].self_attn.qkv_proj.weight,
                              pairs.layers[0].self_attn.qkv_proj.weight)
    rows = prompts(np.random.default_rng(50 + i), [12, 5])
    ids, mask = padded(rows, "left")
    ref = hf_logits(theirs, ids, mask)
    keep = mask.astype(bool)
    for model in (halves, pairs):
        assert_model_close(model(ids, mask)[keep], ref[keep], what=model.config.rope_layout)
        p = rows[0]
        ref_tokens, _ = hf_generate(theirs, p, max_new_tokens=10, do_sample=False,
                                    eos_token_id=None)
        assert cut(model.generate(np.array([p]), 10, eos_id=None)[0]) == cut(ref_tokens)


# -------------------------------------------------------------- refusals --

@pytest.mark.parametrize("change, match", [
    (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_scaling"),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}), "yarn"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(mlp_bias=True), "mlp_bias"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(num_key_value_heads=3), "num_key_value_heads"),
])
def test_unsupported_configurations_are_value_errors(models, tmp_path, change, match):
    _, _, path = models[0]
    d = tmp_path / "bad"
    d.mkdir()
    config = json.loads((path / "config.json").read_text())
    config.update(change)
    (d / "config.json").write_text(json.dumps(config))
    os.symlink(path / "model.safetensors", d / "model.safetensors")
    with pytest.raises(ValueError, match=match):
        pytransformer.from_pretrained(d)


def test_other_gguf_architectures_are_value_errors_listing_llama(tmp_path):
    p = write_gguf(tmp_path / "x.gguf", [("token_embd.weight", np.zeros((4, 8), np.float32),
                                          None)], arch="gpt2")
    with pytest.raises(ValueError, match=r"architecture 'gpt2'.*supported: llama"):
        pytransformer.from_pretrained(str(p))


def test_bad_inputs(models):
    _, ours, _ = models[0]
    with pytest.raises(IndexError):
        ours(np.array([[1, V]]))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        ours(np.zeros((1, 65), np.int64))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        ours.start_decoding(np.zeros((1, 60), np.int64), 5)
    with pytest.raises(ValueError, match="attention_mask"):
        ours(np.zeros((2, 3), np.int64), np.ones((2, 4)))
