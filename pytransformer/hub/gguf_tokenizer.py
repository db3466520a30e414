"""The tokenizer a GGUF file describes, as a Hugging Face ``tokenizers.Tokenizer``.

A GGUF file carries no tokenizer.json: llama.cpp's converter stores the
vocabulary (``tokenizer.ggml.tokens``), the BPE merges, each token's type
(1 normal, 3 control, 4 user-defined, ...), the pre-tokenizer's name
(``tokenizer.ggml.pre``), the special ids and the add-BOS/EOS flags as
metadata.  :func:`tokenizer_from_gguf` rebuilds from these the tokenizer that
transformers builds for the same file (``AutoTokenizer.from_pretrained(dir,
gguf_file=name)``, its integrations/gguf): for ``tokenizer.ggml.model ==
"gpt2"`` (byte-level BPE: GPT-2, SmolLM, Llama 3, Qwen2 ...)

- the vocabulary, each token spelled in GPT-2's byte alphabet (a token the
  file writes in plain UTF-8 is re-spelled from its bytes), and the merges;
- a byte-level pre-tokenizer: GPT-2's own split for names such as ``smollm``
  or ``gpt2``, the Llama 3 or Qwen2 split regex for the names that use them;
- control tokens (type 3) as special added tokens, user-defined ones (type 4)
  as plain added tokens, and the bos/eos/unk/pad tokens as special tokens;
- a post-processor adding BOS and EOS as ``tokenizer.ggml.add_bos_token`` /
  ``add_eos_token`` say (neither, when the file does not say);
- the byte-level decoder.

One difference, on purpose: transformers also adds GPT-2's ``"<|endoftext|>"``
as a special token to every byte-level vocabulary, appended past its end when
the vocabulary lacks it (an id the model has no embedding for); here it is
special only when the file says so.

:func:`special_tokens_from_gguf` gives the ids, token strings, flags and the
chat template (``tokenizer.chat_template``) beside it.
"""
__all__ = ["tokenizer_from_gguf", "special_tokens_from_gguf", "chat_template_from_gguf",
           "bytes_to_unicode", "PRE_TOKENIZER_SPLITS", "CONTROL", "USER_DEFINED"]

