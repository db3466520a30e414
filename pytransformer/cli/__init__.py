"""The ``pytransformer`` command: ``demo``, ``info``, ``bench``, ``embed``,
``translate`` and ``generate``.

    pytransformer demo ["june 3rd, 1999" ...] [--n 1000] [--seed 0] [--plot map.png]
    pytransformer info
    pytransformer bench [--quick]
    pytransformer embed --model PATH [TEXT ...] | --input FILE|- [--output FILE.npy]
    pytransformer translate --model PATH [TEXT ...] | --input FILE|- [--beam-size 4]
    pytransformer generate --model PATH "PROMPT" [--max-new-tokens 64] [--chat] ...

``demo`` runs the model shipped in the package (pytransformer/demo) on the C
kernels, with no PyTorch: written dates to ISO dates.  ``info`` tells which
kernel path, threads and build flags are in use.  ``bench`` times the kernels
and a model against numpy (and torch, when it is installed).  ``embed`` turns
texts into sentence embeddings with a sentence-transformers model directory;
``translate`` translates them with a Marian (OPUS-MT) model directory.
``generate`` continues a prompt with a language model, streaming the text.
"""
import argparse
import os
import platform
import subprocess
import sys
import sysconfig
import time

from ..ops.checks import COMPUTE_TYPES
from .generate import add_generate_parser
from .translate import add_translate_parser

# What setup.py compiles with (kept in step with it; tests/test_demo.py checks).
BUILD_CFLAGS = ["-O3", "-std=c11", "-fno-math-errno", "-Wall", "-Wno-unused-function",
                "-Wno-unknown-pragmas"]
BUILD_PATH_FLAGS = {
    "scalar": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma",
               "-mf16c"],
}

DEMO_EXAMPLES = [
    "june 3rd, 1999",
    "the twenty-first of december 2012",
    "sat 1 jan 2000",
    "1969/07/20",
    "friday, march 5, 2021",
    "november the eleventh, 1918",
]


# -------------------------------------------------------------------- info --

def cmd_info(args):
    import numpy as np

    import pytransformer
    info = pytransformer.cpu_info()
    where = os.path.dirname(pytransformer.__file__)
    print(f"pytransformer {pytransformer.__version__}  ({where})")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    print(f"kernel path : {info['isa']}"
          + ("  (forced by PYTRANSFORMER_ISA)" if os.environ.get("PYTRANSFORMER_ISA") else ""))
    print(f"available   : {', '.join(info['available'])}")
    print(f"compute     : " + ", ".join(f"{t} on {p}" for t, p in info["compute_paths"].items())
          + ("  (bf16 forced by PYTRANSFORMER_BF16)" if os.environ.get("PYTRANSFORMER_BF16")
             else ""))
    print(f"features    : " + (", ".join(n for n, on in info["features"].items() if on)
                               or "none of " + ", ".join(info["features"])))
    print(f"threads     : {info['threads']}")
    print(f"openmp      : {'yes' if info['openmp'] else 'no (kernels run sequentially)'}")
    print("build flags : (as setup.py compiles every kernel in csrc/ once per kernel path; "
          "no -march=native)")
    print(f"  compiler  : {sysconfig.get_config_var('CC') or 'unknown'} "
          "(Python's configured CC, used unless CC was set at build time)")
    print(f"  common    : {' '.join(BUILD_CFLAGS)}"
          + (" -fopenmp" if info["openmp"] else ""))
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
    for i, (name, flags) in enumerate(BUILD_PATH_FLAGS.items()):
        if name != "scalar" and not x86:
            continue  # only the scalar path is built off x86
        state = "in use" if name == info["isa"] else \
            "available" if name in info["available"] else "built; this CPU lacks it"
        print(f"  {name:9s} : -DPT_ISA={i} {' '.join(flags)}".rstrip() + f"  ({state})")
    return 0


# -------------------------------------------------------------------- demo --

def _load_demo_model(path, compute_type="float32"):
    from ..models import Seq2SeqTransformer
    return Seq2SeqTransformer.load(path, compute_type=compute_type)


def _translate(model, texts, batch_size=256):
    """Greedy-decode written dates; returns (predictions, generated tokens, seconds)."""
    import numpy as np

    from ..demo import task
    preds, n_tokens, seconds = [], 0, 0.0
    for i in range(0, len(texts), batch_size):
        src = task.encode_batch(texts[i:i + batch_size])
        t0 = time.perf_counter()
        out = model.generate(src, max_new_tokens=task.TARGET_LEN + 1, bos_id=task.BOS_ID,
                             eos_id=task.EOS_ID, pad_id=task.PAD_ID, method="greedy")
        seconds += time.perf_counter() - t0
        # Tokens produced: everything up to and including each row's <eos>.
        n_tokens += int(np.sum(out != task.PAD_ID))
        preds += [task.decode(row) for row in out]
    return preds, n_tokens, seconds


