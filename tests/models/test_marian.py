"""MarianMTModel against transformers' MarianMTModel on the same weights
(random configs saved with save_pretrained): logits on padded batches,
greedy and beam search token for token (and beam scores), batch invariance,
and the errors bad checkpoints and bad inputs give."""
import json
import os

import numpy as np
import pytest
import torch

import pytransformer
from pytransformer.models.marian import MarianMTModel
from pytransformer.ops.checks import TokenIdError

from conftest import assert_model_close
from marian_fixtures import make_marian, random_sources

CONFIGS = {
    "swish-shared-tied": dict(),
    "relu-untied-head": dict(activation_function="relu", tie_word_embeddings=False,
                             encoder_attention_heads=1, decoder_attention_heads=3),
    "gelu-separate-vocabs": dict(activation_function="gelu",
                                 share_encoder_decoder_embeddings=False, decoder_vocab_size=47,
                                 encoder_layers=1, decoder_layers=3),
    "gelu-tanh-untied": dict(activation_function="gelu_new", tie_word_embeddings=False,
                             decoder_attention_heads=6),
    "swish-separate-untied-odd": dict(share_encoder_decoder_embeddings=False,
                                      tie_word_embeddings=False, decoder_vocab_size=53,
                                      d_model=15, encoder_attention_heads=5,
                                      decoder_attention_heads=3, scale_embedding=False),
    "silu-no-layers": dict(activation_function="silu", encoder_layers=0, decoder_layers=1),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(transformers model, pytransformer model, path) for one config."""
    path = str(tmp_path_factory.mktemp(request.param))
    hf = make_marian(path, seed=len(request.param), **CONFIGS[request.param])
    return hf, pytransformer.from_pretrained(path), path


def T(a):
    return torch.from_numpy(np.asarray(a))


def hf_generate(hf, ids, mask, **kw):
    """transformers' generate with the checkpoint's settings (bad_words_ids
    [[pad]], forced_eos_token_id) unless kw overrides them: sequences without
    the start token, and the beam scores when asked."""
    kw = dict(do_sample=False, **kw)
    with torch.no_grad():
        out = hf.generate(input_ids=T(ids), attention_mask=T(mask), return_dict_in_generate=True,
                          output_scores=True, **kw)
    seqs = out.sequences.numpy()[:, 1:]
    scores = out.sequences_scores.numpy() if kw.get("num_beams", 1) > 1 else None
    return seqs, scores


def rows(tokens, eos, pad):
    """Token rows as lists, up to and including eos (padding dropped)."""
    out = []
    for r in np.asarray(tokens):
        r = list(r)
        out.append(r[:r.index(eos) + 1] if eos in r else [t for t in r if t != pad])
    return out


def test_model_class_and_special_ids(pair):
    hf, ours, _ = pair
    assert isinstance(ours, MarianMTModel)
    c = hf.config
    assert (ours.pad_id, ours.config.eos_token_id, ours.config.decoder_start_token_id) == \
        (c.pad_token_id, c.eos_token_id, c.decoder_start_token_id)
    assert ours.tgt_vocab_size == hf.lm_head.out_features


def test_logits_on_padded_batches(pair):
    hf, ours, _ = pair
    rng = np.random.default_rng(0)
    ids, mask = random_sources(rng, 4, ours.src_vocab_size, ours.pad_id)
    dec = rng.integers(0, ours.tgt_vocab_size, (4, 6))
    dec[:, 0] = ours.config.decoder_start_token_id
    dmask = np.ones_like(dec)
    dmask[1, 4:] = 0
    with torch.no_grad():
        ref = hf(input_ids=T(ids), attention_mask=T(mask), decoder_input_ids=T(dec))
        ref_m = hf(input_ids=T(ids), attention_mask=T(mask), decoder_input_ids=T(dec),
                   decoder_attention_mask=T(dmask)).logits.numpy()
    out = ours(ids, attention_mask=mask, decoder_input_ids=dec)
    assert_model_close(out.logits, ref.logits.numpy(), "logits")
    assert_model_close(out.encoder_last_hidden_state[mask == 1],
                       ref.encoder_last_hidden_state.numpy()[mask == 1], "encoder states")
    got = ours(ids, attention_mask=mask, decoder_input_ids=dec,
               decoder_attention_mask=dmask).logits
    assert_model_close(got[dmask == 1], ref_m[dmask == 1], "decoder_attention_mask")


def test_decode_steps_equal_forward(pair):
    """The KV-cached step gives, row for row, the last position of forward."""
    _, ours, _ = pair
    rng = np.random.default_rng(1)
    ids, _ = random_sources(rng, 3, ours.src_vocab_size, ours.pad_id)
    dec = rng.integers(0, ours.tgt_vocab_size, (3, 5))
    state = ours.start_decoding(ids, 5)
    full = ours(ids, attention_mask=ids != ours.pad_id, decoder_input_ids=dec).logits
    for t in range(5):
        step = ours.decode_step(dec[:, t], state)
        assert_model_close(step, full[:, t], f"step {t}")


def test_greedy_equals_transformers(pair):
    hf, ours, _ = pair
    rng = np.random.default_rng(2)
    ids, mask = random_sources(rng, 5, ours.src_vocab_size, ours.pad_id)
    ref, _ = hf_generate(hf, ids, mask, num_beams=1, max_new_tokens=12)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=12, method="greedy")
    eos, pad = ours.config.eos_token_id, ours.pad_id
    assert rows(got, eos, pad) == rows(ref, eos, pad)


@pytest.mark.parametrize("kw", [dict(repetition_penalty=1.7), dict(no_repeat_ngram_size=2),
                                dict(min_new_tokens=4), dict(bad_words_ids=None,
                                                             forced_eos_token_id=None),
                                dict(repetition_penalty=0.8, no_repeat_ngram_size=3)],
                         ids=["repetition", "ngram", "min-new", "no-processors", "both"])
@pytest.mark.parametrize("beams", [1, 3])
def test_logits_processors_as_transformers(pair, kw, beams):
    hf, ours, _ = pair
    rng = np.random.default_rng(6)
    ids, mask = random_sources(rng, 4, ours.src_vocab_size, ours.pad_id)
    extra = dict(early_stopping=True, length_penalty=1.0) if beams > 1 else {}
    ref, ref_scores = hf_generate(hf, ids, mask, num_beams=beams, max_new_tokens=10, **kw,
                                  **extra)
    got, scores = ours.generate(ids, attention_mask=mask, max_new_tokens=10, beam_size=beams,
                                length_penalty=1.0, return_scores=True, **kw)
    eos, pad = ours.config.eos_token_id, ours.pad_id
    assert rows(got, eos, pad) == rows(ref, eos, pad)
    if beams > 1:
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-5)


def test_pad_is_never_generated_and_eos_is_forced(tmp_path):
    """With the checkpoint's bad_words_ids [[pad]] pad never appears, even
    where the model favours it; forced_eos_token_id ends every row at
    max_new_tokens -- both as transformers."""
    hf = make_marian(str(tmp_path), seed=14, tie_word_embeddings=False, eos_bias=-3.0)
    with torch.no_grad():
        hf.final_logits_bias[0, hf.config.pad_token_id] += 12.0
    hf.save_pretrained(str(tmp_path))
    ours = pytransformer.from_pretrained(str(tmp_path))
    ids, mask = random_sources(np.random.default_rng(7), 4, ours.src_vocab_size, ours.pad_id)
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=6, bad_words_ids=None,
                         forced_eos_token_id=None)
    assert (free == ours.pad_id).any()
    for beams in (1, 2):
        got = ours.generate(ids, attention_mask=mask, max_new_tokens=6, beam_size=beams)
        ref, _ = hf_generate(hf, ids, mask, num_beams=beams, max_new_tokens=6,
                             early_stopping=True)
        assert got.shape == (4, 6) and (got[:, -1] == ours.config.eos_token_id).all()
        assert not (got[:, :-1] == ours.pad_id).any()
        np.testing.assert_array_equal(got, ref)


def _score(ours, ids, hyp, lp):
    """sum log p(hyp) / len(hyp) ** lp under our teacher-forced forward."""
    dec = np.array([[ours.config.decoder_start_token_id] + hyp[:-1]])
    logits = ours(ids[None], decoder_input_ids=dec).logits[0].astype(np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return logp[np.arange(len(hyp)), hyp].sum() / len(hyp) ** lp


@pytest.mark.parametrize("k, lp, n", [(4, 1.0, 1), (3, 0.6, 3), (5, 2.0, 2)])
def test_beam_search_equals_transformers(pair, k, lp, n):
    """Same hypotheses and sequence scores as generate(num_beams=k,
    length_penalty=lp, early_stopping=True, num_return_sequences=n).  Where
    the two pick different hypotheses, both must score the same to float
    rounding (a tie either may break its way): the test says so."""
    hf, ours, _ = pair
    rng = np.random.default_rng(3)
    ids, mask = random_sources(rng, 3, ours.src_vocab_size, ours.pad_id)
    ref, ref_scores = hf_generate(hf, ids, mask, num_beams=k, length_penalty=lp,
                                  early_stopping=True, num_return_sequences=n,
                                  max_new_tokens=10)
    got, scores = ours.generate(ids, attention_mask=mask, max_new_tokens=10, method="beam",
                                beam_size=k, length_penalty=lp, num_return_sequences=n,
                                return_scores=True)
    eos, pad = ours.config.eos_token_id, ours.pad_id
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-5)
    for i, (a, b) in enumerate(zip(rows(got, eos, pad), rows(ref, eos, pad))):
        if a != b:
            src = ids[i // n][mask[i // n] == 1]
            sa, sb = _score(ours, src, a, lp), _score(ours, src, b, lp)
            assert abs(sa - sb) <= 1e-5 * max(1.0, abs(sb)), (i, a, b, sa, sb)
            print(f"row {i}: a tie within rounding ({sa:.9g} vs {sb:.9g}), broken otherwise "
                  f"than transformers breaks it")


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_batched_sources_get_their_own_tokens_bit_for_bit(pair, method):
    _, ours, _ = pair
    rng = np.random.default_rng(4)
    ids, mask = random_sources(rng, 6, ours.src_vocab_size, ours.pad_id, hi=12)
    kw = dict(max_new_tokens=9, method=method, beam_size=3, return_scores=True)
    tokens, scores = ours.generate(ids, attention_mask=mask, **kw)
    for i in range(len(ids)):
        alone = ids[i:i + 1, :mask[i].sum()]
        t, s = ours.generate(alone, **kw)
        n = t.shape[1]
        np.testing.assert_array_equal(tokens[i, :n], t[0])
        assert (tokens[i, n:] == ours.pad_id).all()
        assert s[0] == scores[i]


def test_generation_defaults_from_generation_config(tmp_path):
    """max_length and num_beams come from generation_config.json."""
    hf = make_marian(str(tmp_path), seed=5, generation=dict(max_length=7, num_beams=3))
    ours = pytransformer.from_pretrained(str(tmp_path))
    assert ours.generation_config["max_length"] == 7
    assert ours.generation_config["num_beams"] == 3
    rng = np.random.default_rng(5)
    ids, mask = random_sources(rng, 2, ours.src_vocab_size, ours.pad_id)
    ref, _ = hf_generate(hf, ids, mask, early_stopping=True)
    got = ours.generate(ids, attention_mask=mask)
    eos, pad = ours.config.eos_token_id, ours.pad_id
    assert got.shape[1] <= 6
    assert rows(got, eos, pad) == rows(ref, eos, pad)



def test_renormalize_logits_from_generation_config(tmp_path):
    """OPUS-MT's generation_config.json sets renormalize_logits: beam search
    renormalises its log-probabilities after the processors (bad_words_ids
    [[pad]] here), which moves the sequence scores; ours follow transformers'
    with it on and without it."""
    hf = make_marian(str(tmp_path), seed=6, generation=dict(renormalize_logits=True))
    ours = pytransformer.from_pretrained(str(tmp_path))
    assert ours.generation_config["renormalize_logits"] is True
    rng = np.random.default_rng(6)
    ids, mask = random_sources(rng, 3, ours.src_vocab_size, ours.pad_id)
    eos, pad = ours.config.eos_token_id, ours.pad_id
    results = {}
    for renorm in (True, False):
        ref, ref_scores = hf_generate(hf, ids, mask, num_beams=3, early_stopping=True,
                                      max_new_tokens=8, renormalize_logits=renorm)
        got, scores = ours.generate(ids, attention_mask=mask, max_new_tokens=8, beam_size=3,
                                    method="beam", return_scores=True,
                                    renormalize_logits=None if renorm else False)
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-5)
        assert rows(got, eos, pad) == rows(ref, eos, pad)
        results[renorm] = scores
    assert not np.allclose(results[True], results[False], rtol=1e-4, atol=1e-5)

def test_positions_saved_in_the_file_are_accepted(tmp_path):
    """Older checkpoints carry the sinusoidal tables (and every tied copy of
    the embeddings): read, not complained about."""
    from safetensors.numpy import load_file, save_file
    hf = make_marian(str(tmp_path), seed=6)
    f = os.path.join(tmp_path, "model.safetensors")
    d = load_file(f)
    for side in ("encoder", "decoder"):
        d[f"model.{side}.embed_positions.weight"] = \
            getattr(hf.model, side).embed_positions.weight.detach().numpy()
        d[f"model.{side}.embed_tokens.weight"] = d["model.shared.weight"]
    d["lm_head.weight"] = d["model.shared.weight"]
    save_file(d, f, metadata={"format": "pt"})
    ours = pytransformer.from_pretrained(str(tmp_path))
    ids = np.array([[5, 6, 7, 0]])
    with torch.no_grad():
        ref = hf(input_ids=T(ids), decoder_input_ids=T(ids)).logits.numpy()
    assert_model_close(ours(ids, decoder_input_ids=ids).logits, ref)
    # one table, not three
    assert ours.decoder_embed.weight is ours.encoder_embed.weight
    assert ours.lm_head.weight is ours.decoder_embed.weight


# ------------------------------------------------------------- bad inputs --

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("small"))
    make_marian(path, seed=7, max_position_embeddings=16)
    return pytransformer.from_pretrained(path), path


def test_ids_out_of_range(small):
    ours, _ = small
    for bad in (np.array([[3, 61]]), np.array([[-1, 3]])):
        with pytest.raises(TokenIdError):
            ours(bad, decoder_input_ids=np.array([[60]]))
        with pytest.raises(ValueError):
            ours.generate(bad, max_new_tokens=3)
    with pytest.raises(ValueError, match="decoder_input_ids"):
        ours(np.array([[3]]), decoder_input_ids=np.array([[99]]))
    with pytest.raises(ValueError, match="integer"):
        ours(np.array([[1.5]]), decoder_input_ids=np.array([[60]]))


def test_sources_longer_than_the_positions(small):
    ours, _ = small
    long = np.full((1, 17), 3)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        ours(long, decoder_input_ids=np.array([[60]]))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        ours.generate(long, max_new_tokens=3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        ours.generate(long[:, :4], max_new_tokens=17)


def test_bad_masks_and_empty_rows(small):
    ours, _ = small
    ids = np.array([[3, 4, 0]])
    with pytest.raises(ValueError, match="attention_mask"):
        ours(ids, attention_mask=np.ones((1, 2)), decoder_input_ids=ids)
    with pytest.raises(ValueError, match="attention_mask"):
        ours(ids, attention_mask=np.full((1, 3), 2), decoder_input_ids=ids)
    with pytest.raises(ValueError, match="empty"):
        ours.generate(ids, attention_mask=np.zeros((1, 3)), max_new_tokens=2)
    with pytest.raises(ValueError, match="decoder_input_ids"):
        ours(ids)


def _edit_config(path, **changes):
    f = os.path.join(path, "config.json")
    c = json.load(open(f))
    c.update(changes)
    json.dump(c, open(f, "w"))


@pytest.mark.parametrize("changes, match", [
    (dict(model_type="marianx"), "supported"),
    (dict(activation_function="tanh"), "activation_function"),
    (dict(d_model=25), "d_model|shape"),
    (dict(encoder_layers=3), "missing"),
    (dict(vocab_size=70), "shape"),
    (dict(normalize_before=True), "normalize_before"),
    (dict(eos_token_id=500), "eos_token_id"),
])
def test_bad_checkpoints(tmp_path, changes, match):
    make_marian(str(tmp_path), seed=8)
    _edit_config(str(tmp_path), **changes)
    with pytest.raises(ValueError, match=match):
        pytransformer.from_pretrained(str(tmp_path))


def test_untied_head_missing(tmp_path):
    make_marian(str(tmp_path), seed=9)
    _edit_config(str(tmp_path), tie_word_embeddings=False)
    with pytest.raises(ValueError, match="lm_head.weight"):
        pytransformer.from_pretrained(str(tmp_path))
