"""The basic layers: Linear, LayerNorm, RMSNorm, Embedding, and the
activations a position-wise feed-forward network may use."""
import math
import numbers
import operator

import numpy as np

from .. import _kernels, ops
from ..ops.checks import check_float, check_int, check_token_ids
from ..ops.rowwise import _FLOAT32_EPS
from .module import GENERATION, NO_INIT, Module, _rng, _uniform

__all__ = ["Linear", "LayerNorm", "RMSNorm", "Embedding", "gelu_tanh", "check_token_ids",
           "stack_step"]


class Linear(Module):
    """y = x W^T + b, as torch.nn.Linear; W is held packed for the GEMM, in
    the module's ``compute_type`` ("float32"; "bfloat16" after
    ``.to("bfloat16")``: W and x rounded to bf16 in the product, float32
    accumulation, bias and activation; "int8" after ``.to("int8")``: W
    quantized per output channel, x per row, int32 sums).  After :meth:`load_blocks` W is
    multiplied from a GGUF file's own blocks and ``compute_type`` is their
    ggml type ('Q8_0', 'Q4_0', 'Q4_1'); ``.to("float32")`` and
    ``.to("bfloat16")`` switch to the (dequantized) ``weight`` as usual."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *,
                 rng=None):
        super().__init__()
        self._packs = {}
        self._blocks = None     # (QuantizedMatrix, the weight array it stands for)
        self.compute_type = "float32"
        self.in_features = check_int(in_features, "in_features", 0)
        self.out_features = check_int(out_features, "out_features", 0)
        rng = _rng(rng)
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
        self.register_parameter("weight", _uniform(rng, bound, (self.out_features,
                                                                self.in_features)))
        self.register_parameter("bias", _uniform(rng, bound, (self.out_features,))
                                if bias else None)
        self._parameters_changed()

    def _parameters_changed(self):
        blocks = self._blocks
        if blocks is not None and blocks[1] is not self.weight:
            self._blocks = blocks = None            # a new weight: the blocks are stale
            if self.compute_type in _kernels.QUANTIZED_TYPES:
                self.compute_type = "float32"
        if blocks is not None and self.compute_type == blocks[0].qtype:
            self._packs = {"weight": blocks[0]}
        else:
            self._packs = {"weight": ops.pack_weight(self.weight, self.compute_type)}

    def load_blocks(self, blocks, qtype):
        """Multiply from ``blocks``, the weight in a GGUF file's own ggml
        blocks: a (out_features, bytes per row) uint8 array of ``qtype``
        ('Q8_0', 'Q4_0' or 'Q4_1'), read in place -- ``weight`` must already
        hold their dequantized values, which ``.to("float32")`` goes back to.
        ValueError when the shape does not fit the layer."""
        q = _kernels.QuantizedMatrix(blocks, qtype, self.in_features)
        if q.N != self.out_features:
            raise ValueError(f"Linear.load_blocks: {q.N} rows of blocks for "
                             f"out_features={self.out_features}")
        self._blocks = (q, self.weight)
        self.compute_type = qtype
        self._parameters_changed()
        return self

    def forward(self, input, activation=None):
        """``activation`` ('relu', 'gelu', a pytransformer extension) is fused
        into the GEMM's store."""
        return ops.linear(input, self._packs["weight"], self.bias, activation=activation)

    def step(self, x, activation=None):
        """forward for what a decoding step passes between its layers: x
        (N, in_features) float32, C-contiguous, checked at the step's entry
        and not converted again (the kernel boundary still checks buffers)."""
        return self._packs["weight"].matmul(x, self.bias, activation)

    @classmethod
    def _from_torch_config(cls, m):
        return cls(m.in_features, m.out_features, bias=m.bias is not None, rng=NO_INIT)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class LayerNorm(Module):
    """Layer normalisation (Ba et al. 2016), as torch.nn.LayerNorm: biased
    variance, eps inside the square root."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        self.eps = check_float(eps, "eps", 0.0)
        self.elementwise_affine = bool(elementwise_affine)
        affine = self.elementwise_affine
        self.register_parameter("weight", np.ones(self.normalized_shape, np.float32)
                                if affine else None)
        self.register_parameter("bias", np.zeros(self.normalized_shape, np.float32)
                                if affine and bias else None)

    def forward(self, input):
        return ops.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def step(self, x):
        """forward for a decoding step's rows (see :meth:`Linear.step`):
        x (N, E) float32, C-contiguous, normalised over its last axis."""
        return _kernels.layer_norm(x, x.shape[-1], self.weight, self.bias, self.eps)

    @classmethod
    def _from_torch_config(cls, m):
        return cls(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine,
                   bias=getattr(m, "bias", None) is not None)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class RMSNorm(Module):
    """Root-mean-square layer normalisation (Zhang & Sennrich 2019), as
    torch.nn.RMSNorm: ``x / sqrt(mean(x^2) + eps) * weight`` over the trailing
    ``normalized_shape`` dims; eps=None is float32's machine epsilon.  The
    pre-norm of Llama-family decoder layers."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None,
                 dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(check_int(s, "normalized_shape", 0)
                                      for s in normalized_shape)
        self.eps = None if eps is None else check_float(eps, "eps", 0.0)
        self.elementwise_affine = bool(elementwise_affine)
        self.register_parameter("weight", np.ones(self.normalized_shape, np.float32)
                                if self.elementwise_affine else None)

    def forward(self, input):
        return ops.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def step(self, x):
        """forward for a decoding step's rows (see :meth:`Linear.step`):
        x (N, E) float32, C-contiguous, normalised over its last axis."""
        return _kernels.rms_norm(x, x.shape[-1], self.weight,
                                 _FLOAT32_EPS if self.eps is None else self.eps)

    @classmethod
    def _from_torch_config(cls, m):
        """torch.nn.RMSNorm, or a transformers RMS norm (LlamaRMSNorm and its
        kin: a ``weight`` and a ``variance_epsilon``)."""
        if hasattr(m, "normalized_shape"):
            return cls(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine)
        return cls(tuple(m.weight.shape), eps=m.variance_epsilon)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, " \
               f"elementwise_affine={self.elementwise_affine}"


