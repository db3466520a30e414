"""Seq2SeqTransformer against its torch twin (pytransformer.oracle.to_torch),
its safetensors files, its argument checks, and batch invariance."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pytransformer  # noqa: E402
from pytransformer import oracle  # noqa: E402
from pytransformer.models import Seq2SeqTransformer, sinusoidal_positional_encoding  # noqa
from conftest import assert_model_close  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:.*nested tensor:UserWarning"),
              pytest.mark.filterwarnings("ignore:enable_nested_tensor:UserWarning")]

SMALL = dict(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
             dim_feedforward=64)


def small_model(**kw):
    return Seq2SeqTransformer(37, 41, **dict(SMALL, seed=0, **kw))


def batch(rng, B, S, T, vocab=(37, 41), pad=0):
    """Ragged batches: sequence b is padded (pad_id) after its own length."""
    src = rng.integers(1, vocab[0], (B, S))
    tgt = rng.integers(1, vocab[1], (B, T))
    for b in range(1, B):
        src[b, max(1, S - 2 * b):] = pad
        tgt[b, max(1, T - b):] = pad
    return src, tgt


def torch_logits(model, src, tgt):
    tm = oracle.to_torch(model)
    with torch.no_grad():
        return tm(torch.from_numpy(src), torch.from_numpy(tgt)).numpy()


@pytest.mark.parametrize("kw", [
    dict(),
    dict(positional="learned"),
    dict(tie_embeddings=True),
    dict(norm_first=True),
    dict(activation="gelu"),
    dict(positional="learned", tie_embeddings=True, norm_first=True, activation="gelu",
         pad_id=3),
], ids=["base", "learned", "tied", "pre-ln", "gelu", "all"])
def test_against_torch(rng, kw):
    m = small_model(**kw)
    for B, S, T in ((1, 7, 5), (4, 11, 9)):
        src, tgt = batch(rng, B, S, T, pad=m.pad_id)
        assert_model_close(m(src, tgt), torch_logits(m, src, tgt), f"{kw} B={B}")


def test_encode_decode(rng, isa):
    m = small_model()
    src, tgt = batch(rng, 3, 8, 6)
    memory = m.encode(src)
    assert memory.shape == (3, 8, 32) and memory.dtype == np.float32
    logits = m(src, tgt)
    assert logits.shape == (3, 6, 41) and logits.dtype == np.float32
    np.testing.assert_array_equal(m.decode(tgt, memory, src=src), logits)
    np.testing.assert_array_equal(
        m.decode(tgt, memory, memory_key_padding_mask=src == m.pad_id), logits)
    # the torch encoder (no nested tensors) on the same embedded source
    tm = oracle.to_torch(m)
    with torch.no_grad():
        x = tm.embed(tm.src_embed, torch.from_numpy(src))
        ref = tm.transformer.encoder(x, src_key_padding_mask=torch.from_numpy(src == 0))
    assert_model_close(memory, ref.numpy(), "encoder output")


def test_from_torch_round_trip(rng):
    m = small_model(positional="learned", tie_embeddings=True)
    back = Seq2SeqTransformer.from_torch(oracle.to_torch(m))
    assert back.config == m.config
    src, tgt = batch(rng, 2, 6, 5)
    np.testing.assert_array_equal(back(src, tgt), m(src, tgt))


def test_sinusoidal_positional_encoding():
    """The paper's interleaving: even columns sin, odd columns cos, of the
    same angle pos / 10000^(2i/d)."""
    pe = sinusoidal_positional_encoding(50, 16)
    pos, i = 37, 3
    angle = pos / 10000 ** (2 * i / 16)
    assert pe[pos, 2 * i] == np.float32(np.sin(angle))
    assert pe[pos, 2 * i + 1] == np.float32(np.cos(angle))
    np.testing.assert_array_equal(pe[0, 0::2], 0)
    np.testing.assert_array_equal(pe[0, 1::2], 1)


def test_state_dict_keys():
    m = small_model(positional="learned", tie_embeddings=True)
    keys = list(m.state_dict())
    assert keys[:3] == ["src_embed.weight", "tgt_embed.weight", "pos_embed.weight"]
    assert keys[-2:] == ["generator.weight", "generator.bias"]
    t = torch.nn.Transformer(32, 4, 2, 2, 64, batch_first=True)
    assert [k[len("transformer."):] for k in keys if k.startswith("transformer.")] \
        == list(t.state_dict())
    sd = m.state_dict()
    assert sd["generator.weight"] is sd["tgt_embed.weight"]
    assert "pos_embed.weight" not in small_model().state_dict()


def test_seed_determinism():
    a, b, c = small_model(), small_model(), Seq2SeqTransformer(37, 41, **SMALL, seed=1)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    assert not np.array_equal(a.src_embed.weight, c.src_embed.weight)


# ------------------------------------------------------------------- files --

@pytest.mark.parametrize("kw", [dict(), dict(positional="learned", tie_embeddings=True)])
def test_save_load_round_trip(tmp_path, rng, kw):
    m = small_model(**kw)
    path = tmp_path / "model.safetensors"
    m.save(path)
    m2 = Seq2SeqTransformer.load(path)
    assert m2.config == m.config
    src, tgt = batch(rng, 3, 9, 7)
    np.testing.assert_array_equal(m2(src, tgt), m(src, tgt))
    from safetensors import safe_open
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == "pytransformer.Seq2SeqTransformer"
    assert json.loads(meta["config"]) == m.config
    assert "seed" not in json.loads(meta["config"])
    assert ("generator.weight" in keys) == (not m.tie_embeddings)
    if m.tie_embeddings:
        assert m2.generator.weight is m2.tgt_embed.weight


def test_corrupted_files(tmp_path):
    m = small_model()
    good = tmp_path / "good.safetensors"
    m.save(good)
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "header_only": data[:20],
        "garbage": b"\x00" * 64,
        "empty": b"",
        "bad_json": data[:8] + b"{" * 30 + data[38:],
    }
    header = 8 + int.from_bytes(data[:8], "little")
    cases["nan_weights"] = data[:header] + b"\xff" * 64 + data[header + 64:]
    for name, content in cases.items():
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(content)
        with pytest.raises(ValueError, match=r"safetensors|corrupted") as e:
            Seq2SeqTransformer.load(p)
        assert str(p) in str(e.value), name


def test_mismatched_files(tmp_path):
    from safetensors.numpy import save_file
    m = small_model()
    sd = {k: np.ascontiguousarray(v) for k, v in m.state_dict().items()}
    meta = {"format": "pytransformer.Seq2SeqTransformer", "config": json.dumps(m.config)}
    p = tmp_path / "m.safetensors"
    # a config that does not fit the tensors
    save_file(sd, str(p), metadata=dict(meta, config=json.dumps(dict(m.config,
                                                                     d_model=64,
                                                                     nhead=4))))
    with pytest.raises(ValueError, match="src_embed.weight"):
        Seq2SeqTransformer.load(p)
    # a missing tensor
    save_file({k: v for k, v in sd.items() if k != "generator.bias"}, str(p), metadata=meta)
    with pytest.raises(ValueError, match="generator.bias"):
        Seq2SeqTransformer.load(p)
    # not our format, no metadata, bad config
    save_file(sd, str(p), metadata={"format": "other"})
    with pytest.raises(ValueError, match="format"):
        Seq2SeqTransformer.load(p)
    save_file(sd, str(p))
    with pytest.raises(ValueError, match="format"):
        Seq2SeqTransformer.load(p)
    save_file(sd, str(p), metadata=dict(meta, config="{not json"))
    with pytest.raises(ValueError, match="config"):
        Seq2SeqTransformer.load(p)
    save_file(sd, str(p), metadata=dict(meta, config=json.dumps(dict(m.config, colour=1))))
    with pytest.raises(ValueError, match="config"):
        Seq2SeqTransformer.load(p)


@pytest.mark.parametrize("change,message", [
    (dict(max_len=10**12), "max_len"), (dict(src_vocab_size=10**13), "src_embed.weight"),
    (dict(dim_feedforward=10**12), "linear1.weight"), (dict(pad_id=99), "pad_id"),
    (dict(pad_id=-1), "pad_id"), (dict(d_model="32"), "config"), (dict(d_model=32.7), "config"),
])
def test_config_is_checked_before_anything_is_allocated(tmp_path, change, message):
    from safetensors.numpy import save_file
    m = small_model()
    sd = {k: np.ascontiguousarray(v) for k, v in m.state_dict().items()}
    p = tmp_path / "m.safetensors"
    save_file(sd, str(p), metadata={"format": "pytransformer.Seq2SeqTransformer",
                                    "config": json.dumps(dict(m.config, **change))})
    with pytest.raises(ValueError, match=message):
        Seq2SeqTransformer.load(p)


def test_constructor_checks_sizes():
    with pytest.raises(ValueError, match="pad_id"):
        Seq2SeqTransformer(15, 15, d_model=32, nhead=4, pad_id=15)
    with pytest.raises(ValueError, match="d_model must be an integer"):
        Seq2SeqTransformer(15, 15, d_model=32.0, nhead=4)


# ----------------------------------------------------------- bad arguments --

@pytest.mark.parametrize("bad", [41, -1])   # outside both vocabularies (37, 41)
def test_an_out_of_range_id_raises_one_class_from_every_entry(bad):
    """forward, encode, decode, start_decoding, decode_step, generate and
    nn.Embedding raise the same exception class for the same bad id, naming
    the argument, the id and the vocabulary size."""
    from pytransformer import TokenIdError
    m = small_model(max_len=16)
    src, tgt = np.ones((2, 5), np.int64), np.ones((2, 4), np.int64)
    bad_src = src.copy()
    bad_src[1, 3] = bad
    calls = {
        "forward": lambda: m(bad_src, tgt),
        "encode": lambda: m.encode(bad_src),
        "decode": lambda: m.decode(np.where(tgt == 1, bad, tgt), m.encode(src), src=src),
        "start_decoding": lambda: m.start_decoding(bad_src, 4),
        "decode_step": lambda: m.decode_step(np.array([1, bad]), m.start_decoding(src, 4)),
        "generate": lambda: m.generate(bad_src, 4, bos_id=1, eos_id=2),
        "generate bos_id": lambda: m.generate(src, 4, bos_id=bad, eos_id=2),
        "Embedding": lambda: m.src_embed(bad_src),
    }
    for where, call in calls.items():
        with pytest.raises(TokenIdError) as e:
            call()
        assert isinstance(e.value, IndexError) and isinstance(e.value, ValueError), where
        msg = str(e.value)
        assert f"token id {bad}" in msg and "vocabulary of" in msg, (where, msg)


def test_bad_ids():
    m = small_model(max_len=16)
    src, tgt = np.ones((2, 5), np.int64), np.ones((2, 4), np.int64)
    with pytest.raises(IndexError, match="src"):
        m(np.full((2, 5), 37), tgt)
    with pytest.raises(IndexError, match="tgt"):
        m(src, np.full((2, 4), -1))
    with pytest.raises(ValueError, match="src"):
        m(np.ones((2, 0), np.int64), tgt)
    with pytest.raises(ValueError, match="src"):
        m(src.astype(np.float32), tgt)
    with pytest.raises(ValueError, match="max_len"):
        m(np.ones((2, 17), np.int64), tgt)
    with pytest.raises(ValueError, match="tgt"):
        m(src, np.ones(4, np.int64))
    with pytest.raises(ValueError, match="batch"):
        m(src, np.ones((3, 4), np.int64))
    with pytest.raises(ValueError, match="positional"):
        Seq2SeqTransformer(5, 5, positional="rotary")


# ------------------------------------------------------- batch invariance --

def test_batch_invariance(threads):
    """A sequence's encoder output and logits are bit-identical alone and in a
    batch with longer padded neighbours, with 1 or 2 threads."""
    rng = np.random.default_rng(7)
    m = small_model()
    src, tgt = rng.integers(1, 37, (1, 6)), rng.integers(1, 41, (1, 5))
    alone_mem, alone = m.encode(src), m(src, tgt)
    S, T = 13, 10
    big_src, big_tgt = rng.integers(1, 37, (3, S)), rng.integers(1, 41, (3, T))
    big_src[1], big_tgt[1] = 0, 0
    big_src[1, :6], big_tgt[1, :5] = src[0], tgt[0]
    big_src[2, 9:], big_tgt[2, 8:] = 0, 0
    mem = m.encode(big_src)
    np.testing.assert_array_equal(mem[1, :6], alone_mem[0])
    np.testing.assert_array_equal(m(big_src, big_tgt)[1, :5], alone[0])


def test_thread_invariance():
    rng = np.random.default_rng(8)
    m = small_model()
    src, tgt = batch(rng, 3, 12, 9)
    before = pytransformer.get_num_threads()
    try:
        pytransformer.set_num_threads(1)
        one = m(src, tgt)
        pytransformer.set_num_threads(2)
        two = m(src, tgt)
    finally:
        pytransformer.set_num_threads(before)
    np.testing.assert_array_equal(one, two)
