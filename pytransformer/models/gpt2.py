"""GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask
Learners"), as Hugging Face's transformers defines it (GPT2LMHeadModel), on
pytransformer.nn.

GPT-2 is the decoder of "Attention Is All You Need" without the
cross-attention: a stack of masked self-attention and position-wise
feed-forward blocks over token + learned position embeddings.  It moves the
layer norm to the input of each sub-layer (GPT-2 section 2.3: "Layer
normalization was moved to the input of each sub-block ... and an additional
layer normalization was added after the final self-attention block"), so a
block is a pre-LN :class:`~pytransformer.nn.TransformerEncoderLayer`
(``norm_first=True``) run with the look-ahead mask: x + Attn(LN_1(x)), then
x + FFN(LN_2(x)); then ``ln_f`` and the language-model head, tied to the token
embedding.  The checkpoint's Conv1D weights are (in, out), transposed
relative to a Linear's; its fused ``c_attn`` is our ``in_proj_weight``.

This file holds the config (:class:`GPT2Config`), the model
(:class:`GPT2LMHeadModel`) and the map from Hugging Face names to ours
(:meth:`GPT2LMHeadModel.hf_tensor_map`); it speaks the decoder-only decoding
protocol of :mod:`pytransformer.generation`.
"""
import numpy as np

from .. import ops
from ..nn import DecoderCache, Embedding, LayerNorm, Linear, TransformerEncoderLayer, stack_step
from ..nn.module import NO_INIT, clones
from ..ops.attention import look_ahead_mask
from ..ops.checks import check_int, check_token_ids
from .activations import HF_ACTIVATIONS, check_hf_activation
from .causal_lm import CausalLM

__all__ = ["GPT2Config", "GPT2LMHeadModel", "MODEL_TYPES", "from_hf_config"]

MODEL_TYPES = ("gpt2",)


class GPT2Config:
    """The sizes of one GPT-2 model, from a Hugging Face config.json
    (:meth:`from_hf`); names as in transformers' GPT2Config."""

    def __init__(self, vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                 n_inner=None, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                 bos_token_id=50256, eos_token_id=50256, pad_token_id=None,
                 tie_word_embeddings=True):
        self.model_type = "gpt2"
        self.vocab_size = check_int(vocab_size, "vocab_size", 1)
        self.n_positions = check_int(n_positions, "n_positions", 1)
        self.n_embd = check_int(n_embd, "n_embd", 1)
        self.n_layer = check_int(n_layer, "n_layer", 0)
        self.n_head = check_int(n_head, "n_head", 1)
        self.n_inner = check_int(4 * self.n_embd if n_inner is None else n_inner, "n_inner", 1)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={n_embd} is not a multiple of n_head={n_head}")
        self.activation_function = check_hf_activation(activation_function, "activation_function")
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        ids = {}
        for name, v in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id),
                        ("pad_token_id", pad_token_id)):
            if isinstance(v, list):  # some configs list several; the first is the id
                v = v[0] if v else None
            ids[name] = None if v is None else check_int(v, name, 0, self.vocab_size - 1)
        self.bos_token_id, self.eos_token_id, self.pad_token_id = \
            ids["bos_token_id"], ids["eos_token_id"], ids["pad_token_id"]
        self.tie_word_embeddings = bool(tie_word_embeddings)

    @classmethod
    def from_hf(cls, config):
        """From a config.json's dict; ValueError for what this family cannot run."""
        for flag in ("add_cross_attention", "scale_attn_by_inverse_layer_idx"):
            if config.get(flag):
                raise ValueError(f"{flag}=true is not supported")
        if config.get("scale_attn_weights", True) is not True:
            raise ValueError("scale_attn_weights=false is not supported (attention is "
                             "scaled by 1/sqrt(d_head))")
        keys = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner",
                "activation_function", "layer_norm_epsilon", "bos_token_id", "eos_token_id",
                "pad_token_id", "tie_word_embeddings")
        defaults = cls().__dict__
        c = {k: config.get(k, defaults.get(k)) for k in keys}
        if "n_inner" not in config:
            c["n_inner"] = None
        return cls(**c)

    def __repr__(self):
        return f"GPT2Config({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


