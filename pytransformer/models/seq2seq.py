"""The paper's full model (Vaswani et al. 2017, Figure 1) on pytransformer.nn.

Seq2SeqTransformer: source and target embeddings scaled by sqrt(d_model)
(section 3.4), positional encodings added (section 3.5: the paper's
interleaved sinusoids, or learned positions), the encoder-decoder core
(:class:`pytransformer.nn.Transformer`, batch-first) and the generator: the
final linear projection to target-vocabulary logits (section 3.4), optionally
sharing its weight with the target embedding.  Inference only, no dropout.
"""
import json
import math

import numpy as np

from .. import nn, ops
from ..hub.safetensors import load_safetensors, parse_json, read_header, save_safetensors
from ..ops.attention import look_ahead_mask
from ..ops.checks import check_compute_type, check_int, check_token_ids, to_numpy
from .positional import sinusoidal_positional_encoding

__all__ = ["Seq2SeqTransformer"]

FORMAT = "pytransformer.Seq2SeqTransformer"


def expected_shapes(config):
    """{state_dict key: shape} of the model a config describes, computed from
    the config alone: what load checks a file's header against before it
    builds anything, so that the config cannot ask for more than the file
    holds."""
    d, f = config["d_model"], config["dim_feedforward"]
    shapes = {"src_embed.weight": (config["src_vocab_size"], d),
              "tgt_embed.weight": (config["tgt_vocab_size"], d),
              "generator.weight": (config["tgt_vocab_size"], d),
              "generator.bias": (config["tgt_vocab_size"],)}
    if config["positional"] == "learned":
        shapes["pos_embed.weight"] = (config["max_len"], d)

    def attention(prefix):
        shapes.update({prefix + "in_proj_weight": (3 * d, d), prefix + "in_proj_bias": (3 * d,),
                       prefix + "out_proj.weight": (d, d), prefix + "out_proj.bias": (d,)})

    for stack, n, attns in (("encoder", config["num_encoder_layers"], ["self_attn"]),
                            ("decoder", config["num_decoder_layers"],
                             ["self_attn", "multihead_attn"])):
        for i in range(n):
            p = f"transformer.{stack}.layers.{i}."
            for a in attns:
                attention(p + a + ".")
            shapes.update({p + "linear1.weight": (f, d), p + "linear1.bias": (f,),
                           p + "linear2.weight": (d, f), p + "linear2.bias": (d,)})
            for j in range(len(attns) + 1):
                shapes.update({f"{p}norm{j + 1}.weight": (d,), f"{p}norm{j + 1}.bias": (d,)})
        shapes.update({f"transformer.{stack}.norm.weight": (d,),
                       f"transformer.{stack}.norm.bias": (d,)})
    return shapes


