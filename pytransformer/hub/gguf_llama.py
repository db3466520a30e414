"""A Llama-family GGUF file as a Hugging Face Llama checkpoint: its config
(LlamaConfig's names) and its tensors under Hugging Face names, in Hugging
Face's layout.

The names (llama.cpp's -> Hugging Face's)::

    token_embd.weight            model.embed_tokens.weight      (vocab, hidden)
    blk.N.attn_norm.weight       model.layers.N.input_layernorm.weight
    blk.N.attn_q.weight          model.layers.N.self_attn.q_proj.weight   (heads*hd, hidden)
    blk.N.attn_k.weight          model.layers.N.self_attn.k_proj.weight   (kv_heads*hd, hidden)
    blk.N.attn_v.weight          model.layers.N.self_attn.v_proj.weight
    blk.N.attn_output.weight     model.layers.N.self_attn.o_proj.weight
    blk.N.ffn_norm.weight        model.layers.N.post_attention_layernorm.weight
    blk.N.ffn_gate.weight        model.layers.N.mlp.gate_proj.weight      (ffn, hidden)
    blk.N.ffn_up.weight          model.layers.N.mlp.up_proj.weight
    blk.N.ffn_down.weight        model.layers.N.mlp.down_proj.weight      (hidden, ffn)
    output_norm.weight           model.norm.weight
    output.weight                lm_head.weight   (absent: tied to the embedding)

The layout of q and k: llama.cpp's converter permutes the rows of q_proj and
k_proj within each head so that its rotary embedding turns *adjacent* pairs
(dims 2i, 2i+1: GPT-J style).  Hugging Face's Llama turns dims i and
i + head_dim/2 (``rotate_half``).  The tensors given here are in **Hugging
Face's layout**: the permutation is undone (as transformers' GGUF loader
does), so a model written against ``rotate_half`` -- and compared with
transformers' LlamaForCausalLM -- reads them as they are.  Undoing it moves
whole rows, so a quantized tensor's blocks (which run along rows) stay whole:
``raw_rows`` gives them in the same order.  ``rope_layout="pairs"`` keeps
the file's own order instead, for a model that turns adjacent pairs.

:func:`llama_from_gguf` builds the
:class:`~pytransformer.models.llama.LlamaForCausalLM` of a file (what
``pytransformer.from_pretrained`` does with a ``.gguf`` path).
"""
import numpy as np

from .gguf import GGUFFile
from .hf import family_maps, load_weights

__all__ = ["llama_config_and_tensors", "llama_from_gguf", "LlamaGGUFTensors", "GGUF_TO_HF",
           "ARCHITECTURES"]

ARCHITECTURES = ("llama",)
GGUF_TO_HF = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_MAX_SIZE = 1 << 24            # any size a config gives is at most this (and checked again)


def _config(f):
    meta, path = f.metadata, f.path
    arch = f.architecture
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path}: general.architecture {arch!r} is not supported (supported: "
                         f"{', '.join(ARCHITECTURES)})")

    def get(key, kind=int, default=None):
        full = f"{arch}.{key}"
        v = meta.get(full, default)
        if v is None:
            raise ValueError(f"{path}: the metadata has no {full}")
        if kind is int and (type(v) is not int or not 0 < v <= _MAX_SIZE):
            raise ValueError(f"{path}: {full} = {v!r} is not a size in 1..{_MAX_SIZE}")
        if kind is float and (type(v) not in (int, float) or not 0 < v < float("inf")):
            raise ValueError(f"{path}: {full} = {v!r} is not a positive finite number")
        return v

    hidden, heads = get("embedding_length"), get("attention.head_count")
    kv_heads = get("attention.head_count_kv", default=heads)
    if hidden % heads or heads % kv_heads:
        raise ValueError(f"{path}: {hidden} embedding dims, {heads} heads and {kv_heads} "
                         f"key/value heads do not divide")
    head_dim = get("attention.key_length", default=hidden // heads)
    if head_dim % 2 or get("attention.value_length", default=head_dim) != head_dim:
        raise ValueError(f"{path}: head dims of {head_dim} (key) and "
                         f"{meta.get(arch + '.attention.value_length')} (value) are not "
                         f"an even head_dim for both")
    rotary = get("rope.dimension_count", default=head_dim)
    if rotary != head_dim:
        raise ValueError(f"{path}: rope.dimension_count {rotary} rotates part of a head of "
                         f"{head_dim} dims; only whole-head rotary embedding is supported")
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling != "none" or "rope_freqs.weight" in f:
        raise ValueError(f"{path}: RoPE scaling ({scaling!r}"
                         f"{', rope_freqs.weight' if 'rope_freqs.weight' in f else ''}) is not "
                         f"supported")
    vocab = meta.get(f"{arch}.vocab_size")
    if vocab is None:
        tokens = meta.get("tokenizer.ggml.tokens")
        vocab = len(tokens) if isinstance(tokens, list) else (
            f.tensors["token_embd.weight"].shape[0] if "token_embd.weight" in f else None)
    if type(vocab) is not int or not 0 < vocab <= _MAX_SIZE:
        raise ValueError(f"{path}: no usable vocabulary size ({arch}.vocab_size = {vocab!r})")
    config = dict(
        model_type="llama", vocab_size=vocab, hidden_size=hidden,
        intermediate_size=get("feed_forward_length"), num_hidden_layers=get("block_count"),
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
        max_position_embeddings=get("context_length", default=2048),
        rms_norm_eps=get("attention.layer_norm_rms_epsilon", float),
        rope_theta=get("rope.freq_base", float, default=10000.0),
        tie_word_embeddings="output.weight" not in f, hidden_act="silu",
        attention_bias=False, mlp_bias=False)
    for name, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"),
                      ("pad", "padding_token_id")):
        v = meta.get(f"tokenizer.ggml.{key}")
        config[f"{name}_token_id"] = v if type(v) is int and 0 <= v < vocab else None
    return config


