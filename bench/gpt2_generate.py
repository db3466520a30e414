"""The GPT-2 rows of bench_generate.py: GPT-2 124M (the config of
openai-community/gpt2, random weights, saved with save_pretrained) continuing
a 128-token prompt by 64 new tokens, greedy and beam 4, batch 1 and 8:
pytransformer's generate beside transformers' generate (torch float32) and
CTranslate2 float32 (ctranslate2.converters.TransformersConverter on the same
directory, ctranslate2.Generator), interleaved (pytransformer.benchmarks
.timings), medians.  No end token is produced (the checkpoint has none), so
every row is exactly 64 new tokens; tokens/s counts batch x 64 (for beam,
the returned hypothesis of each prompt)."""
import os
import tempfile

import numpy as np

PROMPT, NEW = 128, 64


def gpt2_directory():
    """A GPT-2 124M with random weights and no end token, saved with
    save_pretrained, and a byte-level BPE vocabulary of its 50257 tokens (the
    256 byte symbols, then placeholders; no merges) so that CTranslate2's
    converter finds a tokenizer."""
    import torch
    import transformers
    from tokenizers import pre_tokenizers
    d = tempfile.mkdtemp(prefix="gpt2-124m-")
    cfg = transformers.GPT2Config(bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.generation_config.eos_token_id = None
    model.save_pretrained(d)
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({f"t{i}": i for i in range(len(symbols), cfg.vocab_size - 1)})
    vocab["<|endoftext|>"] = cfg.vocab_size - 1
    import json
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    transformers.GPT2TokenizerFast.from_pretrained(d).save_pretrained(d)
    return d, model, vocab


def run(threads_list, repeats, quick=False):
    """Rows of the GPT-2 table (and prints them)."""
    import torch

    import pytransformer
    from pytransformer.benchmarks import timings
    from common import print_peer_table, set_threads

    path, theirs, vocab = gpt2_directory()
    ours = pytransformer.from_pretrained(path)
    new = 16 if quick else NEW
    tokens_of = {i: s for s, i in vocab.items()}
    notes = []
    try:
        import ctranslate2
        ct2_dir = tempfile.mkdtemp(prefix="gpt2-124m-ct2-")
        ctranslate2.converters.TransformersConverter(path).convert(ct2_dir, force=True)
    except Exception as e:  # noqa: BLE001 - reported, the rest still runs
        ctranslate2 = None
        notes.append(f"CTranslate2 could not run: {type(e).__name__}: {e}")
    rng = np.random.default_rng(1)
    prompts8 = rng.integers(0, 50256, size=(8, PROMPT))
    rows = []
    for threads in threads_list:
        set_threads(threads)
        ct2 = None if ctranslate2 is None else \
            ctranslate2.Generator(ct2_dir, device="cpu", compute_type="float32",
                                  inter_threads=1, intra_threads=threads)
        for what, B in [("greedy", 1), ("greedy", 8), ("beam4", 1), ("beam4", 8)]:
            p = prompts8[:B]
            K = 1 if what == "greedy" else 4
            tp = torch.from_numpy(p)
            start = [[tokens_of[int(t)] for t in row] for row in p]
            kw = dict(method="beam", beam_size=K) if K > 1 else {}
            fns = {"pytransformer": lambda: ours.generate(p, new, eos_id=None, **kw),
                   "transformers": lambda: theirs.generate(
                       tp, attention_mask=torch.ones_like(tp), max_new_tokens=new,
                       min_new_tokens=new, do_sample=False, num_beams=K, early_stopping=True,
                       pad_token_id=0)}
            if ct2 is not None:
                fns["CTranslate2"] = lambda: ct2.generate_batch(
                    start, max_length=new, min_length=new, beam_size=K,
                    include_prompt_in_result=False)
            with torch.inference_mode():
                a = fns["pytransformer"]()
                b = fns["transformers"]()[:, PROMPT:].numpy()
                same = bool(np.array_equal(a, b))
                if ct2 is not None:
                    c = [[vocab[t] for t in r.sequences[0]] for r in fns["CTranslate2"]()]
                    same_ct2 = bool(np.array_equal(a, np.array(c)))
                samples = timings(fns, repeats, warmup=0)
            row = dict(model="gpt2-124m", what=what, batch=B, prompt=PROMPT, new_tokens=new,
                       threads=threads, same_tokens_as_transformers=same)
            if ct2 is not None:
                row["same_tokens_as_ctranslate2"] = same_ct2
            for name, ts in samples.items():
                t = float(np.median(ts))
                row[f"{name}_s"] = t
                row[f"{name}_tok_s"] = B * new / t
            rows.append(row)
            line = ", ".join(f"{n} {row[f'{n}_tok_s']:.1f}" for n in samples)
            print(f"  gpt2 {what:6s} B={B} threads={threads}: tok/s {line}; same tokens as "
                  f"transformers: {same}", flush=True)
    names = ["pytransformer", "transformers"] + (["CTranslate2"] if ctranslate2 else [])
    print_peer_table("GPT-2 124M", rows, names, notes)
    return rows
