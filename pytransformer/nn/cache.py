"""The key/value cache of incremental decoding."""
import numpy as np

__all__ = ["KVCache", "DecoderCache"]


def _checked_rows(rows, batch_size, capacity):
    """``rows`` of a cache's ``select`` as intp indices; ValueError if one is
    outside the current batch or there are more than the cache holds."""
    rows = np.asarray(rows, dtype=np.intp).reshape(-1)
    n = rows.size
    if n and (rows.min() < 0 or rows.max() >= batch_size):
        raise ValueError(f"select: rows must be in [0, {batch_size}), got "
                         f"{rows.min()}..{rows.max()}")
    if n > capacity:
        raise ValueError(f"select: {n} rows exceed the {capacity} allocated")
    return rows


def _move_rows(buffers, rows, t):
    """buffers[:][i, :, :t] = buffers[:][rows[i], :, :t] for i < len(rows),
    copying only the rows that move (the right side is read before it is
    written)."""
    moved = np.flatnonzero(rows != np.arange(rows.size))
    if moved.size and t:
        src = rows[moved]
        for a in buffers:
            a[moved, :, :t] = a[src, :, :t]


class KVCache:
    """What a decoder keeps between steps of incremental decoding.

    At step t the decoder sees one new target position per sequence; its
    self-attention needs the keys and values of positions 0..t-1, which do
    not change once computed, and its cross-attention needs the keys and
    values of the encoder output, which do not change at all.  Both are kept
    here, allocated once for ``max_len`` positions:

    - ``layer(i)`` gives decoder layer i's ``(self_k, self_v, cross_k,
      cross_v)``: self-attention keys and values (N, h, max_len, d_k), filled
      for positions < ``length``, and the encoder output projected by the
      layer's W^K, W^V (N0, h, S, d_k), one row per sequence the cache was
      made with: row r reads row ``memory_rows[r]`` (rows that select
      repeats or reorders share their source's, never copied);
    - ``self_keep``: (N, max_len) bool, False at padded target positions;
      ``target_padded``: whether any such position was decoded (if not, the
      self-attention needs no mask);
    - ``memory_keep``: (N, 1, 1, S) bool, False at padded source positions
      (None: no padding).

    :meth:`select` keeps, reorders or repeats sequences (rows) in place: beam
    search reorders hypotheses, and a sequence that has ended leaves the batch.
    """

    def __init__(self, batch_size, max_len, heads, cross, memory_keep=None, capacity=None):
        """batch_size sequences (the rows of cross and memory_keep); the
        target buffers are allocated once for ``capacity`` rows (default
        batch_size: beam search asks for more and repeats rows by select)."""
        self.batch_size = int(batch_size)
        self.capacity = self.batch_size if capacity is None else int(capacity)
        if self.capacity < self.batch_size:
            raise ValueError(f"capacity={capacity}: fewer rows than the batch's "
                             f"{self.batch_size}")
        self.max_len = int(max_len)
        self.length = 0
        n = self.capacity
        self._self_k = [np.zeros((n, h, self.max_len, d), np.float32) for h, d in heads]
        self._self_v = [np.zeros((n, h, self.max_len, d), np.float32) for h, d in heads]
        self._self_keep = np.ones((n, self.max_len), dtype=bool)
        self.target_padded = False
        self._cross_k = [k for k, _ in cross]
        self._cross_v = [v for _, v in cross]
        self._memory_rows = np.zeros(n, dtype=np.int64)
        self._memory_rows[:self.batch_size] = np.arange(self.batch_size)
        self._keep = None
        if memory_keep is not None:
            self._keep = np.ones((n,) + memory_keep.shape[1:], dtype=bool)
            self._keep[:self.batch_size] = memory_keep

    # Views of the rows in use: buffers are only ever shrunk in place.
    def layer(self, i):
        """Decoder layer i's (self_k, self_v, cross_k, cross_v) for the rows in use."""
        n = self.batch_size
        return self._self_k[i][:n], self._self_v[i][:n], self._cross_k[i], self._cross_v[i]

    def layers(self):
        """Every layer's (self_k, self_v, cross_k, cross_v) for the rows in
        use, as four lists (a whole stack's step takes them at once)."""
        n = self.batch_size
        return ([k[:n] for k in self._self_k], [v[:n] for v in self._self_v], self._cross_k,
                self._cross_v)

    @property
    def memory_rows(self):
        """(N,) int64: the row of cross_k / cross_v each row in use reads."""
        return self._memory_rows[:self.batch_size]

    @property
    def self_keep(self):
        return self._self_keep[:self.batch_size]

    @property
    def memory_keep(self):
        return None if self._keep is None else self._keep[:self.batch_size]

    def select(self, rows):
        """Keep rows ``rows`` (indices into the current batch, in their new
        order; repeats allowed up to the allocated batch size)."""
        rows = _checked_rows(rows, self.batch_size, self.capacity)
        n = rows.size
        t = self.length
        _move_rows(self._self_k + self._self_v, rows, t)
        self._self_keep[:n, :t] = self._self_keep[rows, :t]
        self.target_padded = not self._self_keep[:n, :t].all()
        self._memory_rows[:n] = self._memory_rows[rows]
        if self._keep is not None:
            self._keep[:n] = self._keep[rows]
        self.batch_size = n
        return self


