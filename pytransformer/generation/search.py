"""The searches: greedy, beam and sampling, over the decoding protocol."""
import zlib

import numpy as np

from ..ops.checks import check_float, check_int, check_token_id
from .logits import filter_logits, log_softmax

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


def generate(model, src, max_new_tokens, bos_id, eos_id, pad_id=None, method="greedy",
             beam_size=4, length_penalty=1.0, num_return_sequences=1, temperature=1.0,
             top_k=None, top_p=1.0, seed=None, return_scores=False):
    """Decode target sequences for a batch of sources; see
    :meth:`pytransformer.models.Seq2SeqTransformer.generate`."""
    # The model checks the source ids where they enter (start_decoding);
    # here only what the search itself is given.
    src = np.asarray(src)
    if src.ndim == 1:
        src = src[None]
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", 1, model.max_len)
    V = model.tgt_vocab_size
    bos_id = check_token_id(bos_id, "bos_id", V)
    eos_id = check_token_id(eos_id, "eos_id", V, optional=True)
    pad_id = model.pad_id if pad_id is None else check_int(pad_id, "pad_id", *INT64)
    num_return_sequences = check_int(num_return_sequences, "num_return_sequences", 1)
    _check_rows(len(src), 1, "batch", V)
    if method == "greedy":
        if num_return_sequences != 1:
            raise ValueError(f"num_return_sequences={num_return_sequences}: greedy search "
                             f"returns one sequence per source")
        tokens, scores = greedy_search(model, src, max_new_tokens, bos_id, eos_id, pad_id,
                                       return_scores)
    elif method == "beam":
        beam_size = check_int(beam_size, "beam_size", 1)
        _check_rows(len(src), beam_size, "beam_size", V)
        if num_return_sequences > beam_size:
            raise ValueError(f"num_return_sequences={num_return_sequences} exceeds "
                             f"beam_size={beam_size}")
        length_penalty = check_float(length_penalty, "length_penalty")
        tokens, scores = beam_search(model, src, max_new_tokens, bos_id, eos_id, pad_id,
                                     beam_size, length_penalty, num_return_sequences)
    elif method == "sample":
        _check_rows(len(src), num_return_sequences, "num_return_sequences", V)
        temperature = check_float(temperature, "temperature", 0.0, lo_open=True)
        if top_k is not None:
            top_k = check_int(top_k, "top_k", 1)
        top_p = 1.0 if top_p is None else check_float(top_p, "top_p", 0.0, 1.0, lo_open=True)
        if seed is not None:
            seed = check_int(seed, "seed", 0)
        tokens, scores = sample(model, src, max_new_tokens, bos_id, eos_id, pad_id,
                                temperature, top_k, top_p, seed, num_return_sequences,
                                return_scores)
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


# ----------------------------------------------------------------- greedy --

def greedy_search(model, src, max_new_tokens, bos_id, eos_id, pad_id, with_scores=True):
    """The most probable next token at every step, for each row.  Returns
    (tokens, scores); scores is None unless with_scores."""
    tokens, scores = _decode_rows(model, src, max_new_tokens, bos_id, eos_id,
                                  lambda rows, logits: _argmax_rows(logits), with_scores)
    return pad_rows(tokens, pad_id), scores


def _argmax_rows(logits):
    return np.argmax(logits, axis=-1)  # the first of equal maxima


def _decode_rows(model, src, max_new_tokens, bos_id, eos_id, choose, with_scores=True):
    """Shared loop of greedy search and sampling: one token per live row per
    step; a row leaves the batch at its <eos>.  choose(rows, logits) gives the
    next token of each live row (rows: their indices in src)."""
    N = src.shape[0]
    state = model.start_decoding(src, max_new_tokens)
    live = np.arange(N)
    out = [[] for _ in range(N)]
    scores = np.zeros(N, dtype=np.float64) if with_scores else None
    nxt = np.full(N, bos_id, dtype=np.int64)
    for _ in range(max_new_tokens):
        logits = model.decode_step(nxt, state)
        nxt = np.asarray(choose(live, logits), dtype=np.int64)
        if with_scores:  # a log-softmax over the vocabulary: only when asked for
            scores[live] += log_softmax(logits)[np.arange(live.size), nxt]
        for r, t in zip(live.tolist(), nxt.tolist()):
            out[r].append(t)
        if eos_id is not None:
            going = nxt != eos_id
            if not going.all():
                live, nxt = live[going], nxt[going]
                if live.size == 0:
                    break
                state.select(np.flatnonzero(going))
    return out, scores


