"""Kept for ``import pytransformer.io``: the weights files and torch
conversions now live in :mod:`pytransformer.hub`."""
from .hub import load_safetensors, save_safetensors, to_numpy, torch_state_dict  # noqa: F401

__all__ = ["to_numpy", "torch_state_dict", "save_safetensors", "load_safetensors"]