class DecoderCache:
    """What a decoder-only model (GPT-2, Llama) keeps between decoding steps.

    Per layer the self-attention keys and values of every position so far,
    ``(N, kv_heads, max_len, d_head)`` (kv_heads may be fewer than the query
    heads: grouped-query attention shares each cached head among several
    query heads), allocated once for ``capacity`` rows and ``max_len``
    positions.  Each row holds its own sequence from slot 0 -- its prompt
    without padding, then the tokens decoded -- and ``lengths[r]`` says how
    many slots it fills: a row's next token goes to slot ``lengths[r]``,
    which is also its position (the position id of learned positions, the
    rotation of RoPE).  So a prompt gets the same keys at the same places,
    and the same bits, alone or beside longer ones.

    - ``layer(i)``: layer i's (k, v) for the rows in use;
    - ``lengths``: (N,) int64 slots filled per row;
    - ``keep()``: None when every row has the same length (no mask needed),
      else (N, max(lengths) + 1) bool, True at the slots a row's next query
      may attend (its own, and the new one);
    - :meth:`select` keeps, reorders or repeats rows in place (up to
      ``capacity``).
    """

    def __init__(self, capacity, max_len, heads):
        self.capacity = self.batch_size = int(capacity)
        self.max_len = int(max_len)
        n = self.capacity
        self._k = [np.zeros((n, h, self.max_len, d), np.float32) for h, d in heads]
        self._v = [np.zeros((n, h, self.max_len, d), np.float32) for h, d in heads]
        self._lengths = np.zeros(n, np.int64)

    @property
    def lengths(self):
        return self._lengths[:self.batch_size]

    @property
    def length(self):
        """The longest row's length (slots in use)."""
        return int(self.lengths.max()) if self.batch_size else 0

    def layer(self, i):
        n = self.batch_size
        return self._k[i][:n], self._v[i][:n]

    def layers(self):
        """Every layer's (k, v) for the rows in use, as two lists."""
        n = self.batch_size
        return [k[:n] for k in self._k], [v[:n] for v in self._v]

    def keep(self):
        lengths = self.lengths
        if lengths.size == 0 or lengths.min() == lengths.max():
            return None
        return np.arange(int(lengths.max()) + 1)[None, :] <= lengths[:, None]

    def fill(self, lengths):
        """Rows 0..len(lengths)-1 in use, row r holding lengths[r] slots (what a
        prefill writes: each prompt from slot 0)."""
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if lengths.size > self.capacity or (lengths.size and (
                lengths.min() < 0 or lengths.max() > self.max_len)):
            raise ValueError(f"fill: {lengths.size} rows of up to {lengths.max(initial=0)} "
                             f"slots for a cache of {self.capacity} rows x {self.max_len}")
        self.batch_size = lengths.size
        self._lengths[:lengths.size] = lengths
        return self

    def advance(self):
        """Each row holds one more slot (after a step wrote it)."""
        self._lengths[:self.batch_size] += 1

    def select(self, rows):
        """Keep rows ``rows`` (indices into the current batch, in their new
        order; repeats allowed up to the allocated capacity)."""
        rows = _checked_rows(rows, self.batch_size, self.capacity)
        n = rows.size
        t = self.length
        _move_rows(self._k + self._v, rows, t)
        self._lengths[:n] = self._lengths[rows]
        self.batch_size = n
        return self
