"""Thread counts are bounded: in the API, on the command line and from the
environment at import.  Each case runs in a subprocess, since an unbounded
count used to crash libgomp (a segfault, or "Thread creation failed" and exit)."""
import os

import pytest

import pytransformer
from conftest import run_python

CPUS = os.cpu_count() or 1


def _python(code, env=None, timeout=120):
    """python -c code in a scratch folder, importing this pytransformer."""
    e = dict(os.environ)
    e.update(env or {})
    return run_python(["-c", code], env=e, timeout=timeout)


def test_the_bound_is_a_small_multiple_of_the_cpus():
    assert pytransformer.MAX_THREADS == 4 * CPUS


@pytest.mark.parametrize("n", [100000, 2 ** 31, 10 ** 30, 4 * CPUS + 1, 0, -3])
def test_set_num_threads_refuses_out_of_range(n):
    before = pytransformer.get_num_threads()
    with pytest.raises(ValueError, match=rf"set_num_threads: n must be in \[1, {4 * CPUS}\]"):
        pytransformer.set_num_threads(n)
    assert pytransformer.get_num_threads() == before


def test_the_bound_itself_runs_every_parallel_kernel():
    """MAX_THREADS threads (oversubscribed) run GEMM, attention and the row
    kernels and give the bits of one thread."""
    r = _python(
        "import numpy as np, pytransformer as pt\n"
        "from pytransformer import ops\n"
        "rng = np.random.default_rng(0)\n"
        "a = rng.standard_normal((300, 256), dtype=np.float32)\n"
        "q = rng.standard_normal((2, 3, 64, 32), dtype=np.float32)\n"
        "def run():\n"
        "    return (ops.matmul(a, a.T), ops.scaled_dot_product_attention(q, q, q),\n"
        "            ops.softmax(a), ops.layer_norm(a, (256,)), ops.gelu(a))\n"
        "pt.set_num_threads(1); one = run()\n"
        "pt.set_num_threads(pt.MAX_THREADS); many = run()\n"
        "assert all(np.array_equal(x, y) for x, y in zip(one, many))\n"
        "print('ok', pt.get_num_threads())\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", str(4 * CPUS)]


@pytest.mark.parametrize("value", ["100000", "99999999"])
def test_omp_num_threads_out_of_range_is_clamped_with_a_warning(value):
    r = _python("import numpy as np, pytransformer as pt\n"
                "from pytransformer import ops\n"
                "a = np.ones((512, 512), np.float32)\n"
                "ops.matmul(a, a)\n"
                "print(pt.get_num_threads())\n", env={"OMP_NUM_THREADS": value})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(4 * CPUS)
    assert f"OMP_NUM_THREADS='{value}'" in r.stderr and "RuntimeWarning" in r.stderr


def test_omp_num_threads_in_range_is_used():
    r = _python("import pytransformer as pt; print(pt.get_num_threads())",
                env={"OMP_NUM_THREADS": "3"})
    assert r.returncode == 0 and r.stdout.strip() == "3", r.stderr
    assert "Warning" not in r.stderr


@pytest.mark.parametrize("threads", ["100000", "99999999999", str(4 * CPUS + 1)])
def test_cli_threads_out_of_range_is_an_argparse_error(threads):
    r = run_python(["-m", "pytransformer", "demo", "--threads", threads], timeout=120)
    assert r.returncode == 2
    assert f"must be <= {4 * CPUS}, got {int(threads)}" in r.stderr
    assert "Traceback" not in r.stderr and not r.stdout


def test_switching_the_kernel_path_under_a_shared_packed_matrix():
    """Threads multiply by one PackedMatrix while another switches the kernel
    path: panels are never freed under a running call (this used to segfault),
    and every result is the bits of one path or the other."""
    if len(pytransformer.cpu_info()["available"]) < 2:
        pytest.skip("this CPU and build have one kernel path only")
    r = _python(
        "import threading, numpy as np\n"
        "from pytransformer import _kernels, ops\n"
        "rng = np.random.default_rng(0)\n"
        "w = ops.pack_weight(rng.standard_normal((384, 256), dtype=np.float32))\n"
        "x = rng.standard_normal((64, 256), dtype=np.float32)\n"
        "paths = _kernels.available_isas()\n"
        "refs = []\n"
        "for p in paths:\n"
        "    _kernels.set_isa(p); refs.append(ops.linear(x, w))\n"
        "bad, stop = [], threading.Event()\n"
        "def work():\n"
        "    for _ in range(300):\n"
        "        y = ops.linear(x, w)\n"
        "        if not any(np.array_equal(y, r) for r in refs): bad.append(1)\n"
        "def switch():\n"
        "    i = 0\n"
        "    while not stop.is_set():\n"
        "        _kernels.set_isa(paths[i % len(paths)]); i += 1\n"
        "ts = [threading.Thread(target=work) for _ in range(4)]\n"
        "s = threading.Thread(target=switch); s.start()\n"
        "[t.start() for t in ts]; [t.join() for t in ts]; stop.set(); s.join()\n"
        "print('bad', len(bad))\n", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["bad", "0"]