def cross_attention_map(model, text, prediction):
    """Head-averaged cross-attention weights of the last decoder layer, (T, S):
    row t is where the decoder looked in the source when it wrote token t
    (teacher-forced on [<bos>] + prediction)."""
    from ..demo import task
    from ..ops import look_ahead_mask
    src = task.encode_batch([text])
    tgt = task.encode_batch([prediction], add_bos=True)
    memory = model.encode(src)
    _, weights = model.transformer.decoder(
        model.embed_tgt(tgt), memory, tgt_mask=~look_ahead_mask(tgt.shape[1]),
        memory_key_padding_mask=src == model.pad_id, tgt_is_causal=True, need_weights=True)
    return weights[-1][0]


def _plot(model, text, prediction, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install matplotlib") from None
    weights = cross_attention_map(model, text, prediction)
    rows = ["<bos>"] + list(prediction)  # decoder input at each step
    outs = list(prediction) + ["<eos>"]  # what it wrote from there
    fig, ax = plt.subplots(figsize=(max(4, 0.32 * len(text) + 2), 0.32 * len(rows) + 1.6))
    im = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.set_xticks(range(len(text)))
    ax.set_xticklabels(["\u2423" if c == " " else c for c in text.lower()])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{o!s}" for o in outs])
    ax.set_xlabel("source character")
    ax.set_ylabel("output character")
    ax.set_title(f"cross-attention, last decoder layer (head mean)\n{text!r} -> {prediction!r}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_demo(args):
    import pytransformer

    from ..demo import task
    if args.threads:
        pytransformer.set_num_threads(args.threads)
    model = _load_demo_model(args.model, args.compute_type)
    info = pytransformer.cpu_info()
    print(f"demo model: written dates -> ISO dates, {os.path.basename(args.model)} "
          f"({os.path.getsize(args.model) / 1e6:.1f} MB); compute type {args.compute_type} "
          f"(kernel {info['compute_paths'][args.compute_type]}), {info['threads']} thread(s)")

    texts = list(args.text) or DEMO_EXAMPLES
    ok = []
    for t in texts:
        try:
            if not t.strip():
                raise ValueError("there is no date in it")
            task.encode(t)
            if len(t) > task.MAX_SOURCE_LEN:
                raise ValueError(f"{len(t)} characters; the demo model reads at most "
                                 f"{task.MAX_SOURCE_LEN}")
            ok.append(t)
        except ValueError as e:
            print(f"  {t!r}: cannot read it: {e}")
    if ok:
        preds, _, _ = _translate(model, ok)
        width = max(len(t) for t in ok) + 2
        for t, p in zip(ok, preds):
            print(f"  {repr(t):{width}s} -> {p}")

    if args.n:
        pairs = task.sample_pairs(args.n, seed=args.seed, split="held_out")
        preds, n_tokens, seconds = _translate(model, [s for s, _ in pairs], args.batch_size)
        acc = task.exact_match(preds, [t for _, t in pairs])
        print(f"exact match on {args.n} freshly drawn held-out dates (seed {args.seed}): "
              f"{acc:.2%}")
        print(f"decoding speed: {n_tokens / seconds:,.0f} tokens/s "
              f"({n_tokens} tokens in {seconds:.2f} s, greedy, KV cache, batches of "
              f"{args.batch_size})")
        wrong = [(s, t, p) for (s, t), p in zip(pairs, preds) if p != t]
        for s, t, p in wrong[:5]:
            print(f"  miss: {s!r} -> {p!r} (expected {t})")

    if args.plot:
        text = ok[0] if ok else DEMO_EXAMPLES[0]
        pred = _translate(model, [text])[0][0]
        _plot(model, text, pred, args.plot)
        print(f"wrote the cross-attention map of {text!r} to {args.plot}")
    return 0


# ------------------------------------------------------------------- bench --

def cmd_bench(args):
    if not args.no_torch and "OMP_WAIT_POLICY" not in os.environ:
        # pytransformer and torch each bring an OpenMP runtime whose idle
        # threads spin for milliseconds by default; alternating short calls,
        # each would hold the cores the other needs.  Idle threads spin
        # briefly (enough to catch the next kernel of a step), then sleep.
        # The policy is read when the runtime loads, so run the benchmark in
        # a fresh process with it set (bench/common.py sets the same).
        return _run_fresh(args.argv, dict(os.environ, OMP_WAIT_POLICY="passive",
                                          GOMP_SPINCOUNT=os.environ.get("GOMP_SPINCOUNT",
                                                                        "20000")))
    from .. import benchmarks
    return benchmarks.main(quick=args.quick, threads=args.threads,
                           include_torch=not args.no_torch, json_path=args.json)


def _run_fresh(argv, env):
    """``pytransformer argv`` in a new Python process that imports this very
    package: its folder goes first on sys.path, ahead of the working
    directory, which may hold a source tree of the same name (a clone's
    root) that was never built."""
    import pytransformer
    root = os.path.dirname(os.path.dirname(os.path.abspath(pytransformer.__file__)))
    code = (f"import sys; sys.path.insert(0, {root!r}); "
            f"from pytransformer.cli import main; sys.exit(main({list(argv)!r}))")
    return subprocess.call([sys.executable, "-c", code], env=env)


# ------------------------------------------------------------------- embed --

def cmd_embed(args):
    """Sentence embeddings of TEXT arguments or of a file's lines, as JSON lines
    on stdout, a .npy file, or (--similarity) their cosine matrix."""
    import json

    import numpy as np

    import pytransformer

    def fail(message):
        print(f"pytransformer embed: {message}", file=sys.stderr)
        return 2

    if args.threads:
        pytransformer.set_num_threads(args.threads)
    texts = _read_texts(args, "embed")
    if args.output and not args.output.endswith(".npy"):
        return fail(f"--output {args.output}: the file name must end in .npy")
    try:
        encoder = pytransformer.SentenceEncoder(args.model, compute_type=args.compute_type)
    except ValueError as e:
        return fail(f"--model: {e}")
    vectors = encoder.encode(texts, batch_size=args.batch_size,
                             show_progress_bar=args.input is not None)
    if args.output:
        try:
            np.save(args.output, vectors)
        except OSError as e:
            return fail(f"cannot write {args.output}: {e.strerror or e}")
        print(f"wrote {vectors.shape[0]} embeddings of {vectors.shape[1]} dimensions to "
              f"{args.output}", file=sys.stderr)
    if args.similarity:
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        sim = unit @ unit.T
        labels = [t if len(t) <= 40 else t[:37] + "..." for t in texts]
        width = max(len(repr(t)) for t in labels)
        print(f"cosine similarity of {len(texts)} texts:")
        print(" " * (width + 2) + " ".join(f"{j:>6d}" for j in range(len(texts))))
        for i, t in enumerate(labels):
            print(f"{repr(t):>{width}s}  " + " ".join(f"{v:6.3f}" for v in sim[i]) + f"  [{i}]")
    elif not args.output:
        out = sys.stdout
        for t, v in zip(texts, vectors):
            out.write(json.dumps({"text": t, "embedding": [float(x) for x in v]},
                                 ensure_ascii=False) + "\n")
    return 0


# -------------------------------------------------------------------- main --

def _read_texts(args, what):
    """TEXT arguments, or the lines of --input FILE ('-': stdin); UsageError
    for both, neither, or a file that cannot be read."""
    if args.input is not None and args.text:
        raise UsageError("give TEXT arguments or --input, not both")
    if args.input is None:
        texts = list(args.text)
    elif args.input == "-":
        texts = sys.stdin.read().splitlines()
    else:
        try:
            with open(args.input, encoding="utf-8") as f:
                texts = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read {args.input}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
    if not texts:
        raise UsageError(f"no texts to {what} (give TEXT arguments, or --input FILE with one "
                         f"text a line)")
    return texts


def _count(lowest, highest=None):
    """An argparse type: an integer in [lowest, highest]."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be >= {lowest}, got {value}")
        if highest is not None and value > highest:
            raise argparse.ArgumentTypeError(f"must be <= {highest}, got {value}")
        return value
    return parse


def _threads(text):
    """An argparse type: a thread count in [1, pytransformer.MAX_THREADS]."""
    import pytransformer
    return _count(1, pytransformer.MAX_THREADS)(text)


def _writable(path):
    """An argparse type: a file path that can be written (checked before the
    work starts, so a long run does not fail at its end)."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {path!r}")
    return path


def build_parser():
    from ..demo import task
    p = argparse.ArgumentParser(
        prog="pytransformer",
        description="A CPU Transformer whose kernels are hand-written C, verified against "
                    "PyTorch.")
    sub = p.add_subparsers(dest="command",
                           metavar="{demo,info,bench,embed,translate,generate}")
    sub.required = True

    d = sub.add_parser(
        "demo", help="translate written dates to ISO dates with the shipped model",
        description="Load the small Transformer shipped in the package (no PyTorch needed), "
                    "translate a few written dates to ISO 8601 -- or the TEXT arguments -- "
                    "then report greedy exact-match accuracy on freshly drawn held-out dates "
                    "and the decoding speed.")
    d.add_argument("text", nargs="*", metavar="TEXT",
                   help=f"dates to translate, e.g. \"june 3rd, 1999\" (years "
                        f"{task.FIRST_YEAR}-{task.LAST_YEAR}; letters, digits, ' ,-/')")
    d.add_argument("--n", type=_count(0), default=1000,
                   help="held-out examples for the accuracy check (default 1000; 0 skips it)")
    d.add_argument("--seed", type=_count(0), default=0,
                   help="seed of the held-out draw (default 0)")
    d.add_argument("--batch-size", type=_count(1), default=256,
                   help="sequences decoded together (default 256)")
    d.add_argument("--threads", type=_threads, default=None,
                   help="kernel threads (default: as pytransformer starts, OpenMP's default)")
    d.add_argument("--plot", metavar="FILE.png",
                   help="write the cross-attention map of the first example (needs matplotlib)")
    d.add_argument("--model", default=task.MODEL_PATH, help=argparse.SUPPRESS)
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("info", help="version, kernel path, threads, OpenMP, build flags",
                       description="Print the version, the kernel path in use (and those "
                                   "available), the thread count, OpenMP, and the compiler "
                                   "flags setup.py builds the kernels with.")
    i.set_defaults(func=cmd_info)

    b = sub.add_parser(
        "bench", help="time kernels and a model against numpy (and torch if installed)",
        description="Time the kernels (sgemm, softmax, layer_norm) and a small "
                    "Seq2SeqTransformer (forward pass, greedy decoding) against numpy, and "
                    "against torch when it is importable; median of repeats after warm-up. "
                    "The full comparison scripts are in the repository's bench/ directory.")
    b.add_argument("--quick", action="store_true",
                   help="fewer sizes, a smaller model, fewer repeats")
    b.add_argument("--threads", type=_threads, default=None,
                   help="threads for pytransformer and torch (default: pytransformer's)")
    b.add_argument("--no-torch", action="store_true", help="skip torch even if installed")
    b.add_argument("--json", metavar="FILE", type=_writable,
                   help="also write the results as JSON")
    b.set_defaults(func=cmd_bench)

    e = sub.add_parser(
        "embed", help="sentence embeddings with a sentence-transformers model directory",
        description="Embed texts with a sentence-transformers model directory (e.g. "
                    "all-MiniLM-L6-v2: config.json, model.safetensors, tokenizer.json, "
                    "modules.json), without torch.  Writes one JSON line per text "
                    "({\"text\", \"embedding\"}) to stdout, or a (n, dim) float32 .npy "
                    "file with --output; --similarity prints the cosine matrix instead.")
    e.add_argument("text", nargs="*", metavar="TEXT", help="texts to embed")
    e.add_argument("--model", required=True, metavar="PATH",
                   help="the model directory (local; nothing is downloaded)")
    e.add_argument("--input", metavar="FILE",
                   help="read the texts from FILE, one a line ('-': standard input); a "
                        "progress line goes to stderr")
    e.add_argument("--output", metavar="FILE.npy", help="write the embeddings to FILE.npy")
    e.add_argument("--similarity", action="store_true",
                   help="print the cosine similarity matrix of the texts")
    e.add_argument("--batch-size", type=_count(1), default=32,
                   help="texts embedded together (default 32)")
    e.add_argument("--threads", type=_threads, default=None,
                   help="kernel threads (default: as pytransformer starts)")
    e.set_defaults(func=cmd_embed)

    for cmd, default, default_help in (
            (d, "float32", "float32"), (e, "float32", "float32"),
            (add_translate_parser(sub, _count), "float32", "float32"),
            (add_generate_parser(sub, _count), None,
             "the checkpoint's own -- float32, or a GGUF file's Q8_0/Q4_0/Q4_1 blocks by "
             "weight-only kernels")):
        cmd.add_argument("--compute-type", choices=COMPUTE_TYPES, default=default,
                         help="the GEMMs' compute type: bfloat16 (weights and inputs rounded "
                              "to bf16) or int8 (weights int8 per output channel, inputs "
                              "quantized per row, int32 sums); float32 for everything else "
                              f"(default: {default_help})")
    return p


class UsageError(Exception):
    """A bad command line or input found once the work has started: reported
    in one line, exit code 2."""


def main(argv=None):
    """Run the command; user errors (bad options, paths, inputs, a missing
    optional package) print one line and exit 2, a failure of the work
    itself one line and exit 1 -- never a traceback (PYTRANSFORMER_DEBUG=1
    shows it)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("pytransformer: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - reported in one line below
        if os.environ.get("PYTRANSFORMER_DEBUG"):
            raise
        user = isinstance(e, (UsageError, ValueError, OSError, ImportError))
        print(f"pytransformer {args.command}: {'error' if user else 'failed'}: "
              f"{type(e).__name__ + ': ' if not user else ''}{e}", file=sys.stderr)
        return 2 if user else 1


if __name__ == "__main__":
    sys.exit(main())
