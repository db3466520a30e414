"""Marian translation models (Junczys-Dowmunt et al. 2018), the OPUS-MT
checkpoints among them, as Hugging Face's transformers defines them
(MarianMTModel), on pytransformer.nn.

A Marian model is the encoder-decoder of "Attention Is All You Need"
(section 3, Figure 1) in its deployed form:

- token embeddings scaled by sqrt(d_model) when ``scale_embedding`` (section
  3.4), plus fixed sinusoidal positions (section 3.5) laid out as Marian does
  (sines in the first half of each vector, cosines in the second;
  :func:`~pytransformer.models.positional.marian_positional_encoding`);
- post-LN encoder and decoder layers, LayerNorm(x + Sublayer(x)), with no
  final LayerNorm after either stack: exactly
  :class:`~pytransformer.nn.TransformerEncoderLayer` and
  :class:`~pytransformer.nn.TransformerDecoderLayer`; a checkpoint's separate
  query, key and value projections are stacked into the fused
  ``in_proj_weight``;
- the position-wise feed-forward network with the configured activation
  (``swish``/``silu`` in OPUS-MT, ``relu`` or ``gelu``);
- the output projection to target logits plus ``final_logits_bias``, its
  weight tied to the target embedding or its own (``tie_word_embeddings``);
  source and target embeddings one table or two
  (``share_encoder_decoder_embeddings``).

Decoding starts from ``decoder_start_token_id`` (the pad id in OPUS-MT) and
the decoder's self-attention masks nothing but the future: the start token is
a pad token that must be attended to.  This file holds the family's config
(:class:`MarianConfig`), its modules (:class:`MarianMTModel`) and the map from
Hugging Face tensor names to ours; :mod:`pytransformer.hub` reads the files.
"""
import math

import numpy as np

from ..nn import Embedding, Linear, Module, TransformerDecoder, TransformerDecoderLayer, \
    TransformerEncoder, TransformerEncoderLayer
from ..nn.module import NO_INIT
from ..ops.attention import look_ahead_mask
from ..ops.checks import check_int, check_token_id, check_token_ids
from .activations import HF_ACTIVATIONS, check_hf_activation
from .positional import marian_positional_encoding

__all__ = ["MarianConfig", "MarianMTModel", "Seq2SeqLMOutput", "MODEL_TYPES",
           "from_hf_config", "DEFAULT"]

MODEL_TYPES = ("marian",)

# What generate uses when neither generation_config.json nor config.json
# says: transformers' GenerationConfig defaults.
_GENERATION_DEFAULTS = dict(max_length=20, min_length=0, num_beams=1, length_penalty=1.0,
                            repetition_penalty=1.0, no_repeat_ngram_size=0,
                            bad_words_ids=None, forced_eos_token_id=None,
                            renormalize_logits=False)


class _CheckpointDefault:
    """generate's default for an argument: the checkpoint's value."""

    def __repr__(self):
        return "<the checkpoint's>"


DEFAULT = _CheckpointDefault()


