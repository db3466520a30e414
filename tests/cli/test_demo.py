"""The shipped demo model, the demo task, and the pytransformer command."""
import os
import re

import numpy as np
import pytest

from pytransformer import cli
from pytransformer.demo import task

from conftest import run_python

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository


def _run(*args):
    return run_python(list(args))


# ------------------------------------------------------------------- task --

def test_task_targets_are_the_iso_date_of_the_source():
    import datetime
    for src, tgt in task.sample_pairs(300, seed=1, split="any"):
        d = datetime.date.fromisoformat(tgt)
        assert src in {task.format_date(d, f) for f in task.FORMATS}
        assert len(src) <= task.MAX_SOURCE_LEN and len(tgt) == task.TARGET_LEN


def test_task_splits_are_disjoint_days_and_reproducible():
    train = task.sample_pairs(500, seed=3, split="train")
    held = task.sample_pairs(500, seed=3, split="held_out")
    assert {t for _, t in train}.isdisjoint({t for _, t in held})
    assert task.sample_pairs(50, seed=7) == task.sample_pairs(50, seed=7)
    import datetime
    days = [datetime.date(2000, 1, 1) + datetime.timedelta(k) for k in range(20000)]
    frac = np.mean([task.is_held_out(d) for d in days])
    assert 0.09 < frac < 0.11


def test_task_encode_decode_round_trip_and_errors():
    for src, tgt in task.sample_pairs(100, seed=5):
        assert task.decode(task.encode(src)) == src
        ids = task.encode(tgt, add_bos=True, add_eos=True)
        assert ids[0] == task.BOS_ID and ids[-1] == task.EOS_ID
        assert task.decode(np.concatenate([ids, [task.PAD_ID] * 3])) == tgt
    batch = task.encode_batch(["ab", "abcd"])
    assert batch.shape == (2, 4) and batch[0, 2:].tolist() == [task.PAD_ID] * 2
    with pytest.raises(ValueError, match="not in the demo vocabulary"):
        task.encode("june 3rd; 1999")
    assert task.VOCAB[task.PAD_ID] == "<pad>" and task.VOCAB_SIZE < 64


# ------------------------------------------------------------------ model --

def test_shipped_model_file():
    from safetensors import safe_open
    assert os.path.getsize(task.MODEL_PATH) < 5e6
    with safe_open(task.MODEL_PATH, "np") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == "pytransformer.Seq2SeqTransformer"
    assert {"src_embed.weight", "tgt_embed.weight", "generator.weight",
            "generator.bias"} <= keys