class Embedding(Module):
    """A lookup table of ``num_embeddings`` vectors, as torch.nn.Embedding."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, device=None,
                 dtype=None, *, rng=None):
        super().__init__()
        self.num_embeddings = check_int(num_embeddings, "num_embeddings", 0)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", 0)
        if padding_idx is not None:
            padding_idx = operator.index(padding_idx)
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx={padding_idx} is outside "
                                 f"num_embeddings={self.num_embeddings}")
            padding_idx %= self.num_embeddings  # as torch: -1 is the last row
        self.padding_idx = padding_idx
        w = np.asarray(_rng(rng).standard_normal((self.num_embeddings, self.embedding_dim),
                                                 dtype=np.float32), dtype=np.float32)
        if padding_idx is not None:
            w[padding_idx] = 0.0
        self.register_parameter("weight", w)

    def forward(self, input, name="input"):
        ids = check_token_ids(input, name, self.num_embeddings)
        return self.weight[ids]

    @classmethod
    def _from_torch_config(cls, m):
        return cls(m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx,
                   rng=NO_INIT)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


def gelu_tanh(x):
    """GELU in its tanh approximation, as torch.nn.GELU(approximate='tanh'):
    pass it as a layer's ``activation`` (it is fused into the GEMM)."""
    return ops.gelu(x, approximate="tanh")


def resolve_activation(activation):
    """(name fused into the GEMM, or a callable applied after it).  Beside
    torch's 'relu' and 'gelu', the names 'silu' and 'swish' (one function,
    x sigmoid(x)) are accepted."""
    if isinstance(activation, str):
        if activation in ("silu", "swish"):
            return "silu", None
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation should be relu/gelu/silu, not {activation}")
        return activation, None
    if activation is ops.relu:
        return "relu", None
    if activation is ops.gelu:
        return "gelu", None
    if activation is ops.silu:
        return "silu", None
    if activation is gelu_tanh:
        return "gelu_tanh", None
    if callable(activation):  # applied to the numpy output of the first GEMM
        return None, activation
    raise ValueError(f"activation should be 'relu', 'gelu', 'silu' or a callable, got "
                     f"{activation!r}")


def torch_activation(layer):
    """'relu', 'gelu', 'silu' or gelu_tanh for a torch Transformer layer's activation
    (SiLU as torch.nn.functional.silu or a torch.nn.SiLU module)."""
    act = layer.activation
    name = getattr(act, "__name__", type(act).__name__).lower()
    approximate = getattr(act, "approximate", "none")
    # checked before torch's relu-or-gelu code, which is 2 for either GELU form
    if name == "gelu" and approximate == "tanh":
        return gelu_tanh
    code = getattr(layer, "activation_relu_or_gelu", 0)
    if code == 1:
        return "relu"
    if code == 2:
        return "gelu"
    if name == "relu":
        return "relu"
    if name == "gelu" and approximate == "none":
        return "gelu"
    if name == "silu":
        return "silu"
    raise ValueError(f"from_torch: activation {act!r} is not supported (relu, gelu or silu "
                     f"only)")


def stack_step(owner, layers, norm, head):
    """A decoder stack's whole decoding step as one C call
    (_kernels.StackStep): its ``layers``' fused steps (each layer's
    ``_step_kernel()``), then ``norm`` (a LayerNorm, an RMSNorm or None) and
    ``head`` (the Linear to the vocabulary, or None).  None where a layer
    runs its step in Python (``fused_step`` off, or no C step for it) or the
    norm or head has no kernel: the caller then composes the step itself.
    Kept in ``owner`` while no module changes (module.GENERATION) and the
    same norm and head are asked for."""
    fused = all(layer.fused_step for layer in layers)
    now = (GENERATION[0], fused, id(norm), id(head))
    kept = owner.__dict__.get("_stack")
    if kept is not None and kept[0] == now:
        return kept[1]   # the norm and head are kept with it: their ids are not reused
    stack = None
    steps = [layer._step_kernel() for layer in layers] if fused else [None]
    packed = None if head is None else head._packs.get("weight")
    if type(norm) is LayerNorm:
        spec = ("layer", norm.weight, norm.bias, norm.eps)
    elif type(norm) is RMSNorm:
        spec = ("rms", norm.weight, _FLOAT32_EPS if norm.eps is None else norm.eps)
    else:
        spec = False if norm is not None else None
    if steps and None not in steps and spec is not False and \
            (head is None or isinstance(packed, _kernels.STEP_MATRIX_TYPES)):
        stack = _kernels.StackStep(steps, spec, None if head is None else (packed, head.bias))
    owner.__dict__["_stack"] = ((GENERATION[0],) + now[1:], stack, (norm, head))
    return stack
