"""The Marian rows of bench_generate.py: a Transformer-base MarianMTModel
(d_model 512, 6+6 layers, 8 heads, d_ff 2048, a shared 32000-token
vocabulary, swish, scaled embeddings: the shape of an OPUS-MT checkpoint;
random weights, saved with save_pretrained) translating 32-token sources
(+ eos) into 64 new tokens, greedy and beam 4, batch 1 and 8:
pytransformer's generate (float32, bfloat16, int8) beside transformers'
generate (torch float32) and CTranslate2 float32 and int8
(ctranslate2.converters.TransformersConverter on the same directory,
ctranslate2.Translator), interleaved (pytransformer.benchmarks
.timings), medians.  All of them run with the checkpoint's settings (pad never
generated) and min_new_tokens = max_new_tokens = 64, so every row is exactly
64 new tokens; tokens/s counts batch x 64 (for beam, the returned hypothesis
of each source); the time includes encoding the sources.  One more row,
"encode": 8 sources of 128 tokens and one new token, in source tokens/s --
the encoder's work (Transformer-base at 8x128) beside CTranslate2's."""
import json
import os
import tempfile

import numpy as np

SRC, NEW, V = 32, 64, 32000


def marian_directory():
    """The random Transformer-base Marian model, saved with save_pretrained,
    with the tokenizer files transformers' MarianTokenizer (and so
    CTranslate2's converter) needs: a vocab.json of the model's 32000 tokens
    (</s>, <unk>, placeholders, <pad> last) and a small SentencePiece model
    as source.spm and target.spm (CTranslate2 is given token strings, never
    text)."""
    import sentencepiece as spm
    import torch
    import transformers
    d = tempfile.mkdtemp(prefix="marian-base-")
    cfg = transformers.MarianConfig(
        vocab_size=V, d_model=512, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048,
        decoder_ffn_dim=2048, activation_function="swish", scale_embedding=True,
        max_position_embeddings=512, pad_token_id=V - 1, decoder_start_token_id=V - 1,
        eos_token_id=0, forced_eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.MarianMTModel(cfg).eval()
    model.generation_config.bad_words_ids = [[V - 1]]
    model.save_pretrained(d)
    tokens = ["</s>", "<unk>"] + [f"t{i}" for i in range(2, V - 1)] + ["<pad>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    text = os.path.join(d, "corpus.txt")
    with open(text, "w") as f:
        f.write("\n".join(f"the cat {i} sat on the mat {i * 7}" for i in range(300)))
    spm.SentencePieceTrainer.train(input=text, model_prefix=os.path.join(d, "sp"),
                                   vocab_size=40, hard_vocab_limit=False, minloglevel=2)
    for side in ("source", "target"):
        with open(os.path.join(d, "sp.model"), "rb") as src, \
                open(os.path.join(d, side + ".spm"), "wb") as dst:
            dst.write(src.read())
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "MarianTokenizer", "separate_vocabs": False}, f)
    return d, model, tokens