def test_shipped_model_reaches_99_percent_without_torch():
    """Greedy exact match on fresh held-out days, in a process where torch
    cannot be imported."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from pytransformer.models import Seq2SeqTransformer\n"
        "from pytransformer.demo import task as t\n"
        "m = Seq2SeqTransformer.load(t.MODEL_PATH)\n"
        "pairs = t.sample_pairs(1000, seed=2024, split='held_out')\n"
        "out = m.generate(t.encode_batch([s for s, _ in pairs]), max_new_tokens=t.TARGET_LEN + 1,"
        " bos_id=t.BOS_ID, eos_id=t.EOS_ID, pad_id=t.PAD_ID)\n"
        "print(t.exact_match([t.decode(r) for r in out], [g for _, g in pairs]))\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
    )
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr
    acc = float(r.stdout.strip().splitlines()[-1])
    assert acc >= 0.99, acc


@pytest.mark.parametrize("compute_type", ["bfloat16", "int8"])
def test_shipped_model_in_bfloat16_and_int8(compute_type):
    """compute_type="bfloat16" / "int8": greedy exact match >=
    BF16_DEMO_EXACT_MATCH / INT8_DEMO_EXACT_MATCH on 1,000 fresh held-out
    dates (bounds: conftest.py), torch not imported."""
    from conftest import BF16_DEMO_EXACT_MATCH, INT8_DEMO_EXACT_MATCH
    bound = {"bfloat16": BF16_DEMO_EXACT_MATCH, "int8": INT8_DEMO_EXACT_MATCH}[compute_type]
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from pytransformer.models import Seq2SeqTransformer\n"
        "from pytransformer.demo import task as t\n"
        f"m = Seq2SeqTransformer.load(t.MODEL_PATH, compute_type={compute_type!r})\n"
        f"assert m.generator.compute_type == {compute_type!r}\n"
        "pairs = t.sample_pairs(1000, seed=2025, split='held_out')\n"
        "out = m.generate(t.encode_batch([s for s, _ in pairs]), max_new_tokens=t.TARGET_LEN + 1,"
        " bos_id=t.BOS_ID, eos_id=t.EOS_ID, pad_id=t.PAD_ID)\n"
        "print(t.exact_match([t.decode(r) for r in out], [g for _, g in pairs]))\n"
    )
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr
    acc = float(r.stdout.strip().splitlines()[-1])
    assert acc >= bound, acc
    r = _run("-m", "pytransformer", "demo", "june 3rd, 1999", "--n", "0",
             "--compute-type", compute_type)
    assert r.returncode == 0 and "1999-06-03" in r.stdout, r.stderr
    assert f"compute type {compute_type}" in r.stdout


# -------------------------------------------------------------------- cli --

def test_python_m_pytransformer_demo_runs_without_torch(tmp_path):
    code = ("import sys, runpy; sys.modules['torch'] = None; "
            "sys.argv = ['pytransformer', 'demo', 'june 3rd, 1999', '--n', '200']; "
            "runpy.run_module('pytransformer', run_name='__main__')")
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr
    assert "1999-06-03" in r.stdout
    m = re.search(r"exact match on 200 .*: ([\d.]+)%", r.stdout)
    assert m and float(m.group(1)) >= 99.0, r.stdout
    assert "tokens/s" in r.stdout


def test_python_m_pytransformer_demo_help():
    r = _run("-m", "pytransformer", "demo", "--help")
    assert r.returncode == 0 and "--plot" in r.stdout and "--n" in r.stdout


def test_cross_attention_map_matches_torch():
    """The plotted weights: the last decoder layer's head-averaged
    cross-attention, from torch's own modules on the same weights."""
    torch = pytest.importorskip("torch")
    from pytransformer import oracle
    from pytransformer.models import Seq2SeqTransformer

    from conftest import assert_model_close
    for norm_first in (False, True):
        model = Seq2SeqTransformer(task.VOCAB_SIZE, task.VOCAB_SIZE, d_model=32, nhead=4,
                                   num_encoder_layers=2, num_decoder_layers=2,
                                   dim_feedforward=64, max_len=48, norm_first=norm_first,
                                   seed=3)
        text, pred = "the fifth of march 2021", "2021-03-05"
        ours = cli.cross_attention_map(model, text, pred)
        tm = oracle.to_torch(model)
        src = torch.from_numpy(task.encode_batch([text]))
        tgt = torch.from_numpy(task.encode_batch([pred], add_bos=True))
        T = tgt.shape[1]
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        kpm = src == model.pad_id
        with torch.no_grad():
            memory = tm.transformer.encoder(tm.embed(tm.src_embed, src),
                                            src_key_padding_mask=kpm)
            x = tm.embed(tm.tgt_embed, tgt)
            layers = tm.transformer.decoder.layers
            for layer in layers[:-1]:
                x = layer(x, memory, tgt_mask=causal, memory_key_padding_mask=kpm)
            last = layers[-1]
            h = last.norm1(x) if norm_first else x
            x = x + last.self_attn(h, h, h, attn_mask=causal, need_weights=False)[0]
            q = last.norm2(x) if norm_first else last.norm1(x)
            _, w = last.multihead_attn(q, memory, memory, key_padding_mask=kpm,
                                       need_weights=True, average_attn_weights=True)
        assert ours.shape == (T, len(text))
        assert_model_close(ours, w[0].numpy(), what=f"norm_first={norm_first}")


def test_demo_plot(tmp_path):
    out = tmp_path / "map.png"
    assert cli.main(["demo", "5 mar 2021", "--n", "0", "--plot", str(out)]) == 0
    assert out.stat().st_size > 1000


def test_info_prints_the_kernel_path():
    import pytransformer
    r = _run("-m", "pytransformer", "info")
    assert r.returncode == 0, r.stderr
    assert f"kernel path : {pytransformer.cpu_info()['isa']}" in r.stdout
    assert pytransformer.__version__ in r.stdout


def test_info_build_flags_match_setup_py():
    setup_py = open(os.path.join(ROOT, "setup.py")).read()
    assert repr(cli.BUILD_CFLAGS).replace("'", '"') in setup_py.replace("'", '"')
    for flags in cli.BUILD_PATH_FLAGS.values():
        if flags:
            assert all(f'"{f}"' in setup_py for f in flags)


def test_console_script_is_declared():
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert 'pytransformer = "pytransformer.cli:main"' in text
    assert '"pytransformer.demo" = ["*.safetensors"]' in text


def test_bench_quick_runs(capsys):
    assert cli.main(["bench", "--quick", "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert "Kernels" in out and "linear" in out and "softmax" in out


@pytest.mark.parametrize("argv,message", [
    (["demo", "--batch-size", "0"], "--batch-size: must be >= 1"),
    (["demo", "--threads", "-1"], "--threads: must be >= 1"),
    (["demo", "--n", "-3"], "--n: must be >= 0"),
    (["bench", "--threads", "x"], "is not an integer"),
])
def test_cli_rejects_bad_numbers(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_demo_says_it_cannot_read_empty_text(capsys):
    assert cli.main(["demo", "", "   ", "--n", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("cannot read it") == 2
