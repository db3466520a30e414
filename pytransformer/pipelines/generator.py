"""Text generation: :class:`Generator` continues prompts with a decoder-only
language model (GPT-2, Llama-family models such as SmolLM2): tokenizer,
model, decoding, and text streamed as it is decoded."""
import os

import numpy as np

from ..hub.chat_template import ChatTemplate
from ..hub.gguf import GGUFFile
from ..hub.gguf_tokenizer import special_tokens_from_gguf, tokenizer_from_gguf
from ..hub.hf import check_compute_type, from_pretrained, is_gguf, load_tokenizer, read_json
from ..ops.checks import check_int
from .sentence import _as_list

__all__ = ["Generator"]

_SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token")


class Generator:
    """Text generation with a decoder-only checkpoint: a model directory
    (GPT-2, Llama: config.json, model.safetensors, tokenizer.json or
    vocab.json + merges.txt) or a GGUF file (a Llama-family model with its
    tokenizer and chat template in its metadata, e.g. SmolLM2).

    ``Generator(path).generate(prompts, max_new_tokens=...)`` is transformers'
    ``model.generate`` on the tokenised prompts, decoded back to text (the new
    text only, special tokens left out).  The model comes from
    :func:`pytransformer.from_pretrained` (so any decoder-only family it
    loads); its tokenizer from the directory's files, or from a GGUF file's
    metadata (:func:`pytransformer.hub.tokenizer_from_gguf`).  Stop ids: the
    checkpoint's eos ids (generation_config.json, else config.json; a GGUF
    file's ``tokenizer.ggml.eos_token_id``, which ends a chat turn for chat
    models: SmolLM2's ``<|im_end|>``), plus ``stop_token_ids``.
    ``compute_type``: as :func:`pytransformer.from_pretrained` (None: the
    checkpoint's own -- a GGUF file's blocks by the weight-only kernels).
    """

    def __init__(self, path, compute_type=None):
        if compute_type is not None:
            check_compute_type(compute_type)
        self.path = os.fspath(path)
        gguf = GGUFFile(self.path) if is_gguf(self.path) else None  # opened once, read thrice
        self.model = from_pretrained(gguf or self.path, compute_type)
        if not getattr(self.model, "decoder_only", False):
            raise ValueError(f"{self.path}: a {self.model.config.model_type} model does not "
                             f"generate text (a decoder-only model such as gpt2 is needed)")
        c = self.model.config
        if gguf is not None:
            self.tokenizer = tokenizer_from_gguf(gguf)
            special = special_tokens_from_gguf(gguf)
            template, gen = special["chat_template"], {}
            tokens = {k: special[k] for k in _SPECIAL}
        else:
            self.tokenizer = load_tokenizer(self.path)
            config = _optional_json(os.path.join(self.path, "tokenizer_config.json"),
                                    "tokenizer config")
            gen = _optional_json(os.path.join(self.path, "generation_config.json"),
                                 "generation config")
            template = config.get("chat_template") or \
                _read_text(os.path.join(self.path, "chat_template.jinja"))
            if isinstance(template, list):  # named templates: the default one
                named = {t.get("name"): t.get("template") for t in template
                         if isinstance(t, dict)}
                template = named.get("default")
            tokens = {k: v.get("content") if isinstance(v, dict) else v
                      for k, v in ((k, config.get(k)) for k in _SPECIAL)}
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        eos = gen.get("eos_token_id", c.eos_token_id)
        eos = eos if isinstance(eos, list) else [] if eos is None else [eos]
        self.eos_ids = [int(e) for e in eos if isinstance(e, int) and 0 <= e < self.model.vocab_size]
        self.chat_template = ChatTemplate(template, tokens, where=self.path) \
            if isinstance(template, str) and template else None

    # -- text <-> ids --
    def encode(self, text, chat=False):
        """Token ids of one prompt: the tokenizer's encoding (its post-processor's
        special tokens included, as transformers' tokenizer call), or with chat
        the checkpoint's chat template rendered for the prompt as a user
        message (or a list of {"role", "content"} messages), then encoded
        without special tokens, as apply_chat_template does."""
        if chat:
            return self.tokenizer.encode(self.apply_chat_template(text),
                                         add_special_tokens=False).ids
        if not isinstance(text, str):
            raise ValueError(f"prompts: a str is needed, got {type(text).__name__} {text!r:.60}")
        ids = self.tokenizer.encode(text).ids
        if not ids and self.model.config.bos_token_id is not None:
            ids = [self.model.config.bos_token_id]  # an empty prompt starts from <bos>
        return ids

    def decode(self, ids):
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, messages, add_generation_prompt=True):
        """The checkpoint's chat template (tokenizer_config.json
        "chat_template" or chat_template.jinja as transformers saves it, or a GGUF file's tokenizer.chat_template) rendered as
        transformers renders it (:class:`pytransformer.hub.ChatTemplate`);
        ValueError when the checkpoint has none."""
        if self.chat_template is None:
            raise ValueError(f"{self.path}: chat=True, but the checkpoint has no chat template "
                             f"(no \"chat_template\" in tokenizer_config.json, no "
                             f"tokenizer.chat_template in a GGUF file)")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise ValueError("chat: a str or a list of {'role', 'content'} messages is needed")
        return self.chat_template.apply(messages, add_generation_prompt=add_generation_prompt)

    # -- generation --
    def generate(self, prompts, max_new_tokens=64, method=None, do_sample=False, num_beams=1,
                 temperature=1.0, top_k=None, top_p=1.0, seed=None, repetition_penalty=1.0,
                 no_repeat_ngram_size=0, min_new_tokens=0, stop_token_ids=None,
                 bad_words_ids=None, length_penalty=1.0, chat=False, stream=None,
                 truncate=False, batch_size=8):
        """The text each prompt continues with: a list of str, one per prompt
        (a single str prompt gives a list of one).

        method: 'greedy', 'beam' or 'sample'; None chooses as transformers
        does: 'sample' with ``do_sample``, else 'beam' with ``num_beams`` > 1,
        else 'greedy'.  temperature, top_k, top_p, seed (sampling),
        num_beams, length_penalty (beam search), repetition_penalty,
        no_repeat_ngram_size, min_new_tokens, bad_words_ids: see
        :func:`pytransformer.generation.generate`.  stop_token_ids: more ids
        that end a row, beside the checkpoint's eos.  chat: apply the
        checkpoint's chat template to each prompt (a str, or a list of
        messages).  stream: a callable that receives each new piece of text
        as soon as it is complete text (a multi-byte UTF-8 character split
        over tokens is sent whole); with several prompts they are then
        generated one after another, each streamed in turn (beam search
        sends its result when it is known).  truncate: drop a prompt's
        earliest tokens so that it and max_new_tokens fit in the model's
        positions (else a ValueError).  Prompts are decoded batch_size at a
        time; each gets the same text alone or in any batch.  Afterwards
        ``new_tokens`` lists the tokens generated for each prompt.
        """
        single = isinstance(prompts, str) or (chat and isinstance(prompts, list) and prompts
                                              and isinstance(prompts[0], dict))
        texts = [prompts] if single else _as_list(prompts)
        max_new_tokens = check_int(max_new_tokens, "max_new_tokens", 1)
        if method is None:
            method = "sample" if do_sample else "beam" if num_beams and num_beams > 1 \
                else "greedy"
        stops = list(self.eos_ids)
        for t in ([] if stop_token_ids is None else
                  [stop_token_ids] if isinstance(stop_token_ids, int) else stop_token_ids):
            if t not in stops:
                stops.append(t)
        kw = dict(method=method, beam_size=num_beams if num_beams and num_beams > 1 else 4,
                  length_penalty=length_penalty, temperature=temperature, top_k=top_k,
                  top_p=top_p, seed=seed, repetition_penalty=repetition_penalty,
                  no_repeat_ngram_size=no_repeat_ngram_size, min_new_tokens=min_new_tokens,
                  bad_words_ids=bad_words_ids, eos_id=stops or None)
        encoded = [self._fit(self.encode(t, chat), max_new_tokens, truncate, i)
                   for i, t in enumerate(texts)]
        self.new_tokens = []  # tokens generated per prompt (stop ids included)
        if stream is not None:
            if not callable(stream):
                raise ValueError(f"stream: a callable is needed, got {stream!r}")
            return [self._streamed(ids, max_new_tokens, kw, stream) for ids in encoded]
        batch_size = check_int(batch_size, "batch_size", 1)
        out = []
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            ids, mask = _left_padded(chunk, self.model.pad_id)
            tokens = self.model.generate(ids, max_new_tokens, attention_mask=mask, **kw)
            rows = [_until_stop(row, stops) for row in tokens.tolist()]
            self.new_tokens += [n for _, n in rows]
            out += [self.decode(row) for row, _ in rows]
        return out

    def _fit(self, ids, max_new_tokens, truncate, i):
        room = self.model.max_length - max_new_tokens
        if len(ids) > room:
            if not truncate or room < 1:
                raise ValueError(f"prompts[{i}]: {len(ids)} tokens + max_new_tokens="
                                 f"{max_new_tokens} exceed the model's {self.model.max_length} "
                                 f"positions (truncate=True drops the prompt's earliest tokens)")
            ids = ids[len(ids) - room:]
        if not ids:
            raise ValueError(f"prompts[{i}]: no tokens to start from")
        return ids

    def _streamed(self, ids, max_new_tokens, kw, stream):
        """One prompt, its text sent to ``stream`` piece by piece."""
        got, sent = [], [""]
        stops = set(kw["eos_id"] or ())

        def streamer(rows, tokens):
            got.extend(t for t in tokens.tolist() if t not in stops)
            text = self.decode(got)
            if text.endswith("\ufffd"):
                return  # a character whose bytes are still coming
            if len(text) > len(sent[0]):
                stream(text[len(sent[0]):])
                sent[0] = text

        tokens = self.model.generate(np.array([ids]), max_new_tokens, streamer=streamer, **kw)
        row, n = _until_stop(tokens[0].tolist(), stops)
        self.new_tokens.append(n)
        text = self.decode(row)
        if len(text) > len(sent[0]):  # what was held back (or beam search's result)
            stream(text[len(sent[0]):])
        return text


def _optional_json(file, what):
    return read_json(file, what) if os.path.isfile(file) else {}


def _read_text(file):
    """A UTF-8 text file's contents, or None when there is no such file."""
    if not os.path.isfile(file):
        return None
    try:
        with open(file, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{file}: not UTF-8 text ({e})") from None


def _left_padded(rows, pad_id):
    """Token lists -> (ids, attention_mask), left-padded as transformers
    pads prompts for generation."""
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = r
        mask[i, T - len(r):] = 1
    return ids, mask


def _until_stop(row, stops):
    """(a generated row without its stop id and the padding after it, the
    number of tokens generated, the stop id included)."""
    for j, t in enumerate(row):
        if t in stops:
            return row[:j], j + 1
    return row, len(row)  # no stop: max_new_tokens tokens, no padding
