"""``pytransformer translate``: translate texts with a Marian (OPUS-MT) model
directory through :class:`pytransformer.Translator`, one translation a line
(or the n best of each text with their scores, as JSON lines)."""
import json

__all__ = ["cmd_translate", "add_translate_parser"]


def cmd_translate(args):
    """Translations of TEXT arguments or of a file's lines: one line each on
    stdout, or with --num-hypotheses above 1 a JSON line per text with its
    n best translations and their scores."""
    import pytransformer

    from . import UsageError, _read_texts
    if args.threads:
        pytransformer.set_num_threads(args.threads)
    texts = _read_texts(args, "translate")
    if args.num_hypotheses > args.beam_size:
        raise UsageError(f"--num-hypotheses {args.num_hypotheses} is more than --beam-size "
                         f"{args.beam_size}")
    try:
        translator = pytransformer.Translator(args.model, compute_type=args.compute_type)
    except ValueError as e:
        raise UsageError(f"--model: {e}") from None
    n = args.num_hypotheses
    out = translator.translate(texts, beam_size=args.beam_size,
                               max_new_tokens=args.max_new_tokens, num_hypotheses=n,
                               return_scores=n > 1, batch_size=args.batch_size)
    for text, result in zip(texts, out):
        if n == 1:
            print(result)
        else:
            print(json.dumps({"text": text, "translations": [
                {"text": t, "score": s} for t, s in result]}, ensure_ascii=False))
    return 0


def add_translate_parser(sub, count):
    """The ``translate`` subcommand on the CLI's subparsers (count: the CLI's
    integer-at-least type)."""
    t = sub.add_parser(
        "translate", help="translate texts with a Marian (OPUS-MT) model directory",
        description="Translate texts with a Marian model directory (config.json, "
                    "model.safetensors, source.spm, target.spm, vocab.json), without torch. "
                    "Prints one translation a line, or with --num-hypotheses N > 1 one JSON "
                    "line per text ({\"text\", \"translations\": [{\"text\", \"score\"}]}).")
    t.add_argument("text", nargs="*", metavar="TEXT", help="texts to translate")
    t.add_argument("--model", required=True, metavar="PATH",
                   help="the model directory (local; nothing is downloaded)")
    t.add_argument("--input", metavar="FILE",
                   help="read the texts from FILE, one a line ('-': standard input)")
    t.add_argument("--beam-size", type=count(1), default=4,
                   help="beam search width; 1 is greedy search (default 4)")
    t.add_argument("--max-new-tokens", type=count(1), default=None,
                   help="tokens per translation, eos included (default: the checkpoint's "
                        "max_length - 1)")
    t.add_argument("--num-hypotheses", type=count(1), default=1,
                   help="the n best translations of each text, with scores (default 1)")
    t.add_argument("--batch-size", type=count(1), default=32,
                   help="texts translated together (default 32)")
    t.add_argument("--threads", type=count(1), default=None,
                   help="kernel threads (default: as pytransformer starts)")
    t.set_defaults(func=cmd_translate)
    return t