CONTROL, USER_DEFINED = 3, 4     # llama.cpp's token types

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> the split regex its merges were learned on; a name not
# listed (gpt2, smollm, starcoder, ...) keeps GPT-2's byte-level split.
PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                     "midm-2.0", "lfm2", "dbrx", "smaug-bpe"], _LLAMA3_SPLIT),
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "megrez"], _QWEN2_SPLIT),
}
_SPECIAL = (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
            ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id"))


def bytes_to_unicode():
    """GPT-2's byte alphabet: byte -> the printable character that spells it."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars)))


def _gguf(gguf_file):
    from .gguf import GGUFFile
    return gguf_file if isinstance(gguf_file, GGUFFile) else GGUFFile(gguf_file)


def _list_of(meta, key, kind, path, required=True):
    value = meta.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise ValueError(f"{path}: tokenizer metadata {key} is "
                         f"{'missing' if value is None else 'not a list of ' + kind.__name__}")
    return value


def special_tokens_from_gguf(gguf_file):
    """{``bos_token_id``, ``eos_token_id``, ``unk_token_id``, ``pad_token_id``
    (int or None), ``bos_token`` ... (their strings or None),
    ``add_bos_token``, ``add_eos_token`` (bool), ``chat_template`` (str or
    None)} of a GGUF file (a path or a :class:`~.gguf.GGUFFile`)."""
    f = _gguf(gguf_file)
    meta = f.metadata
    tokens = _list_of(meta, "tokenizer.ggml.tokens", str, f.path)
    out = {}
    for name, key in _SPECIAL:
        i = meta.get(f"tokenizer.ggml.{key}")
        if i is not None and (type(i) is not int or not 0 <= i < len(tokens)):
            raise ValueError(f"{f.path}: tokenizer.ggml.{key} = {i!r} is not the id of one of "
                             f"the {len(tokens)} tokens")
        out[name + "_id"], out[name] = i, (tokens[i] if i is not None else None)
    for flag in ("add_bos_token", "add_eos_token"):
        value = meta.get(f"tokenizer.ggml.{flag}", False)
        if not isinstance(value, bool):
            raise ValueError(f"{f.path}: tokenizer.ggml.{flag} is not a bool")
        out[flag] = value and out[flag[4:]] is not None
    template = meta.get("tokenizer.chat_template")
    if template is not None and not isinstance(template, str):
        raise ValueError(f"{f.path}: tokenizer.chat_template is not a string")
    out["chat_template"] = template
    return out


def tokenizer_from_gguf(gguf_file):
    """The ``tokenizers.Tokenizer`` of a GGUF file (a path or a
    :class:`~.gguf.GGUFFile`): the ids transformers' tokenizer for the same
    file gives, with and without special tokens, and its decoding.  Only
    byte-level BPE vocabularies (``tokenizer.ggml.model`` "gpt2") are built;
    another is a ValueError naming the file."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    f = _gguf(gguf_file)
    meta, path = f.metadata, f.path
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"{path}: tokenizer.ggml.model is {kind!r}; pytransformer builds "
                         f"byte-level BPE tokenizers ('gpt2') from GGUF files")
    tokens = _list_of(meta, "tokenizer.ggml.tokens", str, path)
    merges = _list_of(meta, "tokenizer.ggml.merges", str, path)
    types = _list_of(meta, "tokenizer.ggml.token_type", int, path, required=False) or []
    special = special_tokens_from_gguf(f)
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(tokens)}
    pairs = []
    for m in merges:
        parts = m.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{path}: tokenizer.ggml.merges has {m!r}, not two tokens "
                             f"separated by one space")
        pairs.append(tuple(parts))
    try:
        tok = Tokenizer(BPE(vocab=vocab, merges=pairs, dropout=None, continuing_subword_prefix="",
                            end_of_word_suffix="", fuse_unk=False))
    except Exception as e:  # tokenizers raises a bare Exception for a merge of unknown tokens
        raise ValueError(f"{path}: the tokenizer's vocabulary and merges do not fit "
                         f"({str(e)[:200]})") from None
    split = PRE_TOKENIZER_SPLITS.get(meta.get("tokenizer.ggml.pre"))
    if split is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    control = [AddedToken(t, normalized=False, special=True)
               for t, ty in zip(tokens, types) if ty == CONTROL and set(t) <= alphabet]
    if control:
        tok.add_special_tokens(control)
    user = [AddedToken(t, normalized=False, special=False)
            for t, ty in zip(tokens, types) if ty == USER_DEFINED and t in vocab]
    if user:
        tok.add_tokens(user)
    named = [special[n] for n, _ in _SPECIAL if special[n] is not None]
    if named:
        tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in named])
    bos, eos = special["bos_token"], special["eos_token"]
    add_bos, add_eos = special["add_bos_token"], special["add_eos_token"]
    single = f"{bos + ':0 ' if add_bos else ''}$A:0{' ' + eos + ':0' if add_eos else ''}"
    pair = f"{single}{' ' + bos + ':1' if add_bos else ''} $B:1{' ' + eos + ':1' if add_eos else ''}"
    specials = ([(bos, tok.token_to_id(bos))] if add_bos else []) + \
        ([(eos, tok.token_to_id(eos))] if add_eos else [])
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                       special_tokens=specials)
    return tok



def chat_template_from_gguf(gguf_file):
    """The file's ``tokenizer.chat_template`` as a
    :class:`~.chat_template.ChatTemplate` with its special tokens; a
    ValueError naming the file when it has none."""
    from .chat_template import ChatTemplate
    f = _gguf(gguf_file)
    s = special_tokens_from_gguf(f)
    if s["chat_template"] is None:
        raise ValueError(f"{f.path}: no tokenizer.chat_template in the file's metadata")
    return ChatTemplate(s["chat_template"], {k: s[k] for k, _ in _SPECIAL}, where=f.path)
