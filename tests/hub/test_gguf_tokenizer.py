"""hub/gguf_tokenizer against transformers' own tokenizer for the same GGUF
file (AutoTokenizer.from_pretrained(dir, gguf_file=name), offline): the same
tokenizer, the same ids on a few hundred varied strings, the same decoding --
for the real SmolLM2 file and for crafted files that exercise what SmolLM2
does not (other pre-tokenizers, BOS/EOS flags, user-defined tokens)."""
import json
import os

import numpy as np
import pytest

from conftest import write_gguf
from pytransformer.hub.gguf import GGUFFile
from pytransformer.hub.gguf_tokenizer import (bytes_to_unicode, special_tokens_from_gguf,
                                              tokenizer_from_gguf)

PIECES = [
    "Hello world", "hello", " Hello", "HELLO", "The quick brown fox jumps over the lazy dog.",
    "I'm", "you'll", "they've", "she'd", "WE'RE", "don't", "'s",
    "12", "123", "1234567890", "3.14159", "-42", "1e-9", "0x1F", "1,000,000", "٣٤٥", "²³",
    "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t  \n", "\u00a0", "\u3000", "\u200b",
    "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
    "<div class=\"a\">&amp;</div>", "SELECT * FROM t WHERE id = 1;", "x += 1  # comment",
    "naïve café", "Straße", "Ελληνικά", "русский текст", "日本語のテキスト", "中文字符",
    "한국어 문장", "עברית", "العربية", "हिन्दी", "ไทย", "Ǆ ǅ ǆ", "e\u0301", "ﬁ",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🤖 robots", "∑∫√∞", "→←↑↓", "€£¥", "©®™",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nHi<|im_end|>\n",
    "<|im_start", "im_end|>", "<repo_name>", "< |im_start| >", "<fim_prefix>", "<jupyter_code>",
    "\x00", "\x01\x02", "\x7f", "\ufffd", "\ud7ff", "\U0010ffff", "~!@#$%^&*()_+`-=[]\\{}|;':\",./<>?",
]


def corpus(n=320, seed=0):
    """The pieces alone, then seeded joins of 2-6 pieces with random spacing."""
    rng = np.random.default_rng(seed)
    out = list(PIECES)
    while len(out) < n:
        k = int(rng.integers(2, 7))
        parts = [PIECES[int(i)] for i in rng.integers(0, len(PIECES), k)]
        seps = ["", " ", "  ", "\n", "\t", " \n"]
        out.append("".join(p + seps[int(rng.integers(0, len(seps)))] for p in parts))
    out += ["", " ", "a" * 300, " ".join(["word"] * 200)]
    return out


def transformers_tokenizer(path):
    from transformers import AutoTokenizer
    os.environ["HF_HUB_OFFLINE"] = "1"
    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def same_tokenizer(ours, theirs):
    a, b = json.loads(ours.to_str()), json.loads(theirs.backend_tokenizer.to_str())
    for key in b:
        assert a[key] == b[key], key


def check_corpus(ours, theirs, texts):
    for text in texts:
        for special in (True, False):
            ids = ours.encode(text, add_special_tokens=special).ids
            assert ids == theirs(text, add_special_tokens=special)["input_ids"], (text, special)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == \
                theirs.decode(ids, skip_special_tokens=skip), text


@pytest.fixture(scope="module")
def smollm(smollm_gguf, smollm_hf_tokenizer):
    f = GGUFFile(smollm_gguf)
    return f, tokenizer_from_gguf(f), smollm_hf_tokenizer


def test_smollm2_tokenizer_is_transformers(smollm):
    _, ours, theirs = smollm
    same_tokenizer(ours, theirs)
    assert ours.get_vocab_size() == len(theirs) == 49152


def test_smollm2_ids_and_decoding(smollm):
    _, ours, theirs = smollm
    texts = corpus()
    assert len(texts) > 300
    check_corpus(ours, theirs, texts)
    batch = ours.encode_batch(texts[:50])
    assert [e.ids for e in batch] == theirs(texts[:50])["input_ids"]
    for text in texts:            # byte-level BPE loses nothing
        assert ours.decode(ours.encode(text).ids, skip_special_tokens=False) == text
    assert ours.encode("<|im_start|>user").ids[0] == 1        # special text is the token


def test_smollm2_special_tokens(smollm):
    f, ours, theirs = smollm
    s = special_tokens_from_gguf(f)
    assert (s["bos_token"], s["eos_token"], s["pad_token"], s["unk_token"]) == (
        theirs.bos_token, theirs.eos_token, theirs.pad_token, theirs.unk_token)
    assert (s["bos_token_id"], s["eos_token_id"], s["pad_token_id"], s["unk_token_id"]) == (
        theirs.bos_token_id, theirs.eos_token_id, theirs.pad_token_id, theirs.unk_token_id)
    assert s["add_bos_token"] is False and s["add_eos_token"] is False
    assert s["chat_template"] == theirs.chat_template


