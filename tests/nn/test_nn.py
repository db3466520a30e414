"""pytransformer.nn against torch.nn: the same weights, the same inputs.

Every module is checked both ways: a torch module with torch's random init
copied with ``from_torch``, and a pytransformer module's ``state_dict``
loaded into torch.  Outputs are compared with the whole-model tolerance of
conftest.py.  Where torch gives NaN (a query with no key to attend to)
pytransformer gives finite values; those rows are left out of the comparison
and checked to be finite (attention weights: zero).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pytransformer import nn  # noqa: E402
from conftest import assert_model_close  # noqa: E402

tnn = torch.nn

# torch's notes about its own fast paths (nested tensors, mask dtypes) are not ours.
pytestmark = [pytest.mark.filterwarnings("ignore:.*nested tensor:UserWarning"),
              pytest.mark.filterwarnings("ignore:enable_nested_tensor:UserWarning"),
              pytest.mark.filterwarnings("ignore:.*mismatched:UserWarning")]


def T(x):
    return None if x is None else torch.from_numpy(np.array(x))


def run_torch(module, *args, **kwargs):
    with torch.no_grad():
        return module.eval()(*[T(a) if isinstance(a, np.ndarray) else a for a in args],
                             **{k: T(v) if isinstance(v, np.ndarray) else v
                                for k, v in kwargs.items()})


def to_torch_weights(ours, theirs):
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                            ours.state_dict().items()})
    return theirs.eval()


def assert_close_nan(actual, expected, what=""):
    """Model tolerance where torch is a number; finite where torch is NaN."""
    actual = np.asarray(actual)
    expected = np.asarray(expected.numpy() if hasattr(expected, "numpy") else expected)
    assert actual.shape == expected.shape, f"{what}: {actual.shape} != {expected.shape}"
    nan = np.isnan(expected)
    assert np.isfinite(actual).all(), f"{what}: pytransformer gave non-finite values"
    assert_model_close(np.where(nan, 0, actual), np.where(nan, 0, expected), what)


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------ basic layers --

@pytest.mark.parametrize("bias", [True, False])
def test_linear(rng, bias):
    torch.manual_seed(0)
    t = tnn.Linear(24, 40, bias=bias)
    ours = nn.Linear.from_torch(t)
    x = randn(rng, 3, 5, 24)
    assert_model_close(ours(x), run_torch(t, x).numpy(), "Linear")
    mine = nn.Linear(24, 40, bias=bias)
    assert_model_close(mine(x), run_torch(to_torch_weights(mine, tnn.Linear(24, 40, bias)),
                                          x).numpy(), "Linear -> torch")


@pytest.mark.parametrize("bias,eps", [(True, 1e-5), (False, 1e-3)])
def test_layer_norm(rng, bias, eps):
    t = tnn.LayerNorm(32, eps=eps, bias=bias)
    with torch.no_grad():
        t.weight.normal_()
        if bias:
            t.bias.normal_()
    ours = nn.LayerNorm.from_torch(t)
    assert ours.eps == eps and (ours.bias is None) == (not bias)
    x = randn(rng, 4, 7, 32) * 3 + 1
    assert_model_close(ours(x), run_torch(t, x).numpy(), "LayerNorm")


def test_embedding(rng):
    t = tnn.Embedding(11, 8)
    ours = nn.Embedding.from_torch(t)
    ids = rng.integers(0, 11, (3, 5))
    np.testing.assert_array_equal(ours(ids), run_torch(t, torch.from_numpy(ids)).numpy())
    with pytest.raises(IndexError, match="input"):
        ours(np.array([[0, 11]]))


# ---------------------------------------------------- multi-head attention --

def mha_inputs(rng, batch_first, N, L, S, E, kdim, vdim, batched=True):
    def seq(n, d):
        if not batched:
            return randn(rng, n, d)
        return randn(rng, N, n, d) if batch_first else randn(rng, n, N, d)
    return seq(L, E), seq(S, kdim), seq(S, vdim)


def masks(kind, rng, N, h, L, S):
    """(attn_mask, key_padding_mask, is_causal) in torch's convention."""
    ragged = ragged_kpm(N, S)
    causal_bool = np.triu(np.ones((L, S), dtype=bool), 1)
    bool2 = rng.random((L, S)) < 0.3
    bool2[:, 0] = False  # every query keeps a key
    float2 = randn(rng, L, S)
    bool3 = rng.random((N * h, L, S)) < 0.3
    bool3[..., 0] = False
    float_kpm = np.where(ragged, -np.inf, randn(rng, N, S)).astype(np.float32)
    return {
        "none": (None, None, False),
        "attn_bool": (bool2, None, False),
        "attn_float": (float2, None, False),
        "attn_bool_3d": (bool3, None, False),
        "attn_float_3d": (randn(rng, N * h, L, S), None, False),
        "kpm_bool": (None, ragged, False),
        "kpm_float": (None, float_kpm, False),
        "attn_bool+kpm_bool": (bool2, ragged, False),
        "attn_float+kpm_bool": (float2, ragged, False),
        "attn_float+kpm_float": (float2, float_kpm, False),
        "attn_bool+kpm_float": (bool2, float_kpm, False),
        "causal": (causal_bool, None, True),
        "causal_float": (np.where(causal_bool, -np.inf, 0).astype(np.float32), None, True),
        "causal+kpm": (causal_bool, ragged, True),
    }[kind]


