"""Llama-family decoders (Touvron et al. 2023, "LLaMA"; SmolLM2, TinyLlama,
...), as Hugging Face's transformers defines them (LlamaForCausalLM), on
pytransformer.nn.

A Llama model is GPT-2's pre-norm decoder stack with four changes
(LLaMA section 2.2):

- RMS norm (Zhang & Sennrich 2019) before each sub-layer and at the end,
  instead of layer norm: ``x + Attn(RMSNorm(x))``, then ``x + FFN(RMSNorm(x))``;
- rotary position embeddings (Su et al. 2021) instead of learned positions:
  no position is added to the tokens; every attention layer turns its
  queries and keys by their positions (:func:`pytransformer.ops.rope`), so
  the scores depend on the distance m - n only;
- grouped-query attention (Ainslie et al. 2023): the keys and values have
  ``num_key_value_heads`` heads, each shared by a group of query heads; the
  cache holds the kv heads only and attention reads each for its group by
  index, never copying it;
- a SwiGLU feed-forward network (Shazeer 2020):
  ``down(SiLU(gate(x)) * up(x))``, gate and up one fused GEMM
  (``gate_up_proj``) whose output :func:`pytransformer.ops.silu_and_mul`
  gates in one pass.

The query, key and value projections are one fused GEMM too (``qkv_proj``,
rows q | k | v; k and v have fewer rows under grouped-query attention).

The rotary layout is decided at load: ``rope_layout="halves"`` turns dims i
and i + head_dim/2 (Hugging Face's ``rotate_half``; its checkpoints, and GGUF
files read through :func:`pytransformer.hub.llama_config_and_tensors`, which
un-permutes q and k), ``"pairs"`` turns dims 2i and 2i + 1 (Meta's and
llama.cpp's layout, a GGUF file's own q/k rows).  The two give the same
model; only the order of q and k's rows within each head differs.

This file holds the config (:class:`LlamaConfig`), the model
(:class:`LlamaForCausalLM`) and the map from Hugging Face names to ours
(:meth:`LlamaForCausalLM.hf_tensor_map`); it speaks the decoder-only
decoding protocol of :mod:`pytransformer.generation`.
"""
import numpy as np

from .. import _kernels, ops
from ..nn import DecoderCache, Embedding, Linear, Module, RMSNorm, stack_step
from ..nn.module import FUSED_STEP, NO_INIT, ModuleList, kept_step
from ..ops.attention import look_ahead_mask
from ..ops.checks import check_float, check_int, check_token_ids
from ..ops.rowwise import _FLOAT32_EPS
from .causal_lm import CausalLM

__all__ = ["LlamaConfig", "LlamaForCausalLM", "MODEL_TYPES", "ROPE_LAYOUTS", "from_hf_config"]

MODEL_TYPES = ("llama",)
ROPE_LAYOUTS = ("halves", "pairs")