def small_vocab_file(path, pre, add_bos=None, add_eos=None, extra=()):
    """A byte-level BPE vocabulary of the 256 byte characters, a few merges,
    control tokens, a user-defined one and a token stored in plain UTF-8."""
    alphabet = list(bytes_to_unicode().values())
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "1 2", "Ġ Ġ", "ĠĠ Ġ", "in g"]
    merged = [m.replace(" ", "") for m in merges]
    # token 0 is GPT-2's "<|endoftext|>": transformers adds that token to every
    # byte-level vocabulary (past its end when it lacks it); pytransformer does not
    tokens = ["<|endoftext|>", "</s>", "<pad>"] + alphabet + merged + ["<think>", "é!", "<ctl>"]
    types = [3, 3, 3] + [1] * (len(alphabet) + len(merged)) + [4, 1, 3]
    kv = [("tokenizer.ggml.model", "gpt2", "STRING", None),
          ("tokenizer.ggml.pre", pre, "STRING", None),
          ("tokenizer.ggml.tokens", tokens, "ARRAY", "STRING"),
          ("tokenizer.ggml.token_type", types, "ARRAY", "INT32"),
          ("tokenizer.ggml.merges", merges, "ARRAY", "STRING"),
          ("tokenizer.ggml.bos_token_id", 0, "UINT32", None),
          ("tokenizer.ggml.eos_token_id", 1, "UINT32", None),
          ("tokenizer.ggml.padding_token_id", 2, "UINT32", None)] + list(extra)
    if not any(k == "tokenizer.ggml.unknown_token_id" for k, *_ in kv):
        kv.append(("tokenizer.ggml.unknown_token_id", 2, "UINT32", None))
    if add_bos is not None:
        kv.append(("tokenizer.ggml.add_bos_token", add_bos, "BOOL", None))
    if add_eos is not None:
        kv.append(("tokenizer.ggml.add_eos_token", add_eos, "BOOL", None))
    return write_gguf(path, kv=kv)


@pytest.mark.parametrize("pre, add_bos, add_eos", [
    ("smollm", True, None), ("gpt2", None, True), ("llama-bpe", True, False),
    ("qwen2", False, True), ("smaug-bpe", True, True)])
def test_crafted_files_against_transformers(tmp_path, pre, add_bos, add_eos):
    p = small_vocab_file(tmp_path / "t.gguf", pre, add_bos, add_eos)
    ours, theirs = tokenizer_from_gguf(p), transformers_tokenizer(str(p))
    same_tokenizer(ours, theirs)
    texts = corpus(120, seed=1) + ["the thing 12345 <think>x</think> é! <|endoftext|>a</s><ctl>",
                                   "   three spaces", "1234567 numbers 89"]
    check_corpus(ours, theirs, texts)
    ids = ours.encode("the").ids
    assert (ids[0] == 0) == bool(add_bos) and (ids[-1] == 1) == bool(add_eos)


def test_unsupported_or_broken_tokenizer_metadata(tmp_path):
    p = write_gguf(tmp_path / "spm.gguf", kv=[("tokenizer.ggml.model", "llama", "STRING", None)])
    with pytest.raises(ValueError, match=r"spm\.gguf.*'llama'"):
        tokenizer_from_gguf(p)
    p = write_gguf(tmp_path / "none.gguf")
    with pytest.raises(ValueError, match=r"none\.gguf.*tokenizer\.ggml\.model"):
        tokenizer_from_gguf(p)
    p = small_vocab_file(tmp_path / "bad_id.gguf", "gpt2",
                         extra=[("tokenizer.ggml.unknown_token_id", 10 ** 6, "UINT32", None)])
    with pytest.raises(ValueError, match=r"bad_id\.gguf.*unknown_token_id"):
        tokenizer_from_gguf(p)
    kv = [("tokenizer.ggml.model", "gpt2", "STRING", None),
          ("tokenizer.ggml.tokens", ["a", "b"], "ARRAY", "STRING"),
          ("tokenizer.ggml.merges", ["a b c"], "ARRAY", "STRING")]
    p = write_gguf(tmp_path / "merge.gguf", kv=kv)
    with pytest.raises(ValueError, match=r"merge\.gguf.*merges"):
        tokenizer_from_gguf(p)
    kv[2] = ("tokenizer.ggml.merges", ["a q"], "ARRAY", "STRING")
    p = write_gguf(tmp_path / "merge2.gguf", kv=kv)
    with pytest.raises(ValueError, match=r"merge2\.gguf"):
        tokenizer_from_gguf(p)