class MarianConfig:
    """The sizes and special ids of one Marian model, read from a Hugging Face
    config.json (:meth:`from_hf`); names and defaults as transformers'
    MarianConfig."""

    def __init__(self, vocab_size=58101, decoder_vocab_size=None, d_model=1024,
                 encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                 decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                 activation_function="gelu", max_position_embeddings=1024,
                 scale_embedding=False, pad_token_id=58100, eos_token_id=0,
                 decoder_start_token_id=58100, forced_eos_token_id=0,
                 share_encoder_decoder_embeddings=True, tie_word_embeddings=True):
        self.vocab_size = check_int(vocab_size, "vocab_size", 1)
        self.share_encoder_decoder_embeddings = bool(share_encoder_decoder_embeddings)
        # one table for both sides when shared (transformers sizes the head by vocab_size)
        self.decoder_vocab_size = self.vocab_size if self.share_encoder_decoder_embeddings \
            or decoder_vocab_size is None else check_int(decoder_vocab_size,
                                                         "decoder_vocab_size", 1)
        self.d_model = check_int(d_model, "d_model", 1)
        for name, v in (("encoder_layers", encoder_layers), ("decoder_layers", decoder_layers)):
            setattr(self, name, check_int(v, name, 0, 1 << 12))
        for name, v in (("encoder_attention_heads", encoder_attention_heads),
                        ("decoder_attention_heads", decoder_attention_heads)):
            setattr(self, name, check_int(v, name, 1))
            if self.d_model % v:
                raise ValueError(f"d_model={d_model} is not a multiple of {name}={v}")
        self.encoder_ffn_dim = check_int(encoder_ffn_dim, "encoder_ffn_dim", 1)
        self.decoder_ffn_dim = check_int(decoder_ffn_dim, "decoder_ffn_dim", 1)
        self.activation_function = check_hf_activation(activation_function, "activation_function")
        self.max_position_embeddings = check_int(max_position_embeddings,
                                                 "max_position_embeddings", 1, 1 << 20)
        self.scale_embedding = bool(scale_embedding)
        V = self.decoder_vocab_size
        self.pad_token_id = check_token_id(pad_token_id, "pad_token_id",
                                           min(self.vocab_size, V))
        self.eos_token_id = check_token_id(eos_token_id, "eos_token_id", V)
        self.decoder_start_token_id = check_token_id(
            self.pad_token_id if decoder_start_token_id is None else decoder_start_token_id,
            "decoder_start_token_id", V)
        self.forced_eos_token_id = check_token_id(forced_eos_token_id, "forced_eos_token_id",
                                                  V, optional=True)
        self.tie_word_embeddings = bool(tie_word_embeddings)
        self.model_type = "marian"

    @classmethod
    def from_hf(cls, config):
        """From a config.json's dict; ValueError for what this family cannot
        run (a pre-LN variant, a layer norm on the embeddings, several eos ids)."""
        for flag in ("normalize_before", "add_final_layer_norm", "normalize_embedding",
                     "layernorm_embedding"):
            if config.get(flag):
                raise ValueError(f"{flag}=true is not a Marian layout pytransformer runs")
        if config.get("static_position_embeddings") is False:
            raise ValueError("static_position_embeddings=false (learned positions) is not "
                             "supported")
        defaults = cls().__dict__
        kw = {k: config.get(k, defaults[k]) for k in defaults if k != "model_type"}
        if kw["decoder_vocab_size"] is None:
            kw["decoder_vocab_size"] = kw["vocab_size"]
        for k in ("eos_token_id", "forced_eos_token_id"):
            if isinstance(kw[k], list):
                if len(kw[k]) != 1:
                    raise ValueError(f"{k}={kw[k]!r}: one id is supported")
                kw[k] = kw[k][0]
        return cls(**kw)

    def __repr__(self):
        return f"MarianConfig({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


