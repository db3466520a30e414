"""pytransformer: a CPU Transformer whose kernels are hand-written C.

The model of "Attention Is All You Need" (Vaswani et al., 2017) on numpy
arrays, every output checked against PyTorch:

- pytransformer.ops: torch.nn.functional-shaped functions on the C kernels;
- pytransformer.nn: torch.nn-shaped modules (MultiheadAttention, Transformer, ...);
- pytransformer.models: Seq2SeqTransformer, the paper's full model, and the
  families of real checkpoints (BERT, Marian, GPT-2, Llama);
- pytransformer.generation: greedy, beam and sampling over the decoding protocol;
- pytransformer.hub: weights files, torch state dicts, Hugging Face model
  directories and GGUF files (``from_pretrained``: BERT-family encoders,
  Marian translation models, GPT-2, Llama-family decoders such as SmolLM2)
  and Marian's SentencePiece tokenizer;
- pytransformer.pipelines: text in, vectors or text out (``SentenceEncoder``,
  ``Translator``, ``Generator``);
- pytransformer.oracle: the torch twin of any of them (needs torch).
"""
try:
    from . import _kernels
except ImportError as e:  # pragma: no cover - depends on how it was installed
    import os as _os
    raise ImportError(
        f"pytransformer's compiled kernels are missing from {_os.path.dirname(__file__)}: "
        f"this is a source tree that was not built.  Install it (pip install .) and run "
        f"from another directory, or build in place (pip install -e .)") from e
from . import generation, hub, models, nn, ops  # noqa: E402
from .hub.hf import from_pretrained  # noqa: E402
from .ops.checks import TokenIdError  # noqa: E402
from .pipelines import Generator, SentenceEncoder, Translator  # noqa: E402

__version__ = "0.1.0"


#: The most threads :func:`set_num_threads` accepts: 4 x the CPUs present.
#: An OMP_NUM_THREADS above it is clamped to it, with a RuntimeWarning.
MAX_THREADS = _kernels.MAX_THREADS


def set_num_threads(n):
    """Threads the kernels may use (OpenMP), 1 <= n <= MAX_THREADS (else a
    ValueError); 1 when built without OpenMP."""
    _kernels.set_num_threads(n)


def get_num_threads():
    return _kernels.get_num_threads()


def cpu_info():
    """The kernel path in use and what the machine offers.

    Returns a dict with ``isa`` (the path in use: 'scalar', 'avx2' or
    'avx512'), ``available`` (the paths this CPU and build can run),
    ``threads``, ``openmp``, ``features`` (the CPU features the bf16 and
    int8 paths use: avx512_bf16, avx512_vnni, amx_tile, amx_bf16, amx_int8,
    amx_os_enabled from CPUID and XCR0; amx_granted: Linux gave this process
    the tile data) and
    ``compute_paths`` (the kernel each compute type runs, e.g.
    ``{"float32": "avx512", "bfloat16": "amx_bf16", "int8": "amx_int8"}``;
    a bfloat16 path named after a kernel path is that path's bf16 -> fp32
    conversion kernel, an int8 one that path's own int8 kernel) and ``caches``
    (bytes of L1d, L2 and L3 per core, from CPUID: the float32 GEMM's cache
    blocks follow them).
    ``PYTRANSFORMER_ISA`` forces a path, ``PYTRANSFORMER_BF16=amx_bf16 | avx512_bf16 |
    convert`` the bf16 kernel, ``PYTRANSFORMER_INT8=amx_int8 | avx512_vnni |
    generic`` the int8 kernel; forcing one the CPU lacks is a RuntimeError.
    """
    return {
        "isa": _kernels.get_isa(),
        "available": _kernels.available_isas(),
        "threads": _kernels.get_num_threads(),
        "openmp": _kernels.has_openmp(),
        "features": _kernels.cpu_features(),
        "compute_paths": {"float32": _kernels.get_isa(), "bfloat16": _kernels.get_bf16_path(),
                          "int8": _kernels.get_int8_path()},
        "caches": _kernels.cache_sizes(),
    }


__all__ = ["ops", "nn", "models", "generation", "hub", "TokenIdError", "MAX_THREADS",
           "set_num_threads", "get_num_threads", "cpu_info", "from_pretrained",
           "SentenceEncoder", "Translator", "Generator", "__version__"]
