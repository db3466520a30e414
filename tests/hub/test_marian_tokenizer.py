"""pytransformer.hub.MarianTokenizer against transformers' MarianTokenizer on
the same files: a SentencePiece model trained here on a generated corpus,
written in an OPUS-MT directory's layout."""
import json
import os
import random
import shutil
import warnings

import pytest

from pytransformer.hub import MarianTokenizer

from marian_fixtures import WORDS, write_tokenizer

ALPHABET = list("the cat dog sat on mat XYZ qwj,.!?'\"-  \t") + \
    ["über", "straße", "café", "données", "東京", "год", "</s>", "<unk>", "<pad>", ">>fr<<",
     ">>de<<", ">>xx<<", "\n", "  "] + WORDS


def strings(n=300, seed=0):
    r = random.Random(seed)
    out = ["", " ", "the cat", ">>fr<< the dog sat.", "a </s> b", "the<unk>cat", "<pad>"]
    while len(out) < n:
        s = "".join(r.choice(ALPHABET) for _ in range(r.randint(0, 30)))
        if r.random() < 0.2:
            s = r.choice([">>fr<< ", ">>de<<", ">>zz<< "]) + s
        out.append(s)
    return out


def hf_tokenizer(path):
    from transformers import MarianTokenizer as HF
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Recommended: pip install sacremoses."
        return HF.from_pretrained(path)


@pytest.fixture(scope="module", params=[False, True], ids=["one-vocab", "separate-vocabs"])
def tokenizers(request, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tok"))
    write_tokenizer(path, separate_vocabs=request.param, seed=1)
    return MarianTokenizer(path), hf_tokenizer(path), path


def test_same_ids_as_transformers(tokenizers):
    ours, hf, _ = tokenizers
    assert (ours.pad_token_id, ours.eos_token_id, ours.unk_token_id) == \
        (hf.pad_token_id, hf.eos_token_id, hf.unk_token_id)
    unknown = 0
    for s in strings():
        ids = ours.encode(s)
        assert ids == hf(s)["input_ids"], repr(s)
        assert ids[-1] == ours.eos_token_id
        unknown += ids.count(ours.unk_token_id)
    assert unknown > 0  # the vocabulary lacks some pieces: they were mapped to unk


def test_target_side_as_transformers(tokenizers):
    ours, hf, _ = tokenizers
    for s in strings(100, seed=2):
        assert ours.encode(s, target=True) == hf(text_target=s)["input_ids"], repr(s)


def test_decode_as_transformers(tokenizers):
    ours, hf, _ = tokenizers
    r = random.Random(3)
    top = ours.max_id(target=True)
    for s in strings(150, seed=4):
        ids = hf(text_target=s)["input_ids"]
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == \
                hf.decode(ids, skip_special_tokens=skip), (repr(s), skip)
    for _ in range(100):  # arbitrary id sequences, as a model may produce
        ids = [r.randint(0, top) for _ in range(r.randint(0, 12))]
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True), ids


def test_round_trip(tokenizers):
    """decode(encode(s, target=True)) -- decoding reads target ids -- gives s
    back, up to SentencePiece's whitespace normalisation, wherever every piece
    is in the vocabulary and the text holds no special token."""
    ours, _, _ = tokenizers
    unk = ours.target_encoder[ours.unk_token]
    n = 0
    for s in strings(300, seed=5) + ["the cat sat on the mat.", "über straße café"]:
        ids = ours.encode(s, target=True)
        if unk in ids or any(t in s for t in ("</s>", "<pad>", "<unk>", ">>")):
            continue
        n += 1
        assert ours.decode(ids) == " ".join(s.split()), repr(s)
    assert n > 20


def test_clean_up_tokenization_spaces(tmp_path):
    write_tokenizer(str(tmp_path), seed=1)
    f = os.path.join(tmp_path, "tokenizer_config.json")
    c = json.load(open(f))
    c["clean_up_tokenization_spaces"] = True
    json.dump(c, open(f, "w"))
    ours, hf = MarianTokenizer(str(tmp_path)), hf_tokenizer(str(tmp_path))
    for s in ["the cat , sat .", "dog ! ran ?", "over 's mat"]:
        ids = hf(s)["input_ids"]
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("remove, match", [
    ("source.spm", "source.spm"), ("target.spm", "target.spm"), ("vocab.json", "vocab.json")])
def test_missing_files(tmp_path, remove, match):
    write_tokenizer(str(tmp_path), seed=1)
    os.remove(os.path.join(tmp_path, remove))
    with pytest.raises(ValueError, match=match):
        MarianTokenizer(str(tmp_path))


def test_bad_files(tmp_path):
    write_tokenizer(str(tmp_path), seed=1)
    d = str(tmp_path)
    with pytest.raises(ValueError, match="no such directory"):
        MarianTokenizer(os.path.join(d, "nope"))
    shutil.copy(os.path.join(d, "vocab.json"), os.path.join(d, "vocab.bak"))
    open(os.path.join(d, "vocab.json"), "w").write("{not json")
    with pytest.raises(ValueError, match="vocab.json"):
        MarianTokenizer(d)
    json.dump({"a": 1}, open(os.path.join(d, "vocab.json"), "w"))
    with pytest.raises(ValueError, match="unk_token"):
        MarianTokenizer(d)
    json.dump({"<unk>": "x"}, open(os.path.join(d, "vocab.json"), "w"))
    with pytest.raises(ValueError, match="id"):
        MarianTokenizer(d)
    shutil.copy(os.path.join(d, "vocab.bak"), os.path.join(d, "vocab.json"))
    open(os.path.join(d, "source.spm"), "wb").write(b"\x00garbage")
    with pytest.raises(ValueError, match="SentencePiece"):
        MarianTokenizer(d)
    write_tokenizer(d, seed=1)
    c = json.load(open(os.path.join(d, "tokenizer_config.json")))
    c["separate_vocabs"] = True
    json.dump(c, open(os.path.join(d, "tokenizer_config.json"), "w"))
    with pytest.raises(ValueError, match="target_vocab.json"):
        MarianTokenizer(d)


def test_text_must_be_a_str(tokenizers):
    ours, _, _ = tokenizers
    for bad in (None, 3, b"bytes", ["a"]):
        with pytest.raises(ValueError, match="str"):
            ours.encode(bad)
