"""The searches: greedy, beam and sampling, over the decoding protocol."""
import zlib

import numpy as np

from ..ops.checks import check_float, check_int, check_token_id
from .logits import LogitsProcessors, filter_logits, log_softmax, token_id_list

__all__ = ["generate", "greedy_search", "beam_search", "sample", "pad_rows"]

# What one call may ask for: rows decoded together (sources x beams or
# samples), and the float64 log-probabilities a step of them holds
# (rows x vocabulary), both checked before any work.
MAX_ROWS = 1 << 16
MAX_STEP_BYTES = 4 << 30
INT64 = (-(1 << 63), (1 << 63) - 1)


def _check_rows(n_src, per_source, name, V):
    rows = n_src * per_source
    if rows > MAX_ROWS or rows * V * 8 > MAX_STEP_BYTES:
        raise ValueError(f"{name}={per_source}: {n_src} source(s) x {per_source} = {rows} "
                         f"rows over a vocabulary of {V}; at most {MAX_ROWS} rows and "
                         f"{MAX_STEP_BYTES >> 30} GiB of log-probabilities a step")


class _Batch:
    """The sources of one call and how decoding starts from them, for either
    kind of model (see the protocol in :mod:`pytransformer.generation`).

    ``prefixes[b]``: source b's history before its first new token -- the
    prompt's tokens (padding left out) for a decoder-only model, [bos_id] for
    an encoder-decoder one; ``keys[b]``: the tokens that key its sampling
    streams (the prompt, or the source without padding)."""

    def __init__(self, model, src, attention_mask):
        self.model = model
        self.decoder_only = bool(getattr(model, "decoder_only", False))
        src = np.asarray(src)
        if src.ndim == 1:
            src = src[None]
        self.src, self.mask = src, attention_mask
        if not self.decoder_only and attention_mask is not None and \
                not getattr(model, "source_attention_mask", False):
            raise ValueError(f"attention_mask: {type(model).__name__} finds the source's "
                             f"padding from pad_id; pass the sources without a mask")
        self.bos_id = self.filler = None  # set once checked

    def __len__(self):
        return self.src.shape[0]

    def start(self, max_new_tokens, repeat=1):
        """(state, logits (N, V) of each row's first new token), rows source-major,
        each source ``repeat`` times; sets prefixes and keys."""
        model, B = self.model, len(self)
        rows = np.repeat(np.arange(B), repeat)
        if self.decoder_only:
            state, logits = model.start_decoding(self.src, max_new_tokens,
                                                 attention_mask=self.mask, capacity=B * repeat)
            keep = np.ones(self.src.shape, bool) if self.mask is None else \
                np.asarray(self.mask) != 0
            self.prefixes = [r[k].tolist() for r, k in zip(self.src, keep)]
            self.keys = self.prefixes
            if repeat > 1:
                state.select(rows)
                logits = logits[rows]
            return state, logits
        # each source encoded once; its rows repeated in the cache
        kw = {} if repeat == 1 else dict(capacity=B * repeat)
        if self.mask is not None:
            kw["attention_mask"] = self.mask
        state = model.start_decoding(self.src, max_new_tokens, **kw)
        keep = self.src != model.pad_id if self.mask is None else np.asarray(self.mask) != 0
        if repeat > 1:
            state.select(rows)
        self.prefixes = [[self.bos_id] for _ in range(B)]
        self.keys = [r[k].tolist() for r, k in zip(self.src, keep)]
        return state, model.decode_step(np.full(B * repeat, self.bos_id, np.int64), state)