MASK_KINDS = ["none", "attn_bool", "attn_float", "attn_bool_3d", "attn_float_3d", "kpm_bool",
              "kpm_float", "attn_bool+kpm_bool", "attn_float+kpm_bool",
              "attn_float+kpm_float", "attn_bool+kpm_float", "causal", "causal_float", "causal+kpm"]


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("need_weights,average", [(False, True), (True, True), (True, False)])
def test_mha_masks(rng, kind, need_weights, average):
    N, L, E, h = 3, 6, 32, 4
    torch.manual_seed(1)
    t = tnn.MultiheadAttention(E, h, batch_first=True).eval()
    ours = nn.MultiheadAttention.from_torch(t)
    x = randn(rng, N, L, E)
    attn_mask, kpm, is_causal = masks(kind, rng, N, h, L, L)
    kw = dict(attn_mask=attn_mask, key_padding_mask=kpm, need_weights=need_weights,
              average_attn_weights=average, is_causal=is_causal)
    out, w = ours(x, x, x, **kw)
    xt = T(x)
    with torch.no_grad():
        rout, rw = t(xt, xt, xt, **{k: T(v) if isinstance(v, np.ndarray) else v
                                    for k, v in kw.items()})
    assert_close_nan(out, rout, f"MHA output, {kind}")
    if need_weights:
        assert_close_nan(w, rw, f"MHA weights, {kind}")
    else:
        assert w is None and rw is None


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kvdim", [(None, None), (16, 24)])
@pytest.mark.parametrize("N", [1, 2])
def test_mha_cross_attention(rng, batch_first, bias, kvdim, N):
    E, h, L, S = 24, 3, 5, 7
    torch.manual_seed(2)
    t = tnn.MultiheadAttention(E, h, bias=bias, kdim=kvdim[0], vdim=kvdim[1],
                               batch_first=batch_first).eval()
    kdim, vdim = kvdim[0] or E, kvdim[1] or E
    q, k, v = mha_inputs(rng, batch_first, N, L, S, E, kdim, vdim)
    if kvdim[0] is None:
        v = k  # memory: K and V from the same array (fused projection)
    ragged = np.zeros((N, S), dtype=bool)
    ragged[-1, 4:] = True
    for ours in (nn.MultiheadAttention.from_torch(t),):
        for need_weights in (True, False):
            out, w = ours(q, k, v, key_padding_mask=ragged, need_weights=need_weights)
            rout, rw = run_torch(t, q, k, v, key_padding_mask=ragged,
                                 need_weights=need_weights)
            assert_model_close(out, rout.numpy(), "cross-attention")
            if need_weights:
                assert_model_close(w, rw.numpy(), "cross-attention weights")
    mine = nn.MultiheadAttention(E, h, bias=bias, kdim=kvdim[0], vdim=kvdim[1],
                                 batch_first=batch_first)
    twin = to_torch_weights(mine, tnn.MultiheadAttention(E, h, bias=bias, kdim=kvdim[0],
                                                         vdim=kvdim[1],
                                                         batch_first=batch_first))
    assert_model_close(mine(q, k, v)[0], run_torch(twin, q, k, v)[0].numpy(),
                       "MHA -> torch")


