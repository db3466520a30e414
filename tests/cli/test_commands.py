"""Every subcommand through the installed console script, run with the
repository root as the working directory (which holds a source tree named
pytransformer that was never built): each must import the installed package,
succeed, and never print a traceback -- for user errors neither."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():
    here = os.path.join(os.path.dirname(sys.executable), "pytransformer")
    return here if os.path.exists(here) else shutil.which("pytransformer")


def run(*args, timeout=600):
    script = _script()
    if script is None:
        pytest.fail("the pytransformer console script is not installed beside this Python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([script, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args", [
    ["info"],
    ["demo", "june 3rd, 1999", "1969/07/20", "--n", "20"],
    ["bench", "--quick"],
], ids=["info", "demo", "bench"])
def test_subcommand_from_the_repository_root(args):
    res = run(*args)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    assert res.stdout.strip()


@pytest.mark.parametrize("args, code", [
    (["demo", "--n", "-3"], 2),                       # argparse
    (["demo", "--seed", "-5", "--n", "5"], 2),        # refused before any work
    (["demo", "--threads", "0"], 2),
    (["demo", "--model", "/no/such/model.safetensors", "--n", "0"], 2),
    (["bench", "--quick", "--json", "/no/such/dir/out.json"], 2),
    (["no-such-command"], 2),
], ids=["n", "seed", "threads", "model", "json", "command"])
def test_user_errors_are_one_line_and_exit_2(args, code):
    res = run(*args)
    assert res.returncode == code, res.stdout[-2000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    last = res.stderr.strip().splitlines()[-1]          # argparse puts its usage first
    assert last.startswith("pytransformer") and "error" in last, res.stderr
