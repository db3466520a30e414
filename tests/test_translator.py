"""pytransformer.Translator against transformers (MarianTokenizer +
MarianMTModel.generate + batch_decode) on the same random checkpoint, with a
SentencePiece tokenizer trained for the test."""
import os
import warnings

import numpy as np
import pytest
import torch

import pytransformer

from marian_fixtures import corpus, make_marian

TEXTS = corpus(9, seed=11) + ["", "the", ">>fr<< the cat sat on the mat under the house ."]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("opus"))
    hf = make_marian(path, seed=5, tokenizer=True, tie_word_embeddings=False)
    from transformers import MarianTokenizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = MarianTokenizer.from_pretrained(path)
    return path, hf, tok


def hf_translate(checkpoint, texts, beam_size, max_new_tokens, length_penalty=1.0, n=1):
    _, hf, tok = checkpoint
    batch = tok(texts, padding=True, return_tensors="pt")
    kw = dict(num_beams=beam_size, do_sample=False, max_new_tokens=max_new_tokens)
    if beam_size > 1:
        kw.update(length_penalty=length_penalty, early_stopping=True, num_return_sequences=n)
    with torch.no_grad():
        out = hf.generate(**batch, **kw, return_dict_in_generate=True, output_scores=True)
    texts = tok.batch_decode(out.sequences, skip_special_tokens=True)
    scores = out.sequences_scores.numpy() if beam_size > 1 else None
    return texts, scores


@pytest.fixture(scope="module")
def translator(checkpoint):
    return pytransformer.Translator(checkpoint[0])


def test_greedy_as_transformers(checkpoint, translator):
    ref, _ = hf_translate(checkpoint, TEXTS, 1, 12)
    assert translator.translate(TEXTS, beam_size=1, max_new_tokens=12) == ref


@pytest.mark.parametrize("k, lp, n", [(4, 1.0, 1), (3, 0.6, 2)])
def test_beam_as_transformers(checkpoint, translator, k, lp, n):
    ref, ref_scores = hf_translate(checkpoint, TEXTS, k, 10, lp, n)
    got = translator.translate(TEXTS, beam_size=k, max_new_tokens=10, length_penalty=lp,
                               num_hypotheses=n, return_scores=True)
    if n == 1:
        got = [[g] for g in got]
    flat = [h for hyps in got for h in hyps]
    assert len(flat) == len(ref)
    assert [t for t, _ in flat] == ref
    np.testing.assert_allclose([s for _, s in flat], ref_scores, rtol=1e-4, atol=1e-5)
    assert all(isinstance(hyps, list) and len(hyps) == n for hyps in got)



def test_pad_written_in_the_text_is_a_token(checkpoint, translator):
    """"<pad>" written in a source is the pad id, attended as transformers'
    attention mask says (1 at every token the tokenizer gave): padding is what
    the batch added, never what the text holds."""
    texts = ["the <pad> cat sat", "<pad> the mat", "on the house <pad>", "<pad>",
             "the cat sat on the mat under the house ."]
    for k in (1, 3):
        ref, _ = hf_translate(checkpoint, texts, k, 10)
        assert translator.translate(texts, beam_size=k, max_new_tokens=10) == ref
        assert [translator.translate(t, beam_size=k, max_new_tokens=10) for t in texts] == ref

def test_batching_does_not_change_results(translator):
    every = translator.translate(TEXTS, beam_size=3, max_new_tokens=8, return_scores=True)
    small = translator.translate(TEXTS, beam_size=3, max_new_tokens=8, return_scores=True,
                                 batch_size=2)
    alone = [translator.translate(t, beam_size=3, max_new_tokens=8, return_scores=True)
             for t in TEXTS]
    assert every == small == alone


def test_default_max_new_tokens_and_callback(translator):
    seen = []
    out = translator.translate(TEXTS[:3], callback=lambda i, r: seen.append((i, r)))
    assert sorted(seen) == sorted(enumerate(out))
    assert translator.translate([]) == []


def test_bad_arguments(checkpoint, translator):
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        translator.translate(["a", 3])
    with pytest.raises(ValueError, match="num_hypotheses"):
        translator.translate(["a"], beam_size=2, num_hypotheses=3)
    with pytest.raises(ValueError, match="beam_size"):
        translator.translate(["a"], beam_size=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        translator.translate(["a"], max_new_tokens=0)
    with pytest.raises(ValueError, match=r"texts\[0\].*max_position_embeddings"):
        translator.translate([" ".join(["the cat"] * 80)])


def test_bad_directories(tmp_path, minilm_path):
    with pytest.raises(ValueError, match="translation model"):
        pytransformer.Translator(minilm_path)
    path = str(tmp_path / "m")
    make_marian(path, seed=13, tokenizer=True)
    os.remove(os.path.join(path, "target.spm"))
    with pytest.raises(ValueError, match="target.spm"):
        pytransformer.Translator(path)
    path = str(tmp_path / "small")
    make_marian(path, seed=13, tokenizer=False, vocab_size=20)
    from marian_fixtures import write_tokenizer
    write_tokenizer(path, seed=13)
    with pytest.raises(ValueError, match="vocabulary has id"):
        pytransformer.Translator(path)
    with pytest.raises(ValueError, match="no such directory"):
        pytransformer.Translator(str(tmp_path / "nope"))