def test_mha_distinct_key_and_value(rng):
    """in_proj_weight with key and value different arrays: three projections."""
    t = tnn.MultiheadAttention(16, 4).eval()
    ours = nn.MultiheadAttention.from_torch(t)
    q, k, v = randn(rng, 3, 2, 16), randn(rng, 5, 2, 16), randn(rng, 5, 2, 16)
    for args in ((q, k, v), (q, q, randn(rng, 3, 2, 16)), (k, k, v)):
        out, w = ours(*args)
        rout, rw = run_torch(t, *args)
        assert_model_close(out, rout.numpy(), "distinct K, V")
        assert_model_close(w, rw.numpy(), "distinct K, V weights")


def test_mha_unbatched(rng):
    E, h, L, S = 16, 2, 4, 6
    t = tnn.MultiheadAttention(E, h).eval()
    ours = nn.MultiheadAttention.from_torch(t)
    q, k = randn(rng, L, E), randn(rng, S, E)
    kpm = np.array([False] * 4 + [True] * 2)
    am = rng.random((h, L, S)) < 0.2
    for kw in (dict(), dict(key_padding_mask=kpm), dict(attn_mask=am),
               dict(key_padding_mask=kpm, average_attn_weights=False)):
        out, w = ours(q, k, k, **kw)
        rout, rw = run_torch(t, q, k, k, **kw)
        assert_model_close(out, rout.numpy(), f"unbatched {list(kw)}")
        assert_model_close(w, rw.numpy(), f"unbatched weights {list(kw)}")


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_fully_padded_rows(rng, need_weights):
    """A query with nothing to attend to: torch gives NaN (or zeros), we give
    the attention output zeros, so the module output is the out_proj bias."""
    N, L, E, h = 3, 5, 16, 2
    t = tnn.MultiheadAttention(E, h, batch_first=True).eval()
    with torch.no_grad():
        t.out_proj.bias.normal_()
    ours = nn.MultiheadAttention.from_torch(t)
    x = randn(rng, N, L, E)
    kpm = np.zeros((N, L), dtype=bool)
    kpm[1] = True          # a sequence made only of padding
    kpm[2, 3:] = True      # ragged
    out, w = ours(x, x, x, key_padding_mask=kpm, need_weights=need_weights)
    rout, rw = run_torch(t, x, x, x, key_padding_mask=kpm, need_weights=need_weights)
    assert_close_nan(out, rout, "fully padded")
    np.testing.assert_array_equal(out[1], np.broadcast_to(ours.out_proj.bias, (L, E)))
    if need_weights:
        assert_close_nan(w, rw, "fully padded weights")
        assert not w[1].any()


def test_mha_unsupported():
    with pytest.raises(ValueError, match="add_bias_kv"):
        nn.MultiheadAttention(8, 2, add_bias_kv=True)
    with pytest.raises(ValueError, match="add_zero_attn"):
        nn.MultiheadAttention(8, 2, add_zero_attn=True)
    with pytest.raises(ValueError, match="divisible"):
        nn.MultiheadAttention(10, 3)


def test_mha_bad_masks(rng):
    m = nn.MultiheadAttention(8, 2, batch_first=True)
    x = randn(rng, 2, 3, 8)
    with pytest.raises(ValueError, match="key_padding_mask"):
        m(x, x, x, key_padding_mask=np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match="attn_mask"):
        m(x, x, x, attn_mask=np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="attn_mask"):
        m(x, x, x, attn_mask=np.zeros((3, 3), np.int32))


# ------------------------------------------------------ transformer layers --