class LlamaConfig:
    """The sizes of one Llama-family model; names as in transformers'
    LlamaConfig (and its defaults), plus ``rope_layout``.  :meth:`from_hf`
    reads a config.json's dict (or the dict
    :func:`pytransformer.hub.llama_config_and_tensors` makes of a GGUF
    file's metadata)."""

    def __init__(self, vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=None,
                 head_dim=None, max_position_embeddings=2048, rms_norm_eps=1e-6,
                 rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
                 eos_token_id=2, pad_token_id=None, rope_layout="halves"):
        self.model_type = "llama"
        self.vocab_size = check_int(vocab_size, "vocab_size", 1)
        self.hidden_size = check_int(hidden_size, "hidden_size", 1)
        self.intermediate_size = check_int(intermediate_size, "intermediate_size", 1)
        self.num_hidden_layers = check_int(num_hidden_layers, "num_hidden_layers", 0)
        self.num_attention_heads = check_int(num_attention_heads, "num_attention_heads", 1)
        self.num_key_value_heads = check_int(
            num_attention_heads if num_key_value_heads is None else num_key_value_heads,
            "num_key_value_heads", 1)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={num_attention_heads} is not a multiple of "
                             f"num_key_value_heads={num_key_value_heads}")
        if head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"hidden_size={hidden_size} is not a multiple of "
                                 f"num_attention_heads={num_attention_heads} (and no head_dim "
                                 f"is given)")
            head_dim = self.hidden_size // self.num_attention_heads
        self.head_dim = check_int(head_dim, "head_dim", 2)
        if self.head_dim % 2:
            raise ValueError(f"head_dim={head_dim}: rotary embedding needs an even head_dim")
        self.max_position_embeddings = check_int(max_position_embeddings,
                                                 "max_position_embeddings", 1)
        self.rms_norm_eps = check_float(rms_norm_eps, "rms_norm_eps", 0.0)
        self.rope_theta = check_float(rope_theta, "rope_theta", 0.0, lo_open=True)
        self.tie_word_embeddings = bool(tie_word_embeddings)
        for name, v in (("bos_token_id", bos_token_id), ("pad_token_id", pad_token_id)):
            if isinstance(v, list):  # some configs list several; the first is the id
                v = v[0] if v else None
            setattr(self, name, None if v is None else
                    check_int(v, name, 0, self.vocab_size - 1))
        # eos may be a list (several ids end a turn, as Llama 3's); kept as given
        if isinstance(eos_token_id, list):
            eos_token_id = [check_int(e, "eos_token_id", 0, self.vocab_size - 1)
                            for e in eos_token_id] or None
        elif eos_token_id is not None:
            eos_token_id = check_int(eos_token_id, "eos_token_id", 0, self.vocab_size - 1)
        self.eos_token_id = eos_token_id
        if rope_layout not in ROPE_LAYOUTS:
            raise ValueError(f"rope_layout must be one of {ROPE_LAYOUTS}, got {rope_layout!r}")
        self.rope_layout = rope_layout

    @classmethod
    def from_hf(cls, config, rope_layout="halves"):
        """From a config.json's dict; ValueError for what this family cannot
        run (RoPE scaling, biases, another activation)."""
        act = config.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"hidden_act {act!r} is not supported (the SwiGLU gate is SiLU)")
        for flag in ("attention_bias", "mlp_bias"):
            if config.get(flag):
                raise ValueError(f"{flag}=true is not supported")
        theta = config.get("rope_theta")
        scaling = config.get("rope_scaling")
        params = config.get("rope_parameters")   # transformers >= 5 keeps both here
        if isinstance(params, dict):
            theta = params.get("rope_theta", theta)
            scaling = params if scaling is None else scaling
        if isinstance(scaling, dict):
            kind = scaling.get("rope_type", scaling.get("type", "default"))
            if kind != "default":
                raise ValueError(f"rope_scaling of type {kind!r} is not supported (only the "
                                 f"default rotary embedding is)")
        elif scaling is not None:
            raise ValueError(f"rope_scaling={scaling!r} is not supported")
        c = {k: config.get(k, v) for k, v in _HF_DEFAULTS.items()}
        return cls(**c, rope_theta=10000.0 if theta is None else theta,
                   rope_layout=rope_layout)

    def __repr__(self):
        return f"LlamaConfig({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


# transformers' LlamaConfig defaults (num_key_value_heads, head_dim: derived)
_HF_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=None,
                    head_dim=None, max_position_embeddings=2048, rms_norm_eps=1e-6,
                    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                    pad_token_id=None)


