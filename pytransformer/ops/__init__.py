"""torch.nn.functional-shaped operations on numpy arrays, computed by the C kernels.

Every function takes and returns numpy arrays; compute is float32.  Inputs of
another float dtype, or not C-contiguous, are converted (a copy), never
misread.  Integer, bool (where floats are needed), complex and object arrays,
and shapes that do not fit, raise ``ValueError`` naming the argument and the
shapes.  Names, argument order and semantics follow ``torch.nn.functional``.

- :mod:`.matmul`: ``matmul``, ``linear``, ``pack_weight``;
- :mod:`.rowwise`: ``softmax``, ``masked_softmax``, ``layer_norm``, ``rms_norm``, ``relu``,
  ``gelu``, ``silu``, ``silu_and_mul``;
- :mod:`.rotary`: ``rope``, ``rope_inv_freq`` (rotary position embedding);
- :mod:`.attention`: ``scaled_dot_product_attention``, ``attention_with_weights``,
  ``look_ahead_mask``;
- :mod:`.checks`: the argument checks every layer of the package shares.
"""
from .attention import attention_with_weights, look_ahead_mask, scaled_dot_product_attention
from .checks import TokenIdError, as_float32, check_int, check_token_ids
from .matmul import PackedMatrix, PackedMatrixBF16, PackedMatrixI8, QuantizedMatrix, linear, matmul, pack_weight
from .rotary import rope, rope_inv_freq
from .rowwise import gelu, layer_norm, masked_softmax, relu, rms_norm, silu_and_mul, softmax
from .rowwise import silu

__all__ = [
    "matmul", "linear", "pack_weight", "PackedMatrix", "PackedMatrixBF16", "PackedMatrixI8", "QuantizedMatrix",
    "softmax", "masked_softmax",
    "layer_norm", "rms_norm", "relu", "gelu", "silu_and_mul", "rope", "rope_inv_freq",
    "scaled_dot_product_attention", "attention_with_weights", "look_ahead_mask", "as_float32", "check_int", "check_token_ids", "TokenIdError",
]
__all__ += ["silu"]