def _expected_shapes(c):
    """{GGUF name: (HF name, numpy shape)} of every tensor the config implies."""
    h, hd, ffn = c["hidden_size"], c["head_dim"], c["intermediate_size"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    out = {"token_embd.weight": ("model.embed_tokens.weight", (c["vocab_size"], h)),
           "output_norm.weight": ("model.norm.weight", (h,))}
    if not c["tie_word_embeddings"]:
        out["output.weight"] = ("lm_head.weight", (c["vocab_size"], h))
    shapes = {"attn_norm": (h,), "attn_q": (q, h), "attn_k": (kv, h), "attn_v": (kv, h),
              "attn_output": (h, q), "ffn_norm": (h,), "ffn_gate": (ffn, h),
              "ffn_up": (ffn, h), "ffn_down": (h, ffn)}
    for n in range(c["num_hidden_layers"]):
        for g, shape in shapes.items():
            out[f"blk.{n}.{g}.weight"] = (f"model.layers.{n}.{GGUF_TO_HF[g]}.weight", shape)
    return out


class LlamaGGUFTensors:
    """A Llama GGUF file's tensors by Hugging Face name, in Hugging Face's
    layout (q/k rows un-permuted; see the module's docstring): ``names()``,
    ``shape(name)``, ``gguf_name(name)``, ``type(name)`` (the ggml type),
    ``float32(name)`` (dequantized), ``raw_rows(name)`` (the blocks as a
    (rows, bytes per row) uint8 array, rows in the same order),
    ``describe()`` -- the interface of hub.hf.CheckpointTensors.  With
    ``rope_layout="pairs"`` q and k keep the file's row order."""

    def __init__(self, gguf, config, names, rope_layout="halves"):
        if rope_layout not in ("halves", "pairs"):
            raise ValueError(f"rope_layout must be 'halves' or 'pairs', got {rope_layout!r}")
        self.file, self.config, self.rope_layout = gguf, config, rope_layout
        self._gguf = names                    # HF name -> GGUF name
        self._heads = {}
        for hf, g in names.items():
            if rope_layout == "pairs":
                break
            if ".attn_q." in g:
                self._heads[hf] = config["num_attention_heads"]
            elif ".attn_k." in g:
                self._heads[hf] = config["num_key_value_heads"]

    def names(self):
        return list(self._gguf)

    def __contains__(self, name):
        return name in self._gguf

    def gguf_name(self, name):
        return self._gguf[name]

    def shape(self, name):
        return self.file.tensors[self._gguf[name]].shape

    def type(self, name):
        return self.file.tensors[self._gguf[name]].type

    def _row_order(self, name):
        """For q/k: which GGUF row each Hugging Face row is (None: the same)."""
        heads = self._heads.get(name)
        if heads is None:
            return None
        rows = self.shape(name)[0]
        half = rows // heads // 2
        return np.arange(rows).reshape(heads, half, 2).swapaxes(1, 2).reshape(-1)

    def float32(self, name):
        a = self.file.float32(self._gguf[name])
        order = self._row_order(name)
        return a if order is None else a[order]

    def raw_rows(self, name):
        t = self.file.tensors[self._gguf[name]]
        rows = self.file.raw(t.name).reshape(int(np.prod(t.shape[:-1])), -1)
        order = self._row_order(name)
        return rows if order is None else rows[order]

    def file_of(self, name):
        return self.file.path

    def describe(self):
        return self.file.path


def llama_config_and_tensors(gguf_file, rope_layout="halves"):
    """``(config, tensors)`` of a Llama-family GGUF file (a path or a
    :class:`~.gguf.GGUFFile`): ``config`` a dict of LlamaConfig's names
    (vocab_size, hidden_size, intermediate_size, num_hidden_layers,
    num_attention_heads, num_key_value_heads, head_dim,
    max_position_embeddings, rms_norm_eps, rope_theta, tie_word_embeddings,
    bos/eos/pad_token_id, ...), ``tensors`` a :class:`LlamaGGUFTensors`
    (q and k in Hugging Face's layout, or the file's with
    ``rope_layout="pairs"``).
    Every tensor the config implies is checked to be there with its shape,
    and nothing else to be there; otherwise a ValueError naming the file and
    every problem."""
    f = gguf_file if isinstance(gguf_file, GGUFFile) else GGUFFile(gguf_file)
    config = _config(f)
    expected = _expected_shapes(config)
    problems = [f"missing {g}" for g in expected if g not in f]
    problems += [f"{g} has shape {list(f.tensors[g].shape)}, the metadata implies "
                 f"{list(shape)}" for g, (_, shape) in expected.items()
                 if g in f and f.tensors[g].shape != shape]
    extra = [g for g in f.tensors if g not in expected]
    if extra:
        problems.append(f"tensors a Llama model of this config does not have: "
                        f"{', '.join(extra[:10])}{' ...' if len(extra) > 10 else ''}")
    if problems:
        raise ValueError(f"{f.path}: does not hold the Llama model its metadata describes: "
                         + "; ".join(problems))
    return config, LlamaGGUFTensors(f, config, {hf: g for g, (hf, _) in expected.items()},
                                    rope_layout)


def llama_from_gguf(gguf_file, rope_layout="halves", blocks=True):
    """The :class:`~pytransformer.models.llama.LlamaForCausalLM` of a Llama
    GGUF file (a path or a :class:`~.gguf.GGUFFile`); another
    general.architecture is a ValueError listing the supported ones.
    Every weight is dequantized to float32 (the parameters); with
    ``blocks`` (the default) each Linear whose tensors are Q8_0, Q4_0 or
    Q4_1 -- all parts of a fused one of the same type -- multiplies from the
    file's blocks instead (:meth:`~pytransformer.nn.Linear.load_blocks`),
    and a head tied to the embedding from the embedding's.  ``rope_layout``:
    "halves" (the tensors un-permuted to Hugging Face's layout,
    rotate_half) or "pairs" (the file's own rows, adjacent pairs turned) --
    the same model either way."""
    from ..models.llama import from_hf_config
    f = gguf_file if isinstance(gguf_file, GGUFFile) else GGUFFile(gguf_file)
    config, tensors = llama_config_and_tensors(f, rope_layout)
    try:
        model = from_hf_config(config, tensors.names(), rope_layout=rope_layout)
    except ValueError as e:
        raise ValueError(f"{f.path}: {e}") from None
    model = load_weights(model, tensors, model.hf_tensor_map(), f.path, where=f"{f.path}'s "
                         f"metadata", **family_maps(model))
    if blocks:
        load_blocks(model, tensors)
    return model


def load_blocks(model, tensors):
    """Let each Linear of ``model`` whose checkpoint tensors (``tensors``, a
    :class:`LlamaGGUFTensors`) are in blocks with a kernel multiply from
    them; the tied head takes the embedding's.  Returns {our key: ggml
    type} of the layers that did."""
    from .._kernels import QUANTIZED_TYPES
    from ..nn import Linear
    modules = dict(model.named_modules())
    parts = {k: ["model." + n for n in v] for k, v in model.hf_tensor_map().items()}
    if model.config.tie_word_embeddings:
        parts["lm_head.weight"] = parts["embed_tokens.weight"]
    parts.update(model.hf_head_map())
    done = {}
    for key, names in parts.items():
        owner, _, leaf = key.rpartition(".")
        m = modules.get(owner + ".")        # named_modules: "layers.0.mlp.down_proj."
        types = {tensors.type(n) for n in names}
        if leaf != "weight" or not isinstance(m, Linear) or len(types) != 1:
            continue
        qtype = types.pop()
        if qtype not in QUANTIZED_TYPES:
            continue
        raw = [tensors.raw_rows(n) for n in names]
        m.load_blocks(np.ascontiguousarray(raw[0] if len(raw) == 1 else np.concatenate(raw)),
                      qtype)
        done[key] = qtype
    return done