def generate(model, src, max_new_tokens, bos_id=None, eos_id=None, pad_id=None,
             method="greedy", beam_size=4, length_penalty=1.0, num_return_sequences=1,
             temperature=1.0, top_k=None, top_p=1.0, seed=None, return_scores=False, *,
             attention_mask=None, repetition_penalty=1.0, no_repeat_ngram_size=0,
             min_new_tokens=0, bad_words_ids=None, forced_eos_token_id=None,
             renormalize_logits=False, streamer=None):
    """Decode new tokens for a batch of sources (encoder-decoder) or prompts
    (decoder-only); see :meth:`pytransformer.models.Seq2SeqTransformer.generate`
    and :mod:`pytransformer.generation` for the arguments.

    ``streamer(rows, tokens)``, if given, is called after every step of greedy
    search and sampling with the indices of the rows that produced a token and
    those tokens (beam search knows its result only at the end: no calls)."""
    # The model checks the source ids where they enter (start_decoding);
    # here only what the search itself is given.
    batch = _Batch(model, src, attention_mask)
    if batch.decoder_only:
        V, limit = model.vocab_size, model.max_length
        bos_id = None if bos_id is None else check_token_id(bos_id, "bos_id", V)
    else:
        V, limit = model.tgt_vocab_size, model.max_len
        bos_id = check_token_id(bos_id, "bos_id", V)
    batch.bos_id = bos_id
    batch.filler = bos_id if bos_id is not None else 0  # an id for empty beam slots
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", 1, limit)
    stop_ids = token_id_list(eos_id, "eos_id", V)
    pad_id = model.pad_id if pad_id is None else check_int(pad_id, "pad_id", *INT64)
    num_return_sequences = check_int(num_return_sequences, "num_return_sequences", 1)
    procs = LogitsProcessors(V, stop_ids, max_new_tokens, repetition_penalty,
                             no_repeat_ngram_size, bad_words_ids, min_new_tokens,
                             forced_eos_token_id, renormalize_logits)
    _check_rows(len(batch), 1, "batch", V)
    if method == "greedy":
        if num_return_sequences != 1:
            raise ValueError(f"num_return_sequences={num_return_sequences}: greedy search "
                             f"returns one sequence per source")
        tokens, scores = greedy_search(model, batch, max_new_tokens, stop_ids, pad_id,
                                       return_scores, procs, streamer)
    elif method == "beam":
        beam_size = check_int(beam_size, "beam_size", 1)
        _check_rows(len(batch), beam_size, "beam_size", V)
        if num_return_sequences > beam_size:
            raise ValueError(f"num_return_sequences={num_return_sequences} exceeds "
                             f"beam_size={beam_size}")
        length_penalty = check_float(length_penalty, "length_penalty")
        tokens, scores = beam_search(model, batch, max_new_tokens, stop_ids, pad_id,
                                     beam_size, length_penalty, num_return_sequences, procs)
    elif method == "sample":
        _check_rows(len(batch), num_return_sequences, "num_return_sequences", V)
        temperature = check_float(temperature, "temperature", 0.0, lo_open=True)
        if top_k is not None:
            top_k = check_int(top_k, "top_k", 1)
        top_p = 1.0 if top_p is None else check_float(top_p, "top_p", 0.0, 1.0, lo_open=True)
        if seed is not None:
            seed = check_int(seed, "seed", 0)
        tokens, scores = sample(model, batch, max_new_tokens, stop_ids, pad_id, temperature,
                                top_k, top_p, seed, num_return_sequences, return_scores,
                                procs, streamer)
    else:
        raise ValueError(f"method must be 'greedy', 'beam' or 'sample', got {method!r}")
    return (tokens, scores) if return_scores else tokens


