"""SentenceEncoder (pipelines.py) against sentence-transformers on the same
directories: the real all-MiniLM-L6-v2 on 200+ varied sentences and a
retrieval set; every pooling mode, Normalize, max_seq_length and
do_lower_case on small random checkpoints; batch invariance bit for bit;
the argument checks."""
import json
import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
st = pytest.importorskip("sentence_transformers")

import pytransformer  # noqa: E402
from pytransformer import SentenceEncoder  # noqa: E402

BASE = [
    "", " ", "a", "Hello world!", "The cat sat on the mat.",
    "A man is playing a guitar on stage.", "Two dogs are running through a field of snow.",
    "Crème brûlée, façade, naïve, coöperate, jalapeño, Ångström.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "¿Dónde está la biblioteca? ¡Allí!", "Ça va très bien, merci beaucoup.",
    "Москва — столица России.", "Η γλώσσα είναι ελληνική.", "东京是日本的首都。",
    "日本語の文章をベクトルにします。", "한국어 문장도 있습니다.", "مرحبا بالعالم",
    "שלום עולם", "हिन्दी में एक वाक्य।", "ภาษาไทยไม่มีช่องว่าง",
    "I love pizza 🍕🍕 and tacos 🌮!", "🙂🙃😉😊 emoji only 🚀✨🔥", "👩‍👩‍👧‍👦 family 🏳️‍🌈",
    "def add(a, b):\n    return a + b  # simple", "for (int i = 0; i < n; ++i) { sum += x[i]; }",
    "SELECT name, COUNT(*) FROM users WHERE age > 21 GROUP BY name;",
    "import numpy as np; x = np.zeros((3, 4), dtype=np.float32)",
    "<div class=\"main\"><p>Hello</p></div>", "https://example.com/path?q=1&r=two#frag",
    "user@example.org wrote: 'see RFC 2822'", "3.14159 2.71828 1.41421 0.57721",
    "1234567890 0987654321 42 -17 +3e-10 1,000,000.00", "$19.99 €5 £3.50 ¥100 ₹20",
    "The year 2024 had 366 days; 2023 had 365.", "ID: A1B2-C3D4-E5F6", "   leading and trailing   ",
    "tabs\tand\nnewlines\r\nmixed", "ALL CAPS SENTENCE HERE", "MiXeD cAsE wOrDs",
    "?!?!...;;;:::", "a" * 300, "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "\u200b zero width \u00a0 no-break \ufeff bom", "control \x07 bell \x1b esc",
]
WORDS = ("time person year way day thing man world life hand part child eye woman place work "
         "week case point government company number group problem fact café naïve résumé "
         "straße 東京 данные 🙂 42 3.5 x_1 f(x) <tag> don't it's e-mail").split()


def sentences():
    """200+ sentences: the hand-picked ones above, then seeded random ones of
    1-400 words (some far past max_seq_length=256 tokens)."""
    rng = np.random.default_rng(9)
    out = list(BASE)
    for n in list(rng.integers(1, 60, 150)) + [120, 200, 257, 300, 400, 700]:
        out.append(" ".join(rng.choice(WORDS, n)))
    out += [s.upper() for s in BASE[4:14]]
    return out


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return SentenceEncoder(minilm_path), st.SentenceTransformer(minilm_path, device="cpu")


def cosines(a, b):
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_minilm_matches_sentence_transformers(minilm):
    ours, theirs = minilm
    texts = sentences()
    assert len(texts) >= 200 and ours.max_seq_length == 256
    assert max(len(ours.tokenize([t])[0]) for t in texts) == 256  # truncated, as theirs
    a = ours.encode(texts)
    b = theirs.encode(texts, convert_to_numpy=True)
    assert a.dtype == np.float32 and a.shape == b.shape == (len(texts), 384)
    cos = cosines(a, b)
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.99999, f"cosine {cos.min():.7f} for {texts[worst]!r:.80}"
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(a, b, atol=2e-5)  # unit vectors, 384 dims


def test_minilm_retrieval_ranking(minilm):
    ours, theirs = minilm
    docs = ["The Eiffel Tower is in Paris.", "Python is a programming language.",
            "Bananas are rich in potassium.", "The stock market fell sharply today.",
            "Cats are independent pets.", "Mount Everest is the highest mountain.",
            "Neural networks learn from data.", "The recipe needs two eggs and flour.",
            "Football is popular in Brazil.", "The train to Berlin leaves at noon."]
    queries = ["Where is the Eiffel tower?", "How do I write code?", "healthy fruit",
               "economy news", "deep learning", "baking a cake", "travel by rail in Germany"]
    rank = []
    for enc in (ours.encode, theirs.encode):
        d, q = enc(docs), enc(queries)
        rank.append(np.argsort(-(q @ d.T), axis=1, kind="stable"))
    np.testing.assert_array_equal(rank[0], rank[1])
    assert list(rank[0][:, 0]) == [0, 1, 2, 3, 6, 7, 9]