def random_config(seed):
    r = np.random.default_rng(seed)
    nhead = int(r.choice([1, 2, 4]))
    return dict(d_model=nhead * int(r.choice([4, 8, 12])), nhead=nhead,
                dim_feedforward=int(r.choice([16, 40, 64])),
                norm_first=bool(r.integers(2)), activation=str(r.choice(["relu", "gelu"])),
                batch_first=bool(r.integers(2)), bias=bool(r.integers(2)),
                layer_norm_eps=float(r.choice([1e-5, 1e-6, 1e-3])))


def seqs(rng, cfg, N, L):
    d = cfg["d_model"]
    return randn(rng, N, L, d) if cfg["batch_first"] else randn(rng, L, N, d)


def ragged_kpm(N, S):
    kpm = np.zeros((N, S), dtype=bool)
    for n in range(1, N):
        kpm[n, max(1, S - 2 * n):] = True
    return kpm


@pytest.mark.parametrize("seed", range(6))
def test_encoder_layer(rng, seed):
    cfg = random_config(seed)
    torch.manual_seed(seed)
    t = tnn.TransformerEncoderLayer(dropout=0.0, **cfg).eval()
    ours = nn.TransformerEncoderLayer.from_torch(t)
    N, S = 3, 7
    x = seqs(rng, cfg, N, S)
    kpm = ragged_kpm(N, S)
    causal = nn.Transformer.generate_square_subsequent_mask(S)
    for kw in (dict(), dict(src_key_padding_mask=kpm), dict(src_mask=causal, is_causal=True),
               dict(src_mask=causal, src_key_padding_mask=kpm)):
        assert_model_close(ours(x, **kw), run_torch(t, x, **kw).numpy(),
                           f"encoder layer {cfg} {list(kw)}")
    mine = nn.TransformerEncoderLayer(**cfg)
    twin = to_torch_weights(mine, tnn.TransformerEncoderLayer(dropout=0.0, **cfg))
    assert_model_close(mine(x, src_key_padding_mask=kpm),
                       run_torch(twin, x, src_key_padding_mask=kpm).numpy(),
                       "encoder layer -> torch")


@pytest.mark.parametrize("seed", range(6))
def test_decoder_layer(rng, seed):
    cfg = random_config(100 + seed)
    torch.manual_seed(seed)
    t = tnn.TransformerDecoderLayer(dropout=0.0, **cfg).eval()
    ours = nn.TransformerDecoderLayer.from_torch(t)
    N, L, S = 2, 5, 8
    y, mem = seqs(rng, cfg, N, L), seqs(rng, cfg, N, S)
    tkpm, mkpm = ragged_kpm(N, L), ragged_kpm(N, S)
    causal = nn.Transformer.generate_square_subsequent_mask(L)
    mm = rng.random((L, S)) < 0.3
    mm[:, 0] = False
    for kw in (dict(), dict(tgt_mask=causal, tgt_is_causal=True),
               dict(tgt_mask=causal, tgt_key_padding_mask=tkpm, memory_key_padding_mask=mkpm),
               dict(memory_mask=mm, tgt_mask=causal)):
        assert_model_close(ours(y, mem, **kw), run_torch(t, y, mem, **kw).numpy(),
                           f"decoder layer {cfg} {list(kw)}")
    mine = nn.TransformerDecoderLayer(**cfg)
    twin = to_torch_weights(mine, tnn.TransformerDecoderLayer(dropout=0.0, **cfg))
    assert_model_close(mine(y, mem, tgt_mask=causal),
                       run_torch(twin, y, mem, tgt_mask=causal).numpy(),
                       "decoder layer -> torch")


def torch_transformer(cfg, layers):
    return tnn.Transformer(num_encoder_layers=layers[0], num_decoder_layers=layers[1],
                           dropout=0.0, **cfg).eval()


