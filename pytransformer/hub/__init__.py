"""Checkpoints in and out, as numpy: safetensors files (:mod:`.safetensors`),
torch tensors and state dicts (``to_numpy``, ``torch_state_dict``), Hugging
Face model directories (:mod:`.hf`: ``from_pretrained``, ``load_tokenizer``;
:mod:`.marian_tokenizer`: Marian's SentencePiece tokenizer) and GGUF files
(:mod:`.gguf`: ``GGUFFile``; :mod:`.gguf_tokenizer`: the tokenizer and chat
template in their metadata; :mod:`.gguf_llama`: a Llama file's config and
tensors under Hugging Face names, and its model: ``llama_from_gguf``).  Chat templates are
rendered by :mod:`.chat_template`."""
from ..nn.module import torch_state_dict
from ..ops.checks import to_numpy
from .chat_template import ChatTemplate, apply_chat_template
from .gguf import GGUFFile
from .gguf_llama import llama_config_and_tensors, llama_from_gguf
from .gguf_tokenizer import chat_template_from_gguf, special_tokens_from_gguf, tokenizer_from_gguf
from .hf import from_pretrained, load_tokenizer
from .marian_tokenizer import MarianTokenizer
from .safetensors import SafetensorsFile, load_safetensors, save_safetensors

__all__ = ["to_numpy", "torch_state_dict", "save_safetensors", "load_safetensors",
           "SafetensorsFile", "from_pretrained", "load_tokenizer", "GGUFFile",
           "tokenizer_from_gguf", "special_tokens_from_gguf", "chat_template_from_gguf",
           "ChatTemplate", "apply_chat_template", "llama_config_and_tensors",
           "MarianTokenizer", "llama_from_gguf"]
