"""GPT-2 (models/gpt2.py) against transformers' GPT2LMHeadModel on the same
weights: random configurations (odd head counts, n_embd not a multiple of 64,
gelu_new / relu / gelu) saved with save_pretrained and read back by
pytransformer.from_pretrained.  Logits on padded batches; the KV-cached
decoding protocol against the full forward; greedy search, beam search and
the logits processors against transformers' generate; padded batches of
prompts bit for bit like each prompt alone; bad inputs."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pytransformer  # noqa: E402
from pytransformer.models.gpt2 import GPT2LMHeadModel  # noqa: E402
from conftest import assert_model_close  # noqa: E402

V = 61
EOS = V - 1

CONFIGS = [
    dict(n_embd=36, n_head=3, n_layer=2, activation_function="gelu_new"),
    dict(n_embd=40, n_head=5, n_layer=3, activation_function="relu", n_inner=52),
    dict(n_embd=70, n_head=7, n_layer=1, activation_function="gelu", layer_norm_epsilon=1e-6),
    dict(n_embd=24, n_head=1, n_layer=2, activation_function="gelu_pytorch_tanh",
         tie_word_embeddings=False),
]


def randomize(model, seed):
    """Weights far from GPT-2's initialisation (which gives nearly uniform
    next-token distributions): every tensor matters, and searches branch."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("wte.weight") or name.endswith("lm_head.weight"):
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
                # an end token likely enough that hypotheses end at many lengths
                p[EOS] *= 4 if name.endswith("wte.weight") else 2
            else:
                p.copy_(2.0 / p.shape[0] ** 0.5 * torch.randn(p.shape, generator=g))
    return model.eval()


def make(tmp_path, i, n_positions=48):
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=n_positions, bos_token_id=EOS,
                                  eos_token_id=EOS, **CONFIGS[i])
    torch.manual_seed(i)
    theirs = randomize(transformers.GPT2LMHeadModel(cfg), 100 + i)
    path = tmp_path / f"gpt2-{i}"
    theirs.save_pretrained(path)
    return theirs, pytransformer.from_pretrained(path), path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("gpt2")
    return [make(base, i) for i in range(len(CONFIGS))]


def prompts(rng, lengths, lo=0, hi=V - 1):
    return [rng.integers(lo, hi, size=n).tolist() for n in lengths]


def padded(rows, side, pad=0):
    T = max(map(len, rows))
    ids = np.full((len(rows), T), pad, np.int64)
    mask = np.zeros((len(rows), T), np.int64)
    for r, p in enumerate(rows):
        sl = slice(T - len(p), T) if side == "left" else slice(0, len(p))
        ids[r, sl] = p
        mask[r, sl] = 1
    return ids, mask


def hf_generate(theirs, prompt, **kw):
    """transformers' generate on one prompt: (new tokens, sequence score or None)."""
    kw.setdefault("pad_token_id", EOS)
    with torch.no_grad():
        out = theirs.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                                                                 dtype=torch.long),
                              return_dict_in_generate=True, output_scores=True, **kw)
    seqs = out.sequences[:, len(prompt):].numpy()
    scores = getattr(out, "sequences_scores", None)
    return seqs, None if scores is None else scores.numpy()


def cut(row, stop_ids=(EOS,), pad=EOS):
    """A generated row up to and including its first stop id."""
    row = list(row)
    for j, t in enumerate(row):
        if t in stop_ids:
            return row[:j + 1]
    return row


# ----------------------------------------------------------------- loading --

def test_loads_the_family(models):
    theirs, ours, _ = models[0]
    assert isinstance(ours, GPT2LMHeadModel) and ours.decoder_only
    assert ours.vocab_size == V and ours.max_length == 48
    tied = models[0][1]
    assert tied.lm_head.weight is tied.wte.weight
    untied = models[3][1]
    np.testing.assert_array_equal(untied.lm_head.weight,
                                  models[3][0].lm_head.weight.detach().numpy())


# ----------------------------------------------------------------- forward --

