"""The package's layers (DESIGN.md): data flows down, nothing flows up.  Read
from the source with ast, so a new import that points up fails here; and the
import paths users had before the package was split still work."""
import ast
import importlib
import os

import pytest

import pytransformer

PKG = os.path.dirname(os.path.abspath(pytransformer.__file__))

# A layer may import the layers listed after it, never those before it.
ORDER = ["cli", "pipelines", "hub", "generation", "models", "nn", "ops"]
LEAVES = {"hub.safetensors"}   # file-format readers: no package imports of their own


def _layer(module):
    head = module.split(".")[0]
    return head if head in ORDER else None


def _imports(path, module):
    """The pytransformer modules imported at the top level of a file (imports
    inside functions are facades or lazy optional paths, listed separately)."""
    tree = ast.parse(open(path).read())
    top, inner = set(), set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = module.split(".")
        base = base[:len(base) - node.level] if not path.endswith("__init__.py") else \
            base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
        names = [target] if node.module else [".".join(base + [a.name]) for a in node.names]
        (top if node.col_offset == 0 else inner).update(names)
    return top, inner


def _modules():
    for folder, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, PKG)[:-3].replace(os.sep, ".")
                yield path, rel.removesuffix(".__init__") if rel != "__init__" else ""


def test_no_layer_imports_a_layer_above_it():
    bad = []
    for path, module in _modules():
        me = _layer(module)
        if me is None:
            continue
        top, _ = _imports(path, module)
        for target in top:
            if module in LEAVES and target not in ("",):
                bad.append(f"{module} (a leaf) imports {target}")
            them = _layer(target)
            if them is not None and them != me and ORDER.index(them) < ORDER.index(me) \
                    and target not in LEAVES:
                bad.append(f"{module} imports {target}")
    assert not bad, bad


def test_generation_sees_models_only_through_the_protocol():
    for path, module in _modules():
        if module.startswith("generation"):
            top, inner = _imports(path, module)
            assert not any(t.startswith("models") for t in top | inner), module


@pytest.mark.parametrize("path, names", [
    ("pytransformer.ops", ["matmul", "linear", "pack_weight", "PackedMatrix", "PackedMatrixBF16",
                           "softmax",
                           "masked_softmax", "layer_norm", "rms_norm", "relu", "gelu",
                           "silu_and_mul", "rope", "rope_inv_freq",
                           "scaled_dot_product_attention", "attention_with_weights",
                           "as_float32"]),
    ("pytransformer.nn", ["Module", "Linear", "LayerNorm", "RMSNorm", "Embedding", "MultiheadAttention",
                          "TransformerEncoderLayer", "TransformerDecoderLayer",
                          "TransformerEncoder", "TransformerDecoder", "Transformer", "KVCache",
                          "DecoderCache", "NO_INIT", "xavier_uniform", "gelu_tanh", "check_token_ids"]),
    ("pytransformer.models", ["Seq2SeqTransformer", "sinusoidal_positional_encoding",
                              "GPT2LMHeadModel", "LlamaForCausalLM", "LlamaConfig"]),
    ("pytransformer.hub", ["from_pretrained", "llama_config_and_tensors", "llama_from_gguf",
                           "tokenizer_from_gguf", "chat_template_from_gguf", "ChatTemplate"]),
    ("pytransformer.generation", ["generate", "greedy_search", "beam_search", "sample",
                                  "log_softmax", "filter_logits", "LogitsProcessors"]),
    ("pytransformer.pipelines", ["SentenceEncoder", "Generator"]),
    ("pytransformer.cli", ["main", "UsageError", "build_parser", "BUILD_CFLAGS"]),
    ("pytransformer.io", ["to_numpy", "torch_state_dict", "save_safetensors",
                          "load_safetensors"]),
    ("pytransformer.oracle", ["to_torch", "compare"]),
    ("pytransformer.demo_task", ["MODEL_PATH", "encode_batch", "decode", "sample_pairs",
                                 "exact_match", "PAD_ID", "BOS_ID", "EOS_ID"]),
    ("pytransformer.benchmarks", ["median_time", "timings", "main"]),
    ("pytransformer", ["set_num_threads", "get_num_threads", "cpu_info", "TokenIdError",
                       "from_pretrained", "SentenceEncoder", "Generator"]),
])
def test_public_import_paths(path, names):
    m = importlib.import_module(path)
    missing = [n for n in names if not hasattr(m, n)]
    assert not missing, f"{path} lacks {missing}"


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_ENDINGS = (".py", ".pyx", ".pxi", ".pxd", ".c", ".h")
GENERATED = {os.path.join("pytransformer", "_kernels.c")}


def test_no_source_file_over_about_500_lines():
    """Each file reads as one concern: a file past ~500 lines is split by topic."""
    long = []
    for top in ("pytransformer", "csrc"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)
                if not name.endswith(SOURCE_ENDINGS) or rel in GENERATED:
                    continue
                with open(path, encoding="utf-8") as f:
                    n = sum(1 for _ in f)
                if n > 520:
                    long.append((rel, n))
    assert os.path.isdir(os.path.join(ROOT, "csrc"))
    assert not long, f"files over ~500 lines: {long}"
