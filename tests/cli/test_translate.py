"""pytransformer translate: TEXT arguments, --input FILE and stdin, beam and
greedy, n-best JSON lines -- the same translations as pytransformer.Translator
(itself tested against transformers) -- and one-line errors with exit code 2."""
import json
import os
import subprocess
import sys
import tempfile

import pytest

import pytransformer

from marian_fixtures import corpus, make_marian

TEXTS = corpus(5, seed=21) + [">>fr<< the dog ran ."]


def translate(*args, input=None):
    root = os.path.dirname(os.path.dirname(os.path.abspath(pytransformer.__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-m", "pytransformer", "translate", *args],
                              input=input if input is not None else "", env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("opus"))
    make_marian(path, seed=5, tokenizer=True, tie_word_embeddings=False,
                generation=dict(max_length=9))
    return path, pytransformer.Translator(path)


def test_text_arguments_greedy_and_beam(model):
    path, translator = model
    r = translate("--model", path, "--beam-size", "1", "--threads", "1", *TEXTS)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == translator.translate(TEXTS, beam_size=1)
    r = translate("--model", path, "--max-new-tokens", "6", *TEXTS)  # beam 4 by default
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == translator.translate(TEXTS, max_new_tokens=6)


def test_input_file_and_stdin_n_best(tmp_path, model):
    path, translator = model
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    want = translator.translate(TEXTS, beam_size=3, num_hypotheses=2, return_scores=True)
    for args, stdin in ((["--input", str(src)], None), (["--input", "-"], src.read_text())):
        r = translate("--model", path, "--beam-size", "3", "--num-hypotheses", "2", *args,
                      input=stdin)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert [row["text"] for row in rows] == TEXTS
        assert [[(h["text"], h["score"]) for h in row["translations"]] for row in rows] == want


@pytest.mark.parametrize("args, message", [
    (["--model", "{tmp}", "hello"], "--model: {tmp}: not a Hugging Face model directory"),
    (["--model", "{tmp}/nope", "hello"], "--model: {tmp}/nope: no such directory"),
    (["--model", "{model}"], "no texts to translate"),
    (["--model", "{model}", "--input", "{tmp}/missing.txt"], "cannot read {tmp}/missing.txt"),
    (["--model", "{model}", "--input", "-", "a"], "not both"),
    (["--model", "{model}", "--beam-size", "2", "--num-hypotheses", "3", "a"],
     "--num-hypotheses 3 is more than --beam-size 2"),
    (["--model", "{model}", " ".join(["the cat"] * 80)], "max_position_embeddings"),
    (["--model", "{model}", "--max-new-tokens", "500", "a"], "max_new_tokens"),
], ids=["not-a-model", "missing", "no-texts", "no-input-file", "both", "n-best", "too-long",
        "too-many-tokens"])
def test_user_errors_are_one_line(tmp_path, model, args, message):
    fill = lambda s: s.format(tmp=tmp_path, model=model[0])  # noqa: E731
    r = translate(*map(fill, args))
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("pytransformer translate: ") and fill(message) in r.stderr, \
        r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_bad_option_values_exit_2(model):
    r = translate("--model", model[0], "--beam-size", "0", "a")
    assert r.returncode == 2 and "--beam-size" in r.stderr
