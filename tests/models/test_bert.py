"""The BERT family (models/bert.py) against transformers on the same weights:
random BertModel, RobertaModel, XLMRobertaModel and DistilBertModel
configurations saved with save_pretrained and read back by
pytransformer.from_pretrained; padded batches with attention masks and
token types; batch invariance; the forward's argument checks."""
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pytransformer  # noqa: E402
from pytransformer.models.bert import BertModel  # noqa: E402
from conftest import assert_model_close  # noqa: E402

VOCAB = 53


def randomize(model, seed):
    """Weights far from the initialisation (LayerNorm gains around 1, biases
    and matrices of O(0.1-0.3)) so that every tensor matters to the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif "embeddings" in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))  # eps matters at this scale
            else:
                p.copy_(0.6 / p.shape[-1] ** 0.5 * torch.randn(p.shape, generator=g))
    return model.eval()


# (family, config kwargs, pooler): hidden sizes that are not multiples of 64,
# 1-12 heads, 1-4 layers, every activation family, both eps.
CASES = [
    ("bert", dict(hidden_size=36, num_attention_heads=3, num_hidden_layers=2,
                  intermediate_size=50, hidden_act="gelu", layer_norm_eps=1e-12), True),
    ("bert", dict(hidden_size=20, num_attention_heads=5, num_hidden_layers=1,
                  intermediate_size=44, hidden_act="gelu_new", layer_norm_eps=1e-5), False),
    ("bert", dict(hidden_size=66, num_attention_heads=11, num_hidden_layers=3,
                  intermediate_size=70, hidden_act="relu", layer_norm_eps=1e-12,
                  type_vocab_size=3), True),
    ("bert", dict(hidden_size=24, num_attention_heads=12, num_hidden_layers=4,
                  intermediate_size=30, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-5),
     True),
    ("bert", dict(hidden_size=70, num_attention_heads=1, num_hidden_layers=1,
                  intermediate_size=90, hidden_act="silu", layer_norm_eps=1e-12), False),
    ("roberta", dict(hidden_size=30, num_attention_heads=6, num_hidden_layers=2,
                     intermediate_size=40, hidden_act="gelu", layer_norm_eps=1e-5,
                     type_vocab_size=1, pad_token_id=1), True),
    ("roberta", dict(hidden_size=44, num_attention_heads=4, num_hidden_layers=3,
                     intermediate_size=52, hidden_act="relu", layer_norm_eps=1e-12,
                     type_vocab_size=1, pad_token_id=1), False),
    ("xlm-roberta", dict(hidden_size=42, num_attention_heads=7, num_hidden_layers=2,
                         intermediate_size=60, hidden_act="gelu_new", layer_norm_eps=1e-5,
                         type_vocab_size=1, pad_token_id=1), True),
    ("xlm-roberta", dict(hidden_size=18, num_attention_heads=2, num_hidden_layers=1,
                         intermediate_size=20, hidden_act="gelu", layer_norm_eps=1e-12,
                         type_vocab_size=1, pad_token_id=3), False),
    ("distilbert", dict(dim=36, n_heads=4, n_layers=2, hidden_dim=50, activation="gelu"), False),
    ("distilbert", dict(dim=26, n_heads=2, n_layers=3, hidden_dim=34, activation="relu",
                        sinusoidal_pos_embds=True), False),
]
IDS = [f"{f}-{c.get('hidden_size', c.get('dim'))}" for f, c, _ in CASES]

_CLASSES = {"bert": ("BertConfig", "BertModel"), "roberta": ("RobertaConfig", "RobertaModel"),
            "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel"),
            "distilbert": ("DistilBertConfig", "DistilBertModel")}


def hf_model(family, kw, pooler, seed=0):
    conf_cls, model_cls = (getattr(transformers, n) for n in _CLASSES[family])
    config = conf_cls(vocab_size=VOCAB, max_position_embeddings=40, **kw)
    extra = {} if family == "distilbert" else dict(add_pooling_layer=pooler)
    torch.manual_seed(seed)
    return randomize(model_cls(config, **extra), seed)


def save(model, path, **kw):
    model.save_pretrained(str(path), **kw)
    return str(path)


def padded_batch(rng, B, T, pad_id, lengths=None):
    """ids (B, T) with row b padded (pad_id, mask 0) after lengths[b]."""
    lengths = lengths or [T] + [max(1, T - 3 * b) for b in range(1, B)]
    ids = rng.integers(0, VOCAB, (B, T))
    ids[ids == pad_id] = (pad_id + 1) % VOCAB  # padding only where the mask says so
    mask = np.zeros((B, T), np.int64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n:] = pad_id
    return ids, mask


def reference(hf, ids, mask=None, types=None):
    kw = dict(input_ids=torch.from_numpy(ids))
    if mask is not None:
        kw["attention_mask"] = torch.from_numpy(mask)
    if types is not None:
        kw["token_type_ids"] = torch.from_numpy(types)
    with torch.no_grad():
        out = hf(**kw)
    pooled = getattr(out, "pooler_output", None)
    return out.last_hidden_state.numpy(), None if pooled is None else pooled.numpy()


@pytest.mark.parametrize("family,kw,pooler", CASES, ids=IDS)
def test_against_transformers(tmp_path, rng, family, kw, pooler):
    hf = hf_model(family, kw, pooler)
    model = pytransformer.from_pretrained(save(hf, tmp_path))
    assert isinstance(model, BertModel) and model.config.model_type == family
    assert (model.pooler is not None) == (pooler and family != "distilbert")
    pad = hf.config.pad_token_id
    for B, T in ((1, 7), (4, 13)):
        ids, mask = padded_batch(rng, B, T, pad)
        types = None
        if family == "bert":
            types = rng.integers(0, hf.config.type_vocab_size, (B, T))
        out = model(ids, mask, types)
        ref_h, ref_p = reference(hf, ids, mask, types)
        assert_model_close(out.last_hidden_state, ref_h, f"{family} {B}x{T} last_hidden_state")
        if ref_p is None:
            assert out.pooler_output is None
        else:
            assert_model_close(out.pooler_output, ref_p, f"{family} {B}x{T} pooler_output")
        # no mask and no token types: transformers' defaults
        ref_h, _ = reference(hf, ids)
        assert_model_close(model(ids).last_hidden_state, ref_h, f"{family} unmasked")


def test_real_minilm_encoder(minilm_path, rng):
    """The real all-MiniLM-L6-v2 (BertModel, 6 layers, 384 wide) as transformers runs it."""
    hf = transformers.AutoModel.from_pretrained(minilm_path).eval()
    model = pytransformer.from_pretrained(minilm_path)
    ids, mask = padded_batch(rng, 3, 21, 0, [21, 12, 2])
    ids[:, 0] = 101
    out = model(ids, mask)
    ref_h, ref_p = reference(hf, ids, mask)
    assert_model_close(out["last_hidden_state"], ref_h, "MiniLM last_hidden_state")
    assert_model_close(out.pooler_output, ref_p, "MiniLM pooler_output")


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_padding_never_changes_a_row(tmp_path, rng, family, threads):
    """Each sequence's states at its tokens are bit-identical alone (no mask at
    all) and padded inside any batch, at any thread count."""
    kw = next(c for f, c, _ in CASES if f == family)
    hf = hf_model(family, kw, True)
    model = pytransformer.from_pretrained(save(hf, tmp_path))
    pad = hf.config.pad_token_id
    lengths = [9, 1, 17, 5, 33, 2, 12]
    ids, mask = padded_batch(rng, len(lengths), 33, pad, lengths)
    batched = model(ids, mask).last_hidden_state
    for b, n in enumerate(lengths):
        alone = model(ids[b:b + 1, :n]).last_hidden_state[0]
        np.testing.assert_array_equal(alone, batched[b, :n], err_msg=f"row {b}")
        in_pair = model(ids[[b, 4]][:, :33], mask[[b, 4]]).last_hidden_state[0, :n]
        np.testing.assert_array_equal(alone, in_pair, err_msg=f"row {b} beside the longest")


def test_prefixed_checkpoint_with_a_head(tmp_path, rng):
    """A BertForMaskedLM checkpoint ("bert." prefix, cls.* head tensors): the
    base model is read, the head ignored."""
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=28, num_attention_heads=4,
                                     num_hidden_layers=2, intermediate_size=36,
                                     max_position_embeddings=40)
    torch.manual_seed(0)
    mlm = randomize(transformers.BertForMaskedLM(config), 1)
    model = pytransformer.from_pretrained(save(mlm, tmp_path))
    ids, mask = padded_batch(rng, 3, 10, 0)
    ref_h, _ = reference(mlm.bert, ids, mask)
    assert_model_close(model(ids, mask).last_hidden_state, ref_h, "BertForMaskedLM.bert")


def test_sharded_checkpoint(tmp_path, rng):
    hf = hf_model(*CASES[0])
    path = save(hf, tmp_path, max_shard_size="20KB")
    assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
    assert not os.path.exists(os.path.join(path, "model.safetensors"))
    model = pytransformer.from_pretrained(path)
    ids, mask = padded_batch(rng, 2, 8, 0)
    assert_model_close(model(ids, mask).last_hidden_state, reference(hf, ids, mask)[0],
                       "sharded")


def test_half_precision_checkpoints_are_widened(tmp_path, rng):
    """float16 and bfloat16 files load as their exact float32 values."""
    ids, mask = padded_batch(rng, 2, 8, 0)
    for dtype in (torch.float16, torch.bfloat16):
        low = hf_model(*CASES[1]).to(dtype)
        model = pytransformer.from_pretrained(save(low, tmp_path / str(dtype)))
        w = low.embeddings.word_embeddings.weight.detach().float().numpy()
        np.testing.assert_array_equal(model.embeddings.word_embeddings.weight, w)
        assert_model_close(model(ids, mask).last_hidden_state,
                           reference(low.float(), ids, mask)[0], str(dtype))


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert")
    return pytransformer.from_pretrained(save(hf_model(*CASES[0]), path))


def test_forward_checks(small_bert):
    m = small_bert
    ids = np.array([[1, 2, 3]])
    with pytest.raises(pytransformer.TokenIdError, match="input_ids.*53"):
        m(np.array([[1, VOCAB]]))
    with pytest.raises(IndexError):
        m(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match="input_ids.*integer"):
        m(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="2-d"):
        m(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="more than.*40 positions"):
        m(np.ones((1, 41), np.int64))
    with pytest.raises(ValueError, match="attention_mask: shape"):
        m(ids, np.ones((1, 4)))
    with pytest.raises(ValueError, match="attention_mask: 0/1"):
        m(ids, np.array([[1, 2, 0]]))
    with pytest.raises(pytransformer.TokenIdError, match="token_type_ids"):
        m(ids, None, np.array([[0, 2, 0]]))
    with pytest.raises(ValueError, match="token_type_ids: shape"):
        m(ids, None, np.zeros((1, 2), np.int64))
    out = m(ids, np.array([[True, True, False]]))
    assert out.last_hidden_state.dtype == np.float32 and out.last_hidden_state.shape == (1, 3, 36)
    assert out.pooler_output.shape == (1, 36)


def test_unsupported_configs_are_refused(tmp_path):
    for kw, msg in ((dict(hidden_act="quick_gelu"), "hidden_act 'quick_gelu'"),
                    (dict(position_embedding_type="relative_key"), "relative_key"),
                    (dict(is_decoder=True), "is_decoder")):
        config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16,
                                         num_attention_heads=2, num_hidden_layers=1,
                                         intermediate_size=20, **kw)
        path = tmp_path / msg.split()[-1].strip("'")
        save(transformers.BertModel(config), path)
        with pytest.raises(ValueError, match=f"config.json.*{msg}"):
            pytransformer.from_pretrained(path)
