"""pytransformer.oracle: to_torch builds torch's own modules with the same
weights, and compare finds real discrepancies."""
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pytransformer import nn, oracle  # noqa: E402
from pytransformer.models import Seq2SeqTransformer  # noqa: E402
from conftest import MODEL_RTOL  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:.*nested tensor:UserWarning"),
              pytest.mark.filterwarnings("ignore:enable_nested_tensor:UserWarning")]


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def small_seq2seq(**kw):
    return Seq2SeqTransformer(23, 29, d_model=16, nhead=2, num_encoder_layers=1,
                              num_decoder_layers=2, dim_feedforward=32, seed=3, **kw)


def modules_and_inputs(rng):
    x = randn(rng, 2, 5, 16)
    mem = randn(rng, 2, 7, 16)
    cfg = dict(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    enc_layer = nn.TransformerEncoderLayer(**cfg)
    dec_layer = nn.TransformerDecoderLayer(**cfg, norm_first=True, activation="gelu")
    src = rng.integers(1, 23, (2, 6))
    src[1, 4:] = 0
    return [
        (nn.Linear(16, 8), (x,), {}),
        (nn.LayerNorm(16), (x,), {}),
        (nn.RMSNorm(16, eps=1e-6), (x * 3,), {}),
        (nn.RMSNorm((5, 16), elementwise_affine=False), (x,), {}),
        (nn.MultiheadAttention(16, 4, batch_first=True), (x, mem, mem), {}),
        (nn.MultiheadAttention(16, 2, kdim=6, vdim=10), (x, randn(rng, 3, 5, 6),
                                                         randn(rng, 3, 5, 10)), {}),
        (enc_layer, (x,), {}),
        (dec_layer, (x, mem), {}),
        (nn.TransformerEncoder(enc_layer, 2, nn.LayerNorm(16)), (x,),
         dict(src_key_padding_mask=np.array([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]], bool))),
        (nn.TransformerDecoder(dec_layer, 2), (x, mem),
         dict(tgt_mask=nn.Transformer.generate_square_subsequent_mask(5))),
        (nn.Transformer(num_encoder_layers=1, num_decoder_layers=1, **cfg), (mem, x), {}),
        (small_seq2seq(), (src, rng.integers(1, 29, (2, 4))), {}),
        (small_seq2seq(positional="learned", tie_embeddings=True),
         (src, rng.integers(1, 29, (2, 4))), {}),
    ]


def test_to_torch_uses_torch_classes(rng):
    for model, inputs, kw in modules_and_inputs(rng):
        tm = oracle.to_torch(model)
        assert isinstance(tm, torch.nn.Module) and not tm.training
        name = type(model).__name__
        if name != "Seq2SeqTransformer":
            assert type(tm) is getattr(torch.nn, name), name
        else:
            assert isinstance(tm.transformer, torch.nn.Transformer)
            assert isinstance(tm.generator, torch.nn.Linear)
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(tm.state_dict()[k].numpy(), v, err_msg=k)


def test_compare_agrees(rng):
    for model, inputs, kw in modules_and_inputs(rng):
        r = oracle.compare(model, *inputs, **kw)
        assert r["shape"] == r["torch_shape"]
        assert r["max_rel_err"] <= MODEL_RTOL, (type(model).__name__, r)
        assert r["nan_in_torch"] == 0


def test_compare_reports_a_discrepancy(rng):
    """Perturb one weight in the GEMM operand pytransformer computes with, but
    not in the state dict the torch twin is built from: compare must see it."""
    from pytransformer import ops
    model = small_seq2seq()
    src, tgt = rng.integers(1, 23, (2, 6)), rng.integers(1, 29, (2, 4))
    assert oracle.compare(model, src, tgt)["max_rel_err"] <= MODEL_RTOL
    lin = model.transformer.decoder.layers[1].linear2
    w = lin.weight.copy()
    w[3, 5] += 0.05
    lin._packs["weight"] = ops.pack_weight(w)
    r = oracle.compare(model, src, tgt)
    assert r["max_rel_err"] > 10 * MODEL_RTOL, r
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = randn(rng, 2, 3, 8)
    mha.out_proj._packs["weight"] = ops.pack_weight(mha.out_proj.weight * 1.01)
    assert oracle.compare(mha, x, x, x)["max_rel_err"] > 10 * MODEL_RTOL


def test_compare_counts_torch_nans(rng):
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = randn(rng, 2, 3, 8)
    kpm = np.array([[False, False, False], [True, True, True]])
    r = oracle.compare(mha, x, x, x, key_padding_mask=kpm)
    assert r["nan_in_torch"] > 0 and r["max_rel_err"] <= MODEL_RTOL


def test_missing_torch_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
        oracle.to_torch(nn.Linear(2, 2))


def test_unknown_model():
    with pytest.raises(TypeError, match="no torch equivalent"):
        oracle.to_torch(object())
