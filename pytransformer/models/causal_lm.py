"""What every decoder-only language model here shares (GPT-2, Llama): the
checks of a batch of prompts, their packing from slot 0 of the KV cache, the
preamble of a decoding step and the ``generate`` facade.  The families keep
their own modules, embeddings and positions; see
:mod:`pytransformer.generation` for the decoder-only decoding protocol."""
import numpy as np

from ..nn import Module
from ..ops.checks import check_int, check_token_ids

__all__ = ["CausalLM"]

_CHECKPOINT = object()  # "the checkpoint's own id" for generate's eos_id / pad_id


class CausalLM(Module):
    """Base of the decoder-only families.  A subclass gives ``config`` (with
    ``vocab_size``, ``eos_token_id``, ``pad_token_id`` and
    ``tie_word_embeddings``), ``max_length``, and in ``embedding_name`` the
    attribute of its token embedding (the weight a tied ``lm_head`` shares)."""

    decoder_only = True
    #: the config field max_length comes from, named in messages
    length_limit_name = "max_length"
    #: the attribute holding the token embedding
    embedding_name = None

    @property
    def pad_id(self):
        """Output padding: the checkpoint's pad id, else its (first) eos id, as
        transformers' generate, else 0."""
        c = self.config
        eos = c.eos_token_id[0] if isinstance(c.eos_token_id, list) else c.eos_token_id
        return c.pad_token_id if c.pad_token_id is not None else eos if eos is not None else 0

    # -- state: a tied lm_head is the token embedding's weight --
    def _tie(self):
        if self.config.tie_word_embeddings:
            self.lm_head.weight = getattr(self, self.embedding_name).weight

    def _load(self, state_dict, strict=True, copy=True):
        d = dict(state_dict)
        key = self.embedding_name + ".weight"
        if self.config.tie_word_embeddings and key in d:
            d["lm_head.weight"] = d[key]
        result = super()._load(d, strict=strict, copy=copy)
        self._tie()
        return result

    @property
    def vocab_size(self):
        return self.config.vocab_size

    def _check_ids(self, input_ids, attention_mask):
        """(ids (B, T) int64, keep (B, T) bool or None) from prompts and their
        0/1 attention mask; ValueError naming the argument."""
        ids = check_token_ids(input_ids, "input_ids", self.vocab_size)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ValueError(f"input_ids: expected a non-empty (batch, length) array, got "
                             f"shape {np.shape(input_ids)}")
        keep = None
        if attention_mask is not None:
            m = np.asarray(attention_mask)
            if m.ndim == 1:
                m = m[None]
            if m.shape != ids.shape:
                raise ValueError(f"attention_mask: shape {np.shape(attention_mask)}, "
                                 f"input_ids {ids.shape}")
            if m.dtype != np.bool_ and (m.dtype.kind not in "iuf" or ((m != 0) & (m != 1)).any()):
                raise ValueError(f"attention_mask: 0/1 or bool values are needed, got dtype "
                                 f"{m.dtype}")
            keep = m != 0
        return ids, keep

    def _prompts(self, input_ids, attention_mask, max_new_tokens, capacity):
        """The checked prompts of start_decoding: (ids (B, width) with each
        row's tokens from slot 0, lengths (B,), capacity).  The longest prompt
        + max_new_tokens must fit in max_length."""
        ids, keep = self._check_ids(input_ids, attention_mask)
        B, T = ids.shape
        max_new_tokens = check_int(max_new_tokens, "max_new_tokens", 1)
        capacity = B if capacity is None else check_int(capacity, "capacity", B)
        lengths = np.full(B, T, np.int64) if keep is None else keep.sum(axis=1)
        if lengths.min() == 0:
            raise ValueError(f"input_ids: row {int(np.argmin(lengths))} has no token (its "
                             f"attention_mask is all 0)")
        width = int(lengths.max())
        if width + max_new_tokens > self.max_length:
            raise ValueError(f"input_ids: a prompt of {width} tokens + max_new_tokens="
                             f"{max_new_tokens} exceeds this model's "
                             f"{self.length_limit_name}={self.max_length}")
        if keep is not None:  # each row's tokens from slot 0 (right padding)
            packed = np.zeros((B, width), ids.dtype)
            for r in range(B):
                packed[r, :lengths[r]] = ids[r][keep[r]]
            ids = packed
        return ids, lengths, capacity

    def _step_tokens(self, tokens, state):
        """The checked tokens (N,) of a decoding step and their positions
        (each row's next slot)."""
        tokens = check_token_ids(tokens, "tokens", self.vocab_size).reshape(-1)
        if tokens.shape[0] != state.batch_size:
            raise ValueError(f"tokens: {tokens.shape[0]} ids for a decoding state of "
                             f"{state.batch_size} sequences")
        pos = np.ascontiguousarray(state.lengths, dtype=np.int64)
        if pos.size and pos.max() >= state.max_len:
            raise ValueError(f"the cache is full: {state.max_len} positions decoded")
        return tokens, pos

    def generate(self, input_ids, max_new_tokens, attention_mask=None, eos_id=_CHECKPOINT,
                 pad_id=_CHECKPOINT, method="greedy", beam_size=4, length_penalty=1.0,
                 num_return_sequences=1, temperature=1.0, top_k=None, top_p=1.0, seed=None,
                 return_scores=False, *, repetition_penalty=1.0, no_repeat_ngram_size=0,
                 min_new_tokens=0, bad_words_ids=None, forced_eos_token_id=None,
                 streamer=None):
        """Continue the prompts ``input_ids`` (B, T) (``attention_mask``: 0 at
        padding, left or right): an int64 array (B * num_return_sequences, T')
        of the new tokens only, each row ending at its stop id (included) and
        padded with ``pad_id`` after it.  ``eos_id`` (an id or a list; None:
        exactly max_new_tokens) and ``pad_id`` default to the checkpoint's.
        The other arguments are those of
        :meth:`pytransformer.models.Seq2SeqTransformer.generate`; the history
        the logits processors see is the prompt and the tokens generated, as
        transformers' generate does for decoder-only models."""
        from ..generation import generate  # a facade: generation sees the protocol only
        eos_id = self.config.eos_token_id if eos_id is _CHECKPOINT else eos_id
        pad_id = self.pad_id if pad_id is _CHECKPOINT else pad_id
        return generate(self, input_ids, max_new_tokens, None, eos_id, pad_id, method=method,
                        beam_size=beam_size, length_penalty=length_penalty,
                        num_return_sequences=num_return_sequences, temperature=temperature,
                        top_k=top_k, top_p=top_p, seed=seed, return_scores=return_scores,
                        attention_mask=attention_mask, repetition_penalty=repetition_penalty,
                        no_repeat_ngram_size=no_repeat_ngram_size, min_new_tokens=min_new_tokens,
                        bad_words_ids=bad_words_ids, forced_eos_token_id=forced_eos_token_id,
                        streamer=streamer)
