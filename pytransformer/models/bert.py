"""The BERT family of encoders: BERT (Devlin et al. 2019), RoBERTa (Liu et al.
2019), XLM-RoBERTa (Conneau et al. 2020) and DistilBERT (Sanh et al. 2019),
as Hugging Face's transformers defines them (BertModel, RobertaModel,
XLMRobertaModel, DistilBertModel), on pytransformer.nn.

Each is the encoder of "Attention Is All You Need" (section 3.1) with
learned positions (BERT section 3, Figure 2: token + segment + position
embeddings, then a LayerNorm) and GELU in the feed-forward network.  A BERT
layer is exactly a post-LN :class:`~pytransformer.nn.TransformerEncoderLayer`:
LayerNorm(x + SelfAttention(x)), then LayerNorm(x + FFN(x)); the separate
query, key and value projections of a checkpoint are stacked into its fused
``in_proj_weight``.  The families differ only in their embeddings and in the
names of their tensors:

- bert: positions 0..T-1, token types (segments), an optional pooler
  (tanh(W h_[CLS] + b), BERT section 3.1's "next sentence" representation);
- roberta, xlm-roberta: positions counted past ``padding_idx`` and only over
  non-padding tokens (fairseq's ``make_positions``); one token type;
- distilbert: no token types, no pooler, its own tensor names, eps 1e-12.

This file holds the family's config (:class:`BertConfig`, read from a
config.json), its module tree (:class:`BertModel`) and the map from Hugging
Face tensor names to ours (:meth:`BertModel.hf_tensor_map`);
:mod:`pytransformer.hub` reads the files.
"""
import numpy as np

from ..nn import Embedding, LayerNorm, Linear, Module, TransformerEncoder, \
    TransformerEncoderLayer
from ..nn.module import NO_INIT
from ..ops.checks import check_int, check_token_ids
from .activations import HF_ACTIVATIONS, check_hf_activation

__all__ = ["BertConfig", "BertModel", "EncoderOutput", "MODEL_TYPES", "from_hf_config"]

MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert")


class BertConfig:
    """The sizes of one BERT-family model, read from a Hugging Face config.json
    (:meth:`from_hf`); names as in transformers' BertConfig."""

    def __init__(self, model_type="bert", vocab_size=30522, hidden_size=768,
                 num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2,
                 layer_norm_eps=1e-12, pad_token_id=0, add_pooling_layer=True):
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type {model_type!r} is not of the BERT family "
                             f"({', '.join(MODEL_TYPES)})")
        self.model_type = model_type
        self.vocab_size = check_int(vocab_size, "vocab_size", 1)
        self.hidden_size = check_int(hidden_size, "hidden_size", 1)
        self.num_hidden_layers = check_int(num_hidden_layers, "num_hidden_layers", 0)
        self.num_attention_heads = check_int(num_attention_heads, "num_attention_heads", 1)
        self.intermediate_size = check_int(intermediate_size, "intermediate_size", 1)
        self.max_position_embeddings = check_int(max_position_embeddings,
                                                 "max_position_embeddings", 1)
        self.type_vocab_size = check_int(type_vocab_size, "type_vocab_size", 0)
        self.pad_token_id = check_int(pad_token_id, "pad_token_id", 0, self.vocab_size - 1)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={hidden_size} is not a multiple of "
                             f"num_attention_heads={num_attention_heads}")
        self.hidden_act = check_hf_activation(hidden_act, "hidden_act")
        self.layer_norm_eps = float(layer_norm_eps)
        self.add_pooling_layer = bool(add_pooling_layer) and model_type != "distilbert"

    @property
    def position_offset(self):
        """First position id: RoBERTa's are counted from padding_idx + 1."""
        return self.pad_token_id + 1 if self.model_type in ("roberta", "xlm-roberta") else 0

    @property
    def max_length(self):
        """The longest sequence the position table holds."""
        return self.max_position_embeddings - self.position_offset

    @classmethod
    def from_hf(cls, config, add_pooling_layer=True):
        """From a config.json's dict; ValueError for what this family cannot run
        (relative positions, decoders, an unknown activation)."""
        mt = config.get("model_type")
        if mt == "distilbert":
            c = dict(vocab_size=config.get("vocab_size", 30522), hidden_size=config.get("dim", 768),
                     num_hidden_layers=config.get("n_layers", 6),
                     num_attention_heads=config.get("n_heads", 12),
                     intermediate_size=config.get("hidden_dim", 3072),
                     hidden_act=config.get("activation", "gelu"),
                     max_position_embeddings=config.get("max_position_embeddings", 512),
                     type_vocab_size=0, layer_norm_eps=1e-12,  # fixed in DistilBERT's code
                     pad_token_id=config.get("pad_token_id", 0))
        else:
            pet = config.get("position_embedding_type", "absolute")
            if pet != "absolute":
                raise ValueError(f"position_embedding_type {pet!r} is not supported (only "
                                 f"learned absolute positions)")
            if config.get("is_decoder") or config.get("add_cross_attention"):
                raise ValueError("is_decoder / add_cross_attention: only encoders are supported")
            defaults = dict(BertConfig().__dict__, pad_token_id=0 if mt == "bert" else 1)
            c = {k: config.get(k, defaults[k]) for k in (
                "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "hidden_act", "max_position_embeddings",
                "type_vocab_size", "layer_norm_eps", "pad_token_id")}
            if c["pad_token_id"] is None:
                c["pad_token_id"] = 0
        return cls(model_type=mt, add_pooling_layer=add_pooling_layer, **c)

    def __repr__(self):
        return f"BertConfig({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