def test_batch_invariance_bit_for_bit(minilm):
    """A sentence's embedding alone equals it in batches of 1, 7 and 32, at 1
    and 2 threads: padding and neighbours never change a bit."""
    ours, _ = minilm
    texts = sentences()[::5]  # every length class (up to 256 tokens), a fifth of the cost
    before = pytransformer.get_num_threads()
    try:
        pytransformer.set_num_threads(1)
        alone = np.stack([ours.encode(t) for t in texts])
        for threads in (1, 2):
            pytransformer.set_num_threads(threads)
            for bs in (1, 7, 32):
                got = ours.encode(texts, batch_size=bs)
                np.testing.assert_array_equal(got, alone, err_msg=f"batch {bs}, {threads} th")
        # the same sentence beside others, in another order
        shuffled = list(reversed(texts))
        np.testing.assert_array_equal(ours.encode(shuffled, batch_size=7), alone[::-1])
    finally:
        pytransformer.set_num_threads(before)


@pytest.mark.parametrize("compute_type", ["bfloat16", "int8"])
def test_minilm_bfloat16_and_int8(minilm, minilm_path, compute_type):
    """compute_type="bfloat16" / "int8" against sentence-transformers' float32
    on the same sentences: cosine >= BF16_EMBED_COSINE / INT8_EMBED_COSINE
    each (bounds: conftest.py); still bit for bit alone and in batches."""
    from conftest import BF16_EMBED_COSINE, INT8_EMBED_COSINE
    bound = {"bfloat16": BF16_EMBED_COSINE, "int8": INT8_EMBED_COSINE}[compute_type]
    _, theirs = minilm
    ours = SentenceEncoder(minilm_path, compute_type=compute_type)
    texts = sentences()
    a = ours.encode(texts)
    b = theirs.encode(texts, convert_to_numpy=True)
    cos = cosines(a, b)
    worst = int(np.argmin(cos))
    assert cos.min() >= bound, f"cosine {cos.min():.6f} for {texts[worst]!r:.80}"
    few = texts[::9]
    alone = np.stack([ours.encode(t) for t in few])
    np.testing.assert_array_equal(ours.encode(few, batch_size=7), alone)


def test_encode_shapes_and_checks(minilm):
    ours, theirs = minilm
    one = ours.encode("one sentence")
    assert one.shape == (384,) and one.dtype == np.float32
    np.testing.assert_array_equal(one, ours.encode(["one sentence"])[0])
    assert ours.encode([]).shape == (0, 384)
    assert ours.encode(("a", "b")).shape == (2, 384)
    assert ours.get_sentence_embedding_dimension() == 384
    with pytest.raises(ValueError, match=r"sentences\[2\]: a str is needed, got int"):
        ours.encode(["a", "b", 3])
    with pytest.raises(ValueError, match=r"sentences\[0\]: a str is needed, got NoneType"):
        ours.encode([None])
    with pytest.raises(ValueError, match="sentences: a str or a list of str"):
        ours.encode(5)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ours.encode(["a"], batch_size=0)
    raw = ours.encode(["x y z"], normalize_embeddings=False)
    assert abs(np.linalg.norm(raw) - 1) > 1e-3  # the pooled vector before Normalize
    np.testing.assert_allclose(raw / np.linalg.norm(raw), ours.encode(["x y z"]), atol=1e-7)


