"""Hugging Face model directories: config.json, model.safetensors (or shards
listed by model.safetensors.index.json), generation_config.json and the
tokenizer files -> the pytransformer model of the checkpoint's family, without
torch.

:func:`from_pretrained` reads config.json's ``model_type`` and hands the
checkpoint to that family's file in :mod:`pytransformer.models`, which says
which of our parameters each of its tensors becomes.  Everything a directory
can get wrong is a ``ValueError`` naming the file and what is wrong: a missing
config, a model_type we do not run, only a pytorch_model.bin (with how to
convert it), a missing or mis-shaped tensor, a tokenizer.json that does not
parse.
"""
import json
import os

from ..ops.checks import COMPUTE_TYPES  # noqa: F401
from ..ops.checks import check_compute_type  # noqa: F401  (used by the pipelines)
from .safetensors import SafetensorsFile

__all__ = ["from_pretrained", "is_gguf", "read_config", "read_json", "load_tokenizer", "byte_level_bpe",
           "CheckpointTensors", "COMPUTE_TYPES"]

# Tensors a checkpoint may carry that are not weights: torch buffers that
# save_pretrained writes for some models and versions.
_BUFFERS = ("position_ids", "token_type_ids")

_CONVERT = ('python -c "from transformers import AutoModel; '
            'AutoModel.from_pretrained(P).save_pretrained(P, safe_serialization=True)"')


def _families():
    """model_type -> the family that builds it (one file in models/ each)."""
    from ..models import bert, gpt2, llama, marian
    return {**{t: bert for t in bert.MODEL_TYPES}, **{t: gpt2 for t in gpt2.MODEL_TYPES},
            **{t: marian for t in marian.MODEL_TYPES}, **{t: llama for t in llama.MODEL_TYPES}}


def read_json(path, what="file"):
    """A JSON file's object; ValueError naming the file when it does not parse."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: the {what} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: the {what} is not a JSON object")
    return value


def model_directory(path):
    """path as a str naming a Hugging Face model directory (one with a
    config.json); ValueError otherwise."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such directory")
    if not os.path.isdir(path):
        raise ValueError(f"{path}: not a directory; a Hugging Face model directory "
                         f"(config.json, model.safetensors, tokenizer.json) or a .gguf file "
                         f"is needed")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"{path}: not a Hugging Face model directory: it has no "
                         f"config.json")
    return path


def read_config(path):
    """config.json of the model directory ``path`` as a dict."""
    config = read_json(os.path.join(model_directory(path), "config.json"), "model config")
    if not isinstance(config.get("model_type"), str):
        raise ValueError(f"{os.path.join(path, 'config.json')}: no model_type")
    return config


class CheckpointTensors:
    """The tensors of a directory's model.safetensors, or of the shards named
    by model.safetensors.index.json, by name, memory-mapped."""

    def __init__(self, path):
        single = os.path.join(path, "model.safetensors")
        index = os.path.join(path, "model.safetensors.index.json")
        self.files = {}
        if os.path.isfile(single):
            f = self._open(single)
            self.where = {name: f for name in f.names()}
        elif os.path.isfile(index):
            weight_map = read_json(index, "safetensors index").get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{index}: no weight_map")
            self.where = {}
            for name, shard in weight_map.items():
                shard_path = os.path.join(path, str(shard))
                if os.path.dirname(os.path.normpath(str(shard))) or not os.path.isfile(shard_path):
                    raise ValueError(f"{index}: tensor {name!r} is in {shard!r}, which is not a "
                                     f"file of {path}")
                f = self._open(shard_path)
                if name not in f:
                    raise ValueError(f"{index}: tensor {name!r} is said to be in {shard}, "
                                     f"which does not have it")
                self.where[name] = f
        else:
            bins = [n for n in os.listdir(path) if n.endswith(".bin") or n.endswith(".pt")]
            if bins:
                raise ValueError(
                    f"{path}: has {', '.join(sorted(bins))} (torch pickles) but no "
                    f"model.safetensors; pytransformer reads safetensors only (no torch, no "
                    f"pickles).  Convert it once where torch and transformers are installed: "
                    f"{_CONVERT.replace('P', repr(path))}")
            raise ValueError(f"{path}: no model.safetensors (nor model.safetensors.index.json)")

    def _open(self, p):
        if p not in self.files:
            self.files[p] = SafetensorsFile(p)
        return self.files[p]

    def names(self):
        return list(self.where)

    def shape(self, name):
        return self.where[name].shape(name)

    def float32(self, name):
        return self.where[name].float32(name)

    def file_of(self, name):
        return self.where[name].path

    def describe(self):
        return ", ".join(sorted(self.files))


