"""pytransformer embed: JSON lines, .npy files, stdin, --similarity, and a
one-line message with exit code 2 (never a traceback) for user errors."""
import json

import numpy as np
import pytest

from pytransformer import SentenceEncoder

from conftest import run_python


def embed(*args, input=None):
    import os
    import subprocess
    import sys
    import tempfile

    import pytransformer
    if input is None:
        return run_python(["-m", "pytransformer", "embed", *args])
    root = os.path.dirname(os.path.dirname(os.path.abspath(pytransformer.__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-m", "pytransformer", "embed", *args],
                              input=input, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=600)


@pytest.fixture(scope="module")
def encoder(minilm_path):
    return SentenceEncoder(minilm_path)


def test_json_lines_equal_the_encoder(minilm_path, encoder):
    texts = ["A cat sits on the mat.", "Un chat est assis sur le tapis. 🐈", ""]
    r = embed("--model", minilm_path, *texts)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["text"] for row in rows] == texts
    got = np.array([row["embedding"] for row in rows], dtype=np.float32)
    np.testing.assert_array_equal(got, encoder.encode(texts))  # float32 round-trips exactly
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("compute_type", ["bfloat16", "int8"])
def test_compute_type(minilm_path, encoder, compute_type):
    from conftest import BF16_EMBED_COSINE, INT8_EMBED_COSINE
    bound = {"bfloat16": BF16_EMBED_COSINE, "int8": INT8_EMBED_COSINE}[compute_type]
    texts = ["A man is playing a guitar.", "Two dogs run through the snow."]
    r = embed("--model", minilm_path, "--compute-type", compute_type, *texts)
    assert r.returncode == 0, r.stderr
    got = np.array([json.loads(line)["embedding"] for line in r.stdout.splitlines()])
    ref = encoder.encode(texts)
    cos = np.sum(got * ref, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= bound and not np.array_equal(got.astype(np.float32), ref)


def test_input_file_to_npy_with_progress(tmp_path, minilm_path, encoder):
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'stocks'}" for i in range(40)]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    r = embed("--model", minilm_path, "--input", str(src), "--output", str(out),
              "--batch-size", "16")
    assert r.returncode == 0, r.stderr
    assert "encoding: 40/40 sentences (100%)" in r.stderr and r.stdout == ""
    np.testing.assert_array_equal(np.load(out), encoder.encode(texts))


def test_stdin_and_similarity(minilm_path, encoder):
    texts = ["A man is eating food.", "A man is eating a piece of bread.",
             "The girl is carrying a baby."]
    r = embed("--model", minilm_path, "--input", "-", "--similarity",
              input="\n".join(texts) + "\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "cosine similarity of 3 texts:"
    e = encoder.encode(texts)
    sim = e @ e.T
    for i, line in enumerate(lines[2:]):
        values = [float(v) for v in line.split("'")[-1].split()[:-1]]
        np.testing.assert_allclose(values, sim[i], atol=6e-4)
    assert sim[0, 1] > sim[0, 2]


@pytest.mark.parametrize("args,message", [
    (["--model", "{tmp}", "hello"], "--model: {tmp}: not a Hugging Face model directory"),
    (["--model", "{tmp}/nope", "hello"], "--model: {tmp}/nope: no such directory"),
    (["--model", "{model}"], "no texts to embed"),
    (["--model", "{model}", "--input", "{tmp}/missing.txt"], "cannot read {tmp}/missing.txt"),
    (["--model", "{model}", "--output", "{tmp}/x.txt", "a"], "must end in .npy"),
    (["--model", "{model}", "--input", "-", "a"], "not both"),
], ids=["not-a-model", "missing", "no-texts", "no-input-file", "bad-output", "both"])
def test_user_errors_are_one_line(tmp_path, minilm_path, args, message):
    fill = lambda s: s.format(tmp=tmp_path, model=minilm_path)  # noqa: E731
    r = embed(*map(fill, args), input="")
    assert r.returncode == 2
    assert r.stderr.startswith("pytransformer embed: ") and fill(message) in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
