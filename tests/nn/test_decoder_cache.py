"""nn.DecoderCache, the decoder-only state: rows keep their own lengths,
select reorders / repeats / drops rows in place, and keep() masks only where
the rows' lengths differ; grouped-query shapes (fewer kv heads) are its own."""
import numpy as np
import pytest

from pytransformer.nn import DecoderCache


def filled(capacity=6, max_len=5, heads=((2, 3), (1, 4))):
    c = DecoderCache(capacity, max_len, list(heads))
    c.batch_size = 3
    rng = np.random.default_rng(0)
    for i in range(len(heads)):
        k, v = c.layer(i)
        k[...] = rng.standard_normal(k.shape)
        v[...] = rng.standard_normal(v.shape)
    c._lengths[:3] = [4, 2, 4]
    return c


def test_select_reorders_repeats_and_keeps_lengths():
    c = filled()
    before = [tuple(a.copy() for a in c.layer(i)) for i in range(2)]
    buffers = [id(a) for a in c._k + c._v]
    c.select([2, 0, 0, 1, 2])
    assert c.batch_size == 5 and list(c.lengths) == [4, 4, 4, 2, 4]
    for i in range(2):
        for got, was in zip(c.layer(i), before[i]):
            np.testing.assert_array_equal(got[:, :, :4], was[[2, 0, 0, 1, 2], :, :4])
    assert [id(a) for a in c._k + c._v] == buffers and c.layer(1)[0].shape[1] == 1
    with pytest.raises(ValueError):
        c.select([0] * 7)           # past the capacity
    with pytest.raises(ValueError):
        c.select([5])               # not a row in use


def test_keep_only_where_lengths_differ():
    c = filled()
    keep = c.keep()
    assert keep.shape == (3, 5)
    np.testing.assert_array_equal(keep, np.arange(5)[None] <= np.array([4, 2, 4])[:, None])
    c.select([0, 2])
    assert c.keep() is None
    c.advance()
    assert list(c.lengths) == [5, 5]
