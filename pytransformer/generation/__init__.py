"""Autoregressive decoding: greedy search, beam search and sampling.

At inference the decoder produces one token per step, from ``<bos>`` until
``<eos>`` (Vaswani et al. 2017, section 3: "the model is auto-regressive,
consuming the previously generated symbols as additional input when
generating the next").  Re-running the decoder over the whole prefix at every
step would cost O(T^2) projections; instead the model keeps a KV cache
(:class:`pytransformer.nn.KVCache`): the keys and values of every earlier
target position in each decoder self-attention, and the cross-attention keys
and values of the encoder output, computed once per source.  A step then
feeds one token per sequence through the decoder (all GEMMs and softmaxes in
the C kernels); this module only chooses the next tokens.

The decoding protocol -- all this package knows of a model.  An
encoder-decoder model (``decoder_only`` absent or False)::

    state = model.start_decoding(src, max_len)   # check src, encode once, allocate caches
        # start_decoding(src, max_len, capacity=C): room for C >= B rows,
        # which beam search and several samples per source fill by select
        # padding: the source positions that hold pad_id; a model with
        # ``source_attention_mask = True`` (Marian) also takes
        # start_decoding(src, max_len, attention_mask=m), m (B, S) 1 at tokens
        # and 0 at padding, as transformers' encoders (a pad id written in the
        # text is then a token like any other)
    logits = model.decode_step(tokens, state)    # (N,) ids -> (N, V) logits
    state.select(rows)                           # keep / reorder / repeat rows
    model.tgt_vocab_size, model.max_len, model.pad_id   # V, the longest output, padding

Decoding starts from ``bos_id``: the first call is decode_step(bos).  A
decoder-only model (``model.decoder_only = True``: GPT-2, and the same seam
for Llama-family models) continues its prompts instead::

    state, logits = model.start_decoding(input_ids, max_new_tokens,
                                         attention_mask=None, capacity=None)
        # input_ids (B, T) prompts, attention_mask (B, T) 1 at tokens, 0 at
        # padding (left or right, as transformers); the prompts run in ONE
        # pass (prefill) into the cache; logits (B, V) float32 of each row's
        # last prompt token; the cache is allocated once for capacity rows
        # (>= B; beam search asks for B * beam_size and repeats rows by
        # select) and T + max_new_tokens positions
    logits = model.decode_step(tokens, state)    # (N,) ids -> (N, V), the
        # token at each row's own next position (its prompt length + steps)
    state.select(rows)                           # as above
    model.vocab_size, model.max_length, model.pad_id   # V, positions, padding

The state is the model's own (:class:`pytransformer.nn.DecoderCache` for
GPT-2): what a step needs per layer -- keys and values of every position so
far, (N, kv_heads, positions, d_head), where kv_heads may be fewer than the
query heads (grouped-query attention) and the positions carry whatever
encoding the family uses (learned rows added to the input for GPT-2, RoPE
applied to the cached keys for Llama) -- and each row's length.  A row's
prompt is stored from slot 0 whatever its padding, so a row's attention reads
the same keys at the same places alone or in any batch.

Source and prompt ids are checked where they enter the model
(start_decoding), not here.  Before each choice the logits processors
(:class:`LogitsProcessors`: repetition_penalty, no_repeat_ngram_size,
bad_words_ids, min_new_tokens, forced_eos_token_id, with transformers'
semantics) see each row's history: its prompt (decoder-only) or bos_id
(encoder-decoder) and the tokens generated so far.  ``eos_id`` may be a list
of stop ids.

Every sequence of a batch ends on its own: finished rows are dropped from the
state (so later steps cost less) and padded with ``pad_id`` in the output.
A row's computation never depends on the other rows, so a sequence gets the
same tokens and scores alone or in any batch.

Scores are log-probabilities under the model, accumulated in float64 from the
float32 logits: for greedy search and sampling the sum of log p(token) over
the tokens produced (``<eos>`` included, temperature and filtering not
applied); for beam search that sum divided by ``length ** length_penalty``,
the quantity the search ranks hypotheses by.
"""
from .logits import LogitsProcessors, filter_logits, log_softmax
from .search import beam_search, generate, greedy_search, sample

__all__ = ["generate", "greedy_search", "beam_search", "sample", "log_softmax",
           "filter_logits", "LogitsProcessors"]
