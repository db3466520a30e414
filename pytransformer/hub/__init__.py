"""Checkpoints in and out, as numpy: safetensors files (:mod:`.safetensors`),
and torch tensors and state dicts (``to_numpy``, ``torch_state_dict``)."""
from ..nn.module import torch_state_dict
from ..ops.checks import to_numpy
from .safetensors import load_safetensors, save_safetensors

__all__ = ["to_numpy", "torch_state_dict", "save_safetensors", "load_safetensors"]