class LlamaAttention(Module):
    """Multi-head self-attention with rotary positions and grouped query
    heads: ``qkv_proj`` (the q | k | v projections as one Linear, no bias),
    RoPE on q and k, scaled dot-product attention in which query head h reads
    kv head h // (num_heads / num_key_value_heads), ``o_proj``."""

    def __init__(self, hidden_size, num_heads, num_key_value_heads, head_dim, rope_theta,
                 rope_layout="halves"):
        super().__init__()
        self.num_heads, self.num_key_value_heads = num_heads, num_key_value_heads
        self.head_dim, self.rope_theta, self.rope_layout = head_dim, float(rope_theta), \
            rope_layout
        self.qkv_proj = Linear(hidden_size, (num_heads + 2 * num_key_value_heads) * head_dim,
                               bias=False, rng=NO_INIT)
        self.o_proj = Linear(num_heads * head_dim, hidden_size, bias=False, rng=NO_INIT)

    def _qkv(self, y, positions):
        """The fused projection's output y (B, T, (Hq + 2 Hkv) D) -> heads
        q (B, T, Hq, D), k, v (B, T, Hkv, D), views of y, q and k turned by
        ``positions`` (B, T) int64 in place (one call: they share positions)."""
        B, T = y.shape[:2]
        Hq, Hkv, D = self.num_heads, self.num_key_value_heads, self.head_dim
        heads = y.reshape(B, T, Hq + 2 * Hkv, D)
        ops.rope(heads[:, :, :Hq + Hkv], positions, self.rope_theta, self.rope_layout,
                 inplace=True)
        return heads[:, :, :Hq], heads[:, :, Hq:Hq + Hkv], heads[:, :, Hq + Hkv:]

    def _output(self, o):
        """Concat(head_1..head_h) W^O of attention outputs o (B, Hq, T, D)."""
        B, _, T, _ = o.shape
        return self.o_proj(o.transpose(0, 2, 1, 3).reshape(B, T, -1))

    def forward(self, h, positions, attn_mask=None, is_causal=False, cache=None):
        """h (B, T, E) at ``positions`` (B, T) int64 -> (B, T, E).
        attn_mask: bool (B, 1, T, T), True = may attend; or is_causal.
        ``cache`` (k, v) of shape (B, Hkv, max_len, D): the keys and values
        are written to its slots 0..T-1 and attention reads them there."""
        q, k, v = self._qkv(self.qkv_proj(h), positions)
        q = q.transpose(0, 2, 1, 3)
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
        if cache is not None:
            T = h.shape[1]
            cache[0][:, :, :T] = k
            cache[1][:, :, :T] = v
            k, v = cache[0][:, :, :T], cache[1][:, :, :T]
        return self._output(ops.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=True))

    def step(self, h, cache_k, cache_v, pos, keep=None):
        """One new position per sequence: h (N, E) at positions ``pos`` (N,)
        int64; its key and value written to the cache (N, Hkv, max_len, D) at
        slot pos of each row, then attention over slots <= pos (``keep``
        (N, S) bool False at a row's slots past its own, or None when every
        row is at the same position).  Returns (N, E)."""
        N = h.shape[0]
        q, k, v = self._qkv(self.qkv_proj.step(h)[:, None], pos[:, None])
        if keep is None:
            p = int(pos[0]) if N else 0
            cache_k[:, :, p] = k[:, 0]
            cache_v[:, :, p] = v[:, 0]
            S, mask = p + 1, None
        else:
            rows = np.arange(N)
            cache_k[rows, :, pos] = k[:, 0]
            cache_v[rows, :, pos] = v[:, 0]
            S = keep.shape[1]
            mask = keep.reshape(N, 1, 1, S)
        o = ops.scaled_dot_product_attention(
            np.ascontiguousarray(q.transpose(0, 2, 1, 3)), cache_k[:, :, :S], cache_v[:, :, :S],
            attn_mask=mask, enable_gqa=True)
        return self.o_proj.step(o.reshape(N, -1))

    def extra_repr(self):
        return (f"num_heads={self.num_heads}, num_key_value_heads={self.num_key_value_heads}, "
                f"head_dim={self.head_dim}, rope_theta={self.rope_theta}, "
                f"rope_layout={self.rope_layout!r}")