def test_progress_bar(minilm, capsys):
    ours, _ = minilm
    ours.encode(["a", "b", "c"], batch_size=2, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "encoding: 3/3 sentences (100%)" in err
    ours.encode(["a"])
    assert capsys.readouterr().err == ""


# ------------------------------------------- random checkpoints, every mode --

def random_st_dir(tmp_path, minilm_path, family="bert", modes=("mean",), normalize=True,
                  max_seq_length=None, lower=False, legacy=False, seed=0):
    """A sentence-transformers directory around a small random encoder, using
    all-MiniLM-L6-v2's tokenizer; saved by sentence-transformers itself."""
    cls = {"bert": ("BertConfig", "BertModel"), "roberta": ("RobertaConfig", "RobertaModel")}
    conf_cls, model_cls = (getattr(transformers, n) for n in cls[family])
    extra = dict(pad_token_id=1, type_vocab_size=1) if family == "roberta" else {}
    config = conf_cls(vocab_size=30522, hidden_size=36, num_attention_heads=6,
                      num_hidden_layers=2, intermediate_size=44, max_position_embeddings=300,
                      **extra)
    torch.manual_seed(seed)
    model = model_cls(config, add_pooling_layer=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    enc_dir = tmp_path / "encoder"
    model.save_pretrained(str(enc_dir))
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(os.path.join(minilm_path, f), enc_dir / f)
    kw = {} if max_seq_length is None else dict(max_seq_length=max_seq_length)
    transformer = st.models.Transformer(str(enc_dir), do_lower_case=lower, **kw)
    pooling = st.models.Pooling(36, pooling_mode=list(modes))
    mods = [transformer, pooling] + ([st.models.Normalize()] if normalize else [])
    out = tmp_path / "st"
    st.SentenceTransformer(modules=mods, device="cpu").save(str(out))
    if legacy:  # the older 1_Pooling/config.json keys
        legacy_keys = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                       "max": "pooling_mode_max_tokens"}
        with open(out / "1_Pooling" / "config.json", "w") as f:
            json.dump({"word_embedding_dimension": 36,
                       **{legacy_keys[m]: True for m in modes}}, f)
    return str(out)


MODES = [("mean",), ("cls",), ("max",), ("mean_sqrt_len_tokens",), ("lasttoken",),
         ("weightedmean",), ("cls", "mean", "max")]


@pytest.mark.parametrize("modes", MODES, ids=["+".join(m) for m in MODES])
def test_pooling_modes(tmp_path, minilm_path, modes):
    path = random_st_dir(tmp_path, minilm_path, modes=modes, normalize=modes == ("mean",))
    texts = sentences()[:40:3] + [" ".join(["word"] * 90)]
    ours = SentenceEncoder(path)
    theirs = st.SentenceTransformer(path, device="cpu")
    assert ours.pooling_modes == list(modes)
    a, b = ours.encode(texts, batch_size=5), theirs.encode(texts, batch_size=5)
    assert a.shape == b.shape == (len(texts), 36 * len(modes))
    assert cosines(a, b).min() >= 0.99999
    np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(b).max())


@pytest.mark.parametrize("case", ["roberta", "max_seq_length", "lowercase", "legacy", "plain"])
def test_checkpoint_options(tmp_path, minilm_path, case):
    kw = dict(family="roberta") if case == "roberta" else \
        dict(max_seq_length=12) if case == "max_seq_length" else \
        dict(lower=True) if case == "lowercase" else \
        dict(modes=("cls", "mean"), legacy=True) if case == "legacy" else dict(normalize=False)
    path = random_st_dir(tmp_path, minilm_path, **kw)
    if case == "lowercase":  # a tokenizer that keeps case, lowercased by do_lower_case
        with open(os.path.join(path, "tokenizer.json")) as f:
            tj = json.load(f)
        tj["normalizer"]["lowercase"] = False
        with open(os.path.join(path, "tokenizer.json"), "w") as f:
            json.dump(tj, f)
    texts = ["Short one.", "ALL CAPS AND MORE WORDS THAN TWELVE TOKENS, SURELY, YES INDEED",
             " ".join(WORDS), "x"]
    ours = SentenceEncoder(path)
    theirs = st.SentenceTransformer(path, device="cpu")
    if case == "max_seq_length":
        assert ours.max_seq_length == 12
    a, b = ours.encode(texts), theirs.encode(texts)
    assert cosines(a, b).min() >= 0.99999, case
    np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(b).max())
    if case == "lowercase":
        np.testing.assert_array_equal(ours.encode("HELLO"), ours.encode("hello"))


def test_bad_directories(tmp_path, minilm_path):
    with pytest.raises(ValueError, match="no such directory"):
        SentenceEncoder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no config.json"):
        SentenceEncoder(tmp_path)
    d = tmp_path / "dense"
    shutil.copytree(minilm_path, d)
    with open(d / "modules.json") as f:
        modules = json.load(f)
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense",
                       "type": "sentence_transformers.models.Dense"})
    with open(d / "modules.json", "w") as f:
        json.dump(modules, f)
    with pytest.raises(ValueError, match="modules.json: modules .*Dense.*only Transformer, "
                                         "Pooling and an optional Normalize"):
        SentenceEncoder(d)
    modules.pop(2)
    with open(d / "modules.json", "w") as f:
        json.dump(modules, f)
    with open(d / "1_Pooling" / "config.json", "w") as f:
        json.dump({"pooling_mode": "median"}, f)
    with pytest.raises(ValueError, match="1_Pooling/config.json: pooling modes"):
        SentenceEncoder(d)
    with open(d / "1_Pooling" / "config.json", "w") as f:
        json.dump({"pooling_mode": "mean"}, f)
    (d / "tokenizer.json").write_text("{ truncated")
    with pytest.raises(ValueError, match="tokenizer.json: not a tokenizer.json"):
        SentenceEncoder(d)
    os.remove(d / "tokenizer.json")
    with pytest.raises(ValueError, match="no tokenizer.json"):
        SentenceEncoder(d)
