"""The decoder layer's step as one C call (_kernels.DecoderLayerStep, used by
nn.TransformerDecoderLayer.forward_step) against the Python composition of
the same step, the reference it must equal bit for bit: logits step by step,
greedy and beam search, post-LN and pre-LN, each fused activation, padded
sources, every kernel path at 1 and 2 threads, every compute type; the
Python step where the C one does not apply (padded targets); the weights
followed when they change; bad buffers refused before the C call."""
import numpy as np
import pytest

from pytransformer import _kernels, nn
from pytransformer.models import Seq2SeqTransformer

CFG = dict(src_vocab_size=37, tgt_vocab_size=41, d_model=40, nhead=5, num_encoder_layers=2,
           num_decoder_layers=2, dim_feedforward=72, max_len=32)
BOS, EOS, PAD = 1, 2, 0


@pytest.fixture
def both(python_step):
    """fn() with the decoder layers' Python step, then their C step."""
    return lambda fn: python_step(nn.TransformerDecoderLayer, fn)


def sources(rng, B=3, S=9, padded=True):
    src = rng.integers(3, CFG["src_vocab_size"], size=(B, S))
    if padded:   # sequences of different lengths: the memory padding mask
        for b in range(1, B):
            src[b, S - 2 * b:] = PAD
    return src


def stepped_logits(model, src, tokens):
    """Logits of each step when the target is `tokens` (B, T), teacher forced."""
    state = model.start_decoding(src, tokens.shape[1])
    return np.stack([model.decode_step(tokens[:, t], state) for t in range(tokens.shape[1])])


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_logits_bit_identical(isa, threads, both, norm_first, activation):
    rng = np.random.default_rng(0)
    model = Seq2SeqTransformer(**CFG, activation=activation, norm_first=norm_first, seed=3)
    src = sources(rng)
    tokens = np.concatenate([np.full((3, 1), BOS), rng.integers(3, 41, size=(3, 11))], 1)
    ref, fused = both(lambda: stepped_logits(model, src, tokens))
    assert np.array_equal(ref, fused)
    assert np.isfinite(fused).all()
    assert all(layer.__dict__["_fused"][1] is not None     # the C step ran
               for layer in model.transformer.decoder.layers)


@pytest.mark.parametrize("compute_type", ["float32", "bfloat16", "int8"])
def test_greedy_and_beam_bit_identical(threads, both, compute_type):
    rng = np.random.default_rng(1)
    model = Seq2SeqTransformer(**CFG, seed=5).to(compute_type)
    src = sources(rng, B=4)
    for kw in (dict(method="greedy"), dict(method="beam", beam_size=3, return_scores=True)):
        ref, fused = both(lambda: model.generate(src, 12, BOS, EOS, PAD, **kw))
        if kw["method"] == "beam":
            assert np.array_equal(ref[0], fused[0]) and np.array_equal(ref[1], fused[1])
        else:
            assert np.array_equal(ref, fused)
        assert model.transformer.decoder.layers[1].__dict__["_fused"][1] is not None


def test_silu_layers_bit_identical(both):
    """Marian's activation (SiLU), on a decoder built directly."""
    rng = np.random.default_rng(2)
    layer = nn.TransformerDecoderLayer(16, 2, 24, activation="silu", batch_first=True,
                                       rng=np.random.default_rng(0))
    dec = nn.TransformerDecoder(layer, 2, norm=nn.LayerNorm(16))
    memory = rng.standard_normal((2, 5, 16)).astype(np.float32)
    xs = rng.standard_normal((6, 2, 16)).astype(np.float32)

    def run():
        cache = dec.init_cache(memory, max_len=6)
        return np.stack([dec.forward_step(x, cache) for x in xs])
    ref, fused = both(run)
    assert np.array_equal(ref, fused)
    assert dec.layers[0]._step_kernel() is not None