class Seq2SeqLMOutput(dict):
    """What transformers' MarianMTModel returns: ``logits`` (B, T, V) and
    ``encoder_last_hidden_state`` (B, S, d_model), as keys or attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class MarianMTModel(Module):
    """A Marian encoder-decoder from token ids to next-token logits, as
    transformers' MarianMTModel; build one from a checkpoint with
    ``pytransformer.from_pretrained``.  Inference only (no dropout).

    It speaks the decoding protocol of :mod:`pytransformer.generation`
    (``start_decoding``, ``decode_step``, ``state.select``), so
    :meth:`generate` decodes with the KV cache.
    """

    def __init__(self, config):
        super().__init__()
        c = self.config = config
        d = c.d_model
        act = HF_ACTIVATIONS[c.activation_function]
        self.encoder_embed = Embedding(c.vocab_size, d, rng=NO_INIT)
        self.decoder_embed = Embedding(c.decoder_vocab_size, d, rng=NO_INIT)
        enc = TransformerEncoderLayer(d, c.encoder_attention_heads, c.encoder_ffn_dim,
                                      dropout=0.0, activation=act, batch_first=True,
                                      rng=NO_INIT)
        dec = TransformerDecoderLayer(d, c.decoder_attention_heads, c.decoder_ffn_dim,
                                      dropout=0.0, activation=act, batch_first=True,
                                      rng=NO_INIT)
        self.encoder = TransformerEncoder(enc, c.encoder_layers, enable_nested_tensor=False)
        self.decoder = TransformerDecoder(dec, c.decoder_layers)
        # the output projection; its bias is the checkpoint's final_logits_bias
        self.lm_head = Linear(d, c.decoder_vocab_size, rng=NO_INIT)
        self._pe = marian_positional_encoding(c.max_position_embeddings, d)
        self._embed_scale = np.float32(math.sqrt(d)) if c.scale_embedding else None
        # the decoding protocol's names
        self.src_vocab_size, self.tgt_vocab_size = c.vocab_size, c.decoder_vocab_size
        self.max_len = c.max_position_embeddings
        self.pad_id = c.pad_token_id
        self.generation_config = dict(_GENERATION_DEFAULTS,
                                      forced_eos_token_id=c.forced_eos_token_id)

    # -- state --
    def _load(self, state_dict, strict=True, copy=True):
        result = super()._load(state_dict, strict=strict, copy=copy)
        # one table where the checkpoint has one (shared or tied embeddings)
        enc, dec, head = self.encoder_embed, self.decoder_embed, self.lm_head
        # (stored as they are: the values are equal, the packed head stays valid)
        if enc.weight.shape == dec.weight.shape and np.array_equal(enc.weight, dec.weight):
            dec._store("weight", enc.weight)
        if np.array_equal(head.weight, dec.weight):
            head._store("weight", dec.weight)
        return result

    def set_generation_config(self, generation_config):
        """Take generate's defaults (max_length, min_length, num_beams,
        length_penalty, repetition_penalty, no_repeat_ngram_size,
        bad_words_ids, forced_eos_token_id, renormalize_logits) from a
        generation_config.json's (or
        config.json's) dict; what it leaves out (or sets to null) keeps its
        value.  OPUS-MT's bad_words_ids [[pad]] is what keeps the pad token
        from ever being generated."""
        V = self.tgt_vocab_size
        g = dict(self.generation_config)
        for k in g:
            if generation_config.get(k) is not None or (k == "forced_eos_token_id" and
                                                        k in generation_config):
                g[k] = generation_config[k]
        g["max_length"] = check_int(g["max_length"], "max_length", 2)
        g["min_length"] = check_int(g["min_length"], "min_length", 0)
        g["num_beams"] = check_int(g["num_beams"], "num_beams", 1)
        g["no_repeat_ngram_size"] = check_int(g["no_repeat_ngram_size"],
                                              "no_repeat_ngram_size", 0)
        for k in ("length_penalty", "repetition_penalty"):
            if isinstance(g[k], bool) or not isinstance(g[k], (int, float)):
                raise ValueError(f"{k}: a number is needed, got {g[k]!r}")
            g[k] = float(g[k])
        if not isinstance(g["renormalize_logits"], bool):
            raise ValueError(f"renormalize_logits: true or false is needed, got "
                             f"{g['renormalize_logits']!r}")
        f = g["forced_eos_token_id"]
        g["forced_eos_token_id"] = check_token_id(f[0] if isinstance(f, list) and len(f) == 1
                                                  else f, "forced_eos_token_id", V, optional=True)
        bad = g["bad_words_ids"]
        if bad is not None:
            if not isinstance(bad, list) or not all(isinstance(w, list) and w for w in bad):
                raise ValueError(f"bad_words_ids: a list of non-empty lists of ids is "
                                 f"needed, got {bad!r}")
            g["bad_words_ids"] = [[check_token_id(t, "bad_words_ids", V) for t in w]
                                  for w in bad]
        self.generation_config = g
        return self

    # -- embeddings (section 3.4, 3.5) --
    def _embed(self, table, ids, offset=0):
        """Embedding(ids) [* sqrt(d_model)] + PE at positions offset, offset+1, ..."""
        x = table.weight[ids]
        if self._embed_scale is not None:
            x *= self._embed_scale
        x += self._pe[offset:offset + ids.shape[-1]]
        return x

    def _ids(self, ids, name, vocab):
        a = check_token_ids(ids, name, vocab)
        if a.ndim != 2 or 0 in a.shape:
            raise ValueError(f"{name}: expected a non-empty 2-d array (batch, length), got "
                             f"shape {a.shape}")
        if a.shape[1] > self.max_len:
            raise ValueError(f"{name}: {a.shape[1]} tokens are more than this model's "
                             f"max_position_embeddings={self.max_len}")
        return a

    def _padding(self, mask, shape, name):
        """transformers' 0/1 attention mask -> a key padding mask (True =
        padding), None when nothing is padded."""
        if mask is None:
            return None
        m = np.asarray(mask)
        if m.shape != shape:
            raise ValueError(f"{name}: shape {m.shape} does not match the ids' {shape}")
        if m.dtype != np.bool_:
            if m.dtype.kind not in "iuf" or ((m != 0) & (m != 1)).any():
                raise ValueError(f"{name}: 0/1 or bool values are needed, got dtype {m.dtype}")
            m = m != 0
        return None if m.all() else ~m

    # -- forward --
    def encode(self, input_ids, attention_mask=None):
        """The encoder stack over the embedded source: (B, S, d_model)."""
        ids = self._ids(input_ids, "input_ids", self.src_vocab_size)
        return self.encoder(self._embed(self.encoder_embed, ids),
                            src_key_padding_mask=self._padding(attention_mask, ids.shape,
                                                               "attention_mask"))

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None,
                decoder_attention_mask=None):
        """Teacher-forced logits, as transformers' MarianMTModel.forward:
        input_ids (B, S), decoder_input_ids (B, T) -> Seq2SeqLMOutput(logits
        (B, T, decoder_vocab_size), encoder_last_hidden_state), float32.

        attention_mask (B, S) / decoder_attention_mask (B, T): 1 at tokens, 0
        at padding; None: nothing padded.  The decoder's self-attention is
        causal; its padding is masked only where decoder_attention_mask says.
        """
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids: needed (start them with "
                             f"decoder_start_token_id={self.config.decoder_start_token_id})")
        src = self._ids(input_ids, "input_ids", self.src_vocab_size)
        tgt = self._ids(decoder_input_ids, "decoder_input_ids", self.tgt_vocab_size)
        if src.shape[0] != tgt.shape[0]:
            raise ValueError(f"input_ids {src.shape} and decoder_input_ids {tgt.shape} have "
                             f"different batch sizes")
        src_pad = self._padding(attention_mask, src.shape, "attention_mask")
        memory = self.encoder(self._embed(self.encoder_embed, src),
                              src_key_padding_mask=src_pad)
        h = self.decoder(self._embed(self.decoder_embed, tgt), memory,
                         tgt_mask=~look_ahead_mask(tgt.shape[1]),
                         tgt_key_padding_mask=self._padding(decoder_attention_mask, tgt.shape,
                                                            "decoder_attention_mask"),
                         memory_key_padding_mask=src_pad, tgt_is_causal=True)
        return Seq2SeqLMOutput(logits=self.lm_head(h), encoder_last_hidden_state=memory)

    # -- autoregressive decoding --
    #: start_decoding takes the source's attention mask (the decoding protocol)
    source_attention_mask = True

    def start_decoding(self, src, max_len, attention_mask=None, capacity=None):
        """Encode ``src`` (B, S) once and allocate the decoder's KV cache for
        ``max_len`` target positions and ``capacity`` rows (default B).
        Padding: where ``attention_mask`` (B, S) is 0, or without one, where
        src holds the pad id."""
        src = self._ids(src, "input_ids", self.src_vocab_size)
        max_len = check_int(max_len, "max_len", 1, self.max_len)
        if attention_mask is None:
            pad, what = src == self.pad_id, f"all pad_token_id={self.pad_id}"
        else:
            pad = self._padding(attention_mask, src.shape, "attention_mask")
            pad, what = (np.zeros(src.shape, bool) if pad is None else pad), \
                "attention_mask all 0"
        empty = np.flatnonzero(pad.all(axis=1))
        if empty.size:
            raise ValueError(f"input_ids: row {int(empty[0])} is empty ({what}) in a batch "
                             f"of shape {src.shape}")
        pad = pad if pad.any() else None
        memory = self.encoder(self._embed(self.encoder_embed, src), src_key_padding_mask=pad)
        return self.decoder.init_cache(memory, pad, max_len, capacity)

    def decode_step(self, tokens, state):
        """Logits (N, decoder_vocab_size) of the next token after ``tokens``
        (N,), the ids at position ``state.length``; the state then holds one
        more position.  Row for row the last position of :meth:`forward`."""
        tokens = check_token_ids(tokens, "tokens", self.tgt_vocab_size).reshape(-1)
        if tokens.shape[0] != state.batch_size:
            raise ValueError(f"tokens: {tokens.shape[0]} ids for a decoding state of "
                             f"{state.batch_size} sequences")
        x = self._embed(self.decoder_embed, tokens[:, None], offset=state.length)[:, 0]
        return self.lm_head.step(self.decoder.forward_step(x, state))

    def generate(self, input_ids, max_new_tokens=None, bos_id=None, eos_id=None, pad_id=None,
                 method=None, beam_size=None, length_penalty=None, num_return_sequences=1,
                 temperature=1.0, top_k=None, top_p=1.0, seed=None, return_scores=False, *,
                 attention_mask=None, repetition_penalty=None, no_repeat_ngram_size=None,
                 min_new_tokens=None, bad_words_ids=DEFAULT, forced_eos_token_id=DEFAULT,
                 renormalize_logits=None, streamer=None):
        """Translate the sources ``input_ids`` (B, S): the arguments and
        result of :meth:`pytransformer.models.Seq2SeqTransformer.generate`
        (new tokens only, after the start token), with the checkpoint's
        defaults (generation_config.json, else config.json, else
        transformers'): bos_id = decoder_start_token_id, eos_id =
        eos_token_id, pad_id = pad_token_id, max_new_tokens = max_length - 1
        and min_new_tokens = min_length - 1 (transformers' lengths count the
        start token), method 'beam' with beam_size = num_beams when that is
        above 1, else 'greedy'; length_penalty, repetition_penalty,
        no_repeat_ngram_size, bad_words_ids (OPUS-MT: [[pad]], so pad is never
        generated), forced_eos_token_id (eos at the last step allowed) and
        renormalize_logits (a log-softmax after the processors: beam scores
        over the allowed tokens) as the checkpoint sets them -- pass None to
        switch bad_words_ids and forced_eos_token_id off.
        attention_mask (B, S) marks padding as in :meth:`forward`."""
        from ..generation import generate
        c, g = self.config, self.generation_config
        src = check_token_ids(input_ids, "input_ids", self.src_vocab_size)
        if src.ndim == 1:
            src = src[None]
        if max_new_tokens is None:
            max_new_tokens = min(g["max_length"] - 1, self.max_len)
        if min_new_tokens is None:
            min_new_tokens = max(g["min_length"] - 1, 0)
        beam_size = g["num_beams"] if beam_size is None else beam_size
        if method is None:
            method = "beam" if beam_size > 1 else "greedy"

        def default(value, key):
            return g[key] if value is None or value is DEFAULT else value

        return generate(
            self, src, max_new_tokens, c.decoder_start_token_id if bos_id is None else bos_id,
            c.eos_token_id if eos_id is None else eos_id, pad_id, method=method,
            beam_size=beam_size, length_penalty=default(length_penalty, "length_penalty"),
            num_return_sequences=num_return_sequences, temperature=temperature, top_k=top_k,
            top_p=top_p, seed=seed, return_scores=return_scores,
            repetition_penalty=default(repetition_penalty, "repetition_penalty"),
            no_repeat_ngram_size=default(no_repeat_ngram_size, "no_repeat_ngram_size"),
            min_new_tokens=min_new_tokens, attention_mask=attention_mask,
            bad_words_ids=g["bad_words_ids"] if bad_words_ids is DEFAULT else bad_words_ids,
            forced_eos_token_id=g["forced_eos_token_id"] if forced_eos_token_id is DEFAULT
            else forced_eos_token_id,
            renormalize_logits=default(renormalize_logits, "renormalize_logits"),
            streamer=streamer)

    # -- checkpoints --
    def hf_tensor_map(self):
        """{our state_dict key: [Hugging Face tensor names]}; q, k, v
        projections are stacked on axis 0 into in_proj_weight / in_proj_bias."""
        src = self._sources
        out = {"encoder_embed.weight": [src["encoder"]],
               "decoder_embed.weight": [src["decoder"]],
               "lm_head.weight": [src["lm_head"]], "lm_head.bias": ["final_logits_bias"]}
        for key in self.state_dict():
            for stack, layer_map in (("encoder", _ENCODER_LAYER), ("decoder", _DECODER_LAYER)):
                if key.startswith(stack + ".layers."):
                    i, suffix = key[len(stack) + 8:].split(".", 1)
                    out[key] = [f"model.{stack}.layers.{i}.{n}" for n in layer_map[suffix]]
        return out

    def hf_ignored(self, name):
        """Whether checkpoint tensor ``name`` is one this model does not read:
        the fixed sinusoidal tables (recomputed from the config) and copies of
        tied embeddings."""
        return name in ("model.encoder.embed_positions.weight",
                        "model.decoder.embed_positions.weight") or \
            (name in _EMBEDDING_NAMES and name not in self._sources.values())

    def _choose_sources(self, names):
        """Which checkpoint tensor each embedding and the output projection
        is read from, as transformers ties them: with tie_word_embeddings one
        table (model.shared when the embeddings are shared), else each its
        own (the shared table where a side has none)."""
        c, names = self.config, set(names)
        shared = "model.shared.weight"

        def own(name, fallback):
            return name if name in names or fallback is None else fallback

        tie = c.tie_word_embeddings
        if c.share_encoder_decoder_embeddings and (tie or shared in names):
            enc = shared if tie else own("model.encoder.embed_tokens.weight", shared)
            dec = shared if tie else own("model.decoder.embed_tokens.weight", shared)
        else:
            enc, dec = "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"
        self._sources = {"encoder": enc, "decoder": dec,
                         "lm_head": dec if tie else "lm_head.weight"}
        return self


# suffix of our layer key -> transformers' names under model.{encoder,decoder}.layers.i.
# In a decoder layer the feed-forward norm is the third, after the
# cross-attention's encoder_attn_layer_norm.
_LAYER = {}
for _ours, _theirs in (("self_attn", "self_attn"), ("multihead_attn", "encoder_attn")):
    _LAYER[f"{_ours}.in_proj_weight"] = [f"{_theirs}.{p}_proj.weight" for p in "qkv"]
    _LAYER[f"{_ours}.in_proj_bias"] = [f"{_theirs}.{p}_proj.bias" for p in "qkv"]
    _LAYER[f"{_ours}.out_proj.weight"] = [f"{_theirs}.out_proj.weight"]
    _LAYER[f"{_ours}.out_proj.bias"] = [f"{_theirs}.out_proj.bias"]
for _i, _n in ((1, "fc1"), (2, "fc2")):
    _LAYER[f"linear{_i}.weight"], _LAYER[f"linear{_i}.bias"] = [f"{_n}.weight"], [f"{_n}.bias"]
for _ours, _theirs in (("norm1", "self_attn_layer_norm"), ("norm2", "final_layer_norm")):
    _LAYER[f"{_ours}.weight"], _LAYER[f"{_ours}.bias"] = [f"{_theirs}.weight"], [f"{_theirs}.bias"]
_ENCODER_LAYER = {k: v for k, v in _LAYER.items() if not k.startswith("multihead_attn")}
_DECODER_LAYER = dict(_LAYER, **{"norm2.weight": ["encoder_attn_layer_norm.weight"],
                                 "norm2.bias": ["encoder_attn_layer_norm.bias"],
                                 "norm3.weight": ["final_layer_norm.weight"],
                                 "norm3.bias": ["final_layer_norm.bias"]})
del _i, _n, _ours, _theirs
_EMBEDDING_NAMES = ("model.shared.weight", "model.encoder.embed_tokens.weight",
                    "model.decoder.embed_tokens.weight", "lm_head.weight")


def from_hf_config(config, tensor_names=()):
    """An uninitialised MarianMTModel for a config.json's dict, reading its
    embeddings from the tensors ``tensor_names`` holds."""
    model = MarianMTModel(MarianConfig.from_hf(config))
    model.set_generation_config(config)  # old config.json files carry max_length, num_beams
    return model._choose_sources(tensor_names)
