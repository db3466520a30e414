"""The decoder layer's step as one C call (_kernels.DecoderLayerStep, used by
nn.TransformerDecoderLayer.forward_step), and the whole stack's step --
layers, final norm, generator -- as one (_kernels.StackStep, used by
nn.TransformerDecoder.forward_step), against the Python composition of
the same step, the reference both must equal bit for bit: logits step by step,
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
    assert model.transformer.decoder.__dict__["_stack"][1] is not None   # as one stack


def test_layer_by_layer_c_steps_bit_identical(threads, both):
    """Each layer's C step called on its own (TransformerDecoderLayer.forward_step,
    as a stack the C step does not take would call it)."""
    rng = np.random.default_rng(6)
    model = Seq2SeqTransformer(**CFG, norm_first=True, seed=4)
    dec = model.transformer.decoder
    src = sources(rng)
    xs = rng.standard_normal((5, 3, CFG["d_model"])).astype(np.float32)

    def run():
        cache = dec.init_cache(model.encode(src), src == PAD, max_len=5)
        out = []
        for x in xs:
            for i, layer in enumerate(dec.layers):
                x = layer.forward_step(x, cache, i)
            cache.length += 1
            out.append(x)
        return np.stack(out)
    ref, fused = both(run)
    assert np.array_equal(ref, fused)
    assert dec.layers[0].__dict__["_fused"][1] is not None


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


def _stack_and_args():
    model = Seq2SeqTransformer(**CFG, seed=2)
    src = sources(np.random.default_rng(8))
    state = model.start_decoding(src, 4)
    model.decode_step(np.full(3, BOS), state)
    stack = model.transformer.decoder.__dict__["_stack"][1]
    k, v, mk, mv = state.layers()
    x = np.ones((3, CFG["d_model"]), np.float32)
    return stack, [x, k, v, state.length, None, mk, mv, state.memory_rows, state.memory_keep]


@pytest.mark.parametrize("i, bad", [
    (0, np.ones((3, 41), np.float32)),                   # x of the wrong width
    (1, []),                                             # no cache per layer
    (2, [np.ones((3, 5, 3, 8), np.float32)] * 2),        # values unlike the keys
    (3, 7),                                              # past the cache
    (5, None),                                           # no encoder keys for the cross attention
    (6, [np.ones((3, 5, 7, 8), np.float32)] * 2),        # encoder values of another length
    (7, np.array([0, 1, 3])),                            # not a row of the encoder output
])
def test_stack_refuses_bad_inputs(i, bad):
    stack, args = _stack_and_args()
    assert stack.step(*args).shape == (3, CFG["tgt_vocab_size"])
    args[i] = bad
    with pytest.raises(ValueError):
        stack.step(*args)


def test_stack_refuses_mixed_layers():
    model = Seq2SeqTransformer(**CFG, seed=2)
    step = model.transformer.decoder.layers[0]._step_kernel()
    other = nn.TransformerDecoderLayer(16, 2, 24, batch_first=True,
                                       rng=np.random.default_rng(0))._step_kernel()
    with pytest.raises(ValueError):
        _kernels.StackStep([step, other])                # two shapes
    with pytest.raises(TypeError):
        _kernels.StackStep([step, "layer"])
    with pytest.raises(ValueError):
        _kernels.StackStep([])
    with pytest.raises(ValueError):
        _kernels.StackStep([step], ("batch", None, None, 1e-5))


def test_the_stack_is_found_again_while_nothing_changes(both):
    """A decoding step sets no module attribute (module.GENERATION stays): the
    stack step made at the first step serves every later one; a change to
    any module (here the final norm's eps) makes a new one that follows it."""
    from pytransformer.nn.module import GENERATION
    model = Seq2SeqTransformer(**CFG, seed=11)
    dec = model.transformer.decoder
    dec.norm = nn.LayerNorm(CFG["d_model"])
    src = sources(np.random.default_rng(9))
    state = model.start_decoding(src, 6)
    model.decode_step(np.full(3, BOS), state)
    stack, generation = dec.__dict__["_stack"][1], GENERATION[0]
    for t in range(3):
        model.decode_step(np.full(3, BOS + t), state)
        assert dec.__dict__["_stack"][1] is stack and GENERATION[0] == generation
    dec.norm.eps = 0.5
    tokens = np.full((3, 4), BOS)
    ref, fused = both(lambda: stepped_logits(model, src, tokens))
    assert np.array_equal(ref, fused)
    assert dec.__dict__["_stack"][1] is not stack