def test_padded_targets_take_the_python_step(both):
    """A target padding mask is the Python step's: the results still agree."""
    rng = np.random.default_rng(3)
    layer = nn.TransformerDecoderLayer(16, 2, 24, batch_first=True, rng=np.random.default_rng(0))
    dec = nn.TransformerDecoder(layer, 1)
    memory = rng.standard_normal((2, 4, 16)).astype(np.float32)
    xs = rng.standard_normal((4, 2, 16)).astype(np.float32)

    def run():
        cache = dec.init_cache(memory, max_len=4)
        return np.stack([dec.forward_step(x, cache, tgt_key_padding_mask=[t == 1, False])
                         for t, x in enumerate(xs)])
    ref, fused = both(run)
    assert np.array_equal(ref, fused)


def test_follows_new_weights(both):
    """A step made for float32 weights is not reused once they change."""
    rng = np.random.default_rng(4)
    model = Seq2SeqTransformer(**CFG, seed=7)
    src = sources(rng, padded=False)
    tokens = np.full((3, 4), BOS)
    before = stepped_logits(model, src, tokens)
    model.to("bfloat16")
    ref, fused = both(lambda: stepped_logits(model, src, tokens))
    assert np.array_equal(ref, fused) and not np.array_equal(before, fused)
    layer = model.transformer.decoder.layers[0]
    layer.linear2.bias = layer.linear2.bias + np.float32(1.0)
    ref, fused = both(lambda: stepped_logits(model, src, tokens))
    assert np.array_equal(ref, fused)


def test_callable_activation_takes_the_python_step():
    layer = nn.TransformerDecoderLayer(16, 2, 24, activation=np.tanh, batch_first=True,
                                       rng=np.random.default_rng(0))
    assert layer._step_kernel() is None


def _step_and_args():
    layer = nn.TransformerDecoderLayer(16, 2, 24, batch_first=True, rng=np.random.default_rng(0))
    dec = nn.TransformerDecoder(layer, 1)
    memory = np.ones((2, 3, 16), np.float32)
    cache = dec.init_cache(memory, max_len=4)
    k, v, mk, mv = cache.layer(0)
    x = np.ones((2, 16), np.float32)
    return layer._step_kernel(), [x, k, v, 0, mk, mv, cache.memory_rows, None]


@pytest.mark.parametrize("i, bad", [
    (0, np.ones((2, 15), np.float32)),              # x of the wrong width
    (0, np.ones((2, 16))),                          # float64
    (1, np.ones((2, 2, 4, 9), np.float32)),         # keys of the wrong head size
    (2, np.ones((3, 2, 4, 8), np.float32)),         # values for other rows
    (3, 4),                                         # past the cache
    (3, -1),
    (4, np.ones((2, 2, 3, 8), np.float32)[:, :, ::2]),   # not contiguous
    (6, np.array([0, 2])),                          # not a row of the encoder output
    (6, np.array([0, 1], np.int32)),
    (7, np.ones((2, 1, 1, 2), bool)),               # a mask of the wrong length
])
def test_bad_buffers_refused(i, bad):
    step, args = _step_and_args()
    step.step(*args)
    args[i] = bad
    with pytest.raises(ValueError):
        step.step(*args)


def test_step_types():
    assert set(_kernels.STEP_MATRIX_TYPES) == {_kernels.PackedMatrix, _kernels.PackedMatrixBF16,
                                               _kernels.PackedMatrixI8, _kernels.QuantizedMatrix}


def test_follows_the_kernel_path_step_by_step(both):
    """The kernel path switched between steps: each C step binds the weights
    as the path of its own call takes them, as the Python step does."""
    isas = _kernels.available_isas()
    before = _kernels.get_isa()
    model = Seq2SeqTransformer(**CFG, seed=9)
    rng = np.random.default_rng(5)
    src, tokens = sources(rng), np.full((3, 6), BOS)

    def run():
        state = model.start_decoding(src, tokens.shape[1])
        out = []
        try:
            for t in range(tokens.shape[1]):
                _kernels.set_isa(isas[t % len(isas)])
                out.append(model.decode_step(tokens[:, t], state))
        finally:
            _kernels.set_isa(before)
        return np.stack(out)
    ref, fused = both(run)
    assert np.array_equal(ref, fused)
