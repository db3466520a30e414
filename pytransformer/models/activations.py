"""transformers' activation names (ACT2FN's keys, as config.json spells them)
mapped to what a layer's ``activation`` accepts: a name fused into the GEMM's
store, or :func:`~pytransformer.nn.gelu_tanh`.  The tanh forms (gelu_new,
gelu_pytorch_tanh, gelu_fast, gelu_accurate) are one formula,
0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))), written differently."""
from ..nn import gelu_tanh

__all__ = ["HF_ACTIVATIONS", "check_hf_activation"]

HF_ACTIVATIONS = {"gelu": "gelu", "gelu_python": "gelu", "relu": "relu",
                  "swish": "silu", "silu": "silu",
                  "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh,
                  "gelu_fast": gelu_tanh, "gelu_accurate": gelu_tanh,
                  "gelu_python_tanh": gelu_tanh}


def check_hf_activation(name, field):
    """`name` if this package computes it; ValueError naming the config field."""
    if name not in HF_ACTIVATIONS:
        raise ValueError(f"{field} {name!r} is not supported "
                         f"(supported: {', '.join(HF_ACTIVATIONS)})")
    return name