@pytest.mark.parametrize("i", range(len(CONFIGS)))
@pytest.mark.parametrize("side", ["right", "left"])
def test_logits_equal_transformers_on_padded_batches(models, i, side):
    theirs, ours, _ = models[i]
    rows = prompts(np.random.default_rng(i), [9, 4, 12, 1])
    ids, mask = padded(rows, side)
    with torch.no_grad():
        ref = theirs(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    got = ours(ids, mask)
    assert got.shape == (4, ids.shape[1], V) and got.dtype == np.float32
    keep = mask.astype(bool)
    assert_model_close(got[keep], ref[keep], what=f"config {i}, {side} padding")
    # positions counted from each row's first token, as generate passes them
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        ref = theirs(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                     position_ids=torch.from_numpy(pos)).logits.numpy()
    assert_model_close(ours(ids, mask, position_ids=pos)[keep], ref[keep], what="position_ids")


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_cached_decoding_equals_the_full_forward(models, i):
    _, ours, _ = models[i]
    rng = np.random.default_rng(10 + i)
    seq = rng.integers(0, V, size=(3, 14))
    full = ours(seq)
    state, logits = ours.start_decoding(seq[:, :5], 9)
    assert logits.shape == (3, V)
    assert_model_close(logits, full[:, 4], what="prefill")
    for t in range(5, 14):
        logits = ours.decode_step(seq[:, t], state)
        assert_model_close(logits, full[:, t], what=f"step {t}")
    assert list(state.lengths) == [14, 14, 14]


# ------------------------------------------------------------------ search --

@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_greedy_equals_transformers_generate(models, i):
    theirs, ours, _ = models[i]
    rng = np.random.default_rng(20 + i)
    for p in prompts(rng, [5, 1, 9]):
        for eos in (EOS, None):
            ref, _ = hf_generate(theirs, p, max_new_tokens=12, do_sample=False, num_beams=1,
                                 eos_token_id=eos)
            got = ours.generate(np.array([p]), 12, eos_id=eos)
            assert cut(got[0]) == cut(ref[0]), (i, p, eos)


def _same_hypotheses(got, got_scores, ref, ref_scores, what):
    """Beam results equal, hypothesis for hypothesis; where two finished
    hypotheses tie within float rounding (|score difference| < 1e-5) their
    order may differ, so a mismatch is accepted only there."""
    np.testing.assert_allclose(got_scores, ref_scores, rtol=1e-4, atol=1e-5, err_msg=what)
    for j, (g, r) in enumerate(zip(got, ref)):
        if g != r:
            ties = [k for k in range(len(ref)) if abs(ref_scores[k] - ref_scores[j]) < 1e-5]
            assert g in [ref[k] for k in ties], f"{what}: hypothesis {j}: {g} != {r}"


@pytest.mark.parametrize("i,K,lp,n", [(0, 3, 1.0, 3), (1, 2, 0.6, 1), (2, 4, 0.0, 2),
                                      (3, 3, 2.0, 2), (0, 5, -0.5, 4)])
def test_beam_search_equals_transformers_generate(models, i, K, lp, n):
    theirs, ours, _ = models[i]
    rng = np.random.default_rng(30 + i)
    for p in prompts(rng, [6, 2]):
        ref, ref_scores = hf_generate(theirs, p, max_new_tokens=8, do_sample=False,
                                      num_beams=K, length_penalty=lp, early_stopping=True,
                                      num_return_sequences=n, eos_token_id=EOS)
        got, scores = ours.generate(np.array([p]), 8, method="beam", beam_size=K,
                                    length_penalty=lp, num_return_sequences=n,
                                    return_scores=True)
        _same_hypotheses([cut(r) for r in got], scores, [cut(r) for r in ref], ref_scores,
                         f"config {i}, K={K}, prompt {p}")


def test_beam_search_with_several_stop_ids_equals_transformers(models):
    theirs, ours, _ = models[1]
    stop = [EOS, 7, 11]
    for p in prompts(np.random.default_rng(35), [4, 7]):
        ref, ref_scores = hf_generate(theirs, p, max_new_tokens=7, num_beams=3,
                                      early_stopping=True, num_return_sequences=3,
                                      eos_token_id=stop)
        got, scores = ours.generate(np.array([p]), 7, eos_id=stop, method="beam", beam_size=3,
                                    num_return_sequences=3, return_scores=True)
        _same_hypotheses([cut(r, stop) for r in got], scores, [cut(r, stop) for r in ref],
                         ref_scores, f"prompt {p}")


PROCESSING = [dict(repetition_penalty=1.8), dict(repetition_penalty=0.6),
              dict(no_repeat_ngram_size=2), dict(no_repeat_ngram_size=1),
              dict(min_new_tokens=6), dict(bad_words_ids=[[3], [5, 6], [8, 9, 10]]),
              dict(forced_eos_token_id=EOS),
              dict(repetition_penalty=1.3, no_repeat_ngram_size=3, min_new_tokens=2)]


@pytest.mark.parametrize("kw", PROCESSING)
@pytest.mark.parametrize("beams", [1, 3])
def test_logits_processors_equal_transformers_generate(models, kw, beams):
    theirs, ours, _ = models[0]
    rng = np.random.default_rng(40)
    # prompts with repeats, so that the prompt's tokens and n-grams matter
    for p in [[4, 5, 6, 4, 5], [9, 9, 2], rng.integers(0, 12, size=8).tolist()]:
        ref, ref_scores = hf_generate(theirs, p, max_new_tokens=10, do_sample=False,
                                      num_beams=beams, early_stopping=True,
                                      num_return_sequences=beams, eos_token_id=EOS, **kw)
        got, scores = ours.generate(np.array([p]), 10, method="beam" if beams > 1 else "greedy",
                                    beam_size=beams, num_return_sequences=beams,
                                    return_scores=True, **kw)
        if beams == 1:
            assert cut(got[0]) == cut(ref[0]), (kw, p)
        else:
            _same_hypotheses([cut(r) for r in got], scores, [cut(r) for r in ref], ref_scores,
                             f"{kw}, prompt {p}")


# ------------------------------------------------------- batch invariance --

@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_batched_prompts_are_bit_identical_to_alone(models, side, method, threads):
    _, ours, _ = models[1]
    rows = prompts(np.random.default_rng(50), [7, 2, 11, 5, 1])
    ids, mask = padded(rows, side, pad=3)
    kw = dict(method=method, beam_size=3, num_return_sequences=2 if method != "greedy" else 1,
              seed=4, temperature=1.3, return_scores=True, repetition_penalty=1.2,
              no_repeat_ngram_size=3)
    n = kw["num_return_sequences"]
    tokens, scores = ours.generate(ids, 9, attention_mask=mask, **kw)
    state, first = ours.start_decoding(ids, 9, attention_mask=mask)
    for b, p in enumerate(rows):
        t1, s1 = ours.generate(np.array([p]), 9, **kw)
        w = max(t1.shape[1], tokens.shape[1])
        pad = lambda a: np.pad(a, ((0, 0), (0, w - a.shape[1])), constant_values=ours.pad_id)
        np.testing.assert_array_equal(pad(t1), pad(tokens[b * n:(b + 1) * n]), err_msg=str(b))
        np.testing.assert_array_equal(s1, scores[b * n:(b + 1) * n])
        _, alone = ours.start_decoding(np.array([p]), 9)
        np.testing.assert_array_equal(alone[0], first[b])


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_the_c_block_step_is_the_python_step_bit_for_bit(models, python_step, threads, i):
    """Each block's step as one C call (_kernels.DecoderLayerStep without a
    cross attention) against the block's Python step: padded prompts of
    different lengths (rows at positions of their own, the keep mask), then
    greedy and beam search."""
    from pytransformer import nn
    _, ours, _ = models[i]
    ids, mask = padded(prompts(np.random.default_rng(70 + i), [6, 2, 9]), "left")
    ref, fused = python_step(nn.TransformerEncoderLayer, lambda: [
        ours.generate(ids, 7, attention_mask=mask, eos_id=None, return_scores=True, **kw)
        for kw in (dict(), dict(method="beam", beam_size=3))])
    for (t0, s0), (t1, s1) in zip(ref, fused):
        np.testing.assert_array_equal(t0, t1)
        assert np.array_equal(s0, s1)
    assert all(block.__dict__["_fused"][1] is not None for block in ours.h)
    assert ours.__dict__["_stack"][1] is not None   # the whole stack as one C call


def test_batched_greedy_equals_transformers_alone(models):
    theirs, ours, _ = models[2]
    rows = prompts(np.random.default_rng(51), [3, 8, 5])
    ids, mask = padded(rows, "left")
    got = ours.generate(ids, 10, attention_mask=mask)
    for r, p in enumerate(rows):
        ref, _ = hf_generate(theirs, p, max_new_tokens=10, do_sample=False, eos_token_id=EOS)
        assert cut(got[r]) == cut(ref[0])


def test_sampling_is_reproducible_and_filters(models):
    _, ours, _ = models[0]
    p = np.array([[1, 2, 3]])
    kw = dict(method="sample", seed=9, temperature=0.8, top_k=5, top_p=0.9)
    a, b = ours.generate(p, 10, **kw), ours.generate(p, 10, **kw)
    np.testing.assert_array_equal(a, b)
    g = ours.generate(p, 10)
    np.testing.assert_array_equal(ours.generate(p, 10, method="sample", top_k=1, seed=1), g)


# --------------------------------------------------------------- bad input --

def test_prompt_and_new_tokens_past_the_position_limit(models):
    _, ours, _ = models[0]
    with pytest.raises(ValueError, match="n_positions"):
        ours.generate(np.zeros((1, 40), np.int64), 9)
    with pytest.raises(ValueError, match="n_positions"):
        ours(np.zeros((1, 49), np.int64))
    ours.generate(np.zeros((1, 40), np.int64), 8)  # exactly the limit


@pytest.mark.parametrize("ids,kw", [
    (np.array([[1, V]]), {}), (np.array([[-1, 2]]), {}), (np.array([[1.0, 2.0]]), {}),
    (np.zeros((1, 0), np.int64), {}), (np.zeros((0, 3), np.int64), {}),
    (np.array([[1, 2]]), dict(attention_mask=np.array([[0, 0]]))),
    (np.array([[1, 2]]), dict(attention_mask=np.array([[1, 2]]))),
    (np.array([[1, 2]]), dict(attention_mask=np.array([[1, 1, 1]]))),
    (np.array([[1, 2]]), dict(max_new_tokens=0)),
    (np.array([[1, 2]]), dict(eos_id=V)), (np.array([[1, 2]]), dict(eos_id=[])),
    (np.array([[1, 2]]), dict(method="beam", beam_size=0)),
    (np.array([[1, 2]]), dict(repetition_penalty=-1.0)),
    (np.array([[1, 2]]), dict(bad_words_ids=[[V]])),
])
def test_bad_input_is_a_value_error(models, ids, kw):
    _, ours, _ = models[0]
    args = dict(max_new_tokens=4)
    args.update(kw)
    with pytest.raises(ValueError):
        ours.generate(ids, **args)


def test_bad_checkpoints(tmp_path, models):
    _, _, path = models[0]
    config = json.loads((path / "config.json").read_text())
    for name, change, match in [
            ("type", dict(model_type="gpt_neo"), "gpt2"),
            ("heads", dict(n_head=5), "n_head"),
            ("act", dict(activation_function="quick_gelu"), "activation_function"),
            ("cross", dict(add_cross_attention=True), "add_cross_attention"),
            ("size", dict(n_embd=30, n_head=3), "shape")]:
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({**config, **change}))
        os.symlink(path / "model.safetensors", d / "model.safetensors")
        with pytest.raises(ValueError, match=match):
            pytransformer.from_pretrained(d)