class LlamaMLP(Module):
    """The SwiGLU position-wise feed-forward network:
    ``down_proj(SiLU(x W_gate) * (x W_up))``, the gate and up projections one
    GEMM (``gate_up_proj``, rows gate | up)."""

    def __init__(self, hidden_size, intermediate_size):
        super().__init__()
        self.gate_up_proj = Linear(hidden_size, 2 * intermediate_size, bias=False, rng=NO_INIT)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=False, rng=NO_INIT)

    def forward(self, x):
        return self.down_proj(ops.silu_and_mul(self.gate_up_proj(x)))

    def step(self, x):
        return self.down_proj.step(ops.silu_and_mul(self.gate_up_proj.step(x)))


class LlamaDecoderLayer(Module):
    """One decoder layer, pre-norm: x + Attn(RMSNorm(x)), then
    x + FFN(RMSNorm(x)) ("Add & Norm" with the norm moved to the sub-layer's
    input, as GPT-2 and Llama place it)."""

    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.self_attn = LlamaAttention(c.hidden_size, c.num_attention_heads,
                                        c.num_key_value_heads, c.head_dim, c.rope_theta,
                                        c.rope_layout)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.mlp = LlamaMLP(c.hidden_size, c.intermediate_size)

    @staticmethod
    def add_norm(x, sublayer, norm):
        """x + Sublayer(Norm(x)), the sum written into the sub-layer's output."""
        y = sublayer(norm(x))
        return np.add(y, x, out=y)

    def forward(self, x, positions, attn_mask=None, is_causal=False, cache=None):
        x = self.add_norm(x, lambda h: self.self_attn(h, positions, attn_mask, is_causal, cache),
                          self.input_layernorm)
        return self.add_norm(x, self.mlp, self.post_attention_layernorm)

    #: Run each decoding step of this layer as one C call
    #: (_kernels.LlamaLayerStep) where it can: bit for bit the Python
    #: composition below, which stays the reference (see
    #: nn.TransformerDecoderLayer.fused_step; PYTRANSFORMER_FUSED_STEP=0 turns
    #: both off).
    fused_step = FUSED_STEP

    def _step_kernel(self):
        """The layer as one C step, or None where the Python step must run.
        Made once and kept while the weights it holds are the layer's."""
        return kept_step(self)

    def _step_linears(self):
        a, mlp = self.self_attn, self.mlp
        return a.qkv_proj, a.o_proj, mlp.gate_up_proj, mlp.down_proj

    def _step_key(self):
        a, n1, n2 = self.self_attn, self.input_layernorm, self.post_attention_layernorm
        lin = self._step_linears()
        return tuple(id(m._packs.get("weight")) for m in lin) + \
            tuple(id(m.bias) for m in lin) + \
            (id(n1.weight), n1.eps, id(n2.weight), n2.eps, a.rope_theta, a.rope_layout)

    def _make_step(self):
        a, n1, n2 = self.self_attn, self.input_layernorm, self.post_attention_layernorm
        weights = [(m._packs.get("weight"), m.bias) for m in self._step_linears()]
        if not all(isinstance(w, _kernels.STEP_MATRIX_TYPES) for w, _ in weights) or \
                n1.weight is None or n2.weight is None:
            return None
        return _kernels.LlamaLayerStep(
            a.num_heads, a.num_key_value_heads, a.rope_layout,
            ops.rope_inv_freq(a.head_dim, a.rope_theta), weights,
            [(n.weight, _FLOAT32_EPS if n.eps is None else n.eps) for n in (n1, n2)])

    def step(self, x, cache_k, cache_v, pos, keep=None):
        """forward for one new position per sequence (N, E), kernel-ready."""
        if self.fused_step:
            kernel = self._step_kernel()
            if kernel is not None:
                return kernel.step(x, cache_k, cache_v, pos, keep)
        x = self.add_norm(x, lambda h: self.self_attn.step(h, cache_k, cache_v, pos, keep),
                          self.input_layernorm.step)
        return self.add_norm(x, self.mlp.step, self.post_attention_layernorm.step)