def pad_rows(rows, pad_id, width=None):
    """Token lists -> (N, T) int64 padded with pad_id; T = the longest row."""
    T = width if width is not None else max((len(r) for r in rows), default=0)
    out = np.full((len(rows), max(T, 1)), pad_id, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _no_processing():
    return LogitsProcessors(1, [], 1)


# ----------------------------------------------------------------- greedy --

def greedy_search(model, batch, max_new_tokens, stop_ids, pad_id, with_scores=True,
                  procs=None, streamer=None):
    """The most probable next token at every step (after the logits
    processors), for each row.  Returns (tokens, scores); scores is None
    unless with_scores."""
    tokens, scores = _decode_rows(model, batch, max_new_tokens, stop_ids,
                                  lambda rows, logits: _argmax_rows(logits), with_scores,
                                  procs=procs, streamer=streamer)
    return pad_rows(tokens, pad_id), scores


def _argmax_rows(logits):
    return np.argmax(logits, axis=-1)  # the first of equal maxima


def _decode_rows(model, batch, max_new_tokens, stop_ids, choose, with_scores=True,
                 repeat=1, procs=None, streamer=None):
    """Shared loop of greedy search and sampling: one token per live row per
    step; a row leaves the batch at a stop id.  choose(rows, logits) gives the
    next token of each live row (rows: their indices among the N rows)."""
    procs = procs or _no_processing()
    state, logits = batch.start(max_new_tokens, repeat)
    N = logits.shape[0]
    live = np.arange(N)
    out = [[] for _ in range(N)]
    history = [list(batch.prefixes[r // repeat]) for r in range(N)] \
        if procs.needs_history else None
    scores = np.zeros(N, dtype=np.float64) if with_scores else None
    stops = np.asarray(stop_ids, dtype=np.int64)
    for step in range(max_new_tokens):
        if step:
            logits = model.decode_step(nxt, state)
        z = procs(logits, None if history is None else [history[r] for r in live.tolist()],
                  step)
        nxt = np.asarray(choose(live, z), dtype=np.int64)
        if with_scores:  # a log-softmax over the vocabulary: only when asked for
            scores[live] += log_softmax(z if procs.renormalize else logits)[
                np.arange(live.size), nxt]
        for r, t in zip(live.tolist(), nxt.tolist()):
            out[r].append(t)
            if history is not None:
                history[r].append(t)
        if streamer is not None:
            streamer(live.copy(), nxt.copy())
        if stops.size:
            going = nxt != stops[0] if stops.size == 1 else ~np.isin(nxt, stops)
            if not going.all():
                live, nxt = live[going], nxt[going]
                if live.size == 0:
                    break
                state.select(np.flatnonzero(going))
    return out, scores


# --------------------------------------------------------------- sampling --

def sample(model, batch, max_new_tokens, stop_ids, pad_id, temperature=1.0, top_k=None,
           top_p=1.0, seed=None, num_return_sequences=1, with_scores=True, procs=None,
           streamer=None):
    """Ancestral sampling from the filtered next-token distribution (the
    logits processors first, then temperature, top-k and top-p).

    Sample j of a source draws from its own stream, keyed by the seed, j and
    the source's tokens (padding left out): numpy.random.default_rng([seed, j,
    crc32(tokens), len(tokens)]).  The same seed gives the same output, and a
    sequence samples the same tokens whatever else is in its batch and however
    much padding it carries (so equal sources in one batch sample alike: ask
    for num_return_sequences to draw several).
    """
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (1 << 63))
    streams = []
    n = num_return_sequences

    def choose(rows, logits):
        if not streams:  # the sources' keys are known once decoding has started
            for key_tokens in batch.keys:
                tokens = np.ascontiguousarray(key_tokens, dtype=np.int64)
                key = [seed, 0, zlib.crc32(tokens.tobytes()), tokens.size]
                for j in range(n):
                    key[1] = j
                    streams.append(np.random.default_rng(key))
        probs = filter_logits(logits, temperature, top_k, top_p)
        cdf = np.cumsum(probs, axis=-1)
        u = np.array([streams[r].random() for r in rows.tolist()])
        tok = (cdf < (u * cdf[:, -1])[:, None]).sum(axis=-1)  # inverse CDF
        # Never a token of probability zero (a float tie at the boundary).
        tok = np.minimum(tok, probs.shape[-1] - 1)
        bad = probs[np.arange(len(tok)), tok] == 0
        if bad.any():
            tok[bad] = np.argmax(probs[bad], axis=-1)
        return tok

    tokens, scores = _decode_rows(model, batch, max_new_tokens, stop_ids, choose,
                                  with_scores, repeat=n, procs=procs, streamer=streamer)
    return pad_rows(tokens, pad_id), scores


# ------------------------------------------------------------------- beam --

def _top(scores, n):
    """Indices of the n largest scores, largest first, ties by lower index:
    the first n of a stable descending sort, without sorting everything."""
    if n >= scores.size:
        return np.argsort(-scores, kind="stable")
    cut = np.partition(scores, scores.size - n)[scores.size - n]  # the n-th largest
    idx = np.flatnonzero(scores >= cut)  # ascending: ties stay in index order
    return idx[np.argsort(-scores[idx], kind="stable")][:n]


def beam_search(model, batch, max_new_tokens, stop_ids, pad_id, beam_size=4,
                length_penalty=1.0, num_return_sequences=1, procs=None):
    """Beam search (the paper's section 6.1 uses beam 4, length penalty 0.6),
    as transformers' with ``early_stopping=True``.

    Each source keeps ``beam_size`` live hypotheses, ranked by their summed
    log-probability (after the logits processors, applied to the
    log-probabilities).  At each step the max(2, 1 + len(stop ids)) *
    beam_size best one-token extensions are walked in order (ties: lower
    beam, then lower token id first): an extension ending in a stop id among
    the first beam_size becomes a finished hypothesis with score sum / length
    ** length_penalty (length: the new tokens, the stop id included); the
    others fill the next beam.  A source is done when beam_size hypotheses
    have finished; at the last step (max_new_tokens) the first beam_size
    extensions finish, whatever their last token.  The best
    num_return_sequences finished hypotheses (by score; ties: the earlier
    finished) are returned, source-major: rows b * num_return_sequences + j.
    """
    procs = procs or _no_processing()
    B, K = len(batch), beam_size
    state, logits = batch.start(max_new_tokens, K)
    V = logits.shape[-1]
    stops = set(stop_ids)
    width = max(2, 1 + len(stops)) * K
    # Live hypotheses of the sources still searching: hyp[b][k] token lists.
    active = list(range(B))
    hyps = {b: [[] for _ in range(K)] for b in active}
    sums = np.full((B, K), -np.inf)
    sums[:, 0] = 0.0  # one start hypothesis; the others are empty slots
    finished = {b: [] for b in range(B)}
    nxt = None

    def finish(b, tokens, total):
        n = len(tokens)
        finished[b].append((total / (n ** length_penalty), tokens, len(finished[b])))

    for step in range(max_new_tokens):
        if step:
            logits = model.decode_step(nxt, state)
        logp = log_softmax(logits)
        if procs.active:
            hist = [batch.prefixes[b] + hyps[b][k] for b in active for k in range(K)] \
                if procs.needs_history else None
            logp = procs(logp, hist, step)
        logp = logp.reshape(len(active), K, V)
        last = step == max_new_tokens - 1
        rows, new_tokens, still = [], [], []
        for i, b in enumerate(active):
            cand = (sums[b][:, None] + logp[i]).ravel()
            order = _top(cand, width)
            new_hyps, new_sums, parents = [], [], []
            for rank, idx in enumerate(order.tolist()):
                total = float(cand[idx])
                if total == -np.inf:
                    break
                beam, tok = divmod(idx, V)
                if tok in stops or last:
                    if rank < K:
                        finish(b, hyps[b][beam] + [tok], total)
                    continue
                new_hyps.append(hyps[b][beam] + [tok])
                new_sums.append(total)
                parents.append(beam)
                if len(new_hyps) == K:
                    break
            if len(finished[b]) >= K or last or not new_hyps:
                continue  # done: beam_size hypotheses have ended, or no step is left
            while len(new_hyps) < K:  # fewer extensions than beams: empty slots
                new_hyps.append([])
                new_sums.append(-np.inf)
                parents.append(0)
            hyps[b] = new_hyps
            sums[b] = new_sums
            rows += [i * K + p for p in parents]
            new_tokens += [h[-1] if h else batch.filler for h in new_hyps]
            still.append(b)
        if not still:
            break
        state.select(np.array(rows, dtype=np.int64))
        active = still
        nxt = np.array(new_tokens, dtype=np.int64)

    out, scores = [], []
    for b in range(B):
        best = sorted(finished[b], key=lambda f: (-f[0], f[2]))[:num_return_sequences]
        best += [(-np.inf, [], 0)] * (num_return_sequences - len(best))  # a tiny vocabulary
        for score, tokens, _ in best:
            out.append(tokens)
            scores.append(score)
    return pad_rows(out, pad_id), np.array(scores, dtype=np.float64)
