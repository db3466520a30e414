"""Logits processing: log-probabilities, the logits processors a search
applies before it chooses (transformers' semantics and order), and the
filtered distribution that sampling draws from (temperature, top-k, nucleus).
"""
import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..ops.checks import check_float, check_int, check_token_id

__all__ = ["log_softmax", "filter_logits", "LogitsProcessors", "token_id_list"]


def log_softmax(logits):
    """log softmax over the last axis: float32 logits (as transformers
    computes it) with the sum of exponentials in float64, returned as
    float64 (the beam scores add them up)."""
    z = np.asarray(logits, dtype=np.float32)
    z = z - z.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=-1, keepdims=True, dtype=np.float64))
    return z - lse


def filter_logits(logits, temperature=1.0, top_k=None, top_p=1.0):
    """The sampling distribution of each row: softmax(logits / temperature)
    restricted to the top_k most probable tokens, then to the smallest set of
    most probable tokens whose probability reaches top_p (nucleus sampling,
    Holtzman et al. 2020), renormalised.  Returns float64 probabilities."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    V = z.shape[-1]
    if (top_k is None or top_k >= V) and top_p >= 1.0:  # nothing to cut: no sort
        p = np.exp(z - z.max(axis=-1, keepdims=True))
        return p / p.sum(axis=-1, keepdims=True)
    order = np.argsort(-z, axis=-1, kind="stable")  # most probable first, ties by id
    zs = np.take_along_axis(z, order, axis=-1)
    keep = np.ones_like(zs, dtype=bool)
    if top_k is not None and top_k < V:
        keep[..., top_k:] = False
    p = np.exp(zs - zs[..., :1]) * keep
    p /= p.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        before = np.cumsum(p, axis=-1) - p  # mass of the more probable tokens
        keep &= before < top_p  # the first token is always kept
        p = p * keep
        p /= p.sum(axis=-1, keepdims=True)
    probs = np.zeros_like(p)
    np.put_along_axis(probs, order, p, axis=-1)
    return probs


def token_id_list(value, name, V, optional=True):
    """An id or a list of ids (such as eos_id) as a list of checked ids;
    None -> [] when optional."""
    if value is None and optional:
        return []
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return [check_token_id(value, name, V)]
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name}: a token id or a list of token ids is needed, got {value!r}")
    ids = [check_token_id(v, f"{name}[{i}]", V) for i, v in enumerate(value)]
    if not ids:
        raise ValueError(f"{name}: an empty list of token ids")
    return ids


class LogitsProcessors:
    """The logits processors of one generate call, applied in transformers'
    order (``GenerationMixin._get_logits_processor``) before a token is chosen:

    1. ``repetition_penalty`` (Keskar et al. 2019, CTRL): the score of every
       token already in the row's history is divided by the penalty where
       positive, multiplied where negative;
    2. ``no_repeat_ngram_size`` n: a token that would complete an n-gram the
       history already holds is banned;
    3. ``bad_words_ids``: token-id lists that may not be generated; a list of
       one token bans it always, a longer one bans its last token when the
       history ends with the others.  Lists of a single stop id are ignored,
       as transformers does;
    4. ``min_new_tokens``: the stop ids are banned until that many new tokens
       have been produced;
    5. ``forced_eos_token_id`` (an id or a list): at the last step allowed
       (step max_new_tokens - 1) only these ids may follow;
    6. ``renormalize_logits``: last, a log-softmax of what the others left
       (transformers' LogitNormalization), so beam search's scores are
       log-probabilities over the tokens still allowed.

    "Banned" is a score of -inf.  A row's history is what transformers calls
    its ``input_ids``: for a decoder-only model the prompt (its padding left
    out) and the tokens generated so far; for an encoder-decoder model the
    decoder's start token and the tokens generated so far.  Greedy search and
    sampling process the logits, beam search the log-probabilities (as
    transformers does).
    """

    def __init__(self, V, stop_ids, max_new_tokens, repetition_penalty=1.0,
                 no_repeat_ngram_size=0, bad_words_ids=None, min_new_tokens=0,
                 forced_eos_token_id=None, renormalize_logits=False):
        self.V = V
        self.renormalize = bool(renormalize_logits)
        self.stop_ids = list(stop_ids)
        self.max_new_tokens = max_new_tokens
        rp = 1.0 if repetition_penalty is None else repetition_penalty
        self.repetition_penalty = check_float(rp, "repetition_penalty", 0.0, lo_open=True)
        self.ngram = check_int(no_repeat_ngram_size or 0, "no_repeat_ngram_size", 0)
        self.min_new_tokens = check_int(min_new_tokens or 0, "min_new_tokens", 0)
        if self.min_new_tokens and not self.stop_ids:
            self.min_new_tokens = 0  # nothing to hold back (transformers: no eos, no processor)
        self.forced = token_id_list(forced_eos_token_id, "forced_eos_token_id", V)
        self.banned = np.zeros(V, dtype=bool)   # single-token bad words
        self.sequences = []                     # (prefix tuple, last token) of longer ones
        if bad_words_ids is not None:
            if isinstance(bad_words_ids, (str, bytes)) or not hasattr(bad_words_ids, "__iter__"):
                raise ValueError(f"bad_words_ids: a list of token-id lists is needed, got "
                                 f"{bad_words_ids!r}")
            words = list(bad_words_ids)
            if not words:
                raise ValueError("bad_words_ids: an empty list (give None for no bad words)")
            for i, w in enumerate(words):
                if isinstance(w, (str, bytes)) or not hasattr(w, "__iter__"):
                    raise ValueError(f"bad_words_ids[{i}]: a list of token ids is needed, got "
                                     f"{w!r}")
                ids = [check_token_id(t, f"bad_words_ids[{i}][{j}]", V)
                       for j, t in enumerate(w)]
                if not ids:
                    raise ValueError(f"bad_words_ids[{i}]: an empty list of token ids")
                if len(ids) == 1:
                    if ids[0] not in self.stop_ids:
                        self.banned[ids[0]] = True
                else:
                    self.sequences.append((tuple(ids[:-1]), ids[-1]))
        self.any_banned = bool(self.banned.any())

    @property
    def active(self):
        return (self.repetition_penalty != 1.0 or self.ngram > 0 or self.any_banned or
                bool(self.sequences) or self.min_new_tokens > 0 or bool(self.forced) or
                self.renormalize)

    @property
    def needs_history(self):
        return self.repetition_penalty != 1.0 or self.ngram > 0 or bool(self.sequences)

    def __call__(self, scores, histories, step):
        """scores (N, V) of the live rows, histories their token lists, step
        the number of new tokens produced so far -> processed scores (a new
        array of the same dtype; scores itself is not changed)."""
        if not self.active:
            return scores
        s = np.array(scores, copy=True)
        inf = s.dtype.type(-np.inf)
        if self.repetition_penalty != 1.0:
            p = s.dtype.type(self.repetition_penalty)
            for r, h in enumerate(histories):
                if len(h):
                    ids = np.unique(np.asarray(h, dtype=np.intp))
                    got = s[r, ids]
                    s[r, ids] = np.where(got < 0, got * p, got / p)
        if self.ngram:
            n = self.ngram
            for r, h in enumerate(histories):
                if len(h) >= n:
                    a = np.asarray(h, dtype=np.intp)
                    w = sliding_window_view(a, n)
                    hit = (w[:, :-1] == a[len(a) - n + 1:]).all(axis=1)
                    s[r, w[hit, -1]] = inf
        if self.any_banned:
            s[:, self.banned] = inf
        for prefix, last in self.sequences:
            k = len(prefix)
            for r, h in enumerate(histories):
                if len(h) >= k and tuple(h[len(h) - k:]) == prefix:
                    s[r, last] = inf
        if step < self.min_new_tokens:
            s[:, self.stop_ids] = inf
        if self.forced and step == self.max_new_tokens - 1:
            s[:] = inf
            s[:, self.forced] = 0
        if self.renormalize:
            s = log_softmax(s).astype(s.dtype, copy=False)
        return s