class LlamaForCausalLM(CausalLM):
    """A Llama-family decoder with its language-model head, as transformers'
    LlamaForCausalLM: ``embed_tokens``, ``layers`` (:class:`LlamaDecoderLayer`),
    ``norm`` and ``lm_head`` (tied to embed_tokens when the config says so,
    as SmolLM2's is).  Inference only; build one from a checkpoint with
    ``pytransformer.from_pretrained`` (a Hugging Face directory of
    model_type "llama", or a Llama GGUF file)."""

    embedding_name = "embed_tokens"

    length_limit_name = "max_position_embeddings"

    def __init__(self, config):
        super().__init__()
        c = self.config = config
        self.embed_tokens = Embedding(c.vocab_size, c.hidden_size, rng=NO_INIT)
        self.layers = ModuleList([LlamaDecoderLayer(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.lm_head = Linear(c.hidden_size, c.vocab_size, bias=False, rng=NO_INIT)
        self._tie()

    # -- the protocol's names --
    @property
    def max_length(self):
        """Positions the model was trained on: prompt + new tokens at most."""
        return self.config.max_position_embeddings

    # -- state --
    def hf_tensor_map(self):
        """{our state_dict key: [Hugging Face names]} without the checkpoint's
        "model." prefix; a fused weight lists its parts in order (rows
        stacked), their row counts in :meth:`hf_part_rows`."""
        out = {"embed_tokens.weight": ["embed_tokens.weight"], "norm.weight": ["norm.weight"]}
        for i in range(self.config.num_hidden_layers):
            for ours, theirs in _LAYER.items():
                out[f"layers.{i}.{ours}"] = [f"layers.{i}.{t}" for t in theirs]
        return out

    def hf_part_rows(self):
        """{our key: rows of each part} for the fused weights whose parts
        differ in size (q | k | v under grouped-query attention)."""
        c = self.config
        q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        return {f"layers.{i}.self_attn.qkv_proj.weight": [q, kv, kv]
                for i in range(c.num_hidden_layers)}

    def hf_head_map(self):
        """{our key: [name]} outside the base model's prefix: an untied head."""
        return {} if self.config.tie_word_embeddings else {"lm_head.weight": ["lm_head.weight"]}

    def hf_ignored(self, name):
        """Whether a checkpoint tensor is no weight of ours: a head tied to
        the embedding, and RoPE's cached frequencies (old checkpoints)."""
        return name.endswith("rotary_emb.inv_freq") or (
            self.config.tie_word_embeddings and name.endswith("lm_head.weight"))

    def hf_transposed(self):
        return set()

    # -- forward --

    def _hidden(self, ids, positions, attn_mask, is_causal, state=None):
        x = self.embed_tokens.weight[ids]
        for i, layer in enumerate(self.layers):
            x = layer(x, positions, attn_mask, is_causal,
                      None if state is None else state.layer(i))
        return x

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        """input_ids (B, T) -> logits (B, T, vocab_size) float32, as the
        ``logits`` of transformers' LlamaForCausalLM.

        attention_mask (B, T): 1 at tokens, 0 at padding (keys not attended);
        position_ids (B, T) or (T,): default 0..T-1 for every row, as
        transformers' forward (its generate counts them from each row's first
        token instead: :meth:`start_decoding` does the same).  A query with no
        key left to attend (a left pad) gets an attention output of zeros."""
        ids, keep = self._check_ids(input_ids, attention_mask)
        B, T = ids.shape
        n = self.config.max_position_embeddings
        if position_ids is None:
            if T > n:
                raise ValueError(f"input_ids: {T} tokens are more than this model's "
                                 f"max_position_embeddings={n}")
            pos = np.arange(T)
        else:
            pos = check_token_ids(position_ids, "position_ids", n)
            if pos.shape not in ((T,), (1, T), (B, T)):
                raise ValueError(f"position_ids: shape {pos.shape}, input_ids {ids.shape}")
        pos = np.ascontiguousarray(np.broadcast_to(pos, (B, T)), dtype=np.int64)
        if keep is None or keep.all():
            x = self._hidden(ids, pos, None, True)
        else:
            mask = look_ahead_mask(T)[None, None] & keep[:, None, None, :]
            x = self._hidden(ids, pos, mask, False)
        return self.lm_head(self.norm(x))

    # -- the decoder-only decoding protocol (pytransformer.generation) --
    def start_decoding(self, input_ids, max_new_tokens, attention_mask=None, capacity=None):
        """Run the prompts ``input_ids`` (B, T) in one pass into a new
        :class:`~pytransformer.nn.DecoderCache` (the kv heads only, RoPE
        applied to the cached keys) for up to ``max_new_tokens`` more
        positions; returns ``(state, logits)``, logits (B, vocab_size) of each
        prompt's last token.

        Each row's tokens (attention_mask 1; left or right padding) are moved
        to slots 0..n-1 of its cache row and turned by positions 0..n-1, as
        transformers' generate numbers them: a prompt gives the same bits
        alone or in any batch.  The longest prompt + max_new_tokens must fit
        in max_position_embeddings (ValueError otherwise).  ``capacity``
        (>= B): rows the cache allocates, for :meth:`DecoderCache.select` to
        repeat rows into (beam search)."""
        ids, lengths, capacity = self._prompts(input_ids, attention_mask, max_new_tokens,
                                               capacity)
        B, width = ids.shape
        c = self.config
        state = DecoderCache(capacity, width + max_new_tokens,
                             [(c.num_key_value_heads, c.head_dim)] * c.num_hidden_layers
                             ).fill(lengths)
        # the look-ahead mask alone: a row's real queries see only its own
        # earlier tokens, and the padding after them is never attended
        x = self._hidden(ids, np.ascontiguousarray(np.broadcast_to(np.arange(width), (B, width))),
                         None, True, state)
        last = np.ascontiguousarray(x[np.arange(B), lengths - 1])
        return state, self.lm_head.step(self.norm.step(last))

    def decode_step(self, tokens, state):
        """Logits (N, vocab_size) of the token after ``tokens`` (N,), each at
        its row's next position (``state.lengths``); the state then holds one
        more position per row.  Row for row the last position of
        :meth:`forward` over the whole sequence."""
        tokens, pos = self._step_tokens(tokens, state)
        x = self.embed_tokens.weight[tokens]
        keep = state.keep()
        stack = stack_step(self, self.layers, self.norm, self.lm_head)
        if stack is not None:   # layers, norm and lm_head in one C call: the same bits
            logits = stack.step(x, *state.layers(), pos, keep)
            state.advance()
            return logits
        for i, layer in enumerate(self.layers):
            x = layer.step(x, *state.layer(i), pos, keep)
        state.advance()
        return self.lm_head.step(self.norm.step(x))

    def extra_repr(self):
        c = self.config
        return (f"vocab_size={c.vocab_size}, hidden_size={c.hidden_size}, "
                f"num_hidden_layers={c.num_hidden_layers}, heads={c.num_attention_heads}, "
                f"kv_heads={c.num_key_value_heads}, rope_layout={c.rope_layout!r}")


# our layer key -> the checkpoint's, parts of a fused weight in row order
_LAYER = {"input_layernorm.weight": ["input_layernorm.weight"],
          "self_attn.qkv_proj.weight": ["self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                        "self_attn.v_proj.weight"],
          "self_attn.o_proj.weight": ["self_attn.o_proj.weight"],
          "post_attention_layernorm.weight": ["post_attention_layernorm.weight"],
          "mlp.gate_up_proj.weight": ["mlp.gate_proj.weight", "mlp.up_proj.weight"],
          "mlp.down_proj.weight": ["mlp.down_proj.weight"]}


def from_hf_config(config, tensor_names=(), rope_layout="halves"):
    """An uninitialised LlamaForCausalLM for a config.json's dict."""
    return LlamaForCausalLM(LlamaConfig.from_hf(config, rope_layout))