def _check_config_against(config, header):
    """Every tensor the config implies is in the file with its shape, and the
    file holds nothing else (header: {name: (dtype, shape, ...)})."""
    for name, v in config.items():
        if name in ("activation", "positional"):
            continue
        if name in ("norm_first", "tie_embeddings"):
            if not isinstance(v, bool):
                raise ValueError(f"{name}={v!r} is not a bool")
        elif isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name}={v!r} is not a size")
    if config.get("max_len", 0) > (1 << 20):
        raise ValueError(f"max_len={config['max_len']!r} is not a sequence length "
                         f"this model could be given")
    # the number of tensors bounds the layer counts before any loop over them
    if config.get("num_encoder_layers", 0) + config.get("num_decoder_layers", 0) > len(header):
        raise ValueError("the config has more layers than the file has tensors")
    expected = expected_shapes(config)
    if config["tie_embeddings"]:
        expected.pop("generator.weight")
    missing = [k for k in expected if k not in header]
    unexpected = [k for k in header if k not in expected]
    wrong = [f"{k} is {header[k][1]} in the file but the config makes it {expected[k]}"
             for k in expected if k in header and header[k][1] != expected[k]]
    floats = [k for k in expected if k in header and header[k][0] not in ("F32", "F16",
                                                                           "BF16", "F64")]
    problems = ([f"missing keys: {', '.join(missing[:8])}"
                 + (f" (and {len(missing) - 8} more)" if len(missing) > 8 else "")]
                if missing else []) + \
        ([f"unexpected keys: {', '.join(unexpected[:8])}"] if unexpected else []) + \
        wrong[:8] + [f"{k} is not floating-point" for k in floats[:8]]
    if problems:
        raise ValueError("; ".join(problems))


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder Transformer from token ids to next-token logits.

    Batch-first integer arrays: ``forward(src (B, S), tgt (B, T))`` returns
    float32 logits ``(B, T, tgt_vocab_size)``.  Padding masks come from
    ``pad_id`` (source keys in the encoder and in cross-attention, target keys
    in the decoder's self-attention), and the decoder's self-attention is
    causal (section 3.2.3).  Random initialisation from
    ``numpy.random.default_rng(seed)``: Xavier-uniform matrices, zero biases.

    The pieces a step-by-step decoder reuses: ``embed_tgt(tgt, offset)``
    embeds tokens at positions offset, offset+1, ...; each decoder layer
    (``transformer.decoder.layers[i]``) has ``_sa_block`` (masked
    self-attention), ``_mha_block`` (cross-attention), ``_ff_block`` and
    ``norm1..3``; each attention module has ``project_self``,
    ``project_query``, ``project_key_value`` (heads ``(B, h, len, d_k)``) and
    ``output_projection``; ``generator`` maps decoder states to logits.
    """

    def __init__(self, src_vocab_size, tgt_vocab_size, d_model=512, nhead=8,
                 num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
                 activation="relu", norm_first=False, positional="sinusoidal", max_len=1024,
                 pad_id=0, tie_embeddings=False, seed=None, *, _rng=None):
        super().__init__()
        if positional not in ("sinusoidal", "learned"):
            raise ValueError(f"positional must be 'sinusoidal' or 'learned', got "
                             f"{positional!r}")
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
        sizes = dict(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                     d_model=d_model, nhead=nhead, num_encoder_layers=num_encoder_layers,
                     num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward,
                     max_len=max_len, pad_id=pad_id)
        for name, v in sizes.items():
            lowest = 0 if name in ("num_encoder_layers", "num_decoder_layers", "pad_id") else 1
            check_int(v, name, lowest)
        if pad_id >= min(src_vocab_size, tgt_vocab_size):
            raise ValueError(f"pad_id={pad_id} is outside the vocabularies (src_vocab_size="
                             f"{src_vocab_size}, tgt_vocab_size={tgt_vocab_size})")
        self.config = dict(src_vocab_size=int(src_vocab_size),
                           tgt_vocab_size=int(tgt_vocab_size), d_model=int(d_model),
                           nhead=int(nhead), num_encoder_layers=int(num_encoder_layers),
                           num_decoder_layers=int(num_decoder_layers),
                           dim_feedforward=int(dim_feedforward), activation=activation,
                           norm_first=bool(norm_first), positional=positional,
                           max_len=int(max_len), pad_id=int(pad_id),
                           tie_embeddings=bool(tie_embeddings))
        for k, v in self.config.items():
            setattr(self, k, v)
        rng = np.random.default_rng(seed) if _rng is None else _rng
        d = self.d_model
        self.src_embed = nn.Embedding(self.src_vocab_size, d, rng=nn.NO_INIT)
        self.tgt_embed = nn.Embedding(self.tgt_vocab_size, d, rng=nn.NO_INIT)
        if positional == "learned":
            self.pos_embed = nn.Embedding(self.max_len, d, rng=nn.NO_INIT)
        self.transformer = nn.Transformer(d, self.nhead, self.num_encoder_layers,
                                          self.num_decoder_layers, self.dim_feedforward,
                                          dropout=0.0, activation=activation,
                                          batch_first=True, norm_first=self.norm_first,
                                          rng=rng)
        self.generator = nn.Linear(d, self.tgt_vocab_size, rng=nn.NO_INIT)
        self._pe = sinusoidal_positional_encoding(self.max_len, d) \
            if positional == "sinusoidal" else None
        self._embed_scale = np.float32(math.sqrt(d))
        if not isinstance(rng, type(nn.NO_INIT)):
            init = {k: nn.xavier_uniform(rng, p.shape) for k, p in self.state_dict().items()
                    if p.ndim > 1 and not k.startswith("transformer.")}
            if self.tie_embeddings:
                init.pop("generator.weight")
            self._load(init, strict=False, copy=False)
        self._tie()

    def _tie(self):
        if self.tie_embeddings:
            self.generator.weight = self.tgt_embed.weight

    # -- state --
    def load_state_dict(self, state_dict, strict=True):
        """As :meth:`pytransformer.nn.Module.load_state_dict`.  With tied
        embeddings ``generator.weight`` may be left out; if given it must equal
        ``tgt_embed.weight``."""
        return self._load(state_dict, strict=strict, copy=True)

    def _load(self, state_dict, strict=True, copy=True):
        d = dict(state_dict)
        if self.tie_embeddings and "tgt_embed.weight" in d:
            tied = d.get("generator.weight")
            if tied is not None and tied is not d["tgt_embed.weight"] and not np.array_equal(
                    to_numpy(tied), to_numpy(d["tgt_embed.weight"])):
                raise ValueError("load_state_dict for Seq2SeqTransformer: generator.weight "
                                 "differs from tgt_embed.weight but the embeddings are tied")
            d["generator.weight"] = d["tgt_embed.weight"]
        result = super()._load(d, strict=strict, copy=copy)
        self._tie()
        return result

    # -- embeddings (section 3.4, 3.5) --
    def positional_encoding(self, length, offset=0):
        """Rows offset .. offset+length-1 of the positional encoding."""
        if offset + length > self.max_len:
            raise ValueError(f"sequence positions up to {offset + length} exceed "
                             f"max_len={self.max_len}")
        if self._pe is not None:
            return self._pe[offset:offset + length]
        return self.pos_embed.weight[offset:offset + length]

    def _embed(self, table, ids, offset=0):
        x = table.weight[ids] * self._embed_scale
        x += self.positional_encoding(ids.shape[-1], offset)
        return x

    def embed_src(self, src):
        """Embedding(src) * sqrt(d_model) + PE: (B, S) ids -> (B, S, d_model)."""
        return self._embed(self.src_embed, src)

    def embed_tgt(self, tgt, offset=0):
        """Target embedding at positions offset, offset+1, ... (offset > 0 when
        decoding continues a prefix)."""
        return self._embed(self.tgt_embed, tgt, offset)

    def _check_ids(self, ids, name, vocab, offset=0):
        a = np.asarray(ids)
        if a.dtype.kind not in "iu":
            raise ValueError(f"{name}: an integer array of token ids is needed, got dtype "
                             f"{a.dtype} with shape {a.shape}")
        if a.ndim != 2:
            raise ValueError(f"{name}: expected shape (batch, length), got {a.shape}")
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"{name}: empty sequence batch of shape {a.shape}")
        if offset + a.shape[1] > self.max_len:
            raise ValueError(f"{name}: length {a.shape[1]} (from position {offset}) exceeds "
                             f"max_len={self.max_len}")
        return check_token_ids(a, name, vocab)

    # -- forward --
    def encode(self, src):
        """The encoder stack over the embedded source: memory (B, S, d_model)."""
        return self._encode(self._check_ids(src, "src", self.src_vocab_size))

    def _encode(self, src):
        return self.transformer.encoder(self.embed_src(src),
                                        src_key_padding_mask=src == self.pad_id)

    def decode(self, tgt, memory, src=None, memory_key_padding_mask=None):
        """Logits (B, T, tgt_vocab) for targets ``tgt`` given the encoder output.

        The source padding is given as ``src`` (ids; padding where pad_id) or
        directly as ``memory_key_padding_mask`` (B, S), True where padded.
        """
        tgt = self._check_ids(tgt, "tgt", self.tgt_vocab_size)
        memory = ops.as_float32(memory, "memory")
        B = tgt.shape[0]
        if memory.ndim != 3 or memory.shape[0] != B or memory.shape[2] != self.d_model:
            raise ValueError(f"memory: expected shape ({B}, S, {self.d_model}), got "
                             f"{memory.shape}")
        if src is not None:
            src = np.asarray(src)
            if src.shape != memory.shape[:2]:
                raise ValueError(f"src: shape {src.shape} does not match memory "
                                 f"{memory.shape}")
            memory_key_padding_mask = src == self.pad_id
        return self._decode(tgt, memory, memory_key_padding_mask)

    def _decode(self, tgt, memory, memory_key_padding_mask):
        causal = ~look_ahead_mask(tgt.shape[1])  # torch.nn's form: True = may not attend
        h = self.transformer.decoder(self.embed_tgt(tgt), memory, tgt_mask=causal,
                                     tgt_key_padding_mask=tgt == self.pad_id,
                                     memory_key_padding_mask=memory_key_padding_mask,
                                     tgt_is_causal=True)
        return self.generator(h)

    def forward(self, src, tgt):
        """Teacher-forced logits: (B, S), (B, T) ids -> (B, T, tgt_vocab) float32."""
        src = self._check_ids(src, "src", self.src_vocab_size)
        tgt = self._check_ids(tgt, "tgt", self.tgt_vocab_size)
        if src.shape[0] != tgt.shape[0]:
            raise ValueError(f"src {src.shape} and tgt {tgt.shape} have different batch "
                             f"sizes")
        return self._decode(tgt, self._encode(src), src == self.pad_id)

    # -- autoregressive decoding (section 3: "consuming the previously
    #    generated symbols as additional input when generating the next") --
    def start_decoding(self, src, max_len, capacity=None):
        """Encode ``src`` (B, S) once and allocate the decoder's KV cache for
        ``max_len`` target positions and ``capacity`` rows (default B; beam
        search repeats rows by select): the state :meth:`decode_step`
        advances."""
        src = self._check_ids(src, "src", self.src_vocab_size)
        max_len = check_int(max_len, "max_len", 1, self.max_len)
        empty = np.flatnonzero((src == self.pad_id).all(axis=1))
        if empty.size:
            raise ValueError(f"src: row {int(empty[0])} is empty (all pad_id={self.pad_id}) "
                             f"in a batch of shape {src.shape}")
        memory = self._encode(src)
        return self.transformer.decoder.init_cache(memory, src == self.pad_id, max_len,
                                                   capacity)

    def decode_step(self, tokens, state):
        """Logits (N, tgt_vocab) of the next token after ``tokens`` (N,), the
        ids at position ``state.length`` of each sequence; ``state`` (from
        :meth:`start_decoding`) then holds one more position.  Row for row
        the last position of :meth:`decode` over the whole prefix."""
        tokens = check_token_ids(tokens, "tokens", self.tgt_vocab_size).reshape(-1)
        if tokens.shape[0] != state.batch_size:
            raise ValueError(f"tokens: {tokens.shape[0]} ids for a decoding state of "
                             f"{state.batch_size} sequences")
        x = self.embed_tgt(tokens[:, None], offset=state.length)[:, 0]
        return self.transformer.decoder.forward_step(x, state,
                                                     tgt_key_padding_mask=tokens == self.pad_id,
                                                     head=self.generator)

    def generate(self, src, max_new_tokens, bos_id, eos_id, pad_id=None, method="greedy",
                 beam_size=4, length_penalty=1.0, num_return_sequences=1, temperature=1.0,
                 top_k=None, top_p=1.0, seed=None, return_scores=False, *,
                 repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
                 bad_words_ids=None, forced_eos_token_id=None, streamer=None):
        """Decode target sequences for the sources ``src`` (B, S), with a KV cache.

        Returns an int64 array (B * num_return_sequences, T) of the new tokens
        only (no ``bos_id``); each row ends at its ``eos_id`` (included) and is
        padded with ``pad_id`` (default: the model's) after it; T is the
        longest row.  ``eos_id`` may be one id or a list of stop ids (a row
        ends at the first of them); ``eos_id=None`` decodes exactly
        ``max_new_tokens``.

        - ``method='greedy'``: the most probable token at each step;
        - ``'beam'``: beam search with ``beam_size`` hypotheses, scores
          sum(log p) / length ** ``length_penalty``; the
          ``num_return_sequences`` best per source;
        - ``'sample'``: sampling from softmax(logits / ``temperature``)
          restricted to ``top_k`` tokens and to the ``top_p`` nucleus;
          reproducible for a ``seed``.

        Keyword-only logits processing, with transformers' semantics (see
        :class:`pytransformer.generation.LogitsProcessors`; the history a
        processor sees is ``bos_id`` and the tokens generated so far):
        ``repetition_penalty``, ``no_repeat_ngram_size``, ``min_new_tokens``,
        ``bad_words_ids`` (token-id lists; ``[[pad_id]]`` keeps padding out),
        ``forced_eos_token_id`` (forced at the last step allowed), and
        ``streamer(rows, tokens)`` called after each step of greedy search and
        sampling.

        ``return_scores=True`` returns ``(tokens, scores)`` (float64 per row,
        see :mod:`pytransformer.generation`).  A row's result does not depend
        on the other rows of the batch.  Bad arguments (an empty source, ids
        outside the vocabulary, max_new_tokens <= 0, beam_size < 1, top_p
        outside (0, 1], ...) raise ValueError.
        """
        # A facade: the search lives in pytransformer.generation, which sees
        # this model only through the decoding protocol (start_decoding,
        # decode_step, state.select); nothing else here depends on it.
        from ..generation import generate
        return generate(self, src, max_new_tokens, bos_id, eos_id, pad_id, method=method,
                        beam_size=beam_size, length_penalty=length_penalty,
                        num_return_sequences=num_return_sequences, temperature=temperature,
                        top_k=top_k, top_p=top_p, seed=seed, return_scores=return_scores,
                        repetition_penalty=repetition_penalty,
                        no_repeat_ngram_size=no_repeat_ngram_size, min_new_tokens=min_new_tokens,
                        bad_words_ids=bad_words_ids, forced_eos_token_id=forced_eos_token_id,
                        streamer=streamer)

    # -- files --
    def save(self, path):
        """One safetensors file: the weights (a tied generator stored once, as
        tgt_embed.weight) and the constructor arguments in its metadata."""
        tensors = self.state_dict()
        if self.tie_embeddings:
            tensors.pop("generator.weight")
        save_safetensors(path, tensors, {"format": FORMAT,
                                         "config": json.dumps(self.config)})

    @classmethod
    def load(cls, path, verify=True, compute_type="float32"):
        """The model saved at ``path``.  ValueError if the file is not a
        safetensors file, not a Seq2SeqTransformer, or its tensors do not
        fit its config -- all found from the header, before anything is
        read or allocated -- or if its integrity record does not match (one
        pass over the data; ``verify=False`` skips it).  compute_type: as
        :meth:`pytransformer.nn.Module.to` ("float32" or "bfloat16")."""
        check_compute_type(compute_type)
        header, meta, _, _ = read_header(path)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file (metadata format is "
                             f"{meta.get('format')!r})")
        try:
            config = parse_json(meta["config"], "config")
            if not isinstance(config, dict):
                raise TypeError("not a JSON object")
            _check_config_against(config, header)  # before allocating anything
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: bad model config in the metadata ({e})") from None
        tensors, _ = load_safetensors(path, verify=verify)     # memory-mapped views
        bad = [k for k, v in tensors.items() if not np.isfinite(v).all()]
        if bad:
            raise ValueError(f"{path}: corrupted weights: non-finite values in "
                             + ", ".join(bad))
        try:
            model = cls(**config, _rng=nn.NO_INIT)
            model._load(tensors, strict=True, copy=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: bad model config in the metadata ({e})") from None
        return model.to(compute_type)

    @classmethod
    def _from_torch_config(cls, m):
        """The torch twin built by pytransformer.oracle.to_torch carries its config."""
        config = getattr(m, "config", None)
        if not isinstance(config, dict):
            raise ValueError("Seq2SeqTransformer.from_torch: a module built by "
                             "pytransformer.oracle.to_torch (with a .config) is needed")
        return cls(**config, _rng=nn.NO_INIT)

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.config.items())
