"""Marian model directories for the tests, built with transformers and
sentencepiece: a tiny SentencePiece model trained on a generated corpus, the
vocab.json / source.spm / target.spm / tokenizer_config.json layout of an
OPUS-MT checkpoint, and a MarianMTModel with random weights saved by
save_pretrained beside them."""
import json
import os
import random

import numpy as np

WORDS = ("the cat dog sat on mat house green blue red ran quickly under over "
         "über straße café naïve données 東京 год").split()
PUNCT = [".", "!", "?", ",", "", " -"]


def corpus(n=1500, seed=0):
    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(1, 12))) + r.choice(PUNCT)
            for _ in range(n)]


def write_tokenizer(path, separate_vocabs=False, seed=0, drop=3):
    """source.spm and target.spm (unigram models, ~40 pieces), vocab.json
    (and target_vocab.json when separate): language codes and the special
    tokens first, pad last; the last ``drop`` pieces of the SentencePiece
    models are left out of the vocabulary, so that some pieces are unknown."""
    import sentencepiece as spm
    os.makedirs(path, exist_ok=True)
    text = os.path.join(path, "corpus.txt")
    with open(text, "w", encoding="utf-8") as f:
        f.write("\n".join(corpus(seed=seed)))
    models = {}
    for side, size in (("source", 45), ("target", 40)):
        spm.SentencePieceTrainer.train(
            input=text, model_prefix=os.path.join(path, side), vocab_size=size,
            model_type="unigram", character_coverage=1.0, bos_id=-1, eos_id=0, unk_id=1,
            pad_id=-1, hard_vocab_limit=False, minloglevel=2)
        os.replace(os.path.join(path, side + ".model"), os.path.join(path, side + ".spm"))
        os.remove(os.path.join(path, side + ".vocab"))
        models[side] = spm.SentencePieceProcessor(model_file=os.path.join(path, side + ".spm"))
    os.remove(text)

    def vocab_of(sides):
        pieces = {p for s in sides for p in (models[s].id_to_piece(i)
                                             for i in range(models[s].get_piece_size()))}
        rest = sorted(pieces - {"</s>", "<unk>"})
        rest = rest[:len(rest) - drop]
        tokens = ["</s>", "<unk>", ">>fr<<", ">>de<<"] + rest + ["<pad>"]
        return {t: i for i, t in enumerate(tokens)}

    if separate_vocabs:
        vocab, target_vocab = vocab_of(["source"]), vocab_of(["target"])
        with open(os.path.join(path, "target_vocab.json"), "w", encoding="utf-8") as f:
            json.dump(target_vocab, f, ensure_ascii=False)
    else:
        vocab = target_vocab = vocab_of(["source", "target"])
    with open(os.path.join(path, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"source_lang": "en", "target_lang": "fr", "unk_token": "<unk>",
                   "eos_token": "</s>", "pad_token": "<pad>", "model_max_length": 512,
                   "separate_vocabs": separate_vocabs, "tokenizer_class": "MarianTokenizer"},
                  f)
    return vocab, target_vocab


def randomize(model, seed=0, eos_bias=1.0):
    """Weights under which outputs depend on the source, the position and the
    previous token (transformers' init, std 0.02, makes every position
    predict alike): embeddings ~ N(0, 0.2^2); the sub-layers' matrices
    ~ N(0, s^2 / fan_in), small (s = 0.2) in self-attention and the
    feed-forward network so the residual stream keeps token and position;
    sharp cross-attention (s = 6 for its queries and keys, 1 for values and
    output); an untied output projection ~ N(0, 0.5^2); layer norms
    1 + N(0, 0.1^2), biases N(0, 0.1^2); final_logits_bias N(0, 0.5^2), plus
    ``eos_bias`` at eos so that sequences end at different lengths."""
    import torch
    g = torch.Generator().manual_seed(seed)

    def std(name, fan_in):
        if "lm_head" in name:
            return 0.5
        if "shared" in name or "embed_tokens" in name:
            return 0.2
        if "encoder_attn.q_proj" in name or "encoder_attn.k_proj" in name:
            return 6.0 / fan_in ** 0.5
        if "encoder_attn" in name:
            return 1.0 / fan_in ** 0.5
        return 0.2 / fan_in ** 0.5

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:  # fixed sinusoids, not saved
                continue
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * std(name, p.shape[1]))
            elif "layer_norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        bias = 0.5 * torch.randn(model.final_logits_bias.shape, generator=g)
        bias[0, model.config.eos_token_id] += eos_bias
        model.final_logits_bias.copy_(bias)
    return model.eval()


def make_marian(path, vocab_size=None, decoder_vocab_size=None, seed=0, tokenizer=False,
                separate_vocabs=False, eos_bias=1.0, generation=None, **config):
    """A random MarianMTModel saved at ``path`` (with the tokenizer files when
    ``tokenizer``), its generation_config.json holding bad_words_ids [[pad]]
    as OPUS-MT's do, and ``generation``; returns the transformers model, in
    eval mode."""
    import torch
    from transformers import MarianConfig, MarianMTModel
    if tokenizer:
        vocab, target_vocab = write_tokenizer(path, separate_vocabs, seed)
        vocab_size = len(vocab)
        if separate_vocabs:
            decoder_vocab_size = len(target_vocab)
            config.setdefault("share_encoder_decoder_embeddings", False)
        pad = vocab["<pad>"]
    else:
        vocab_size = vocab_size or 61
        pad = vocab_size - 1
    share = config.get("share_encoder_decoder_embeddings", True)
    V = vocab_size if share else (decoder_vocab_size or vocab_size)
    defaults = dict(d_model=24, encoder_layers=2, decoder_layers=2, encoder_attention_heads=3,
                    decoder_attention_heads=2, encoder_ffn_dim=40, decoder_ffn_dim=36,
                    max_position_embeddings=64, activation_function="swish",
                    scale_embedding=True, pad_token_id=min(pad, V - 1),
                    decoder_start_token_id=min(pad, V - 1), eos_token_id=0,
                    forced_eos_token_id=0, dropout=0.0)
    defaults.update(config)
    c = MarianConfig(vocab_size=vocab_size, decoder_vocab_size=decoder_vocab_size, **defaults)
    torch.manual_seed(seed)
    model = randomize(MarianMTModel(c), seed, eos_bias)
    # as OPUS-MT's generation_config.json: pad is never generated
    generation = dict(bad_words_ids=[[c.pad_token_id]], **(generation or {}))
    for k, v in generation.items():
        setattr(model.generation_config, k, v)
    model.save_pretrained(path)
    return model


def random_sources(rng, n, vocab_size, pad, eos=0, lo=1, hi=9):
    """n source rows of random lengths (ending in eos), right-padded with pad:
    (ids (n, S), attention_mask (n, S))."""
    lengths = rng.integers(lo, hi + 1, n)
    S = int(lengths.max()) + 1
    ids = np.full((n, S), pad, dtype=np.int64)
    mask = np.zeros((n, S), dtype=np.int64)
    for i, L in enumerate(lengths):
        body = rng.integers(2, vocab_size - 1, L)
        body[body == pad] = 2
        ids[i, :L] = body
        ids[i, L] = eos
        mask[i, :L + 1] = 1
    return ids, mask