# --------------------------------------------------------------- sampling --

def sample(model, src, max_new_tokens, bos_id, eos_id, pad_id, temperature=1.0, top_k=None,
           top_p=1.0, seed=None, num_return_sequences=1, with_scores=True):
    """Ancestral sampling from the filtered next-token distribution.

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
    for row in src:
        tokens = np.ascontiguousarray(row[row != model.pad_id], dtype=np.int64)
        key = [seed, 0, zlib.crc32(tokens.tobytes()), tokens.size]
        for j in range(num_return_sequences):
            key[1] = j
            streams.append(np.random.default_rng(key))
    src = np.repeat(src, num_return_sequences, axis=0)

    def choose(rows, logits):
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

    tokens, scores = _decode_rows(model, src, max_new_tokens, bos_id, eos_id, choose,
                                  with_scores)
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


def beam_search(model, src, max_new_tokens, bos_id, eos_id, pad_id, beam_size=4,
                length_penalty=1.0, num_return_sequences=1):
    """Beam search (the paper's section 6.1 uses beam 4, length penalty 0.6).

    Each source keeps ``beam_size`` live hypotheses, ranked by their summed
    log-probability.  At each step the 2 * beam_size best one-token
    extensions are walked in order (ties: lower beam, then lower token id
    first): an extension ending in ``<eos>`` among the first beam_size
    becomes a finished hypothesis with score sum / length ** length_penalty
    (length counts <eos>); the others fill the next beam.  A source is done
    when beam_size hypotheses have finished; at max_new_tokens the live ones
    finish as they are.  The best num_return_sequences finished hypotheses
    (by score; ties: the earlier finished) are returned, source-major: rows
    b * num_return_sequences + j.
    """
    B = src.shape[0]
    K = beam_size
    V = model.tgt_vocab_size
    state = model.start_decoding(np.repeat(src, K, axis=0), max_new_tokens)
    # Live hypotheses of the sources still searching: hyp[b][k] token lists.
    active = list(range(B))
    hyps = {b: [[] for _ in range(K)] for b in active}
    sums = np.full((B, K), -np.inf)
    sums[:, 0] = 0.0  # one start hypothesis; the others are empty slots
    finished = {b: [] for b in range(B)}
    nxt = np.full(B * K, bos_id, dtype=np.int64)

    def finish(b, tokens, total):
        n = len(tokens)
        finished[b].append((total / (n ** length_penalty), tokens, len(finished[b])))

    for step in range(max_new_tokens):
        logits = model.decode_step(nxt, state)
        logp = log_softmax(logits).reshape(len(active), K, V)
        rows, new_tokens, still = [], [], []
        for i, b in enumerate(active):
            cand = (sums[b][:, None] + logp[i]).ravel()
            order = _top(cand, 2 * K)
            new_hyps, new_sums, parents = [], [], []
            for rank, idx in enumerate(order.tolist()):
                total = float(cand[idx])
                if total == -np.inf:
                    break
                beam, tok = divmod(idx, V)
                if eos_id is not None and tok == eos_id:
                    if rank < K:
                        finish(b, hyps[b][beam] + [tok], total)
                    continue
                new_hyps.append(hyps[b][beam] + [tok])
                new_sums.append(total)
                parents.append(beam)
                if len(new_hyps) == K:
                    break
            if len(finished[b]) >= K:
                continue  # done: beam_size hypotheses have ended
            if step == max_new_tokens - 1 or not new_hyps:
                for h, total in zip(new_hyps, new_sums):  # out of steps: end as they are
                    finish(b, h, total)
                continue
            while len(new_hyps) < K:  # fewer extensions than beams: empty slots
                new_hyps.append([])
                new_sums.append(-np.inf)
                parents.append(0)
            hyps[b] = new_hyps
            sums[b] = new_sums
            rows += [i * K + p for p in parents]
            new_tokens += [h[-1] if h else bos_id for h in new_hyps]
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
