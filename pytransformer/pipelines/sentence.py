"""Sentence embeddings.

:class:`SentenceEncoder` is sentence-transformers' SentenceTransformer for
the checkpoints it saves (Reimers & Gurevych 2019, "Sentence-BERT"): a
Transformer module (a BERT-family encoder and its tokenizer.json), a Pooling
module (1_Pooling/config.json) and optionally a Normalize module, as listed
in modules.json -- same names, same results, no torch.
"""
import os
import sys

import numpy as np

from ..hub.hf import check_compute_type, from_pretrained, load_tokenizer, model_directory, \
    read_json
from ..ops.checks import check_int

__all__ = ["SentenceEncoder", "POOLING_MODES"]

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# sentence-transformers' older 1_Pooling/config.json keys, in the order it
# concatenates the modes they switch on.
_LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_tokens": "mean",
                   "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean",
                   "pooling_mode_lasttoken": "lasttoken"}


def _read_modules(path):
    """(transformer dir, pooling config dir or None, normalize) from modules.json;
    without one, sentence-transformers' fallback: the directory itself, mean
    pooling, no normalisation."""
    file = os.path.join(path, "modules.json")
    if not os.path.isfile(file):
        model_directory(path)
        return path, None, False
    try:
        import json
        with open(file, encoding="utf-8") as f:
            modules = json.load(f)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ValueError(f"{file}: a JSON list of modules is needed")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        raise ValueError(f"{file}: modules {kinds}: only Transformer, Pooling and an optional "
                         f"Normalize, in that order, are supported")
    sub = [os.path.join(path, str(m.get("path", ""))) for m in modules[:2]]
    return model_directory(sub[0]), sub[1], len(kinds) == 3


def _pooling_modes(pool_dir, hidden_size):
    """The pooling modes of 1_Pooling/config.json (a list, concatenated in order)."""
    if pool_dir is None:
        return ["mean"]
    file = os.path.join(pool_dir, "config.json")
    if not os.path.isfile(file):
        raise ValueError(f"{pool_dir}: no config.json for the Pooling module")
    c = read_json(file, "pooling config")
    modes = c.get("pooling_mode")
    if modes is None:
        modes = [m for k, m in _LEGACY_POOLING.items() if c.get(k)]
    modes = [modes] if isinstance(modes, str) else list(modes)
    bad = [m for m in modes if m not in POOLING_MODES]
    if not modes or bad:
        raise ValueError(f"{file}: pooling modes {modes}: one or more of "
                         f"{', '.join(POOLING_MODES)} are needed")
    dim = c.get("embedding_dimension", c.get("word_embedding_dimension", hidden_size))
    if dim != hidden_size:
        raise ValueError(f"{file}: embedding dimension {dim}, but the model's hidden size is "
                         f"{hidden_size}")
    return modes


def _pool(h, n, mode):
    """One sentence's pooled vector from its n real token states h (T, H)."""
    real = h[:n]
    if mode == "cls":
        return h[0]
    if mode == "lasttoken":
        return h[n - 1] if n else np.zeros(h.shape[1], np.float32)
    if mode == "max":
        return real.max(axis=0) if n else np.full(h.shape[1], -np.inf, np.float32)
    if mode == "weightedmean":  # weights 1..n, as sentence-transformers (right padding)
        w = np.arange(1, n + 1, dtype=np.float32)
        return (real * w[:, None]).sum(axis=0) / np.float32(max(w.sum(), 1e-9))
    s = real.sum(axis=0)
    count = np.float32(max(n, 1e-9))
    return s / (count if mode == "mean" else np.sqrt(count))


def _normalize(x):
    """Rows to unit length, as torch.nn.functional.normalize (norm clamped at 1e-12)."""
    # (a plain row sum: each row's bits depend on that row alone)
    norms = np.sqrt((x * x).sum(axis=1))
    return x / np.maximum(norms, np.float32(1e-12))[:, None]


