"""Bad arguments of every kind raise a ValueError naming the argument, before
any work: strings where numbers are needed, None, negative or absurd sizes,
counts whose product no machine could hold."""
import numpy as np
import pytest

from pytransformer import nn, ops
from pytransformer.models import Seq2SeqTransformer

X = np.ones((2, 3, 8), np.float32)


@pytest.mark.parametrize("call, name", [
    (lambda: ops.layer_norm(X, (8,), eps="1e-5"), "eps"),
    (lambda: ops.layer_norm(X, (8,), eps=None), "eps"),
    (lambda: ops.layer_norm(X, (8,), eps=-1.0), "eps"),
    (lambda: ops.scaled_dot_product_attention(X, X, X, scale="0.5"), "scale"),
    (lambda: ops.scaled_dot_product_attention(X, X, X, scale=float("nan")), "scale"),
    (lambda: nn.Linear(-1, 3), "in_features"),
    (lambda: nn.Linear(3, 2.5), "out_features"),
    (lambda: nn.LayerNorm(8, eps="small"), "eps"),
    (lambda: nn.Embedding(-4, 3), "num_embeddings"),
    (lambda: nn.MultiheadAttention(-8, 2), "embed_dim"),
    (lambda: nn.MultiheadAttention(0, 1), "embed_dim"),
    (lambda: nn.MultiheadAttention(8, 0), "num_heads"),
])
def test_bad_numbers_name_their_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


@pytest.fixture(scope="module")
def model():
    return Seq2SeqTransformer(20, 30, d_model=16, nhead=2, num_encoder_layers=1,
                              num_decoder_layers=1, dim_feedforward=32, max_len=16, seed=0)


SRC = np.array([[3, 4, 5]])


@pytest.mark.parametrize("kw, name", [
    (dict(method="sample", temperature=None), "temperature"),
    (dict(method="sample", temperature="hot"), "temperature"),
    (dict(method="sample", top_p="0.9"), "top_p"),
    (dict(method="beam", length_penalty="long"), "length_penalty"),
    (dict(method="beam", length_penalty=float("inf")), "length_penalty"),
    (dict(pad_id=2 ** 70), "pad_id"),
    (dict(method="sample", num_return_sequences=10 ** 12), "num_return_sequences"),
    (dict(method="beam", beam_size=10 ** 9), "beam_size"),
    (dict(max_new_tokens=10 ** 12), "max_new_tokens"),
    (dict(method="sample", top_k="3"), "top_k"),
    (dict(method="sample", seed=-5), "seed"),
])
def test_generate_refuses_before_any_work(model, kw, name, monkeypatch):
    calls = []
    monkeypatch.setattr(model, "start_decoding",
                        lambda *a, **k: calls.append(1) or pytest.fail("work started"))
    args = dict(max_new_tokens=4, bos_id=1, eos_id=2)
    args.update(kw)
    with pytest.raises(ValueError, match=name):
        model.generate(SRC, **args)
    assert not calls


def test_rows_times_vocabulary_is_bounded(model):
    """A batch whose log-probabilities a step could not hold is refused by
    size, naming the argument and the bound."""
    src = np.ones((40000, 2), np.int64) * 3
    with pytest.raises(ValueError, match=r"num_return_sequences=2: 40000 source\(s\)"):
        model.generate(src, 2, bos_id=1, eos_id=2, method="sample", num_return_sequences=2)