class GPT2LMHeadModel(CausalLM):
    """GPT-2 with its language-model head, as transformers' GPT2LMHeadModel:
    ``wte`` (tokens), ``wpe`` (learned positions), ``h`` (pre-LN blocks:
    ``norm1`` = ln_1, ``self_attn`` = attn, ``norm2`` = ln_2, ``linear1`` /
    ``linear2`` = the MLP), ``ln_f`` and ``lm_head`` (tied to wte unless the
    config says otherwise).  Inference only; build one from a checkpoint with
    ``pytransformer.from_pretrained``.
    """

    embedding_name = "wte"

    length_limit_name = "n_positions"

    def __init__(self, config):
        super().__init__()
        c = self.config = config
        self.wte = Embedding(c.vocab_size, c.n_embd, rng=NO_INIT)
        self.wpe = Embedding(c.n_positions, c.n_embd, rng=NO_INIT)
        block = TransformerEncoderLayer(
            c.n_embd, c.n_head, c.n_inner, dropout=0.0, activation=HF_ACTIVATIONS[
                c.activation_function], layer_norm_eps=c.layer_norm_epsilon,
            batch_first=True, norm_first=True, rng=NO_INIT)
        self.h = clones(block, c.n_layer, TransformerEncoderLayer, "GPT-2 block")
        self.ln_f = LayerNorm(c.n_embd, eps=c.layer_norm_epsilon)
        self.lm_head = Linear(c.n_embd, c.vocab_size, bias=False, rng=NO_INIT)
        self._tie()

    # -- the protocol's names --
    @property
    def max_length(self):
        """Positions the model has: prompt + new tokens at most."""
        return self.config.n_positions

    # -- state --
    def hf_tensor_map(self):
        """{our state_dict key: [Hugging Face name]} without the checkpoint's
        prefix ("transformer." in GPT2LMHeadModel files, none in GPT2Model
        ones); the keys of :meth:`hf_transposed` hold Conv1D weights."""
        out = {"wte.weight": ["wte.weight"], "wpe.weight": ["wpe.weight"],
               "ln_f.weight": ["ln_f.weight"], "ln_f.bias": ["ln_f.bias"]}
        for i in range(self.config.n_layer):
            for ours, theirs in _BLOCK.items():
                out[f"h.{i}.{ours}"] = [f"h.{i}.{theirs}"]
        return out

    def hf_head_map(self):
        """{our key: [name]} of tensors outside the base model's prefix: an
        untied language-model head."""
        return {} if self.config.tie_word_embeddings else {"lm_head.weight": ["lm_head.weight"]}

    def hf_ignored(self, name):
        """Whether a checkpoint tensor is no weight of ours: old files' causal
        mask buffers, and a head tied to wte."""
        return name.endswith(HF_IGNORED) or (self.config.tie_word_embeddings and
                                             name.endswith("lm_head.weight"))

    def hf_transposed(self):
        """Our keys whose checkpoint tensor is a Conv1D weight (in, out)."""
        return {f"h.{i}.{k}" for i in range(self.config.n_layer) for k in _CONV1D}

    # -- forward --
    def forward(self, input_ids, attention_mask=None, position_ids=None):
        """input_ids (B, T) -> logits (B, T, vocab_size) float32, as the
        ``logits`` of transformers' GPT2LMHeadModel.

        attention_mask (B, T): 1 at tokens, 0 at padding (keys not attended);
        position_ids (B, T): default 0..T-1 for every row, as transformers'
        forward (its generate counts them from each row's first token
        instead: :meth:`start_decoding` does the same).  A query with no key
        left to attend (a left pad) gets an attention output of zeros."""
        ids, keep = self._check_ids(input_ids, attention_mask)
        B, T = ids.shape
        if position_ids is None:
            if T > self.config.n_positions:
                raise ValueError(f"input_ids: {T} tokens are more than this model's "
                                 f"n_positions={self.config.n_positions}")
            pos = np.arange(T)
        else:
            pos = check_token_ids(position_ids, "position_ids", self.config.n_positions)
            if pos.shape not in ((T,), (1, T), (B, T)):
                raise ValueError(f"position_ids: shape {pos.shape}, input_ids {ids.shape}")
        x = self.wte.weight[ids] + self.wpe.weight[pos]
        causal = ~look_ahead_mask(T)       # torch.nn's form: True = may not attend
        padding = None if keep is None or keep.all() else ~keep
        for block in self.h:
            x = block(x, src_mask=causal, src_key_padding_mask=padding, is_causal=True)
        return self.lm_head(self.ln_f(x))

    # -- the decoder-only decoding protocol (pytransformer.generation) --
    def start_decoding(self, input_ids, max_new_tokens, attention_mask=None, capacity=None):
        """Run the prompts ``input_ids`` (B, T) in one pass into a new
        :class:`~pytransformer.nn.DecoderCache` for up to ``max_new_tokens``
        more positions; returns ``(state, logits)``, logits (B, vocab_size) of
        each prompt's last token.

        Each row's tokens (attention_mask 1; left or right padding) are moved
        to slots 0..n-1 of its cache row and get positions 0..n-1, as
        transformers' generate numbers them: a prompt gives the same bits
        alone or in any batch.  The longest prompt + max_new_tokens must fit
        in n_positions (ValueError otherwise).  ``capacity`` (>= B): rows the
        cache allocates, for :meth:`DecoderCache.select` to repeat rows into
        (beam search)."""
        ids, lengths, capacity = self._prompts(input_ids, attention_mask, max_new_tokens,
                                               capacity)
        B, width = ids.shape
        c = self.config
        state = DecoderCache(capacity, width + max_new_tokens,
                             [(c.n_head, c.n_embd // c.n_head)] * c.n_layer).fill(lengths)
        x = self.wte.weight[ids] + self.wpe.weight[:width]
        for i, block in enumerate(self.h):
            k, v = state.layer(i)
            x = block.add_norm(x, lambda h: _prefill_attention(block.self_attn, h, k, v),
                               block.norm1)
            x = block.add_norm(x, block._ff_block, block.norm2)
        last = np.ascontiguousarray(x[np.arange(B), lengths - 1])
        return state, self.lm_head.step(self.ln_f.step(last))

    def decode_step(self, tokens, state):
        """Logits (N, vocab_size) of the token after ``tokens`` (N,), each at
        its row's next position (``state.lengths``); the state then holds one
        more position per row.  Row for row the last position of
        :meth:`forward` over the whole sequence."""
        tokens, pos = self._step_tokens(tokens, state)
        x = self.wte.weight[tokens] + self.wpe.weight[pos]
        keep = state.keep()
        stack = stack_step(self, self.h, self.ln_f, self.lm_head)
        if stack is not None:   # blocks, ln_f and lm_head in one C call: the same bits
            logits = stack.step(x, *state.layers(), pos, keep)
            state.advance()
            return logits
        at = pos if keep is not None else int(pos[0]) if pos.size else 0
        for i, block in enumerate(self.h):   # the reference: each block composed in Python
            k, v = state.layer(i)
            x = block.add_norm(x, lambda h: block.self_attn.step_self_attention(h, k, v, at,
                                                                                keep),
                               block.norm1.step)
            x = block.add_norm(x, block._ff_step, block.norm2.step)
        state.advance()
        return self.lm_head.step(self.ln_f.step(x))

    def extra_repr(self):
        c = self.config
        return (f"vocab_size={c.vocab_size}, n_positions={c.n_positions}, n_embd={c.n_embd}, "
                f"n_layer={c.n_layer}, n_head={c.n_head}")


def _prefill_attention(attn, h, cache_k, cache_v):
    """Masked self-attention over the whole prompt (B, T, E), its keys and
    values written to cache slots 0..T-1 on the way: the look-ahead mask
    alone (is_causal), so a row's real queries see only its own earlier
    tokens and padding (after them) is never attended."""
    q, k, v = attn.project_self(h)
    T = h.shape[1]
    cache_k[:, :, :T] = k
    cache_v[:, :, :T] = v
    return attn.output_projection(ops.scaled_dot_product_attention(q, k, v, is_causal=True))


# our block key -> the checkpoint's, and which are Conv1D (transposed) weights
_BLOCK = {"norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias",
          "self_attn.in_proj_weight": "attn.c_attn.weight",
          "self_attn.in_proj_bias": "attn.c_attn.bias",
          "self_attn.out_proj.weight": "attn.c_proj.weight",
          "self_attn.out_proj.bias": "attn.c_proj.bias",
          "norm2.weight": "ln_2.weight", "norm2.bias": "ln_2.bias",
          "linear1.weight": "mlp.c_fc.weight", "linear1.bias": "mlp.c_fc.bias",
          "linear2.weight": "mlp.c_proj.weight", "linear2.bias": "mlp.c_proj.bias"}
_CONV1D = ("self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight",
           "linear2.weight")
# Buffers old GPT-2 checkpoints carry: the causal mask.
HF_IGNORED = (".attn.bias", ".attn.masked_bias")


def from_hf_config(config, tensor_names=()):
    """An uninitialised GPT2LMHeadModel for a config.json's dict."""
    return GPT2LMHeadModel(GPT2Config.from_hf(config))