@pytest.mark.parametrize("seed", range(4))
def test_transformer(rng, seed):
    cfg = random_config(200 + seed)
    layers = (1 + seed % 3, 1 + (seed + 1) % 3)
    torch.manual_seed(seed)
    t = torch_transformer(cfg, layers)
    ours = nn.Transformer.from_torch(t)
    N, S, L = (1, 2, 3, 4)[seed], 9, 6
    src, tgt = seqs(rng, cfg, N, S), seqs(rng, cfg, N, L)
    skpm, tkpm = ragged_kpm(N, S), ragged_kpm(N, L)
    causal = nn.Transformer.generate_square_subsequent_mask(L)
    kw = dict(tgt_mask=causal, src_key_padding_mask=skpm, tgt_key_padding_mask=tkpm,
              memory_key_padding_mask=skpm)
    assert_model_close(ours(src, tgt, **kw), run_torch(t, src, tgt, **kw).numpy(),
                       f"Transformer {cfg}")
    assert_model_close(ours(src, tgt), run_torch(t, src, tgt).numpy(), "no masks")
    # pytransformer's random init -> torch
    mine = nn.Transformer(num_encoder_layers=layers[0], num_decoder_layers=layers[1], **cfg)
    twin = to_torch_weights(mine, torch_transformer(cfg, layers))
    assert_model_close(mine(src, tgt, **kw), run_torch(twin, src, tgt, **kw).numpy(),
                       "Transformer -> torch")


