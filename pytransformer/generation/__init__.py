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

The decoding protocol -- all this package knows of a model::

    state = model.start_decoding(src, max_len)   # check src, encode once, allocate caches
    logits = model.decode_step(tokens, state)    # (N,) ids -> (N, V) logits
    state.select(rows)                           # keep / reorder / repeat rows
    model.tgt_vocab_size, model.max_len, model.pad_id   # V, the longest output, padding

Source ids are checked where they enter the model (start_decoding), not here.

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
from .logits import filter_logits, log_softmax
from .search import beam_search, generate, greedy_search, sample

__all__ = ["generate", "greedy_search", "beam_search", "sample", "log_softmax",
           "filter_logits"]
