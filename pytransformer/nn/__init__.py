"""torch.nn-shaped modules of "Attention Is All You Need" on numpy arrays.

Linear, LayerNorm, RMSNorm, Embedding, MultiheadAttention, TransformerEncoderLayer,
TransformerDecoderLayer, TransformerEncoder, TransformerDecoder and Transformer
take the constructor arguments, defaults, attribute names, forward signatures,
return values and mask conventions of the torch.nn class of the same name:

- a bool mask is True where a position may NOT attend; a float mask is added
  to the attention scores; ``*_key_padding_mask`` is ``(N, S)``;
- ``batch_first=False`` by default: sequences are ``(L, N, E)``;
- ``state_dict()`` / ``load_state_dict()`` use torch's key names, with numpy
  float32 values; ``from_torch(module)`` copies a torch module's weights.

Inference only: ``dropout`` is accepted and ignored.  The one documented
difference from torch: a query that may attend to no key at all (a fully
padded row) gets an attention output of zeros where torch gives NaN.

The modules only compose :mod:`pytransformer.ops`; the arithmetic lives in
the kernels.  Linear weights are packed once for the GEMM (and repacked
whenever they are loaded).

- :mod:`.module`: Module, ModuleList, initialisation;
- :mod:`.layers`: Linear, LayerNorm, RMSNorm, Embedding, activations;
- :mod:`.attention`: MultiheadAttention and torch's mask conventions;
- :mod:`.transformer`: encoder and decoder layers ("Add & Norm"), stacks, Transformer;
- :mod:`.cache`: KVCache and DecoderCache, what incremental decoding keeps
  between steps (encoder-decoder and decoder-only models).
"""
from .attention import MultiheadAttention, attention_mask
from .cache import DecoderCache, KVCache
from .layers import (Embedding, LayerNorm, Linear, RMSNorm, check_token_ids, gelu_tanh,
                     stack_step)
from .module import NO_INIT, Module, ModuleList, torch_state_dict, xavier_uniform
from .transformer import (Transformer, TransformerDecoder, TransformerDecoderLayer,
                          TransformerEncoder, TransformerEncoderLayer)

__all__ = [
    "Module", "ModuleList", "Linear", "LayerNorm", "RMSNorm", "Embedding", "MultiheadAttention",
    "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder",
    "TransformerDecoder", "Transformer", "KVCache", "DecoderCache",
]