def test_encoder_decoder_stacks(rng, isa):
    cfg = dict(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    torch.manual_seed(5)
    te = tnn.TransformerEncoder(tnn.TransformerEncoderLayer(dropout=0.0, **cfg), 2,
                                tnn.LayerNorm(16), enable_nested_tensor=False).eval()
    td = tnn.TransformerDecoder(tnn.TransformerDecoderLayer(dropout=0.0, **cfg), 2,
                                None).eval()
    enc, dec = nn.TransformerEncoder.from_torch(te), nn.TransformerDecoder.from_torch(td)
    assert dec.norm is None and enc.norm is not None
    src, tgt = randn(rng, 2, 6, 16), randn(rng, 2, 4, 16)
    kpm = ragged_kpm(2, 6)
    mem = enc(src, src_key_padding_mask=kpm)
    assert_model_close(mem, run_torch(te, src, src_key_padding_mask=kpm).numpy(), "encoder")
    causal = nn.Transformer.generate_square_subsequent_mask(4)
    assert_model_close(dec(tgt, mem, tgt_mask=causal, memory_key_padding_mask=kpm),
                       run_torch(td, tgt, mem, tgt_mask=causal,
                                 memory_key_padding_mask=kpm).numpy(), "decoder")


def test_sequence_length_one(rng):
    cfg = dict(d_model=16, nhead=4, dim_feedforward=32, batch_first=True)
    t = torch_transformer(cfg, (2, 2))
    ours = nn.Transformer.from_torch(t)
    for N in (1, 3):
        src, tgt = randn(rng, N, 1, 16), randn(rng, N, 1, 16)
        causal = nn.Transformer.generate_square_subsequent_mask(1)
        assert_model_close(ours(src, tgt, tgt_mask=causal),
                           run_torch(t, src, tgt, tgt_mask=causal).numpy(), f"L=1 N={N}")


def test_long_sequence(rng):
    """512+ positions (small d_model): an encoder and a causal decoder."""
    cfg = dict(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    torch.manual_seed(7)
    t = torch_transformer(cfg, (1, 1))
    ours = nn.Transformer.from_torch(t)
    S, L = 530, 520
    src, tgt = randn(rng, 1, S, 16), randn(rng, 1, L, 16)
    skpm = np.zeros((1, S), bool)
    skpm[0, 515:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(L)
    kw = dict(tgt_mask=causal, src_key_padding_mask=skpm, memory_key_padding_mask=skpm,
              tgt_is_causal=True)
    assert_model_close(ours(src, tgt, **kw), run_torch(t, src, tgt, **kw).numpy(), "long")


def test_unbatched_transformer(rng):
    cfg = dict(d_model=16, nhead=2, dim_feedforward=32)
    t = torch_transformer(cfg, (1, 1))
    ours = nn.Transformer.from_torch(t)
    src, tgt = randn(rng, 5, 16), randn(rng, 3, 16)
    causal = nn.Transformer.generate_square_subsequent_mask(3)
    assert_model_close(ours(src, tgt, tgt_mask=causal),
                       run_torch(t, src, tgt, tgt_mask=causal).numpy(), "unbatched")


def test_callable_activation(rng):
    """A numpy callable is applied between the two feed-forward GEMMs."""
    cfg = dict(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    t = tnn.TransformerEncoderLayer(dropout=0.0, activation=torch.tanh, **cfg).eval()
    ours = nn.TransformerEncoderLayer(activation=np.tanh, **cfg)
    t.load_state_dict({k: T(v) for k, v in ours.state_dict().items()})
    x = randn(rng, 2, 5, 16)
    assert_model_close(ours(x), run_torch(t, x).numpy(), "tanh activation")
    with pytest.raises(ValueError, match="activation"):
        nn.TransformerEncoderLayer(16, 2, activation="mish")


@pytest.mark.parametrize("name", ["silu", "swish"])
def test_silu_activation_by_name(rng, name):
    """'silu' / 'swish' (a pytransformer extension) is fused into the first
    feed-forward GEMM and computes torch's F.silu; the oracle maps it back."""
    from pytransformer import oracle
    cfg = dict(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    t = tnn.TransformerEncoderLayer(dropout=0.0, activation=torch.nn.functional.silu, **cfg).eval()
    ours = nn.TransformerEncoderLayer(activation=name, **cfg)
    assert ours._act_name == "silu" and ours._act_fn is None
    t.load_state_dict({k: T(v) for k, v in ours.state_dict().items()})
    x = randn(rng, 2, 5, 16)
    assert_model_close(ours(x), run_torch(t, x).numpy(), name)
    assert_model_close(ours(x), run_torch(oracle.to_torch(ours), x).numpy(), "oracle " + name)


def test_generate_square_subsequent_mask():
    for sz in (1, 5):
        np.testing.assert_array_equal(nn.Transformer.generate_square_subsequent_mask(sz),
                                      tnn.Transformer.generate_square_subsequent_mask(sz)
                                      .numpy())


def test_is_causal_detected(rng):
    """A causal mask without the hint is recognised, as torch does."""
    from pytransformer.nn.attention import _detect_is_causal_mask
    m = nn.Transformer.generate_square_subsequent_mask(4)
    assert _detect_is_causal_mask(m)
    assert _detect_is_causal_mask(np.triu(np.ones((4, 4), bool), 1))
    assert not _detect_is_causal_mask(np.zeros((4, 4), bool))
    assert not _detect_is_causal_mask(m, is_causal=False)


# ------------------------------------------------------------- state dicts --

def test_state_dict_keys_match_torch():
    cfg = dict(d_model=16, nhead=2, dim_feedforward=32)
    for bias in (True, False):
        t = torch_transformer(dict(cfg, bias=bias), (2, 3))
        ours = nn.Transformer(num_encoder_layers=2, num_decoder_layers=3, bias=bias, **cfg)
        tsd, osd = t.state_dict(), ours.state_dict()
        assert list(tsd) == list(osd)
        assert all(tuple(tsd[k].shape) == osd[k].shape for k in tsd)
        assert all(v.dtype == np.float32 for v in osd.values())
    t = tnn.MultiheadAttention(16, 2, kdim=8, vdim=12)
    ours = nn.MultiheadAttention(16, 2, kdim=8, vdim=12)
    assert sorted(t.state_dict()) == sorted(ours.state_dict())


def test_state_dict_round_trip(rng):
    cfg = dict(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    a = nn.Transformer(num_encoder_layers=2, num_decoder_layers=2, **cfg)
    b = nn.Transformer(num_encoder_layers=2, num_decoder_layers=2, **cfg)
    src, tgt = randn(rng, 2, 5, 16), randn(rng, 2, 4, 16)
    assert not np.array_equal(a(src, tgt), b(src, tgt))
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(src, tgt), b(src, tgt))
    # torch -> ours -> torch
    t = torch_transformer(cfg, (2, 2))
    back = to_torch_weights(nn.Transformer.from_torch(t), torch_transformer(cfg, (2, 2)))
    for k, v in t.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    # parameters are read-only: only load_state_dict changes them (and repacks)
    with pytest.raises(ValueError):
        a.encoder.layers[0].linear1.weight[0, 0] = 1.0


def test_load_state_dict_names_every_bad_key():
    m = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32)
    sd = dict(m.state_dict())
    del sd["linear1.bias"]
    del sd["norm2.weight"]
    sd["linear3.weight"] = np.zeros((2, 2), np.float32)
    sd["self_attn.in_proj_weight"] = np.zeros((47, 16), np.float32)
    sd["linear2.weight"] = np.zeros((16, 32), np.int64)
    with pytest.raises(ValueError) as e:
        m.load_state_dict(sd)
    msg = str(e.value)
    for key in ("linear1.bias", "norm2.weight", "linear3.weight", "self_attn.in_proj_weight",
                "(47, 16)", "linear2.weight"):
        assert key in msg, (key, msg)
    before = m.linear1.bias.copy()
    # nothing was loaded
    np.testing.assert_array_equal(m.linear1.bias, before)
    missing, unexpected = m.load_state_dict({"linear3.weight": np.zeros(2)}, strict=False)
    assert unexpected == ["linear3.weight"] and "linear1.weight" in missing


def test_load_state_dict_repacks(rng):
    lin = nn.Linear(8, 4)
    x = randn(rng, 3, 8)
    w, b = randn(rng, 4, 8), randn(rng, 4)
    lin.load_state_dict({"weight": w, "bias": b})
    assert_model_close(lin(x), x @ w.T + b, "repacked Linear")
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    y = randn(rng, 2, 3, 8)
    mha(y, y, y)  # packs the fused projection
    t = tnn.MultiheadAttention(8, 2, batch_first=True).eval()
    mha.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    assert_model_close(mha(y, y, y)[0], run_torch(t, y, y, y)[0].numpy(), "repacked MHA")


def test_custom_encoder_rejected():
    with pytest.raises(ValueError, match="custom_encoder"):
        nn.Transformer(16, 2, custom_encoder=object())


@pytest.mark.parametrize("act", ["relu", "gelu", "gelu-module", "gelu-tanh-module",
                                 "silu-function", "silu-module"])
def test_from_torch_keeps_each_activation(act):
    """torch's GELU(approximate='tanh') is computed as such, and nn.Transformer
    mirrors each stack's own activation (torch gives its decoder ReLU when
    the activation is a GELU module)."""
    a = {"relu": "relu", "gelu": "gelu", "gelu-module": torch.nn.GELU(),
         "gelu-tanh-module": torch.nn.GELU(approximate="tanh"),
         "silu-function": torch.nn.functional.silu, "silu-module": torch.nn.SiLU()}[act]
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, activation=a).eval()
    x = 3 * np.random.default_rng(0).standard_normal((5, 2, 16)).astype(np.float32)
    with torch.no_grad():
        assert_model_close(nn.TransformerEncoderLayer.from_torch(layer)(x), layer(T(x)).numpy(),
                           what=f"layer {act}")
        t = torch.nn.Transformer(16, 4, 2, 1, 24, dropout=0.0, activation=a).eval()
        tgt = np.random.default_rng(1).standard_normal((4, 2, 16)).astype(np.float32)
        assert_model_close(nn.Transformer.from_torch(t)(x, tgt), t(T(x), T(tgt)).numpy(),
                           what=f"transformer {act}")


def test_embedding_padding_idx_as_torch():
    for idx in (-1, 3, None):
        ours = nn.Embedding(10, 4, padding_idx=idx, rng=np.random.default_rng(0))
        theirs = torch.nn.Embedding(10, 4, padding_idx=idx)
        assert ours.padding_idx == theirs.padding_idx
        if idx is not None:
            assert not ours.weight[idx].any()
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(10, 4, padding_idx=10)
