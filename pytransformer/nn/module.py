"""Module, the base of every pytransformer.nn class: a tree of parameters and
sub-modules whose state_dict keys are torch's; ModuleList; and the
initialisations torch uses."""
import copy
import math
import os
from collections import namedtuple

import numpy as np

from ..ops.checks import check_compute_type, to_numpy

__all__ = ["Module", "ModuleList", "NO_INIT", "xavier_uniform", "torch_state_dict",
           "IncompatibleKeys"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def torch_state_dict(module):
    """A torch module's state dict as {key: float32 numpy array} (copies)."""
    return {k: np.array(to_numpy(v), dtype=np.float32, order="C", copy=True)
            for k, v in module.state_dict().items()}


# ----------------------------------------------------------- initialisation --

class _NoInit:
    """Stands in for a numpy Generator when weights are about to be loaded:
    parameters start as zeros and no random numbers are drawn."""

    def uniform(self, low, high, size):
        return np.zeros(size, dtype=np.float32)

    def standard_normal(self, size, dtype=np.float32):
        return np.zeros(size, dtype=np.float32)


NO_INIT = _NoInit()

#: Whether decoder layers run their decoding steps as one C call each where
#: they can (nn.TransformerDecoderLayer.fused_step, and the Llama layer's):
#: on unless PYTRANSFORMER_FUSED_STEP=0, which leaves every step to the
#: Python composition (the reference the C steps are tested against).
FUSED_STEP = os.environ.get("PYTRANSFORMER_FUSED_STEP", "1") != "0"


def _rng(rng):
    return np.random.default_rng() if rng is None else rng


def _uniform(rng, bound, shape):
    return np.asarray(rng.uniform(-bound, bound, size=shape), dtype=np.float32)


def xavier_uniform(rng, shape):
    """Glorot & Bengio's uniform init, as torch.nn.init.xavier_uniform_."""
    fan_out, fan_in = shape[0], int(np.prod(shape[1:]))
    return _uniform(rng, math.sqrt(6.0 / (fan_in + fan_out)), shape)


# ------------------------------------------------------------------- Module --

#: How many times an attribute of any Module has been set: a parameter, a
#: sub-module, a packed weight, compute_type, eps.  What a fused decoding
#: step was built from (nn.stack_step, a layer's _step_kernel) is unchanged
#: while this is; a decoding step sets none, so its fused step is found in
#: one comparison.
GENERATION = [0]


def kept_step(module):
    """A layer's fused step, kept in ``module.__dict__["_fused"]``: found in
    one comparison while no module attribute changed (GENERATION), else
    while ``module._step_key()`` -- the ids of the packed weights, biases
    and norms it holds, its settings -- is unchanged, else made anew by
    ``module._make_step()`` (None: the layer has no C step).  The step holds
    those objects, so their ids are not reused while it is kept; the key is
    taken again after making it, which may pack weights."""
    kept = module.__dict__.get("_fused")
    if kept is not None and kept[2] == GENERATION[0]:
        return kept[1]
    key = module._step_key()
    step = kept[1] if kept is not None and kept[0] == key else module._make_step()
    module.__dict__["_fused"] = (module._step_key(), step, GENERATION[0])
    return step


class Module:
    """A tree of parameters (numpy float32 arrays) and sub-modules.

    Attribute assignment registers parameters and sub-modules as torch.nn
    does, so ``state_dict`` keys are the attribute paths (``layers.0.linear1
    .weight``).  Parameters are stored read-only: change them through
    attribute assignment or :meth:`load_state_dict`, which keep the packed
    GEMM operands in step.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})

    # -- registration --
    def register_parameter(self, name, value):
        self._store(name, None if value is None else _as_parameter(value, name))

    def _store(self, name, value):
        """Parameter ``name`` = value, registered, and kept as a plain
        attribute too: reading it then costs no __getattr__ call."""
        GENERATION[0] += 1
        self._parameters[name] = value
        object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        GENERATION[0] += 1
        if params is None:
            raise AttributeError("Module.__init__() must be called before assigning "
                                 "attributes")
        if isinstance(value, Module):
            # registered, and kept as a plain attribute too (as parameters
            # are): decoding reads a few hundred a step
            self._modules[name] = value
            params.pop(name, None)
            object.__setattr__(self, name, value)
        elif name in params:
            self._store(name, None if value is None else _as_parameter(value, name))
            self._parameters_changed()
        elif name in self._modules and value is None:
            self._modules[name] = None
            object.__setattr__(self, name, None)
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        if name in d.get("_parameters", ()):
            return d["_parameters"][name]
        if name in d.get("_modules", ()):
            return d["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _parameters_changed(self):
        """Hook: a parameter of this module was replaced (repack here)."""

    # -- traversal --
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(prefix + name + ".")

    def named_parameters(self, prefix=""):
        for mprefix, m in self.named_modules(prefix):
            for name, p in m._parameters.items():
                if p is not None:
                    yield mprefix + name, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def children(self):
        return [m for m in self._modules.values() if m is not None]

    def state_dict(self):
        """{torch key: numpy float32 array}.  The arrays are the module's own
        (read-only), not copies."""
        return dict(self.named_parameters())

    def load_state_dict(self, state_dict, strict=True):
        """Load parameters by torch key name.

        Every missing, unexpected (with ``strict``) or mis-shaped key, and
        every value that is not a floating-point array, is named in a single
        ``ValueError``; nothing is loaded unless everything fits.  Returns
        ``(missing_keys, unexpected_keys)`` as torch does.
        """
        return self._load(state_dict, strict=strict, copy=True)

    def _load(self, state_dict, strict=True, copy=True):
        owners = {}
        for mprefix, m in self.named_modules():
            for name, p in m._parameters.items():
                if p is not None:
                    owners[mprefix + name] = (m, name, p.shape)
        given = dict(state_dict)
        missing = [k for k in owners if k not in given]
        unexpected = [k for k in given if k not in owners]
        problems = []
        values = {}
        for k, (m, name, shape) in owners.items():
            if k not in given:
                continue
            try:
                v = to_numpy(given[k])
            except Exception as e:  # noqa: BLE001 - reported with the key
                problems.append(f"{k}: cannot be read as an array ({e})")
                continue
            if v.dtype.kind != "f":
                problems.append(f"{k}: a floating-point array is needed, got dtype {v.dtype}")
            elif v.shape != shape:
                problems.append(f"{k}: shape {v.shape} in the state dict, {shape} in the "
                                f"{type(self).__name__}")
            else:
                values[k] = v
        if strict and missing:
            problems.insert(0, "missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.insert(1 if strict and missing else 0,
                            "unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise ValueError(f"load_state_dict for {type(self).__name__}: "
                             + "; ".join(problems))
        changed = {}
        for k, v in values.items():
            m, name, _ = owners[k]
            m._store(name, _as_parameter(v, k, copy=copy))
            changed[id(m)] = m
        for m in changed.values():
            m._parameters_changed()
        return IncompatibleKeys(missing, unexpected)

    @classmethod
    def from_torch(cls, module):
        """The pytransformer twin of a torch.nn module, with its weights."""
        m = cls._from_torch_config(module)
        m._load(torch_state_dict(module), strict=True, copy=False)
        return m

    @classmethod
    def _from_torch_config(cls, module):  # pragma: no cover - every class overrides
        raise NotImplementedError

    # -- torch.nn compatibility --
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def eval(self):
        return self

    def to(self, compute_type):
        """Convert in place to ``compute_type`` and return the module.

        "bfloat16": every GEMM weight (Linear, and the projections of
        MultiheadAttention) is repacked as bf16 and its products round their
        input to bf16, with float32 accumulation; attention, softmax, norms,
        embeddings and every other step stay float32.  The parameters keep
        the values they were loaded with, so ``.to("float32")`` goes back
        exactly.  "int8": the same GEMM weights quantized to int8 with a
        scale per output channel, each input row quantized per row in the
        product, exact int32 sums, float32 dequantization; the rest float32.
        """
        compute_type = check_compute_type(compute_type)
        for _, m in self.named_modules():
            if "compute_type" in m.__dict__ and m.compute_type != compute_type:
                m.compute_type = compute_type
                m._parameters_changed()
        return self

    def train(self, mode=True):
        if mode:
            raise NotImplementedError("pytransformer modules are inference-only")
        return self

    @property
    def training(self):
        return False

    def __deepcopy__(self, memo):
        # Packed GEMM operands are C objects: copy the parameters and repack.
        new = type(self).__new__(type(self))
        for k, v in self.__dict__.items():
            if k in ("_packs", "_fused", "_stack"):   # C objects, made again on use
                continue
            object.__setattr__(new, k, copy.deepcopy(v, memo))
        for p in new._parameters.values():
            if p is not None:
                p.flags.writeable = False
        new._parameters_changed()
        return new

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ")
                 for name, m in self._modules.items() if m is not None]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _as_parameter(value, name, copy=None):
    """value as a read-only float32 C array.  copy=None copies unless value is
    already one (assigning one module's parameter to another shares it, as
    tying weights in torch does)."""
    a = to_numpy(value)
    if a.dtype.kind != "f":
        raise ValueError(f"{name}: a floating-point array is needed, got dtype {a.dtype} "
                         f"with shape {a.shape}")
    if copy is None:
        copy = a.flags.writeable
    if copy or a.dtype != np.float32 or not a.flags.c_contiguous:
        a = np.array(a, dtype=np.float32, order="C", copy=True)
    a.flags.writeable = False
    return a


class ModuleList(Module):
    """Numbered sub-modules (``layers.0``, ``layers.1``, ...)."""

    def __init__(self, modules=()):
        super().__init__()
        for i, m in enumerate(modules):
            self._modules[str(i)] = m

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))


def clones(layer, n, layer_cls, where):
    """N identical layers (independent copies of ``layer``) for a stack."""
    if not isinstance(layer, layer_cls):
        raise ValueError(f"{where} must be a pytransformer.nn.{layer_cls.__name__}")
    return ModuleList([copy.deepcopy(layer) for _ in range(n)])
