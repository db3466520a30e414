"""pytransformer.Generator against transformers on the same files: a random
GPT-2 saved with save_pretrained beside a tiny byte-level BPE tokenizer
trained here; tokenisation, greedy / beam / processors, batched prompts,
streaming (whole UTF-8 characters only), chat templates, bad inputs."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

import pytransformer  # noqa: E402

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
TEXTS = ["the cat sat on the mat", "attention is all you need", "café naïve 日本語 😀",
         "one two three four five six", "x", "Transformer models\nread text"]


def train_tokenizer(d):
    tok = tokenizers.ByteLevelBPETokenizer()
    corpus = [t * 3 for t in TEXTS] + ["<|user|> <|assistant|> hello there"] * 5
    tok.train_from_iterator(corpus, vocab_size=300, min_frequency=1,
                            special_tokens=["<|endoftext|>", "<|user|>", "<|assistant|>"])
    tok.save_model(str(d))
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(d))
    hf.save_pretrained(str(d))
    return hf


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("wte.weight"):
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(2.0 / p.shape[0] ** 0.5 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt2-gen")
    hf_tok = train_tokenizer(d)
    V = len(hf_tok)
    eos = hf_tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=64, n_embd=40, n_head=5, n_layer=2,
                                  bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(0)
    model = randomize(transformers.GPT2LMHeadModel(cfg), 1)
    model.save_pretrained(d)
    return d, model, hf_tok


def hf_text(model, tok, prompt, **kw):
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, pad_token_id=tok.eos_token_id, **kw)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_tokenisation_equals_transformers(checkpoint):
    d, _, tok = checkpoint
    gen = pytransformer.Generator(d)
    for t in TEXTS + ["unseen wörds ✓", "<|endoftext|> then more"]:
        assert gen.encode(t) == tok(t)["input_ids"], t


@pytest.mark.parametrize("kw", [dict(), dict(num_beams=3, length_penalty=0.7),
                                dict(repetition_penalty=1.5), dict(no_repeat_ngram_size=2),
                                dict(min_new_tokens=5), dict(num_beams=2, no_repeat_ngram_size=2)])
def test_text_equals_transformers_generate(checkpoint, kw):
    d, model, tok = checkpoint
    gen = pytransformer.Generator(d)
    got = gen.generate(TEXTS[:4], max_new_tokens=12, **kw)
    assert isinstance(got, list) and len(got) == 4
    for prompt, text in zip(TEXTS[:4], got):
        hf_kw = dict(kw, early_stopping=True) if kw.get("num_beams", 1) > 1 else kw
        assert text == hf_text(model, tok, prompt, max_new_tokens=12, do_sample=False, **hf_kw)


def test_batched_prompts_give_the_text_they_give_alone(checkpoint):
    gen = pytransformer.Generator(checkpoint[0])
    for kw in (dict(), dict(do_sample=True, seed=3, temperature=1.2, top_p=0.9)):
        together = gen.generate(TEXTS, max_new_tokens=10, **kw)
        assert together == [gen.generate(t, max_new_tokens=10, **kw)[0] for t in TEXTS]
        assert gen.generate(TEXTS, max_new_tokens=10, batch_size=2, **kw) == together


def test_stream_sends_the_text_piece_by_piece(checkpoint):
    gen = pytransformer.Generator(checkpoint[0])
    for kw in (dict(), dict(do_sample=True, seed=5), dict(num_beams=3)):
        pieces = []
        text = gen.generate("the cat", max_new_tokens=15, stream=pieces.append, **kw)[0]
        assert "".join(pieces) == text == gen.generate("the cat", max_new_tokens=15, **kw)[0]
        assert all(pieces) and not any(p.endswith("\ufffd") for p in pieces[:-1])


def test_stream_holds_back_split_utf8_characters(checkpoint, monkeypatch):
    """A character whose bytes come in several tokens is sent whole: the
    model's tokens are scripted here (byte tokens of 日 and 😀)."""
    d, _, tok = checkpoint
    gen = pytransformer.Generator(d)
    script = [tok.convert_tokens_to_ids(t) for t in tok.tokenize("a日😀b")]
    assert len(script) > 4   # the characters' bytes are separate tokens here

    def scripted(ids, max_new_tokens, streamer=None, **kw):
        for t in script:
            streamer(np.array([0]), np.array([t]))
        return np.array([script])

    monkeypatch.setattr(gen.model, "generate", scripted)
    pieces = []
    assert gen.generate("x", max_new_tokens=8, stream=pieces.append) == ["a日😀b"]
    assert pieces == ["a", "日", "😀", "b"]


def test_chat_template_equals_transformers(checkpoint, tmp_path):
    d, model, tok = checkpoint
    for f in os.listdir(d):
        os.symlink(os.path.join(d, f), tmp_path / f)
    os.remove(tmp_path / "tokenizer_config.json")
    config = json.loads((d / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(dict(config, chat_template=CHAT)))
    gen = pytransformer.Generator(tmp_path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    messages = [{"role": "user", "content": "hello there"}]
    ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert gen.encode("hello there", chat=True) == list(ids)
    with torch.no_grad():
        out = model.generate(torch.tensor([list(ids)]), max_new_tokens=8, do_sample=False,
                             pad_token_id=tok.eos_token_id)
    expected = hf_tok.decode(out[0, len(ids):], skip_special_tokens=True)
    assert gen.generate("hello there", max_new_tokens=8, chat=True) == [expected]
    assert gen.generate(messages, max_new_tokens=8, chat=True) == [expected]
    with pytest.raises(ValueError, match="no chat template"):
        pytransformer.Generator(d).generate("hello", chat=True)


def test_truncation_and_the_position_limit(checkpoint):
    gen = pytransformer.Generator(checkpoint[0])
    long = " ".join(TEXTS * 4)
    ids = gen.encode(long)
    assert len(ids) > 64
    with pytest.raises(ValueError, match="positions"):
        gen.generate(long, max_new_tokens=8)
    got = gen.generate(long, max_new_tokens=8, truncate=True)
    ids = gen.encode(long)[-(64 - 8):]
    tokens = gen.model.generate(np.array([ids]), 8)
    assert got == [gen.decode([t for t in tokens[0] if t != gen.model.config.eos_token_id])]


def test_bad_inputs(checkpoint, tmp_path):
    d = checkpoint[0]
    for f in ("config.json", "model.safetensors"):
        os.symlink(os.path.join(d, f), tmp_path / f)
    with pytest.raises(ValueError, match="no tokenizer.json"):
        pytransformer.Generator(tmp_path)
    gen = pytransformer.Generator(d)
    for kw in (dict(max_new_tokens=0), dict(method="nucleus"), dict(stream="yes"),
               dict(stop_token_ids=[10 ** 6]), dict(top_p=2.0)):
        with pytest.raises(ValueError):
            gen.generate("the cat", **kw)
    with pytest.raises(ValueError):
        gen.generate([3], max_new_tokens=4)