class EncoderOutput(dict):
    """What transformers' BertModel returns (BaseModelOutputWithPooling): read
    as attributes or keys; ``pooler_output`` is None without a pooler."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class BertEmbeddings(Module):
    """Token + token type (segment) + position embeddings, then LayerNorm
    (BERT section 3, "Input/Output Representations")."""

    def __init__(self, config):
        super().__init__()
        c = config
        self.config = c
        self.word_embeddings = Embedding(c.vocab_size, c.hidden_size, rng=NO_INIT)
        self.position_embeddings = Embedding(c.max_position_embeddings, c.hidden_size,
                                             rng=NO_INIT)
        self.token_type_embeddings = Embedding(c.type_vocab_size, c.hidden_size, rng=NO_INIT) \
            if c.type_vocab_size else None
        self.LayerNorm = LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def position_ids(self, ids):
        """Position of each token: 0..T-1 (BERT, DistilBERT), or for RoBERTa
        padding_idx + 1 + (index among the non-padding tokens), padding_idx
        at padding (transformers' create_position_ids_from_input_ids)."""
        c = self.config
        if not c.position_offset:
            return np.arange(ids.shape[1])
        real = ids != c.pad_token_id
        return np.cumsum(real, axis=1) * real + c.pad_token_id

    def forward(self, ids, token_type_ids=None):
        x = self.word_embeddings.weight[ids]          # (B, T, H), a new array
        if self.token_type_embeddings is not None:
            tt = self.token_type_embeddings.weight
            x += tt[0] if token_type_ids is None else tt[token_type_ids]
        x += self.position_embeddings.weight[self.position_ids(ids)]
        return self.LayerNorm(x)


class BertPooler(Module):
    """tanh(W h_0 + b) of the first ([CLS]) token."""

    def __init__(self, hidden_size):
        super().__init__()
        self.dense = Linear(hidden_size, hidden_size, rng=NO_INIT)

    def forward(self, hidden_states):
        return np.tanh(self.dense(np.ascontiguousarray(hidden_states[:, 0])))


class BertModel(Module):
    """A BERT-family encoder, as transformers' BertModel (and its RoBERTa,
    XLM-RoBERTa and DistilBERT siblings): embeddings, a stack of post-LN
    encoder layers (batch first), and the optional pooler.  Inference only;
    build one from a checkpoint with ``pytransformer.from_pretrained``."""

    def __init__(self, config):
        super().__init__()
        c = self.config = config
        self.embeddings = BertEmbeddings(c)
        layer = TransformerEncoderLayer(
            c.hidden_size, c.num_attention_heads, c.intermediate_size, dropout=0.0,
            activation=HF_ACTIVATIONS[c.hidden_act], layer_norm_eps=c.layer_norm_eps,
            batch_first=True, norm_first=False, rng=NO_INIT)
        self.encoder = TransformerEncoder(layer, c.num_hidden_layers, enable_nested_tensor=False)
        self.pooler = BertPooler(c.hidden_size) if c.add_pooling_layer else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """input_ids (B, T) -> EncoderOutput(last_hidden_state (B, T, H),
        pooler_output (B, H) or None), float32.

        attention_mask (B, T): 1 (or True) at tokens, 0 at padding, as
        transformers; None: nothing is padded.  token_type_ids (B, T):
        segments, zeros when None (BERT only; the others have one type).
        Padding never changes the outputs at the real tokens, bit for bit.
        A row with no token at all gives the pooler's and layers' values of
        an attention output of zeros (transformers attends uniformly there).
        """
        c = self.config
        ids = check_token_ids(input_ids, "input_ids", c.vocab_size)
        if ids.ndim != 2:
            raise ValueError(f"input_ids: expected a 2-d array (batch, length), got shape "
                             f"{ids.shape}")
        B, T = ids.shape
        if T > c.max_length:
            raise ValueError(f"input_ids: {T} tokens are more than this model's "
                             f"{c.max_length} positions")
        tt = None
        if token_type_ids is not None:
            if not c.type_vocab_size:
                raise ValueError(f"token_type_ids: a {c.model_type} model has no token types")
            tt = check_token_ids(token_type_ids, "token_type_ids", c.type_vocab_size)
            if tt.shape != ids.shape:
                raise ValueError(f"token_type_ids: shape {tt.shape}, input_ids {ids.shape}")
        padding = _padding_mask(attention_mask, ids.shape)
        x = self.embeddings(ids, tt)
        x = self.encoder(x, src_key_padding_mask=padding)
        pooled = self.pooler(x) if self.pooler is not None else None
        return EncoderOutput(last_hidden_state=x, pooler_output=pooled)

    # -- checkpoints --
    def hf_tensor_map(self):
        """{our state_dict key: [Hugging Face tensor names]} (without the
        checkpoint's prefix, such as "bert."): several names are stacked on
        axis 0, in order (query, key, value into in_proj_weight)."""
        layer_map, hf_layer = _LAYER_MAPS[self.config.model_type == "distilbert"]
        out = {}
        for key in self.state_dict():
            if key.startswith("encoder.layers."):
                i, suffix = key[len("encoder.layers."):].split(".", 1)
                out[key] = [hf_layer.format(i) + n for n in layer_map[suffix]]
            else:
                out[key] = [key]
        return out


def from_hf_config(config, tensor_names=()):
    """An uninitialised BertModel for a config.json's dict; with a pooler when
    the checkpoint has one (``tensor_names``)."""
    pooler = any(n == "pooler.dense.weight" or n.endswith(".pooler.dense.weight")
                 for n in tensor_names)
    return BertModel(BertConfig.from_hf(config, add_pooling_layer=pooler))


def _padding_mask(attention_mask, shape):
    """transformers' attention_mask (1 = token) -> nn's key padding mask
    (True = padding), or None when nothing is padded (no mask to apply)."""
    if attention_mask is None:
        return None
    m = np.asarray(attention_mask)
    if m.shape != shape:
        raise ValueError(f"attention_mask: shape {m.shape}, input_ids {shape}")
    if m.dtype != np.bool_:
        if m.dtype.kind not in "iuf" or ((m != 0) & (m != 1)).any():
            raise ValueError(f"attention_mask: 0/1 or bool values are needed, got dtype "
                             f"{m.dtype}")
        m = m != 0
    return None if m.all() else ~m


# suffix of our layer key -> Hugging Face suffixes, and HF's layer prefix
_BERT_LAYER = {
    "self_attn.in_proj_weight": [f"attention.self.{p}.weight" for p in ("query", "key", "value")],
    "self_attn.in_proj_bias": [f"attention.self.{p}.bias" for p in ("query", "key", "value")],
    "self_attn.out_proj.weight": ["attention.output.dense.weight"],
    "self_attn.out_proj.bias": ["attention.output.dense.bias"],
    "norm1.weight": ["attention.output.LayerNorm.weight"],
    "norm1.bias": ["attention.output.LayerNorm.bias"],
    "linear1.weight": ["intermediate.dense.weight"], "linear1.bias": ["intermediate.dense.bias"],
    "linear2.weight": ["output.dense.weight"], "linear2.bias": ["output.dense.bias"],
    "norm2.weight": ["output.LayerNorm.weight"], "norm2.bias": ["output.LayerNorm.bias"],
}
_DISTILBERT_LAYER = {
    "self_attn.in_proj_weight": [f"attention.{p}_lin.weight" for p in "qkv"],
    "self_attn.in_proj_bias": [f"attention.{p}_lin.bias" for p in "qkv"],
    "self_attn.out_proj.weight": ["attention.out_lin.weight"],
    "self_attn.out_proj.bias": ["attention.out_lin.bias"],
    "norm1.weight": ["sa_layer_norm.weight"], "norm1.bias": ["sa_layer_norm.bias"],
    "linear1.weight": ["ffn.lin1.weight"], "linear1.bias": ["ffn.lin1.bias"],
    "linear2.weight": ["ffn.lin2.weight"], "linear2.bias": ["ffn.lin2.bias"],
    "norm2.weight": ["output_layer_norm.weight"], "norm2.bias": ["output_layer_norm.bias"],
}
_LAYER_MAPS = {False: (_BERT_LAYER, "encoder.layer.{}."),
               True: (_DISTILBERT_LAYER, "transformer.layer.{}.")}
