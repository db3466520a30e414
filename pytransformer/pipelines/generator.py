"""Text generation: :class:`Generator` continues prompts with a decoder-only
language model (GPT-2): tokenizer, model, decoding, and text streamed as it
is decoded."""
import os

import numpy as np

from ..hub.hf import check_compute_type, from_pretrained, load_tokenizer, read_json
from ..ops.checks import check_int
from .sentence import _as_list

__all__ = ["Generator"]


class Generator:
    """Text generation with a decoder-only model directory (GPT-2: config.json,
    model.safetensors, tokenizer.json or vocab.json + merges.txt).

    ``Generator(path).generate(prompts, max_new_tokens=...)`` is transformers'
    ``model.generate`` on the tokenised prompts, decoded back to text (the new
    text only, special tokens left out).  The model comes from
    :func:`pytransformer.from_pretrained` (so any decoder-only family it
    loads); its tokenizer from the directory, or from the model itself when
    the model carries one (``model.tokenizer``: a checkpoint file that holds
    its vocabulary).  Stop ids: the checkpoint's eos ids (generation_config.json,
    else config.json), plus ``stop_token_ids``.
    """

    def __init__(self, path, compute_type="float32"):
        check_compute_type(compute_type)
        self.path = os.fspath(path)
        self.model = from_pretrained(self.path, compute_type)
        if not getattr(self.model, "decoder_only", False):
            raise ValueError(f"{self.path}: a {self.model.config.model_type} model does not "
                             f"generate text (a decoder-only model such as gpt2 is needed)")
        self.tokenizer = getattr(self.model, "tokenizer", None) or load_tokenizer(self.path)
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        folder = self.path if os.path.isdir(self.path) else os.path.dirname(self.path)
        self.tokenizer_config = _optional_json(os.path.join(folder, "tokenizer_config.json"),
                                               "tokenizer config")
        gen = _optional_json(os.path.join(folder, "generation_config.json"), "generation config")
        c = self.model.config
        eos = gen.get("eos_token_id", c.eos_token_id)
        eos = eos if isinstance(eos, list) else [] if eos is None else [eos]
        self.eos_ids = [int(e) for e in eos if isinstance(e, int) and 0 <= e < self.model.vocab_size]
        self.chat_template = self.tokenizer_config.get("chat_template") or \
            getattr(self.model, "chat_template", None)

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
        """The checkpoint's chat template (tokenizer_config.json "chat_template",
        jinja2) rendered as transformers renders it; ValueError when the
        checkpoint has none."""
        template = self.chat_template
        if isinstance(template, list):  # named templates: the default one
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        if not isinstance(template, str) or not template:
            raise ValueError(f"{self.path}: chat=True, but the checkpoint has no chat template "
                             f"(tokenizer_config.json has no \"chat_template\")")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise ValueError("chat: a str or a list of {'role', 'content'} messages is needed")
        special = {}
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            v = self.tokenizer_config.get(key)
            special[key] = v.get("content") if isinstance(v, dict) else v
        return _chat_template(template).render(messages=messages,
                                               add_generation_prompt=add_generation_prompt,
                                               **special)

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


def _chat_template(template):
    """A chat template compiled as transformers compiles it: a sandboxed
    jinja2 environment, trim_blocks and lstrip_blocks, raise_exception and
    a tojson that does not escape HTML."""
    import json

    try:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ImportError("chat=True needs jinja2: pip install jinja2") from None

    def raise_exception(message):
        raise ValueError(f"chat template: {message}")

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template)
    except jinja2.TemplateError as e:
        raise ValueError(f"chat template: not a jinja2 template ({e})") from None
