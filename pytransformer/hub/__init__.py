"""Checkpoints in and out, as numpy: safetensors files (:mod:`.safetensors`),
torch tensors and state dicts (``to_numpy``, ``torch_state_dict``), Hugging
Face model directories (:mod:`.hf`: ``from_pretrained``, ``load_tokenizer``)
and Marian's SentencePiece tokenizer (:mod:`.marian_tokenizer`)."""
from ..nn.module import torch_state_dict
from ..ops.checks import to_numpy
from .hf import from_pretrained, load_tokenizer
from .marian_tokenizer import MarianTokenizer
from .safetensors import SafetensorsFile, load_safetensors, save_safetensors

__all__ = ["to_numpy", "torch_state_dict", "save_safetensors", "load_safetensors",
           "SafetensorsFile", "from_pretrained", "load_tokenizer", "MarianTokenizer"]
