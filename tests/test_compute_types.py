"""The pipelines in every compute type: Translator (Marian) and Generator
(GPT-2) in bfloat16 and int8 against transformers' float32 on the same random
checkpoints -- logits within their rounding's reach of the oracle, and not
its bits --, their results unchanged by batching, and the command lines'
--compute-type.  (The real checkpoints are held to their bounds in
test_pipelines.py, tests/cli/test_demo.py and tests/models/test_smollm2.py.)"""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pytransformer  # noqa: E402
from conftest import run_python  # noqa: E402
from marian_fixtures import corpus, make_marian  # noqa: E402
from test_generator import TEXTS, randomize, train_tokenizer  # noqa: E402

LOW = ["bfloat16", "int8"]
# relative error of a whole small model's logits (max |err| / max |logit|):
# bf16 rounds each GEMM operand to 8 bits (2^-9 relative), int8 to half a
# step of amax/127 -- against elements of typical size amax/3 that is ~2.5%
# per operand and GEMM in these narrow (K = 40) random models, and a few
# GEMMs in series compound it; a wrong kernel (a lost block, a scale on the
# wrong axis) is off by the scale itself
LOGIT_RTOL = {"bfloat16": 0.05, "int8": 0.15}


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("opus-ct"))
    hf = make_marian(path, seed=7, tokenizer=True, tie_word_embeddings=False)
    return path, hf


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    import transformers
    d = tmp_path_factory.mktemp("gpt2-ct")
    tok = train_tokenizer(d)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=40, n_head=5,
                                  n_layer=2, bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(0)
    model = randomize(transformers.GPT2LMHeadModel(cfg), 1)
    model.save_pretrained(d)
    return str(d), model


def assert_near_not_equal(got, ref, ct, what):
    scale = float(np.abs(ref).max())
    err = float(np.abs(got - ref).max())
    assert 0 < err <= LOGIT_RTOL[ct] * scale, f"{what}: max |err| {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("ct", LOW)
def test_marian_logits(marian, ct):
    path, hf = marian
    rng = np.random.default_rng(0)
    src = rng.integers(2, hf.config.vocab_size - 1, (3, 9))
    tgt = rng.integers(2, hf.config.vocab_size - 1, (3, 6))
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(src),
                 decoder_input_ids=torch.from_numpy(tgt)).logits.numpy()
    model = pytransformer.from_pretrained(path, compute_type=ct)
    assert {m.compute_type for _, m in model.named_modules() if "compute_type" in m.__dict__} \
        == {ct}
    assert_near_not_equal(model(src, decoder_input_ids=tgt).logits, ref, ct, "marian")


@pytest.mark.parametrize("ct", LOW)
def test_translator_batching_does_not_change_results(marian, ct):
    tr = pytransformer.Translator(marian[0], compute_type=ct)
    texts = corpus(6, seed=3) + ["", "the"]
    every = tr.translate(texts, beam_size=3, max_new_tokens=8, return_scores=True)
    alone = [tr.translate(t, beam_size=3, max_new_tokens=8, return_scores=True) for t in texts]
    assert every == alone
    assert tr.translate(texts, beam_size=1, max_new_tokens=8) == \
        [tr.translate(t, beam_size=1, max_new_tokens=8) for t in texts]


@pytest.mark.parametrize("ct", LOW)
def test_gpt2_logits_and_batched_prompts(gpt2, ct):
    path, hf = gpt2
    rng = np.random.default_rng(1)
    ids = rng.integers(0, hf.config.vocab_size, (2, 11))
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)).logits.numpy()
    gen = pytransformer.Generator(path, compute_type=ct)
    assert_near_not_equal(gen.model(ids), ref, ct, "gpt2")
    together = gen.generate(TEXTS, max_new_tokens=8)
    assert together == [gen.generate(t, max_new_tokens=8)[0] for t in TEXTS]


@pytest.mark.parametrize("ct", LOW)
def test_command_lines_take_the_compute_type(marian, gpt2, ct):
    r = run_python(["-m", "pytransformer", "translate", "--model", marian[0],
                    "--compute-type", ct, "--max-new-tokens", "5", "the cat sat"], timeout=300)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    r = run_python(["-m", "pytransformer", "generate", "--model", gpt2[0], "--compute-type", ct,
                    "--max-new-tokens", "4", "the cat"], timeout=300)
    assert r.returncode == 0, r.stderr
    assert ct in r.stderr + r.stdout          # the tokens/s line names the weights' type
    r = run_python(["-m", "pytransformer", "translate", "--model", marian[0],
                    "--compute-type", "float16", "x"], timeout=300)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_cpu_info_names_a_kernel_for_every_compute_type():
    info = pytransformer.cpu_info()
    assert set(info["compute_paths"]) == {"float32", "bfloat16", "int8"}
    json.dumps(info)