def load_weights(model, tensors, hf_map, path, transposed=(), head_map=None, ignored=None,
                 part_rows=None, where=None):
    """Load ``model`` from the checkpoint's tensors through its family's map
    {our key: [HF names]}.  HF names may carry a prefix (``bert.`` in a
    BertForMaskedLM checkpoint) and old checkpoints' LayerNorm ``gamma`` /
    ``beta``; tensors outside the base model (task heads) and torch buffers
    are ignored.  ``transposed``: our keys whose tensor is stored (in, out)
    (GPT-2's Conv1D); ``head_map``: {our key: [full HF names]} outside the
    prefix (an untied LM head); ``ignored(name)``: the family's own
    non-weights (Marian: its fixed sinusoids, copies of tied embeddings);
    ``part_rows``: {our key: rows of each part} where a fused weight's parts
    differ in size (else they split it evenly); ``where``: what the
    checkpoint is checked against in messages (default path/config.json).
    A (1, n) buffer is read as the (n,) parameter it stands for (Marian's
    final_logits_bias).  Every missing or mis-shaped tensor is named in one
    ValueError."""
    names = tensors.names()
    prefix = _prefix(names, next(iter(hf_map.values()))[0])
    by_name = {}
    for n in names:
        if n.startswith(prefix):
            k = n[len(prefix):]
            k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                         "LayerNorm.bias")
            by_name[k] = n
    for key, hf_names in (head_map or {}).items():
        for h in hf_names:
            if h in names:
                by_name[h] = h
    hf_map = {**hf_map, **(head_map or {})}
    ours = model.state_dict()
    problems, missing, state, used = [], [], {}, set()
    for key, hf_names in hf_map.items():
        shape = ours[key].shape
        rows = (part_rows or {}).get(key) or [shape[0] // len(hf_names)] * len(hf_names)
        parts = []
        for h, r in zip(hf_names, rows):
            part = (r,) + shape[1:]
            if key in transposed:
                part = part[::-1]
            if h not in by_name:
                missing.append((prefix if key not in (head_map or {}) else "") + h)
                continue
            used.add(h)
            got = tensors.shape(by_name[h])
            if len(part) == 1 and tuple(got) == (1,) + part:
                got = part
            if got != part:
                problems.append(f"{by_name[h]} has shape {list(got)}, the config says "
                                f"{list(part)}")
            else:
                parts.append(h)
        if len(parts) == len(hf_names):
            state[key] = parts
    unexpected = [by_name[k] for k in by_name if k not in used and
                  k.rsplit(".", 1)[-1] not in _BUFFERS and
                  not (ignored is not None and ignored(by_name[k]))]
    if missing:
        problems.insert(0, f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"tensors this {model.config.model_type} model does not have: "
                        f"{', '.join(unexpected[:10])}" + (" ..." if len(unexpected) > 10 else ""))
    if problems:
        where = os.path.join(path, "config.json") if where is None else where
        raise ValueError(f"{tensors.describe()}: does not fit {where}: "
                         + "; ".join(problems))
    import numpy as np
    arrays = {}
    for key, parts in state.items():
        a = [tensors.float32(by_name[h]) for h in parts]
        if key in transposed:
            a = [np.ascontiguousarray(t.T) for t in a]
        a = [t.reshape(-1, *ours[key].shape[1:]) for t in a]   # (1, n) -> (n,)
        a = a[0] if len(a) == 1 else np.concatenate(a, axis=0)
        # a view of the file's map is copied; an array made here is taken as it is
        arrays[key] = a if a.flags.writeable else np.array(a, np.float32)
    model._load(arrays, copy=False)
    return model


def _prefix(names, probe):
    """The prefix before the base model's names ('' or e.g. 'bert.'): found
    from where the first tensor of the map (``probe``) sits."""
    for n in names:
        if n == probe:
            return ""
    for n in sorted(names, key=len):
        if n.endswith("." + probe):
            return n[:-len(probe)]
    return ""


def is_gguf(path):
    """Whether ``path`` names a GGUF file (by its name or its magic)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    if path.lower().endswith(".gguf"):
        return True
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def from_pretrained(path, compute_type=None):
    """The pytransformer model of a Hugging Face model directory or a GGUF file.

    path: a directory with config.json and model.safetensors (or sharded
    safetensors and model.safetensors.index.json).  Dispatches on
    config.json's ``model_type``: bert, roberta, xlm-roberta, distilbert
    (:class:`pytransformer.models.bert.BertModel`), marian
    (:class:`pytransformer.models.marian.MarianMTModel`), gpt2
    (:class:`pytransformer.models.gpt2.GPT2LMHeadModel`), llama
    (:class:`pytransformer.models.llama.LlamaForCausalLM`); another
    model_type is a ValueError listing these.  Or a ``.gguf`` file: its
    ``general.architecture`` (llama: LlamaForCausalLM; another is a
    ValueError listing the supported ones; an open :class:`~.gguf.GGUFFile`
    is taken too).  ``forward`` takes
    and returns what the transformers class does (``input_ids``,
    ``attention_mask``, ... -> ``last_hidden_state``, ``pooler_output``;
    Marian, GPT-2 and Llama: the logits), as numpy.  A model that generates
    takes generate's defaults (max_length, num_beams, ...) from
    generation_config.json when the directory has one.

    compute_type: None (the checkpoint's own: float32 for safetensors; for
    a GGUF file each Linear multiplies from the file's Q8_0 / Q4_0 / Q4_1
    blocks by the weight-only kernels of csrc/gemm/gemm_q.h, and float32
    where its tensors are of another type), "float32" (every weight
    dequantized to float32), "bfloat16" or "int8" (the model converted with
    ``.to(compute_type)``: GEMM weights and inputs in bf16, or int8 weights
    per output channel and inputs per row; float32 elsewhere); anything else
    a ValueError.  Nothing is fetched from a model hub: the directory must
    be local.
    """
    if compute_type is not None:
        check_compute_type(compute_type)
    from .gguf import GGUFFile
    if isinstance(path, GGUFFile) or is_gguf(path):
        from .gguf_llama import llama_from_gguf
        model = llama_from_gguf(path, blocks=compute_type is None)
        return model if compute_type is None else model.to(compute_type)
    compute_type = compute_type or "float32"
    config = read_config(path)
    path = os.fspath(path)
    families = _families()
    mt = config["model_type"]
    if mt not in families:
        raise ValueError(f"{os.path.join(path, 'config.json')}: model_type {mt!r} is not "
                         f"supported (supported: {', '.join(sorted(families))})")
    tensors = CheckpointTensors(path)
    family = families[mt]
    try:
        model = family.from_hf_config(config, tensors.names())
    except ValueError as e:
        raise ValueError(f"{os.path.join(path, 'config.json')}: {e}") from None
    gen = os.path.join(path, "generation_config.json")
    if hasattr(model, "set_generation_config") and os.path.isfile(gen):
        try:
            model.set_generation_config(read_json(gen, "generation config"))
        except ValueError as e:
            raise ValueError(f"{gen}: {e}") from None
    return load_weights(model, tensors, model.hf_tensor_map(), path,
                        **family_maps(model)).to(compute_type)


def family_maps(model):
    """load_weights' keyword arguments for a model of the families that
    need them (transposed weights, a head, ignored names, fused parts)."""
    out = {}
    if hasattr(model, "hf_transposed"):
        out.update(transposed=model.hf_transposed(), head_map=model.hf_head_map())
    if hasattr(model, "hf_ignored"):
        out["ignored"] = model.hf_ignored
    if hasattr(model, "hf_part_rows"):
        out["part_rows"] = model.hf_part_rows()
    return out


def load_tokenizer(path):
    """The tokenizer of a model directory as a ``tokenizers.Tokenizer`` (Hugging
    Face's Rust tokenizers: WordPiece, BPE, Unigram): its tokenizer.json, or
    else a GPT-2 style vocab.json + merges.txt pair, built as transformers'
    GPT2Tokenizer builds it (:func:`byte_level_bpe`).  ValueError naming the
    file when none is there or it does not parse."""
    path = os.fspath(path)
    file = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(file):
        vocab, merges = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
        if os.path.isfile(vocab) and os.path.isfile(merges):
            return byte_level_bpe(path)
        raise ValueError(f"{path}: no tokenizer.json (nor vocab.json and merges.txt of a "
                         f"byte-level BPE); the tokenizer is read from those files only (save "
                         f"it with a fast tokenizer's save_pretrained)")
    from tokenizers import Tokenizer
    try:
        return Tokenizer.from_file(file)
    except Exception as e:  # tokenizers raises a bare Exception for bad files
        raise ValueError(f"{file}: not a tokenizer.json that tokenizers can read "
                         f"({type(e).__name__}: {str(e)[:200]})") from None


def _special_tokens(path):
    """The special tokens tokenizer_config.json (or special_tokens_map.json)
    names, as strings; GPT-2's <|endoftext|> when neither file says."""
    names = []
    for f in ("tokenizer_config.json", "special_tokens_map.json"):
        file = os.path.join(path, f)
        if not os.path.isfile(file):
            continue
        c = read_json(file, "tokenizer config")
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            v = c.get(key)
            v = v.get("content") if isinstance(v, dict) else v
            if isinstance(v, str) and v not in names:
                names.append(v)
        for v in (c.get("added_tokens_decoder") or {}).values():
            if isinstance(v, dict) and v.get("special") and isinstance(v.get("content"), str) \
                    and v["content"] not in names:
                names.append(v["content"])
    return names or ["<|endoftext|>"]


def byte_level_bpe(path):
    """GPT-2's tokenizer from vocab.json and merges.txt: byte-level BPE
    (Radford et al. 2019, section 2.2) with a ByteLevel pre-tokenizer and
    decoder (``add_prefix_space`` from tokenizer_config.json, default False)
    and the special tokens the tokenizer config names (that are in the
    vocabulary) -- what transformers' GPT2Tokenizer builds from the same
    files."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    vocab_file, merges_file = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
    vocab = read_json(vocab_file, "vocabulary")
    if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
               for k, v in vocab.items()):
        raise ValueError(f"{vocab_file}: a JSON object of token -> id is needed")
    try:
        with open(merges_file, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"{merges_file}: not UTF-8 text ({e})") from None
    merges = []
    for n, line in enumerate(lines):
        if not line or (n == 0 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{merges_file}: line {n + 1} is not a merge of two tokens: "
                             f"{line[:80]!r}")
        merges.append((parts[0], parts[1]))
    config = os.path.join(path, "tokenizer_config.json")
    prefix = read_json(config, "tokenizer config").get("add_prefix_space", False) \
        if os.path.isfile(config) else False
    try:
        tok = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                            end_of_word_suffix="", fuse_unk=False))
    except Exception as e:  # tokenizers' own complaint (a merge of unknown tokens, ...)
        raise ValueError(f"{merges_file}: does not fit {vocab_file} ({str(e)[:200]})") from None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(prefix))
    tok.decoder = decoders.ByteLevel()
    special = [t for t in _special_tokens(path) if t in vocab]
    if special:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    return tok
