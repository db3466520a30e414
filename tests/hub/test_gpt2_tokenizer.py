"""GPT-2's byte-level BPE tokenizer (hub.hf.load_tokenizer): from vocab.json +
merges.txt, and from tokenizer.json, against transformers' GPT2TokenizerFast
on the same files -- a tiny byte-level BPE trained here with the tokenizers
library and written in the standard layout."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from pytransformer.hub import load_tokenizer  # noqa: E402

WORDS = ["the", "cat", "sat", "on", "mat", "Transformer", "attention", "is", "all", "you",
         "need", "café", "naïve", "日本語", "テキスト", "emoji", "😀", "🚀🚀", "don't", "I'm",
         "1999", "3.14", "e-mail", "x\ty", "tab", "NEW\nLINE", "  spaces  ", "<|endoftext|>"]


def corpus(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 9))
        sep = [" ", " ", " ", "", "\n", "  ", ", "]
        s = "".join(str(rng.choice(WORDS)) + str(rng.choice(sep)) for _ in range(k))
        if rng.random() < 0.2:  # bytes the training never saw
            s += chr(int(rng.integers(0x100, 0x3000)))
        out.append(s)
    return out


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpe")
    tok = tokenizers.ByteLevelBPETokenizer()
    tok.train_from_iterator(corpus(400, 0), vocab_size=420, min_frequency=2,
                            special_tokens=["<|endoftext|>"])
    tok.save_model(str(d))
    return d


def test_vocab_and_merges_give_transformers_ids(bpe_dir):
    ours = load_tokenizer(bpe_dir)
    theirs = transformers.GPT2TokenizerFast.from_pretrained(str(bpe_dir))
    texts = corpus(300, 1) + ["", " ", "\n\n", "<|endoftext|>x<|endoftext|>", " leading"]
    for s in texts:
        assert ours.encode(s).ids == theirs(s)["input_ids"], repr(s)
        assert ours.decode(ours.encode(s).ids, skip_special_tokens=False) == s, repr(s)


def test_tokenizer_json_gives_the_same_ids(bpe_dir, tmp_path):
    theirs = transformers.GPT2TokenizerFast.from_pretrained(str(bpe_dir))
    theirs.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    ours = load_tokenizer(tmp_path)
    from_pair = load_tokenizer(bpe_dir)
    for s in corpus(100, 2):
        assert ours.encode(s).ids == from_pair.encode(s).ids == theirs(s)["input_ids"]


def test_add_prefix_space_from_the_tokenizer_config(bpe_dir, tmp_path):
    for f in ("vocab.json", "merges.txt"):
        (tmp_path / f).write_bytes((bpe_dir / f).read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_prefix_space": True}))
    ours = load_tokenizer(tmp_path)
    theirs = transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path))
    for s in ("the cat", "Transformer attention", "x"):
        assert ours.encode(s).ids == theirs(s)["input_ids"]


def test_bad_files(bpe_dir, tmp_path):
    with pytest.raises(ValueError, match="no tokenizer.json .*vocab.json and merges.txt"):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.json").write_bytes((bpe_dir / "vocab.json").read_bytes())
    with pytest.raises(ValueError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)            # merges.txt missing
    (tmp_path / "merges.txt").write_text("#version: 0.2\nnot-a-merge\n")
    with pytest.raises(ValueError, match="merges.txt: line 2"):
        load_tokenizer(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nqq zz\n")
    with pytest.raises(ValueError, match="merges.txt: does not fit"):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="vocab.json"):
        load_tokenizer(tmp_path)