class SentenceEncoder:
    """Sentence embeddings from a sentence-transformers checkpoint directory.

    SentenceEncoder(path).encode(sentences) is SentenceTransformer(path)
    .encode(sentences): the same tokenisation (the directory's tokenizer.json
    through Hugging Face's tokenizers, truncated to sentence_bert_config.json's
    max_seq_length -- which overrides whatever truncation and padding the
    tokenizer.json itself switches on), the same pooling and normalisation.
    ``compute_type``: "float32" or "bfloat16" (see
    :func:`pytransformer.from_pretrained`).
    """

    def __init__(self, path, compute_type="float32"):
        check_compute_type(compute_type)
        path = os.fspath(path)
        if not os.path.isdir(path):
            model_directory(path)  # the message for a missing path or a file
        model_dir, pool_dir, self.normalize = _read_modules(path)
        self.path = path
        self.model = from_pretrained(model_dir, compute_type)
        config = self.model.config
        self.pooling_modes = _pooling_modes(pool_dir, config.hidden_size)
        self.dimension = config.hidden_size * len(self.pooling_modes)
        st = os.path.join(model_dir, "sentence_bert_config.json")
        st = read_json(st, "sentence-transformers config") if os.path.isfile(st) else {}
        tokenizer_config = os.path.join(model_dir, "tokenizer_config.json")
        tc = read_json(tokenizer_config, "tokenizer config") \
            if os.path.isfile(tokenizer_config) else {}
        limit = config.max_length  # positions the model has
        max_len = st.get("max_seq_length")
        if max_len is None:  # sentence-transformers: the tokenizer's model_max_length
            max_len = tc.get("model_max_length", limit)
            max_len = limit if not isinstance(max_len, (int, float)) else int(min(max_len, limit))
        self.max_seq_length = check_int(max_len, "max_seq_length", 1, limit)
        self.tokenizer = tok = load_tokenizer(model_dir)
        tok.no_padding()  # padded here, per batch
        tok.enable_truncation(self.max_seq_length)  # (longest_first, stride 0, right)
        if st.get("do_lower_case"):
            _lowercase(tok)
        self.pad_id = config.pad_token_id

    def get_sentence_embedding_dimension(self):
        return self.dimension

    def tokenize(self, sentences):
        """Token ids of each sentence (lists), special tokens added, truncated."""
        return [e.ids for e in self.tokenizer.encode_batch(sentences)]

    def encode(self, sentences, batch_size=32, normalize_embeddings=None,
               show_progress_bar=None):
        """Embeddings of ``sentences``: float32 (n, dim); a single str gives (dim,).

        Sentences are sorted by token count and embedded ``batch_size`` at a
        time (padding only to the longest of its batch); results come back in
        input order, bit-identical whatever the batch size, the other
        sentences or the thread count.  normalize_embeddings: None = the
        checkpoint's choice (its Normalize module), True = unit length, False
        = the pooled vectors as they are (where sentence-transformers would
        still apply a Normalize module).  show_progress_bar: a progress line
        on stderr (None: no).
        """
        single = isinstance(sentences, str)
        texts = [sentences] if single else _as_list(sentences)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"sentences[{i}]: a str is needed, got {type(t).__name__} "
                                 f"{t!r:.60}")
        batch_size = check_int(batch_size, "batch_size", 1)
        out = np.zeros((len(texts), self.dimension), np.float32)
        encodings = self.tokenizer.encode_batch(texts) if texts else []
        lengths = np.array([len(e.ids) for e in encodings], dtype=np.intp)
        order = np.argsort(-lengths, kind="stable")
        bar = _Progress(len(texts)) if show_progress_bar else None
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            out[idx] = self._embed([encodings[i] for i in idx])
            if bar:
                bar.update(len(idx))
        if bar:
            bar.close()
        if normalize_embeddings is None:
            normalize_embeddings = self.normalize
        if normalize_embeddings and len(texts):
            out = _normalize(out)
        return out[0] if single else out

    def _embed(self, encodings):
        """Pooled vectors (b, dim) of one batch of tokenised sentences."""
        n = [len(e.ids) for e in encodings]
        T = max(max(n), 1)
        ids = np.full((len(n), T), self.pad_id, dtype=np.intp)
        types = np.zeros((len(n), T), dtype=np.intp)
        mask = np.zeros((len(n), T), dtype=bool)
        for r, e in enumerate(encodings):
            ids[r, :n[r]] = e.ids
            types[r, :n[r]] = e.type_ids
            mask[r, :n[r]] = True
        types = types if self.model.config.type_vocab_size > 1 else None
        h = self.model(ids, mask, types).last_hidden_state
        return np.stack([np.concatenate([_pool(h[r], n[r], m) for m in self.pooling_modes])
                         for r in range(len(n))])


def _as_list(sentences):
    if isinstance(sentences, (bytes, bytearray)) or not hasattr(sentences, "__iter__"):
        raise ValueError(f"sentences: a str or a list of str is needed, got "
                         f"{type(sentences).__name__}")
    return list(sentences)


def _lowercase(tokenizer):
    """sentence-transformers' do_lower_case: a Lowercase normalizer in front."""
    from tokenizers import normalizers
    current = tokenizer.normalizer
    steps = [normalizers.Lowercase()] + ([current] if current is not None else [])
    tokenizer.normalizer = normalizers.Sequence(steps)


class _Progress:
    """``encoding: k/n sentences`` on stderr, redrawn in place on a terminal."""

    def __init__(self, total, stream=None):
        self.total, self.done = total, 0
        self.stream = stream = sys.stderr if stream is None else stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last = -1

    def update(self, k):
        self.done += k
        pct = 100 * self.done // max(self.total, 1)
        if self.tty:
            self.stream.write(f"\rencoding: {self.done}/{self.total} sentences ({pct}%)")
        elif pct // 10 != self.last // 10:  # a line per tenth when it is a file
            self.stream.write(f"encoding: {self.done}/{self.total} sentences ({pct}%)\n")
        self.last = pct
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