def run(threads_list, repeats, quick=False):
    """Rows of the Marian table (and prints them)."""
    import torch

    import pytransformer
    from pytransformer.benchmarks import timings
    from common import print_peer_table, set_threads

    path, theirs, tokens = marian_directory()
    ids = {t: i for i, t in enumerate(tokens)}
    ours = pytransformer.from_pretrained(path)
    ours16 = pytransformer.from_pretrained(path, compute_type="bfloat16")
    ours8 = pytransformer.from_pretrained(path, compute_type="int8")
    new = 16 if quick else NEW
    notes = []
    try:
        import ctranslate2
        ct2_dir = tempfile.mkdtemp(prefix="marian-base-ct2-")
        ctranslate2.converters.TransformersConverter(path).convert(ct2_dir, force=True)
    except Exception as e:  # noqa: BLE001 - reported, the rest still runs
        ctranslate2 = None
        notes.append(f"CTranslate2 could not run: {type(e).__name__}: {e}")
    rng = np.random.default_rng(1)
    src8 = np.concatenate([rng.integers(2, V - 1, size=(8, SRC)), np.zeros((8, 1), int)], 1)
    src128 = np.concatenate([rng.integers(2, V - 1, size=(8, 127)), np.zeros((8, 1), int)], 1)
    rows = []
    for threads in threads_list:
        set_threads(threads)
        ct2, ct2_8 = (None, None) if ctranslate2 is None else (
            ctranslate2.Translator(ct2_dir, device="cpu", compute_type=ct, inter_threads=1,
                                   intra_threads=threads) for ct in ("float32", "int8"))
        for what, B in [("greedy", 1), ("greedy", 8), ("beam4", 1), ("beam4", 8),
                        ("encode", 8)]:
            # "encode": 128-token sources and one new token, the encoder's work
            src, n = (src128, 1) if what == "encode" else (src8[:B], new)
            K = 4 if what == "beam4" else 1
            ts = torch.from_numpy(src)
            words = [[tokens[int(t)] for t in row] for row in src]
            fns = {"pytransformer": lambda: ours.generate(
                       src, n, method="beam" if K > 1 else "greedy", beam_size=K,
                       min_new_tokens=n),
                   "transformers": lambda: theirs.generate(
                       ts, attention_mask=torch.ones_like(ts), max_new_tokens=n,
                       min_new_tokens=n, do_sample=False, num_beams=K,
                       **({"early_stopping": True} if K > 1 else {})),
                   "pytransformer bfloat16": lambda: ours16.generate(
                       src, n, method="beam" if K > 1 else "greedy", beam_size=K,
                       min_new_tokens=n),
                   "pytransformer int8": lambda: ours8.generate(
                       src, n, method="beam" if K > 1 else "greedy", beam_size=K,
                       min_new_tokens=n)}
            if ct2 is not None:
                fns["CTranslate2"] = lambda: ct2.translate_batch(
                    words, beam_size=K, max_decoding_length=n, min_decoding_length=n)
                fns["CTranslate2 int8"] = lambda: ct2_8.translate_batch(
                    words, beam_size=K, max_decoding_length=n, min_decoding_length=n)
            with torch.inference_mode():
                a = fns["pytransformer"]()
                b = fns["transformers"]()[:, 1:].numpy()
                same = bool(np.array_equal(a, b))
                if ct2 is not None:
                    c = [[ids[t] for t in r.hypotheses[0]] for r in fns["CTranslate2"]()]
                    # CTranslate2 does not force eos at the last step: compare the rest
                    same_ct2 = all(list(x[:n - 1]) == y[:n - 1] for x, y in zip(a, c))
                samples = timings(fns, repeats, warmup=0)
            row = dict(model="marian-base", what=what, batch=B, src_len=src.shape[1],
                       new_tokens=n, threads=threads, same_tokens_as_transformers=same)
            if ct2 is not None:
                row["same_tokens_as_ctranslate2"] = same_ct2
            for name, t_s in samples.items():
                t = float(np.median(t_s))
                row[f"{name}_s"] = t
                # tokens/s: new tokens, or for "encode" the source tokens
                row[f"{name}_tok_s"] = B * (src.shape[1] if what == "encode" else n) / t
            rows.append(row)
            line = ", ".join(f"{n} {row[f'{n}_tok_s']:.1f}" for n in samples)
            print(f"  marian {what:6s} B={B} threads={threads}: tok/s {line}; same tokens as "
                  f"transformers: {same}" + ("" if ct2 is None else
                                             f", as CTranslate2: {same_ct2}"), flush=True)
    names = ["pytransformer", "transformers"] + (["CTranslate2"] if ctranslate2 else []) + \
        ["pytransformer bfloat16", "pytransformer int8"] + \
        (["CTranslate2 int8"] if ctranslate2 else [])
    print_peer_table("Marian base", rows, names, notes)
    return rows
